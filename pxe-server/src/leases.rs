//! The persistent lease store under `--state`.
//!
//! Layout: `STATE/leases.log`, an append-only log of [`LeaseRecord`]s, one per
//! line: `CRC32HEX JSON\n`, the CRC (IEEE) taken over the JSON bytes. The DHCP
//! shell appends every batch of records with one `write` and one `fdatasync`
//! (group commit) and sends the ACKs of that batch only after the sync returns,
//! so a lease that a client saw ACKed is on disk whatever moment the server is
//! killed.
//!
//! At open the log is replayed into a [`LeaseTable`]; a line whose checksum or
//! JSON is wrong, or a last line without its newline (a write cut short), is
//! skipped with a warning. The table is then written to `leases.log.tmp`,
//! synced and renamed over the log (compaction), and again whenever the log
//! grows past four times the live table. Later records override earlier ones,
//! so replay ends in the same table the server had.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use contracts::mac::MacAddr;
use serde::{Deserialize, Serialize};

/// File name of the log inside the state directory.
pub const LOG_FILE: &str = "leases.log";

/// A lease store error.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The state directory could not be created or read.
    #[error("cannot use state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing or syncing the log failed.
    #[error("cannot write lease log {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The state of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseState {
    /// Held by `mac` until `expires`.
    Active,
    /// Given back by `mac` (RELEASE); free, but `mac` gets it again first.
    Released,
    /// Declined by a client (in use by someone unknown); out of the pool
    /// until `expires`.
    Declined,
}

/// One lease, as stored, served by `/api/v1/leases` and printed by
/// `omboot leases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The address.
    pub ip: Ipv4Addr,
    /// The client.
    pub mac: MacAddr,
    /// Active, released or declined.
    pub state: LeaseState,
    /// Unix time (seconds) the lease or the quarantine ends.
    pub expires: u64,
    /// Host name (reservation or client option 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl LeaseRecord {
    /// Whether it holds its address at `now`.
    pub fn is_held(&self, now: u64) -> bool {
        matches!(self.state, LeaseState::Active | LeaseState::Declined) && self.expires > now
    }
}

/// Leases by address and by client, in memory.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    by_ip: HashMap<Ipv4Addr, LeaseRecord>,
    by_mac: HashMap<MacAddr, Ipv4Addr>,
}

impl LeaseTable {
    /// Apply a record: it replaces the address's record; a client moving to
    /// another address drops its old record.
    pub fn apply(&mut self, rec: LeaseRecord) {
        match rec.state {
            LeaseState::Active | LeaseState::Released => {
                if let Some(old) = self.by_mac.insert(rec.mac, rec.ip) {
                    if old != rec.ip && self.by_ip.get(&old).is_some_and(|r| r.mac == rec.mac) {
                        self.by_ip.remove(&old);
                    }
                }
            }
            LeaseState::Declined => {
                if self.by_mac.get(&rec.mac) == Some(&rec.ip) {
                    self.by_mac.remove(&rec.mac);
                }
            }
        }
        if let Some(prev) = self.by_ip.get(&rec.ip) {
            if prev.mac != rec.mac && self.by_mac.get(&prev.mac) == Some(&rec.ip) {
                self.by_mac.remove(&prev.mac);
            }
        }
        self.by_ip.insert(rec.ip, rec);
    }
    /// The record for an address.
    pub fn by_ip(&self, ip: Ipv4Addr) -> Option<&LeaseRecord> {
        self.by_ip.get(&ip)
    }
    /// The record of a client's address.
    pub fn by_mac(&self, mac: MacAddr) -> Option<&LeaseRecord> {
        self.by_mac.get(&mac).and_then(|ip| self.by_ip.get(ip))
    }
    /// Number of records.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
    /// All records sorted by address.
    pub fn records(&self) -> Vec<LeaseRecord> {
        let sorted: BTreeMap<_, _> = self.by_ip.iter().collect();
        sorted.into_values().cloned().collect()
    }
}

/// A shared, read-only view of the committed leases (for the HTTP API).
#[derive(Debug, Clone, Default)]
pub struct SharedLeases(Arc<Mutex<LeaseTable>>);

impl SharedLeases {
    /// Every committed lease, sorted by address.
    pub fn snapshot(&self) -> Vec<LeaseRecord> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).records()
    }
}

impl crate::nodes::LeaseSource for SharedLeases {
    fn leases(&self) -> Vec<crate::nodes::LeaseView> {
        self.snapshot()
            .into_iter()
            .map(|r| crate::nodes::LeaseView {
                mac: r.mac,
                ip: r.ip,
                hostname: r.hostname,
                state: match r.state {
                    LeaseState::Active => "active",
                    LeaseState::Released => "released",
                    LeaseState::Declined => "declined",
                }
                .to_string(),
                expires: r.expires,
            })
            .collect()
    }
}

/// Encode one record as a log line.
pub fn encode_line(rec: &LeaseRecord) -> String {
    let json = serde_json::to_string(rec).expect("lease record serialises");
    format!("{:08x} {json}\n", crc32fast::hash(json.as_bytes()))
}

/// What replaying a log found.
#[derive(Debug, Default)]
pub struct Replay {
    /// The records that checked out, in order.
    pub records: Vec<LeaseRecord>,
    /// Warnings for lines skipped (1-based line numbers).
    pub skipped: Vec<String>,
}

/// Replay log bytes; never fails, bad lines are skipped and reported.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    let mut lines = bytes.split(|&b| b == b'\n').enumerate().peekable();
    while let Some((i, line)) = lines.next() {
        let last = lines.peek().is_none();
        if last {
            if !line.is_empty() {
                out.skipped.push(format!(
                    "line {}: truncated record ({} bytes)",
                    i + 1,
                    line.len()
                ));
            }
            break;
        }
        match parse_line(line) {
            Ok(r) => out.records.push(r),
            Err(why) => out.skipped.push(format!("line {}: {why}", i + 1)),
        }
    }
    out
}

fn parse_line(line: &[u8]) -> Result<LeaseRecord, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_string())?;
    let (crc, json) = text
        .split_once(' ')
        .ok_or_else(|| "no checksum".to_string())?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| "bad checksum field".to_string())?;
    if crc32fast::hash(json.as_bytes()) != crc {
        return Err("checksum mismatch".into());
    }
    serde_json::from_str(json).map_err(|e| format!("bad record: {e}"))
}

/// Read the table from a state directory without opening it for writing
/// (`omboot leases`).
pub fn read_table(dir: &Path) -> Result<(LeaseTable, Vec<String>), LeaseError> {
    let path = dir.join(LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(LeaseError::StateDir {
                path: dir.to_owned(),
                source,
            })
        }
    };
    let r = replay(&bytes);
    let mut table = LeaseTable::default();
    for rec in r.records {
        table.apply(rec);
    }
    Ok((table, r.skipped))
}

/// The open store: the log file, appended to by [`LeaseStore::commit`].
#[derive(Debug)]
pub struct LeaseStore {
    dir: PathBuf,
    file: File,
    view: SharedLeases,
    lines: usize,
}

impl LeaseStore {
    /// Open (creating the directory), replay, compact. Skipped lines are
    /// logged as warnings.
    pub fn open(dir: &Path) -> Result<LeaseStore, LeaseError> {
        std::fs::create_dir_all(dir).map_err(|source| LeaseError::StateDir {
            path: dir.to_owned(),
            source,
        })?;
        let (table, skipped) = read_table(dir)?;
        for s in &skipped {
            tracing::warn!(file = %dir.join(LOG_FILE).display(), "skipping lease log {s}");
        }
        let view = SharedLeases(Arc::new(Mutex::new(table)));
        let mut store = LeaseStore {
            dir: dir.to_owned(),
            file: File::open(dir).map_err(|source| LeaseError::StateDir {
                path: dir.to_owned(),
                source,
            })?,
            view,
            lines: 0,
        };
        store.compact()?;
        Ok(store)
    }

    /// The committed table (what the server starts from).
    pub fn table(&self) -> LeaseTable {
        self.view
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A view for readers.
    pub fn view(&self) -> SharedLeases {
        self.view.clone()
    }

    fn write_err(&self, source: std::io::Error) -> LeaseError {
        LeaseError::Write {
            path: self.dir.join(LOG_FILE),
            source,
        }
    }

    /// Rewrite the log from the table: tmp file, sync, rename, sync dir.
    pub fn compact(&mut self) -> Result<(), LeaseError> {
        let records = self.view.snapshot();
        let tmp = self.dir.join(format!("{LOG_FILE}.tmp"));
        let path = self.dir.join(LOG_FILE);
        let mut buf = String::new();
        for r in &records {
            buf.push_str(&encode_line(r));
        }
        let res = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(buf.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            OpenOptions::new().append(true).open(&path)
        })();
        self.file = res.map_err(|e| self.write_err(e))?;
        self.lines = records.len();
        Ok(())
    }

    /// Append records and sync: when this returns `Ok`, they survive a crash.
    pub fn commit(&mut self, records: &[LeaseRecord]) -> Result<(), LeaseError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = String::with_capacity(records.len() * 128);
        for r in records {
            buf.push_str(&encode_line(r));
        }
        self.file
            .write_all(buf.as_bytes())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| self.write_err(e))?;
        self.lines += records.len();
        let live = {
            let mut t = self.view.0.lock().unwrap_or_else(|e| e.into_inner());
            for r in records {
                t.apply(r.clone());
            }
            t.len()
        };
        if self.lines > 4 * live + 10_000 {
            self.compact()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ip: u8, mac: u8, state: LeaseState) -> LeaseRecord {
        LeaseRecord {
            ip: Ipv4Addr::new(10, 0, 0, ip),
            mac: MacAddr([0x52, 0x54, 0, 0, 0, mac]),
            state,
            expires: 1000 + u64::from(ip),
            hostname: None,
        }
    }

    #[test]
    fn commit_survives_reopen_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = LeaseStore::open(dir.path()).unwrap();
        s.commit(&[rec(1, 1, LeaseState::Active), rec(2, 2, LeaseState::Active)])
            .unwrap();
        s.commit(&[
            rec(2, 2, LeaseState::Released),
            rec(3, 1, LeaseState::Active),
        ])
        .unwrap();
        drop(s);
        let s = LeaseStore::open(dir.path()).unwrap();
        let got: Vec<String> = s
            .view()
            .snapshot()
            .iter()
            .map(|r| format!("{} {} {:?}", r.ip, r.mac, r.state))
            .collect();
        assert_eq!(
            got,
            [
                "10.0.0.2 52:54:00:00:00:02 Released",
                "10.0.0.3 52:54:00:00:00:01 Active"
            ]
        );
        let text = std::fs::read_to_string(dir.path().join(LOG_FILE)).unwrap();
        assert_eq!(text.lines().count(), 2, "compacted at open: {text}");
    }

    #[test]
    fn corrupt_and_truncated_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let good1 = encode_line(&rec(1, 1, LeaseState::Active));
        let mut bad = encode_line(&rec(2, 2, LeaseState::Active));
        bad.replace_range(12..13, "X");
        let good3 = encode_line(&rec(3, 3, LeaseState::Active));
        let cut = encode_line(&rec(4, 4, LeaseState::Active));
        let text = format!("{good1}{bad}garbage\n{good3}{}", &cut[..cut.len() / 2]);
        std::fs::write(dir.path().join(LOG_FILE), text).unwrap();
        let (table, skipped) = read_table(dir.path()).unwrap();
        assert_eq!(
            skipped,
            [
                "line 2: checksum mismatch",
                "line 3: no checksum",
                "line 5: truncated record (42 bytes)"
            ]
        );
        assert_eq!(table.len(), 2);
        // Opening compacts the tail away, so later appends start on a line.
        let mut s = LeaseStore::open(dir.path()).unwrap();
        s.commit(&[rec(5, 5, LeaseState::Active)]).unwrap();
        let (table, skipped) = read_table(dir.path()).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_client_moving_frees_its_old_address() {
        let mut t = LeaseTable::default();
        t.apply(rec(1, 1, LeaseState::Active));
        t.apply(rec(2, 1, LeaseState::Active));
        assert!(t.by_ip(Ipv4Addr::new(10, 0, 0, 1)).is_none());
        assert_eq!(
            t.by_mac(MacAddr([0x52, 0x54, 0, 0, 0, 1]))
                .unwrap()
                .ip
                .octets()[3],
            2
        );
        // Another client taking an address (after expiry) unlinks the first.
        t.apply(rec(2, 9, LeaseState::Active));
        assert!(t.by_mac(MacAddr([0x52, 0x54, 0, 0, 0, 1])).is_none());
        t.apply(rec(2, 9, LeaseState::Declined));
        assert!(t.by_mac(MacAddr([0x52, 0x54, 0, 0, 0, 9])).is_none());
    }
}
