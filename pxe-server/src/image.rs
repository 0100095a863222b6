//! The image directory written by `ombuild image --out DIR` and served by
//! `omboot serve --images DIR` (contract in ARCHITECTURE.md):
//!
//! ```text
//! DIR/vmlinuz  DIR/initrd.img  DIR/ipxe/undionly.kpxe  DIR/ipxe/snponly.efi
//! DIR/ipxe/ipxe.efi (optional)  DIR/manifest.json ("kernel_cmdline", …)
//! ```
//!
//! The paths and [`Manifest`] are the contract types of
//! [`contracts::image`].
//!
//! [`ImageDir::open`] checks all of it up front so `omboot serve` refuses to
//! start with an error naming every missing piece, instead of failing when the
//! first node boots.

use std::path::{Path, PathBuf};

use contracts::cmdline::KernelCmdline;
use contracts::image::{self, Manifest};

/// Files an image directory must hold, relative to it.
pub const REQUIRED_FILES: [&str; 5] = [
    image::VMLINUZ,
    image::INITRD,
    image::UNDIONLY_KPXE,
    image::SNPONLY_EFI,
    image::MANIFEST,
];

/// Why an image directory cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The directory does not exist or cannot be resolved.
    #[error("images dir {path}: {source}")]
    Dir {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The path is not a directory.
    #[error("images dir {0} is not a directory")]
    NotADirectory(PathBuf),
    /// Required files are missing (or are not regular files).
    #[error("images dir {dir} is missing {}", missing.join(", "))]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// What is missing, relative to `dir`.
        missing: Vec<String>,
    },
    /// `manifest.json` cannot be read.
    #[error("{path}: {source}")]
    ManifestRead {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `manifest.json` is not valid JSON or lacks `kernel_cmdline`.
    #[error("{path}: {source}")]
    ManifestParse {
        /// The manifest path.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// A validated image directory.
#[derive(Clone, Debug)]
pub struct ImageDir {
    root: PathBuf,
    manifest: Manifest,
    cmdline: KernelCmdline,
}

impl ImageDir {
    /// Validates the directory at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<ImageDir, ImageError> {
        let path = path.as_ref();
        let root = std::fs::canonicalize(path).map_err(|source| ImageError::Dir {
            path: path.to_path_buf(),
            source,
        })?;
        if !root.is_dir() {
            return Err(ImageError::NotADirectory(path.to_path_buf()));
        }
        let missing: Vec<String> = REQUIRED_FILES
            .iter()
            .filter(|f| !root.join(f).is_file())
            .map(|f| f.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ImageError::Missing {
                dir: path.to_path_buf(),
                missing,
            });
        }
        let mpath = root.join(image::MANIFEST);
        let text = std::fs::read(&mpath).map_err(|source| ImageError::ManifestRead {
            path: mpath.clone(),
            source,
        })?;
        let manifest = Manifest::from_json(&text).map_err(|source| ImageError::ManifestParse {
            path: mpath,
            source,
        })?;
        // Passed on as written: a parameter this omboot cannot read is the
        // node's to report.
        let (cmdline, _) = KernelCmdline::parse_lossy(&manifest.kernel_cmdline);
        Ok(ImageDir {
            root,
            manifest,
            cmdline,
        })
    }

    /// The canonical directory: the TFTP root and the HTTP static root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The image's default kernel command line, as written.
    pub fn kernel_cmdline(&self) -> &str {
        &self.manifest.kernel_cmdline
    }

    /// The image's default kernel command line, read.
    pub fn cmdline(&self) -> &KernelCmdline {
        &self.cmdline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn populate(dir: &Path, skip: &[&str], manifest: &str) {
        for f in REQUIRED_FILES {
            if skip.contains(&f) {
                continue;
            }
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, if f == image::MANIFEST { manifest } else { "x" }).unwrap();
        }
    }

    #[test]
    fn valid_dir_opens() {
        let d = tempfile::tempdir().unwrap();
        populate(
            d.path(),
            &[],
            r#"{"kernel_cmdline":"quiet om.role=node","packages":[],"kernel_version":"6.1"}"#,
        );
        let img = ImageDir::open(d.path()).unwrap();
        assert_eq!(img.kernel_cmdline(), "quiet om.role=node");
        assert_eq!(img.manifest().kernel_version, "6.1");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        populate(d.path(), &["vmlinuz", "ipxe/snponly.efi"], "{}");
        let e = ImageDir::open(d.path()).unwrap_err().to_string();
        assert!(e.ends_with("is missing vmlinuz, ipxe/snponly.efi"), "{e}");

        populate(d.path(), &[], r#"{"packages":[]}"#);
        let e = ImageDir::open(d.path()).unwrap_err().to_string();
        assert!(
            e.contains("manifest.json") && e.contains("missing field `kernel_cmdline`"),
            "{e}"
        );

        let e = ImageDir::open(d.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("images dir ") && e.contains("nope"), "{e}");

        let e = ImageDir::open(d.path().join("vmlinuz"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("is not a directory"), "{e}");
    }
}
