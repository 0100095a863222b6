//! The head's cluster keys at run time: one key, or two while a rotation
//! (`omctl key rotate`, [`contracts::rotate`]) moves the cluster to a new
//! one. Admission hands out the newest; signed admin requests and join
//! tokens are checked against every key still accepted. A new key is
//! written to the key file before it is taken, so a restarted `omboot`
//! comes back on it.

use std::path::PathBuf;
use std::sync::Mutex;

use contracts::clock::unix_millis;
use contracts::key::ClusterKey;
use contracts::rotate::{KeyRing, RotateError};
use keystore::KeyFile;

/// Why a new key was not taken.
#[derive(Debug, thiserror::Error)]
pub enum HeadKeyError {
    /// The ring refused it.
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// The key file could not be rewritten (nothing changed).
    #[error("cannot write the new key to {path}: {source}")]
    File {
        /// The key file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The keys `omboot` admits with and checks signatures against.
pub struct HeadKeys {
    ring: Mutex<KeyRing>,
    file: Option<PathBuf>,
}

impl HeadKeys {
    /// One key; `file`, when given, is rewritten with each new key.
    pub fn new(key: ClusterKey, file: Option<PathBuf>) -> Self {
        Self {
            ring: Mutex::new(KeyRing::new(key)),
            file,
        }
    }

    /// The key admission seals to new machines.
    pub fn newest(&self) -> ClusterKey {
        self.ring.lock().expect("key ring").newest().clone()
    }

    /// The keys a signature or a token may be made with now.
    pub fn accepted(&self) -> Vec<ClusterKey> {
        let now = unix_millis();
        let mut ring = self.ring.lock().expect("key ring");
        ring.settle(now);
        ring.accepted(now).into_iter().cloned().collect()
    }

    /// Takes `new` (see [`KeyRing::rotate`]) once it is in the key file;
    /// true when it is new here.
    pub fn rotate(
        &self,
        new: ClusterKey,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, HeadKeyError> {
        let mut ring = self.ring.lock().expect("key ring");
        let mut next = ring.clone();
        if !next.rotate(new.clone(), unix_millis(), switch_in_ms, window_ms)? {
            return Ok(false);
        }
        if let Some(path) = &self.file {
            KeyFile::new(path.as_path())
                .replace(&new)
                .map_err(|e| HeadKeyError::File {
                    path: path.clone(),
                    source: e.source,
                })?;
        }
        *ring = next;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_on_disk_before_it_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        let old = ClusterKey::generate();
        std::fs::write(&path, old.to_text()).unwrap();
        let keys = HeadKeys::new(old.clone(), Some(path.clone()));
        let new = ClusterKey::generate();
        assert!(keys.rotate(new.clone(), 1000, 60_000).unwrap());
        assert_eq!(
            ClusterKey::parse(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            new
        );
        assert_eq!(keys.newest(), new);
        assert_eq!(keys.accepted(), vec![old, new.clone()]);
        assert!(!keys.rotate(new, 1000, 60_000).unwrap());

        // A key file that cannot be written: nothing changes.
        let stuck = HeadKeys::new(
            ClusterKey::generate(),
            Some(dir.path().join("no/such/dir/k")),
        );
        let before = stuck.newest();
        assert!(matches!(
            stuck.rotate(ClusterKey::generate(), 0, 60_000),
            Err(HeadKeyError::File { .. })
        ));
        assert_eq!(stuck.newest(), before);
    }
}
