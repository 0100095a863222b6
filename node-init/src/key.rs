//! The cluster key, written to `/run/omcluster.key` (mode 0600) for the
//! agent. A netbooted node gets it through admission ([`ask`]): it makes a
//! fresh key pair, asks the head (`POST /api/v1/admit`), and opens the key
//! the head sealed to it; nothing on the wire gives the key away. A
//! command line may still carry it (`om.key=`, given by hand) or name a URL
//! to fetch it from ([`fetch`]), for setups that chose that.
//!
//! The file holds [`ClusterKey::to_text`] and is written by
//! [`keystore::KeyFile`]; a fetched body ([`crate::fetch`]) is read with
//! [`ClusterKey::parse`], the one rule every reader of the key uses.

use std::path::Path;

use contracts::admit::{AdmitAnswer, AdmitRequest, MachineKey, ADMIT_PATH};
use contracts::key::ClusterKey;
use contracts::mac::MacAddr;
use keystore::KeyFile;

use crate::fetch::{self, FetchError};

/// Where `omnode init` writes the key.
pub const KEY_FILE: &str = "/run/omcluster.key";

/// Getting or storing the key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The body is not 64 hex digits.
    #[error("key from {0} is not 64 hex digits")]
    NotAKey(String),
    /// The head's admission answer is not one.
    #[error("the head's answer at {url} (HTTP {status}) is not an admission answer")]
    BadAnswer {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The sealed key does not open.
    #[error(transparent)]
    Open(#[from] contracts::admit::AdmitError),
    /// Writing the key file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Fetches the key from `url` (one attempt, 5 s connect and read timeouts).
pub fn fetch(url: &str) -> Result<ClusterKey, KeyError> {
    let body = fetch::get(url, 64 * 1024)?;
    ClusterKey::parse(&String::from_utf8_lossy(&body))
        .map_err(|_| KeyError::NotAKey(url.to_string()))
}

/// Where a machine stands after one admission request.
#[derive(Debug)]
pub enum Admission {
    /// In, with the key.
    Admitted(ClusterKey),
    /// Waiting for the head's admin, with the head's words.
    Pending(String),
    /// Turned away, with the head's reason.
    Refused(String),
}

/// Asks the head at `http://server:port` once to admit the machine whose
/// boot interface has `mac`, with the public half of `me`; opens the key
/// the head sealed to it for cluster `cluster`.
pub fn ask(
    base: &str,
    cluster: &str,
    mac: MacAddr,
    name: Option<&str>,
    me: &MachineKey,
) -> Result<Admission, KeyError> {
    let url = format!("{base}{ADMIT_PATH}");
    let req = AdmitRequest {
        mac,
        name: name.map(str::to_string),
        public: me.public(),
    };
    let body = serde_json::to_vec(&req).expect("an admit request serialises");
    let (status, body) = fetch::post_json(&url, &body, 64 * 1024)?;
    let answer: AdmitAnswer = serde_json::from_slice(&body).map_err(|_| KeyError::BadAnswer {
        url: url.clone(),
        status,
    })?;
    Ok(match answer {
        AdmitAnswer::Admitted {
            cluster: theirs,
            enc,
            sealed,
        } => {
            if theirs != cluster {
                return Ok(Admission::Refused(format!(
                    "the head at {base} runs cluster {theirs:?}, not {cluster:?}"
                )));
            }
            Admission::Admitted(me.open(cluster, mac, &enc, &sealed)?)
        }
        AdmitAnswer::Pending { reason } => Admission::Pending(reason),
        AdmitAnswer::Refused { reason } => Admission::Refused(reason),
    })
}

/// Writes the key file ([`ClusterKey::to_text`]) to `path` with mode 0600,
/// replacing an old one whole (whatever its mode was) and making its
/// directory: the agent PID 1 starts next must never read half a key.
pub fn install(key: &ClusterKey, path: &Path) -> Result<(), KeyError> {
    KeyFile::new(path)
        .creating_dirs()
        .replace(key)
        .map_err(|e| KeyError::Write {
            path: path.display().to_string(),
            source: e.source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn fetch_and_install_against_a_local_server() {
        let key = "ab".repeat(32);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = format!("{}\n", key.to_uppercase());
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).unwrap();
                    assert!(n > 0, "client closed before ending its request");
                    req.extend_from_slice(&chunk[..n]);
                }
                assert!(req.starts_with(b"GET /k HTTP/1.0\r\n"));
                let resp = if i == 0 {
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\n".to_string()
                };
                conn.write_all(resp.as_bytes()).unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/k");
        assert_eq!(fetch(&url).unwrap().to_hex(), key);
        let err = fetch(&url).unwrap_err().to_string();
        assert!(
            err.ends_with("server answered HTTP/1.0 404 Not Found"),
            "{err}"
        );
        server.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/omcluster.key");
        install(&key.parse().unwrap(), &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{key}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
