//! The key file: one [`ClusterKey`] as [`ClusterKey::to_text`], mode 0600.
//!
//! Every program that keeps the key on disk goes through [`KeyFile`]:
//! `omnode keygen` makes one ([`KeyFile::create`], which never overwrites a
//! key), `omboot` makes its own in its state directory the same way, and
//! whoever is handed a key later (`omnode init` after admission, `omctl
//! join`, a rotation) replaces the file whole ([`KeyFile::replace`]), so a
//! crash leaves the old key or the new one, never half of either. The text
//! format and its one parse rule are [`contracts::key`]'s.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use contracts::key::{ClusterKey, KeyError};

/// The mode of every key file, and of the temporary file it is written
/// through: the key opens the whole cluster.
const MODE: u32 = 0o600;

/// Reading a key file failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error(transparent)]
    Parse(#[from] KeyError),
}

/// Writing a key file failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write key file {path}: {source}")]
pub struct WriteError {
    /// The key file (not the temporary file, should that be what failed).
    pub path: PathBuf,
    /// The I/O error; [`std::io::ErrorKind::AlreadyExists`] when
    /// [`KeyFile::create`] found a key there.
    pub source: std::io::Error,
}

/// Where a key is kept, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    path: PathBuf,
    create_dirs: bool,
}

impl KeyFile {
    /// The key file at `path`; writing it needs its directory to exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            create_dirs: false,
        }
    }

    /// The same file, whose directory (and its parents) each write makes
    /// first when missing: for places nothing else creates, such as
    /// `/etc/omcluster` on a workstation or `omboot`'s state directory.
    pub fn creating_dirs(self) -> Self {
        Self {
            create_dirs: true,
            ..self
        }
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the key, with the one parse rule of [`ClusterKey::parse`].
    pub fn load(&self) -> Result<ClusterKey, LoadError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| LoadError::Read {
            path: self.path.clone(),
            source,
        })?;
        Ok(ClusterKey::parse(&text)?)
    }

    /// Writes `key` to a new file; a file already there is left alone and
    /// the error's kind is [`std::io::ErrorKind::AlreadyExists`]. The file
    /// and its directory entry are synced before this returns.
    pub fn create(&self, key: &ClusterKey) -> Result<(), WriteError> {
        self.make_dirs()?;
        let file = open_new(&self.path).map_err(|e| self.error(e))?;
        // Only a file this call made is removed: it holds part of a key at
        // most, and would stop the next start from reading one.
        write_synced(file, key)
            .inspect_err(|_| {
                let _ = std::fs::remove_file(&self.path);
            })
            .map_err(|e| self.error(e))?;
        self.sync_dir()
    }

    /// Writes `key` in place of whatever the file holds: through a
    /// temporary file in the same directory (mode 0600, written, synced),
    /// renamed over the key file, then the directory synced. Readers see
    /// the old key or the new one, before and after a crash.
    pub fn replace(&self, key: &ClusterKey) -> Result<(), WriteError> {
        self.make_dirs()?;
        let tmp = self.temp_path();
        // A leftover of a replace that was interrupted: ours to reuse.
        let _ = std::fs::remove_file(&tmp);
        let written = open_new(&tmp)
            .and_then(|file| write_synced(file, key))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            // No copy of a key is left lying around under another name.
            let _ = std::fs::remove_file(&tmp);
            return Err(self.error(e));
        }
        self.sync_dir()
    }

    /// The temporary file [`replace`](Self::replace) writes: the key
    /// file's name with `.tmp` added, so that it is in the same file system
    /// (for the rename) and can never be the key file itself.
    fn temp_path(&self) -> PathBuf {
        let mut name = self.path.file_name().unwrap_or_default().to_owned();
        name.push(".tmp");
        self.path.with_file_name(name)
    }

    /// The directory holding the file (`.` for a bare file name).
    fn dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    fn make_dirs(&self) -> Result<(), WriteError> {
        if self.create_dirs {
            std::fs::create_dir_all(self.dir()).map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Makes the new directory entry (a created or renamed file) survive a
    /// crash, not only the bytes in the file.
    fn sync_dir(&self) -> Result<(), WriteError> {
        File::open(self.dir())
            .and_then(|d| d.sync_all())
            .map_err(|e| self.error(e))
    }

    fn error(&self, source: std::io::Error) -> WriteError {
        WriteError {
            path: self.path.clone(),
            source,
        }
    }
}

/// A file made by this call (never an existing one) with mode 0600.
fn open_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(MODE)
        .open(path)
}

/// Writes `key` and syncs the file. The mode is set again because the
/// umask may have taken bits from the one asked at creation.
fn write_synced(mut file: File, key: &ClusterKey) -> std::io::Result<()> {
    file.set_permissions(Permissions::from_mode(MODE))?;
    file.write_all(key.to_text().as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn create_is_private_and_does_not_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path().join("k"));
        let key = ClusterKey::generate();
        file.create(&key).unwrap();
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(file.load().unwrap(), key);
        let err = file.create(&ClusterKey::generate()).unwrap_err();
        assert_eq!(err.source.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(
            err.to_string().starts_with(&format!(
                "cannot write key file {}: ",
                file.path().display()
            )),
            "{err}"
        );
        assert_eq!(file.load().unwrap(), key, "the first key is kept");
    }

    #[test]
    fn create_needs_the_directory_unless_asked_to_make_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/cluster.key");
        let key = ClusterKey::generate();
        assert!(KeyFile::new(&path).create(&key).is_err());
        KeyFile::new(&path).creating_dirs().create(&key).unwrap();
        assert_eq!(KeyFile::new(&path).load().unwrap(), key);
    }

    #[test]
    fn replace_swaps_the_whole_file_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.key");
        // An old file of another mode, and a temporary file left by a
        // replace that was interrupted.
        std::fs::write(&path, "old\n").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        std::fs::write(dir.path().join("cluster.key.tmp"), "half").unwrap();
        let file = KeyFile::new(&path);
        let key = ClusterKey::generate();
        file.replace(&key).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), key.to_text());
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["cluster.key"]);
    }

    #[test]
    fn replace_makes_the_directory_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/omcluster.key");
        let key = ClusterKey::generate();
        let err = KeyFile::new(&path).replace(&key).unwrap_err();
        assert_eq!(err.path, path, "the error names the key file");
        assert!(!dir.path().join("run").exists());
        KeyFile::new(&path).creating_dirs().replace(&key).unwrap();
        assert_eq!(KeyFile::new(&path).load().unwrap(), key);
    }

    #[test]
    fn a_key_file_whose_name_ends_in_tmp_is_replaced_too() {
        let dir = tempfile::tempdir().unwrap();
        let file = KeyFile::new(dir.path().join("k.tmp"));
        file.create(&ClusterKey::generate()).unwrap();
        let key = ClusterKey::generate();
        file.replace(&key).unwrap();
        assert_eq!(file.load().unwrap(), key);
    }

    #[test]
    fn load_says_which_file_and_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let missing = KeyFile::new(dir.path().join("none"));
        assert!(matches!(missing.load(), Err(LoadError::Read { .. })));
        let path = dir.path().join("bad");
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(
            KeyFile::new(&path).load(),
            Err(LoadError::Parse(_))
        ));
    }
}
