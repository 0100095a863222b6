//! Cluster keys: generation, the one text format, and the derivation of the
//! per-purpose keys that seal datagrams and exec streams.
//!
//! The text form is the 32-byte key as 64 hex digits and a newline
//! ([`ClusterKey::to_text`]): what `omnode keygen` and `omnode init` write to
//! a key file, what `omboot` puts on the command line as `om.key=` (without
//! the newline) and serves over HTTP. Every reader, `omnode agent
//! --key-file`, `omboot --key-file`, `omnode init` for `om.key=` and for a
//! key fetched over HTTP, goes through [`ClusterKey::parse`], which is
//! lenient in one documented way: blank lines and `#` comments are skipped,
//! the key line may be prefixed with the tag `omcluster-key-v1`, and upper
//! case hex is accepted. Writers always write the plain form.
//!
//! Sub-keys are HKDF-SHA256 of the cluster key, salted with a fixed label and
//! bound to the cluster id, so two clusters sharing a key still cannot talk.
//!
//! Pure: reading and writing key files is the `keystore` crate's business
//! (`keystore::KeyFile`, used by `omnode`, `omctl` and `omboot`).

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
    /// Authenticating an admin's requests to `omboot` (admission decisions).
    Admin,
    /// Sealing a new cluster key sent to `omboot` during a rotation
    /// ([`crate::rotate`]).
    Rotate,
    /// The key's public name ([`ClusterKey::fingerprint`]).
    Fingerprint,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Datagram => b"datagram",
            Purpose::Stream => b"stream",
            Purpose::Admin => b"admin",
            Purpose::Rotate => b"rotate",
            Purpose::Fingerprint => b"fingerprint",
        }
    }
}

/// Why a text is not a cluster key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
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

    /// The raw bytes: only for sealing the key to an admitted machine
    /// ([`crate::admit`]); everything else uses [`ClusterKey::derive`].
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// Parses the key text (a key file, an `om.key=` value, an HTTP body):
    /// the first line that is not blank or a `#` comment is the key, 64 hex
    /// digits, optionally after the tag [`KEY_FILE_TAG`].
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

    /// The key as 64 lowercase hex digits (the `om.key=` value).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A short public name for the key in cluster `cluster` (8 bytes of a
    /// sub-key, as hex): what `omctl key` and `omctl status` show so an admin
    /// can tell which key a node uses. It gives nothing of the key away.
    pub fn fingerprint(&self, cluster: &str) -> String {
        hex::encode(&self.derive(cluster, Purpose::Fingerprint)[..8])
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

impl std::str::FromStr for ClusterKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::parse(s)
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

    fn check(text: &str, expect: expect_test::Expect) {
        let got = match ClusterKey::parse(text) {
            Ok(k) => k.to_hex(),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn the_one_parse_rule() {
        use expect_test::expect;
        let hex = "0123456789abcdef".repeat(4);
        for text in [
            hex.clone(),
            format!("{hex}\n"),
            format!("  {}  \r\n", hex.to_uppercase()),
            format!("# made by omnode keygen\n\n{hex}\n"),
            format!("{KEY_FILE_TAG} {hex}\n# trailing\n"),
        ] {
            check(
                &text,
                expect!["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"],
            );
        }
        check(
            "",
            expect!["error: no key found (expected a line of 64 hex digits)"],
        );
        check(
            "not a key\n",
            expect!["error: key `not a key` is not 64 hex digits"],
        );
        check(
            &"ab".repeat(33),
            expect!["error: key `abababababababab…` is not 64 hex digits"],
        );
        check(
            &format!("{hex} {hex}"),
            expect!["error: key `0123456789abcdef…` is not 64 hex digits"],
        );
    }

    #[test]
    fn writers_write_the_plain_form() {
        let key = ClusterKey([0xab; 32]);
        assert_eq!(key.to_text(), format!("{}\n", "ab".repeat(32)));
        assert_eq!(key.to_hex(), "ab".repeat(32));
        assert_eq!(key.to_hex().parse::<ClusterKey>().unwrap(), key);
    }
}
