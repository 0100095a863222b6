//! The agent's keys at run time: a [`keystore::KeyStore`] (the key ring of
//! [`contracts::rotate`] and the key file, rotated together) shared by the
//! gossip loop (datagram keys), the exec side (stream keys) and the relay to
//! `omboot` (admin signatures), and the cluster id the sub-keys are bound
//! to. A rotation's new key is taken even when the key file cannot be
//! rewritten ([`keystore::KeyStore::follow`]): the rest of the cluster
//! moves to it regardless.

use std::path::PathBuf;
use std::sync::Arc;

use contracts::key::{ClusterKey, Purpose};
use contracts::rotate::Phase;
use keystore::{KeyFile, KeyStore};

/// Why a new key was not fully taken: the ring refused it, or it is in use
/// but the key file still holds the old one.
pub use keystore::FollowError as KeysError;

/// The shared key state of one agent.
#[derive(Clone)]
pub struct Keys {
    store: Arc<KeyStore>,
    cluster: Arc<str>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("cluster", &self.cluster)
            .field("file", &self.store.file().map(KeyFile::path))
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// One key for cluster `cluster`; `file`, when given, is rewritten with
    /// each new key (its directory made again if it went missing).
    pub fn new(key: ClusterKey, cluster: &str, file: Option<PathBuf>) -> Self {
        let file = file.map(|path| KeyFile::new(path).creating_dirs());
        Self {
            store: Arc::new(KeyStore::new(key, file)),
            cluster: cluster.into(),
        }
    }

    /// The cluster id the sub-keys are bound to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The newest key (what key files hold and tokens are made from).
    pub fn newest(&self) -> ClusterKey {
        self.store.newest()
    }

    /// The key to sign and seal with now.
    pub fn sealing(&self) -> ClusterKey {
        self.store.sealing()
    }

    /// The keys accepted now, the sealing one first.
    pub fn accepted(&self) -> Vec<ClusterKey> {
        self.store.accepted()
    }

    fn derived(&self, purpose: Purpose) -> Vec<[u8; 32]> {
        self.accepted()
            .iter()
            .map(|k| k.derive(&self.cluster, purpose))
            .collect()
    }

    /// The exec stream root key to connect with.
    pub fn stream(&self) -> [u8; 32] {
        self.sealing().derive(&self.cluster, Purpose::Stream)
    }

    /// The exec stream root keys an accepted connection may use.
    pub fn stream_accepted(&self) -> Vec<[u8; 32]> {
        self.derived(Purpose::Stream)
    }

    /// The datagram keys accepted now, the sealing one first.
    pub fn datagram(&self) -> Vec<[u8; 32]> {
        self.derived(Purpose::Datagram)
    }

    /// The newest key's fingerprint and where the rotation is.
    pub fn describe(&self) -> (String, Phase) {
        let (newest, phase) = self.store.status();
        (newest.fingerprint(&self.cluster), phase)
    }

    /// Takes a new key handed out by a rotation (see
    /// [`contracts::rotate::KeyRing::rotate`]); true when it is new here.
    /// The key file is rewritten before the answer, so that a restarted
    /// agent comes back on the new key.
    pub fn rotate(
        &self,
        new: ClusterKey,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, KeysError> {
        self.store.follow(new, switch_in_ms, window_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::rotate::RotateError;

    #[test]
    fn a_rotation_rewrites_the_key_file_and_both_keys_open_streams() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let old = ClusterKey::generate();
        KeyFile::new(&path).create(&old).unwrap();
        let keys = Keys::new(old.clone(), "lab", Some(path.clone()));
        let new = ClusterKey::generate();
        assert!(keys.rotate(new.clone(), 60_000, 60_000).unwrap());
        assert_eq!(KeyFile::new(&path).load().unwrap(), new);
        assert_eq!(keys.sealing(), old, "the old key seals until the switch");
        assert_eq!(
            keys.stream_accepted(),
            vec![
                old.derive("lab", Purpose::Stream),
                new.derive("lab", Purpose::Stream)
            ]
        );
        assert!(!keys.rotate(new.clone(), 60_000, 60_000).unwrap());
        assert!(matches!(
            keys.rotate(ClusterKey::generate(), 0, 60_000),
            Err(KeysError::Rotate(RotateError::Busy { .. }))
        ));
        let (fp, phase) = keys.describe();
        assert_eq!(fp, new.fingerprint("lab"));
        assert!(matches!(phase, Phase::Announced { .. }));
    }
}
