//! Who gets the cluster key: the head's admission policy and its memory.
//!
//! A machine asks with its MAC and a fresh public key
//! ([`contracts::admit::AdmitRequest`]); the head answers admitted (the key
//! sealed to that public key, by the HTTP handler), pending or refused.
//! The rules, in [`Book::ask`]:
//!
//! 1. A machine an admin rejected stays refused.
//! 2. A machine admitted with the key it presents now is admitted.
//! 3. A machine admitted with another key is admitted with the new one only
//!    if it booted from this head since (its boot script, kernel or initrd
//!    came from here after the admission, or, booted from the ISO or a USB
//!    stick, it got its address lease from this head's DHCP) from the
//!    address it asks from: a diskless node makes a new key each boot and
//!    has nowhere to keep one, so a reboot through the head is what
//!    identifies it again. Anything else is a second machine with a copied
//!    MAC: refused and reported ([`contracts::admit::Refusal`]). An admin
//!    who knows better (a machine booted from a USB stick beside a LAN whose
//!    DHCP is not the head's) admits the refused key with `omctl admit`.
//! 4. A new machine, under [`Policy::Auto`], is admitted if it booted from
//!    this head within [`AUTO_WINDOW_S`] from the address it asks from;
//!    otherwise, and always under [`Policy::Manual`], it waits as pending
//!    for `omctl admit` or `omctl reject` ([`Book::decide`]).
//!
//! Workstations join with a token instead ([`Book::register_token`] when
//! an admin makes one, [`Book::spend_token`] when a machine uses it; the
//! HTTP handler checks the proof first, so a forged request spends
//! nothing). A machine that joined with a token and said its MAC is
//! listed as admitted by that token.
//!
//! [`Book`] is pure (state, request and clock in, answer out); [`Store`]
//! keeps it in `STATE/admission.json`, written whole to a temporary file,
//! synced and renamed over the old one after every change, so a decision
//! survives a restart or a crash of `omboot`.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use contracts::admit::{
    AdmissionList, AdmitRequest, Machine, PublicKey, Refusal, Standing, TokenInfo, TokenRequest,
    Verdict, TOKEN_ID_LEN,
};
use contracts::mac::MacAddr;
use serde::{Deserialize, Serialize};

/// How long after booting from the head a new machine is admitted by
/// [`Policy::Auto`], seconds: a node asks within a minute or two of its
/// kernel fetch, even under emulation.
pub const AUTO_WINDOW_S: u64 = 600;
/// The longest a token may live, seconds (30 days).
pub const TOKEN_TTL_MAX_S: u64 = 30 * 24 * 3600;
/// The most machines one token may let in.
pub const TOKEN_USES_MAX: u32 = 1000;
/// How long a spent or expired token is kept, for a clear refusal, seconds.
const TOKEN_KEPT_S: u64 = 24 * 3600;
/// How many refusals the list keeps.
const REFUSALS_KEPT: usize = 32;
/// The admission file in the state directory.
pub const ADMISSION_FILE: &str = "admission.json";

/// Who the head lets in without asking an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Machines that just booted from this head; others wait for an admin.
    Auto,
    /// Every new machine waits for an admin.
    Manual,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Auto => "auto",
            Policy::Manual => "manual",
        })
    }
}

impl std::str::FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Policy::Auto),
            "manual" => Ok(Policy::Manual),
            other => Err(format!("admission policy {other:?} is not auto or manual")),
        }
    }
}

/// What the head saw of a machine's boot: from the node registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootSeen {
    /// Unix seconds of its latest boot-file fetch from this head.
    pub at: u64,
    /// The address it fetched from.
    pub address: Option<IpAddr>,
}

/// The head's answer, before sealing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Seal the key to this public key.
    Admit,
    /// Ask again later.
    Pending(String),
    /// Not let in.
    Refuse(String),
}

/// A decision that names no machine, or more than one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// Nothing known by that MAC or name.
    #[error("no machine {0:?} has asked to join (omctl nodes --pending lists them)")]
    Unknown(String),
    /// The name fits several machines.
    #[error("{name:?} names {count} machines; use the MAC")]
    Ambiguous {
        /// The name.
        name: String,
        /// How many machines have it.
        count: usize,
    },
}

/// Every machine the head has heard from, and the latest refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Book {
    machines: BTreeMap<MacAddr, Machine>,
    refusals: VecDeque<Refusal>,
    #[serde(default)]
    tokens: BTreeMap<String, TokenInfo>,
}

impl Book {
    /// Answers `req`, asked from `address` at `now`, given what the head
    /// saw of the machine's boot; the second value says whether the book
    /// changed (and must be saved).
    pub fn ask(
        &mut self,
        policy: Policy,
        req: &AdmitRequest,
        address: Option<IpAddr>,
        boot: Option<BootSeen>,
        now: u64,
    ) -> (Answer, bool) {
        // Booted from this head after `after` (Unix seconds), from here.
        let booted_here_after = |after: u64| {
            boot.is_some_and(|b| b.at > after && (b.address.is_none() || b.address == address))
        };
        let fresh_boot = booted_here_after(now.saturating_sub(AUTO_WINDOW_S + 1));
        let entry = |standing, by: &str| Machine {
            mac: req.mac,
            name: req.name.clone(),
            address,
            public: req.public,
            standing,
            since: now,
            by: by.to_string(),
        };
        match self.machines.get_mut(&req.mac) {
            Some(m) if m.standing == Standing::Rejected => {
                let reason = format!("{} was rejected by an admin ({})", req.mac, m.by);
                (Answer::Refuse(reason), false)
            }
            Some(m) if m.standing == Standing::Admitted && m.public == req.public => {
                let changed = m.address != address || (req.name.is_some() && m.name != req.name);
                m.address = address;
                if req.name.is_some() {
                    m.name = req.name.clone();
                }
                (Answer::Admit, changed)
            }
            Some(m) if m.standing == Standing::Admitted => {
                if booted_here_after(m.since) {
                    *m = entry(Standing::Admitted, "rebooted from this head");
                    return (Answer::Admit, true);
                }
                let reason = format!(
                    "{} is admitted with key {}, and this machine (key {}) did not boot from this head since: a second machine with the same MAC?",
                    req.mac,
                    m.public.fingerprint(),
                    req.public.fingerprint()
                );
                // A refused machine asks again every few seconds: one entry
                // per machine and key, the latest last.
                let again = self
                    .refusals
                    .iter()
                    .position(|r| r.mac == req.mac && r.public == req.public);
                if let Some(i) = again {
                    self.refusals.remove(i);
                }
                self.refusals.push_back(Refusal {
                    mac: req.mac,
                    address,
                    public: req.public,
                    at: now,
                    reason: reason.clone(),
                });
                while self.refusals.len() > REFUSALS_KEPT {
                    self.refusals.pop_front();
                }
                (Answer::Refuse(reason), again.is_none())
            }
            _ if policy == Policy::Auto && fresh_boot => {
                self.machines.insert(
                    req.mac,
                    entry(Standing::Admitted, "auto: booted from this head"),
                );
                (Answer::Admit, true)
            }
            Some(m) => {
                let changed = m.public != req.public || m.address != address;
                let first = m.since;
                *m = entry(Standing::Pending, "asked");
                if !changed {
                    m.since = first;
                }
                (Answer::Pending(pending_reason(policy, req.mac)), changed)
            }
            None => {
                self.machines
                    .insert(req.mac, entry(Standing::Pending, "asked"));
                (Answer::Pending(pending_reason(policy, req.mac)), true)
            }
        }
    }

    /// Records an admin's `verdict` on `machine` (a MAC or a name); returns
    /// the machine as it now stands.
    pub fn decide(
        &mut self,
        machine: &str,
        verdict: Verdict,
        now: u64,
    ) -> Result<Machine, DecideError> {
        let mac = match machine.parse::<MacAddr>() {
            Ok(mac) if self.machines.contains_key(&mac) => mac,
            _ => {
                let named: Vec<MacAddr> = self
                    .machines
                    .values()
                    .filter(|m| m.name.as_deref() == Some(machine))
                    .map(|m| m.mac)
                    .collect();
                match named.as_slice() {
                    [one] => *one,
                    [] => return Err(DecideError::Unknown(machine.to_string())),
                    many => {
                        return Err(DecideError::Ambiguous {
                            name: machine.to_string(),
                            count: many.len(),
                        })
                    }
                }
            }
        };
        let m = self
            .machines
            .get_mut(&mac)
            .expect("the MAC was just found in the book");
        // Admitting a machine whose new key was refused since lets that key
        // in: the admin has seen the refusal in `omctl nodes`.
        let refused = self
            .refusals
            .iter()
            .rev()
            .find(|r| r.mac == mac && r.at >= m.since);
        if let (Verdict::Admit, Some(r)) = (verdict, refused) {
            m.public = r.public;
            m.address = r.address;
        }
        m.standing = match verdict {
            Verdict::Admit => Standing::Admitted,
            Verdict::Reject => Standing::Rejected,
        };
        m.since = now;
        m.by = "admin".into();
        Ok(m.clone())
    }

    /// The admin's view.
    pub fn list(&self, policy: Policy) -> AdmissionList {
        AdmissionList {
            policy: policy.to_string(),
            machines: self.machines.values().cloned().collect(),
            refusals: self.refusals.iter().cloned().collect(),
            tokens: self.tokens.values().cloned().collect(),
        }
    }

    /// Registers the token an admin made (its secret stays with the key
    /// holders; only the id is here).
    pub fn register_token(&mut self, req: &TokenRequest, now: u64) -> Result<TokenInfo, String> {
        let id = req.id.to_ascii_lowercase();
        if id.len() != 2 * TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "token id {:?} is not {} hex digits",
                req.id,
                2 * TOKEN_ID_LEN
            ));
        }
        if req.ttl_s == 0 || req.ttl_s > TOKEN_TTL_MAX_S {
            return Err(format!(
                "a token lives 1 s to {} days, not {} s",
                TOKEN_TTL_MAX_S / 86400,
                req.ttl_s
            ));
        }
        if req.uses == 0 || req.uses > TOKEN_USES_MAX {
            return Err(format!(
                "a token has 1 to {TOKEN_USES_MAX} uses, not {}",
                req.uses
            ));
        }
        if self.tokens.contains_key(&id) {
            return Err(format!("token {id} exists already"));
        }
        self.tokens
            .retain(|_, t| t.expires + TOKEN_KEPT_S > now && (t.uses_left > 0 || t.expires > now));
        let info = TokenInfo {
            id: id.clone(),
            expires: now + req.ttl_s,
            uses_left: req.uses,
        };
        self.tokens.insert(id, info.clone());
        Ok(info)
    }

    /// Uses token `id` once (its proof already checked), for a machine that
    /// said `mac` and `name`, holding `public`.
    pub fn spend_token(
        &mut self,
        id: &str,
        machine: (Option<MacAddr>, &str, PublicKey),
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<(), String> {
        let t = self
            .tokens
            .get_mut(&id.to_ascii_lowercase())
            .ok_or_else(|| {
                format!("token {id} is unknown to this head (mistyped, or made for another head)")
            })?;
        if now >= t.expires {
            return Err(format!(
                "token {id} expired {} s ago (omctl token create makes a new one)",
                now - t.expires
            ));
        }
        if t.uses_left == 0 {
            return Err(format!(
                "token {id} is used up (omctl token create --uses N makes one for more machines)"
            ));
        }
        t.uses_left -= 1;
        let (mac, name, public) = machine;
        if let Some(mac) = mac {
            self.machines.insert(
                mac,
                Machine {
                    mac,
                    name: Some(name.to_string()),
                    address,
                    public,
                    standing: Standing::Admitted,
                    since: now,
                    by: format!("token {id}"),
                },
            );
        }
        Ok(())
    }

    /// The key a machine is admitted with, if it is.
    pub fn admitted_key(&self, mac: MacAddr) -> Option<PublicKey> {
        self.machines
            .get(&mac)
            .filter(|m| m.standing == Standing::Admitted)
            .map(|m| m.public)
    }
}

fn pending_reason(policy: Policy, mac: MacAddr) -> String {
    match policy {
        Policy::Manual => format!("waiting for an admin (omctl admit {mac} on the head)"),
        Policy::Auto => format!(
            "{mac} did not boot from this head in the last {} minutes; waiting for an admin (omctl admit {mac} on the head)",
            AUTO_WINDOW_S / 60
        ),
    }
}

/// Loading or saving the admission file failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or syncing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not an admission book.
    #[error("{path}: not an admission file: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The error.
        source: serde_json::Error,
    },
}

/// The [`Book`] behind a lock, saved to `STATE/admission.json` after every
/// change.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    policy: Policy,
    book: Mutex<Book>,
}

impl Store {
    /// Opens (or starts) the book in `state`.
    pub fn open(state: &Path, policy: Policy) -> Result<Self, StoreError> {
        let path = state.join(ADMISSION_FILE);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state).map_err(io)?;
        let book = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Book::default(),
            Err(e) => return Err(io(e)),
        };
        Ok(Self {
            path,
            policy,
            book: Mutex::new(book),
        })
    }

    /// The policy the head runs.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`Book::ask`], saved. Blocking (it syncs a file): call it off the
    /// async workers.
    pub fn ask(
        &self,
        req: &AdmitRequest,
        address: Option<IpAddr>,
        boot: Option<BootSeen>,
        now: u64,
    ) -> Result<Answer, StoreError> {
        let mut book = self.lock();
        let before = book.clone();
        let (answer, changed) = book.ask(self.policy, req, address, boot, now);
        if changed {
            if let Err(e) = self.save(&book) {
                // Nothing acknowledged that the disk does not hold.
                *book = before;
                return Err(e);
            }
        }
        Ok(answer)
    }

    /// [`Book::decide`], saved. Blocking, like [`Store::ask`].
    pub fn decide(
        &self,
        machine: &str,
        verdict: Verdict,
        now: u64,
    ) -> Result<Result<Machine, DecideError>, StoreError> {
        self.change(|book| book.decide(machine, verdict, now))
    }

    /// [`Book::register_token`], saved. Blocking, like [`Store::ask`].
    pub fn register_token(
        &self,
        req: &TokenRequest,
        now: u64,
    ) -> Result<Result<TokenInfo, String>, StoreError> {
        self.change(|book| book.register_token(req, now))
    }

    /// [`Book::spend_token`], saved. Blocking, like [`Store::ask`].
    pub fn spend_token(
        &self,
        id: &str,
        machine: (Option<MacAddr>, &str, PublicKey),
        address: Option<IpAddr>,
        now: u64,
    ) -> Result<Result<(), String>, StoreError> {
        self.change(|book| book.spend_token(id, machine, address, now))
    }

    /// Runs `f` on the book and saves it when `f` succeeded; undone if the
    /// save fails.
    fn change<T, E>(
        &self,
        f: impl FnOnce(&mut Book) -> Result<T, E>,
    ) -> Result<Result<T, E>, StoreError> {
        let mut book = self.lock();
        let before = book.clone();
        let done = f(&mut book);
        if done.is_ok() {
            if let Err(e) = self.save(&book) {
                *book = before;
                return Err(e);
            }
        }
        Ok(done)
    }

    /// The admin's view.
    pub fn list(&self) -> AdmissionList {
        self.lock().list(self.policy)
    }

    fn save(&self, book: &Book) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        let text = serde_json::to_vec_pretty(book).expect("the book serialises");
        f.write_all(&text).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::admit::MachineKey;

    fn req(last: u8, key: &MachineKey) -> AdmitRequest {
        AdmitRequest {
            mac: format!("52:54:00:00:00:{last:02x}").parse().unwrap(),
            name: Some(format!("vm{last}")),
            public: key.public(),
        }
    }

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 77, 0, last]))
    }

    fn booted(at: u64, last: u8) -> Option<BootSeen> {
        Some(BootSeen {
            at,
            address: ip(last),
        })
    }

    #[test]
    fn auto_admits_what_just_booted_here_from_that_address() {
        let mut book = Book::default();
        let k = MachineKey::generate();
        let r = req(1, &k);
        assert_eq!(
            book.ask(Policy::Auto, &r, ip(101), booted(1000, 101), 1030),
            (Answer::Admit, true)
        );
        // Asking again with the same key: admitted, nothing to save.
        assert_eq!(
            book.ask(Policy::Auto, &r, ip(101), booted(1000, 101), 1040),
            (Answer::Admit, false)
        );
        // Booted elsewhere, or long ago, or from another address: pending.
        for (boot, from) in [
            (None, ip(102)),
            (booted(1000, 102), ip(102)),
            (booted(1000, 102), ip(103)),
        ] {
            let other = req(2, &MachineKey::generate());
            let (answer, _) = book.ask(Policy::Auto, &other, from, boot, 1000 + AUTO_WINDOW_S + 1);
            assert!(matches!(answer, Answer::Pending(_)), "{answer:?}");
        }
    }

    #[test]
    fn manual_waits_for_an_admin_and_remembers() {
        let mut book = Book::default();
        let k = MachineKey::generate();
        let r = req(1, &k);
        let (answer, changed) = book.ask(Policy::Manual, &r, ip(101), booted(1000, 101), 1010);
        assert_eq!(
            answer,
            Answer::Pending(
                "waiting for an admin (omctl admit 52:54:00:00:00:01 on the head)".into()
            )
        );
        assert!(changed);
        assert!(
            !book
                .ask(Policy::Manual, &r, ip(101), booted(1000, 101), 1013)
                .1
        );
        assert_eq!(
            book.decide("vm9", Verdict::Admit, 1020),
            Err(DecideError::Unknown("vm9".into()))
        );
        let m = book.decide("vm1", Verdict::Admit, 1020).unwrap();
        assert_eq!((m.standing, m.public), (Standing::Admitted, k.public()));
        assert_eq!(
            book.ask(Policy::Manual, &r, ip(101), booted(1000, 101), 1023)
                .0,
            Answer::Admit
        );

        // A reboot through the head: a new key, admitted without asking.
        let k2 = MachineKey::generate();
        let r2 = req(1, &k2);
        assert_eq!(
            book.ask(Policy::Manual, &r2, ip(101), booted(2000, 101), 2030),
            (Answer::Admit, true)
        );
        assert_eq!(book.admitted_key(r.mac), Some(k2.public()));

        // A second machine with that MAC that did not boot from here:
        // refused and reported, the admitted key kept.
        let r3 = req(1, &MachineKey::generate());
        let (answer, changed) = book.ask(Policy::Manual, &r3, ip(150), booted(2000, 101), 2040);
        assert!(
            matches!(&answer, Answer::Refuse(why) if why.contains("a second machine with the same MAC")),
            "{answer:?}"
        );
        assert!(changed);
        assert_eq!(book.admitted_key(r.mac), Some(k2.public()));
        assert_eq!(book.list(Policy::Manual).refusals.len(), 1);
        // Asking again is the same refusal, listed once.
        let (answer, changed) = book.ask(Policy::Manual, &r3, ip(150), booted(2000, 101), 2043);
        assert!(matches!(answer, Answer::Refuse(_)), "{answer:?}");
        assert!(!changed);
        assert_eq!(book.list(Policy::Manual).refusals.len(), 1);
        assert_eq!(book.list(Policy::Manual).refusals[0].at, 2043);

        // The admin knows it is the same machine (booted from a USB stick,
        // its lease from another DHCP server): `omctl admit` takes the
        // refused key, and that key is admitted from then on.
        book.decide("52:54:00:00:00:01", Verdict::Admit, 2045)
            .unwrap();
        assert_eq!(book.admitted_key(r.mac), Some(r3.public));
        assert_eq!(
            book.ask(Policy::Manual, &r3, ip(150), None, 2046),
            (Answer::Admit, false)
        );
        // Admitting again with no newer refusal keeps the key.
        book.decide("52:54:00:00:00:01", Verdict::Admit, 2047)
            .unwrap();
        assert_eq!(book.admitted_key(r.mac), Some(r3.public));

        // Rejected stays refused, whatever it presents.
        book.decide("52:54:00:00:00:01", Verdict::Reject, 2050)
            .unwrap();
        let (answer, _) = book.ask(Policy::Auto, &r2, ip(101), booted(3000, 101), 3001);
        assert!(matches!(answer, Answer::Refuse(_)), "{answer:?}");
    }

    #[test]
    fn two_machines_of_one_name_need_the_mac() {
        let mut book = Book::default();
        for last in [1, 2] {
            let mut r = req(last, &MachineKey::generate());
            r.name = Some("node".into());
            book.ask(Policy::Manual, &r, ip(last), None, 10);
        }
        assert_eq!(
            book.decide("node", Verdict::Admit, 20),
            Err(DecideError::Ambiguous {
                name: "node".into(),
                count: 2
            })
        );
        assert!(book.decide("52:54:00:00:00:02", Verdict::Admit, 20).is_ok());
    }

    #[test]
    fn the_store_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let k = MachineKey::generate();
        let r = req(1, &k);
        {
            let store = Store::open(dir.path(), Policy::Manual).unwrap();
            store.ask(&r, ip(101), None, 10).unwrap();
            store.decide("vm1", Verdict::Admit, 20).unwrap().unwrap();
        }
        let store = Store::open(dir.path(), Policy::Manual).unwrap();
        assert_eq!(store.ask(&r, ip(101), None, 30).unwrap(), Answer::Admit);
        std::fs::write(dir.path().join(ADMISSION_FILE), "{").unwrap();
        let err = Store::open(dir.path(), Policy::Manual)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an admission file"), "{err}");
    }
}
