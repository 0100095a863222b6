//! OpenPGP check of a Debian `InRelease` file (a cleartext-signed `Release`)
//! against a keyring, with the pure-Rust `pgp` crate so `ombuild` needs no
//! gpg and stays static-linkable. The keyring is a binary (or armored)
//! OpenPGP key list such as `/usr/share/keyrings/debian-archive-keyring.gpg`.

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey};

/// Errors from the signature check.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The keyring holds no usable public key.
    #[error("keyring {0} holds no OpenPGP public keys")]
    EmptyKeyring(String),
    /// The InRelease text is not a cleartext-signed message.
    #[error("{what} is not an OpenPGP cleartext-signed message: {reason}")]
    NotSigned {
        /// The file checked.
        what: String,
        /// Why it does not parse.
        reason: String,
    },
    /// No signature verified against any key of the keyring.
    #[error("OpenPGP signature of {what} does not verify against any key in {keyring}")]
    BadSignature {
        /// The file checked.
        what: String,
        /// The keyring used.
        keyring: String,
    },
}

/// A parsed keyring.
pub struct Keyring {
    name: String,
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Parse keyring bytes (binary or ASCII-armored); `name` is used in errors.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self, SignatureError> {
        let keys: Vec<SignedPublicKey> = if bytes.starts_with(b"-----BEGIN") {
            match SignedPublicKey::from_armor_many(bytes) {
                Ok((iter, _)) => iter.filter_map(Result::ok).collect(),
                Err(_) => Vec::new(),
            }
        } else {
            match SignedPublicKey::from_bytes_many(bytes) {
                Ok(iter) => iter.filter_map(Result::ok).collect(),
                Err(_) => Vec::new(),
            }
        };
        if keys.is_empty() {
            return Err(SignatureError::EmptyKeyring(name.to_string()));
        }
        Ok(Keyring {
            name: name.to_string(),
            keys,
        })
    }

    /// Number of primary keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the keyring is empty (never true for a parsed keyring).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify a cleartext-signed message and return the signed text (line
    /// endings normalised to `\r\n`, dash-escaping removed). At least one of
    /// its signatures must verify against a key or subkey of the keyring.
    pub fn verify_cleartext(&self, what: &str, text: &str) -> Result<String, SignatureError> {
        let (msg, _) =
            CleartextSignedMessage::from_string(text).map_err(|e| SignatureError::NotSigned {
                what: what.to_string(),
                reason: e.to_string(),
            })?;
        for key in &self.keys {
            if msg.verify(key).is_ok() {
                return Ok(msg.signed_text());
            }
            for sub in &key.public_subkeys {
                if msg.verify(sub).is_ok() {
                    return Ok(msg.signed_text());
                }
            }
        }
        Err(SignatureError::BadSignature {
            what: what.to_string(),
            keyring: self.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_keyring_and_message_are_named() {
        let err = Keyring::parse("k.gpg", b"not a key").err().unwrap();
        assert_eq!(
            err.to_string(),
            "keyring k.gpg holds no OpenPGP public keys"
        );
    }
}
