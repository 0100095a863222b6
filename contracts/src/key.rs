//! Cluster keys: generation, the key file format, and the derivation of the
//! per-purpose keys that seal datagrams and exec streams.
//!
//! A key file is text: the 32-byte key as 64 hex digits and a newline, the
//! same form `om.key=` carries on the kernel command line, that `omboot`
//! serves and that `omnode init` writes to `/run/omcluster.key`. When
//! reading, blank lines and `#` comments are skipped, and the key line may be
//! prefixed with the tag `omcluster-key-v1`.
//!
//! Sub-keys are HKDF-SHA256 of the cluster key, salted with a fixed label and
//! bound to the cluster id, so two clusters sharing a key still cannot talk.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hkdf::Hkdf;
use sha2::Sha256;

/// Length of a cluster key in bytes.
pub const KEY_LEN: usize = 32;
/// A tag the key line of a key file may start with.
pub const KEY_FILE_TAG: &str = "omcluster-key-v1";
const HKDF_SALT: &[u8] = b"omcluster/v1/key-derivation";

/// What a derived key is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Sealing agent-to-agent UDP datagrams (membership, discovery, load).
    Datagram,
    /// The root of the per-connection keys of exec streams over TCP.
    Stream,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Datagram => b"datagram",
            Purpose::Stream => b"stream",
        }
    }
}

/// Errors reading, parsing or writing a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    /// The text holds no key line.
    #[error("no key found (expected a line of 64 hex digits)")]
    Missing,
    /// The key is not 64 hex digits.
    #[error("key `{0}` is not 64 hex digits")]
    Malformed(String),
}

/// A 256-bit cluster key.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterKey([u8; KEY_LEN]);

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

impl ClusterKey {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        Self(rand10::random())
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the key file format (or a bare 64-digit hex string).
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let hex_part = match line.strip_prefix(KEY_FILE_TAG) {
                Some(rest) => rest.trim(),
                None => line,
            };
            let mut bytes = [0u8; KEY_LEN];
            return match hex::decode_to_slice(hex_part, &mut bytes) {
                Ok(()) => Ok(Self(bytes)),
                Err(_) => Err(KeyError::Malformed(truncate(hex_part))),
            };
        }
        Err(KeyError::Missing)
    }

    /// The key file text: 64 hex digits and a newline.
    pub fn to_text(&self) -> String {
        format!("{}\n", hex::encode(self.0))
    }

    /// Reads a key file.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Writes a new key file with mode 0600; refuses to overwrite one.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        file.write_all(self.to_text().as_bytes()).map_err(err)?;
        file.sync_all().map_err(err)
    }

    /// The sub-key for `purpose` in cluster `cluster`.
    pub fn derive(&self, cluster: &str, purpose: Purpose) -> [u8; KEY_LEN] {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &self.0);
        let mut info = Vec::with_capacity(16 + cluster.len());
        info.extend_from_slice(purpose.label());
        info.push(0);
        info.extend_from_slice(cluster.as_bytes());
        let mut out = [0u8; KEY_LEN];
        hk.expand(&info, &mut out)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }
}

fn truncate(s: &str) -> String {
    if s.len() > 16 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(16).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let key = ClusterKey::generate();
        assert_eq!(ClusterKey::parse(&key.to_text()).unwrap(), key);
    }

    #[test]
    fn tagged_and_commented_accepted() {
        let text = format!("# cluster key\n\n{KEY_FILE_TAG} {}\n", "01".repeat(32));
        assert_eq!(ClusterKey::parse(&text).unwrap(), ClusterKey([1; 32]));
    }

    #[test]
    fn bare_hex_accepted() {
        let hex = "ab".repeat(32);
        assert_eq!(ClusterKey::parse(&hex).unwrap(), ClusterKey([0xab; 32]));
    }

    #[test]
    fn malformed_and_missing() {
        assert!(matches!(
            ClusterKey::parse("omcluster-key-v1 abc"),
            Err(KeyError::Malformed(_))
        ));
        assert!(matches!(
            ClusterKey::parse("# only a comment\n\n"),
            Err(KeyError::Missing)
        ));
    }

    #[test]
    fn derivation_separates_cluster_and_purpose() {
        let key = ClusterKey([7; 32]);
        let a = key.derive("a", Purpose::Datagram);
        assert_ne!(a, key.derive("b", Purpose::Datagram));
        assert_ne!(a, key.derive("a", Purpose::Stream));
        assert_eq!(a, key.derive("a", Purpose::Datagram));
    }

    #[test]
    fn save_is_private_and_does_not_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = ClusterKey::generate();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ClusterKey::load(&path).unwrap(), key);
        assert!(matches!(key.save(&path), Err(KeyError::Write { .. })));
    }
}
