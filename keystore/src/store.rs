//! The keys a holder uses at run time: the [`KeyRing`] of
//! [`contracts::rotate`] behind one lock, and the [`KeyFile`] that holds
//! its newest key, changed together.
//!
//! `omboot` and every agent hold one. They differ in what a key file that
//! cannot be written means, so a new key comes in two ways:
//! - [`KeyStore::take`] (`omboot`): the key is written first and taken only
//!   once it is on disk; a failure changes nothing, and the member asking
//!   stops the rotation before anyone else hears of it.
//! - [`KeyStore::follow`] (an agent): the cluster moves to the key whatever
//!   this node's disk says, so the node takes it, or it would be cut off
//!   when the window ends; the error says the file still holds the old key.
//!
//! Both write the file while holding the lock, so two hand-outs never
//! leave the file and the ring on different keys.

use std::sync::{Mutex, MutexGuard};

use contracts::clock::unix_millis;
use contracts::key::ClusterKey;
use contracts::rotate::{KeyRing, Phase, RotateError};

use crate::file::{KeyFile, WriteError};

/// Why [`KeyStore::take`] did not take a key; the ring is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// The ring refused it (another rotation under way, a bad window).
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// The key file could not be rewritten.
    #[error("cannot write the new key to {}: {}", .0.path.display(), .0.source)]
    File(#[source] WriteError),
}

/// Why [`KeyStore::follow`] did not fully take a key.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The ring refused it (another rotation under way, a bad window); the
    /// ring is unchanged.
    #[error(transparent)]
    Rotate(#[from] RotateError),
    /// The key is in use but the key file could not be rewritten: the node
    /// would come back on the old key after a restart.
    #[error("took the new key, but {0}; after a restart this node needs admission")]
    File(WriteError),
}

/// The ring of keys one holder uses and the file its newest key is kept in.
pub struct KeyStore {
    ring: Mutex<KeyRing>,
    file: Option<KeyFile>,
}

impl std::fmt::Debug for KeyStore {
    // The keys stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyStore")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl KeyStore {
    /// One key; `file`, when given, is rewritten with each new key (it is
    /// not written now: it is where `key` came from).
    pub fn new(key: ClusterKey, file: Option<KeyFile>) -> Self {
        Self {
            ring: Mutex::new(KeyRing::new(key)),
            file,
        }
    }

    /// The key file, if the keys are kept in one.
    pub fn file(&self) -> Option<&KeyFile> {
        self.file.as_ref()
    }

    fn ring(&self) -> MutexGuard<'_, KeyRing> {
        self.ring.lock().expect("key ring")
    }

    /// The newest key: what the key file holds, what admission hands out
    /// and join tokens are made from.
    pub fn newest(&self) -> ClusterKey {
        self.ring().newest().clone()
    }

    /// The key to sign and seal with now.
    pub fn sealing(&self) -> ClusterKey {
        self.ring().sealing(unix_millis()).clone()
    }

    /// The keys accepted now (for a signature, a token, a sealed packet),
    /// the sealing one first.
    pub fn accepted(&self) -> Vec<ClusterKey> {
        let now = unix_millis();
        let mut ring = self.ring();
        ring.settle(now);
        ring.accepted(now).into_iter().cloned().collect()
    }

    /// The newest key and where the rotation is, at one moment.
    pub fn status(&self) -> (ClusterKey, Phase) {
        let now = unix_millis();
        let mut ring = self.ring();
        ring.settle(now);
        (ring.newest().clone(), ring.phase(now))
    }

    /// Takes `new` (see [`KeyRing::rotate`]) once it is in the key file;
    /// true when it is new here. A key already taken is not written again:
    /// it went to the file before it was taken.
    pub fn take(
        &self,
        new: ClusterKey,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, TakeError> {
        let mut ring = self.ring();
        let mut next = ring.clone();
        if !next.rotate(new.clone(), unix_millis(), switch_in_ms, window_ms)? {
            return Ok(false);
        }
        self.save(&new).map_err(TakeError::File)?;
        *ring = next;
        Ok(true)
    }

    /// Takes `new` (see [`KeyRing::rotate`]) and then writes it to the key
    /// file; true when it is new here. The key is in use even when the
    /// file could not be written ([`FollowError::File`]). The file is
    /// written for a key already taken too, which mends an earlier failure.
    pub fn follow(
        &self,
        new: ClusterKey,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, FollowError> {
        let mut ring = self.ring();
        let fresh = ring.rotate(new.clone(), unix_millis(), switch_in_ms, window_ms)?;
        self.save(&new).map_err(FollowError::File)?;
        Ok(fresh)
    }

    fn save(&self, key: &ClusterKey) -> Result<(), WriteError> {
        match &self.file {
            Some(file) => file.replace(key),
            None => Ok(()),
        }
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
        let keys = KeyStore::new(old.clone(), Some(KeyFile::new(&path)));
        let new = ClusterKey::generate();
        assert!(keys.take(new.clone(), 1000, 60_000).unwrap());
        assert_eq!(
            ClusterKey::parse(&std::fs::read_to_string(&path).unwrap()).unwrap(),
            new
        );
        assert_eq!(keys.newest(), new);
        assert_eq!(keys.accepted(), vec![old, new.clone()]);
        assert!(!keys.take(new, 1000, 60_000).unwrap());

        // A key file that cannot be written: nothing changes.
        let stuck = KeyStore::new(
            ClusterKey::generate(),
            Some(KeyFile::new(dir.path().join("no/such/dir/k"))),
        );
        let before = stuck.newest();
        assert!(matches!(
            stuck.take(ClusterKey::generate(), 0, 60_000),
            Err(TakeError::File { .. })
        ));
        assert_eq!(stuck.newest(), before);
    }

    #[test]
    fn a_follower_takes_the_key_even_when_its_file_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone/cluster.key");
        let old = ClusterKey::generate();
        let keys = KeyStore::new(old.clone(), Some(KeyFile::new(&path)));
        let new = ClusterKey::generate();
        let err = keys.follow(new.clone(), 60_000, 60_000).unwrap_err();
        assert!(matches!(err, FollowError::File(_)), "{err}");
        assert_eq!(keys.newest(), new);
        assert_eq!(keys.sealing(), old, "the old key seals until the switch");

        // Handed the same key again once the directory is back: the file
        // catches up.
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        assert!(!keys.follow(new.clone(), 60_000, 60_000).unwrap());
        assert_eq!(KeyFile::new(&path).load().unwrap(), new);
    }

    #[test]
    fn the_messages_name_the_file() {
        let path = std::path::PathBuf::from("/no/such/dir/k");
        let keys = KeyStore::new(ClusterKey::generate(), Some(KeyFile::new(&path)));
        let err = keys.take(ClusterKey::generate(), 0, 60_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot write the new key to /no/such/dir/k: No such file or directory (os error 2)"
        );
        let err = keys.follow(ClusterKey::generate(), 0, 60_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "took the new key, but cannot write key file /no/such/dir/k: No such file or directory (os error 2); after a restart this node needs admission"
        );
    }
}
