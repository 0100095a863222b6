//! The agent's key file: `omnode keygen` writes it, `omnode agent
//! --key-file` reads it. The text format and its one parse rule are
//! [`contracts::key`]'s; this module only adds the file I/O (mode 0600;
//! [`save`] never overwrites an existing key, [`install`], for `omctl
//! join`, replaces one whole).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use contracts::key::{ClusterKey, KeyError};

/// Reading or writing a key file failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not hold a key.
    #[error(transparent)]
    Parse(#[from] KeyError),
}

/// Reads a key file.
pub fn load(path: &Path) -> Result<ClusterKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(ClusterKey::parse(&text)?)
}

/// Writes a new key file with mode 0600; refuses to overwrite one.
pub fn save(key: &ClusterKey, path: &Path) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(key.to_text().as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Writes `key` to `path` with mode 0600, replacing a file there whole
/// (written to a temporary file in the same directory, synced, renamed), and
/// creating the directory.
pub fn install(key: &ClusterKey, path: &Path) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    file.write_all(key.to_text().as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_is_private_and_does_not_overwrite() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = ClusterKey::generate();
        save(&key, &path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).unwrap(), key);
        assert!(matches!(save(&key, &path), Err(KeyFileError::Write { .. })));
    }
}
