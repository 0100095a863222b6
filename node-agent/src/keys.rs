//! The agent's keys at run time: the [`KeyRing`] of [`contracts::rotate`]
//! behind one lock, shared by the gossip loop (datagram keys), the exec
//! side (stream keys) and the relay to `omboot` (admin signatures), and the
//! key file the newest key is written to when a rotation hands one out.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use contracts::clock::unix_millis;
use contracts::key::{ClusterKey, Purpose};
use contracts::rotate::{KeyRing, Phase, RotateError};
use keystore::{KeyFile, WriteError};

/// Why a new key was not fully taken.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The ring refused it (another rotation, a bad window).
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// The key is in use but the key file could not be rewritten: the node
    /// would come back on the old key after a restart.
    #[error("took the new key, but {0}; after a restart this node needs admission")]
    File(WriteError),
}

/// The shared key state of one agent.
#[derive(Clone)]
pub struct Keys {
    ring: Arc<Mutex<KeyRing>>,
    cluster: Arc<str>,
    file: Option<Arc<PathBuf>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("cluster", &self.cluster)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// One key for cluster `cluster`; `file`, when given, is rewritten with
    /// each new key.
    pub fn new(key: ClusterKey, cluster: &str, file: Option<PathBuf>) -> Self {
        Self {
            ring: Arc::new(Mutex::new(KeyRing::new(key))),
            cluster: cluster.into(),
            file: file.map(Arc::new),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, KeyRing> {
        self.ring.lock().expect("key ring")
    }

    /// The cluster id the sub-keys are bound to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The newest key (what key files hold and tokens are made from).
    pub fn newest(&self) -> ClusterKey {
        self.ring().newest().clone()
    }

    /// The key to sign and seal with now.
    pub fn sealing(&self) -> ClusterKey {
        self.ring().sealing(unix_millis()).clone()
    }

    /// The keys accepted now, the sealing one first.
    pub fn accepted(&self) -> Vec<ClusterKey> {
        self.ring()
            .accepted(unix_millis())
            .into_iter()
            .cloned()
            .collect()
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
        let now = unix_millis();
        let mut ring = self.ring();
        ring.settle(now);
        (ring.newest().fingerprint(&self.cluster), ring.phase(now))
    }

    /// Takes a new key handed out by a rotation (see [`KeyRing::rotate`]);
    /// true when it is new here. The key file is rewritten before the
    /// answer, so that a restarted agent comes back on the new key.
    pub fn rotate(
        &self,
        new: ClusterKey,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, KeysError> {
        let fresh = self
            .ring()
            .rotate(new.clone(), unix_millis(), switch_in_ms, window_ms)?;
        if let Some(path) = &self.file {
            KeyFile::new(path.as_path())
                .creating_dirs()
                .replace(&new)
                .map_err(KeysError::File)?;
        }
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
