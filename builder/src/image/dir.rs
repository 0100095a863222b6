//! Stage **manifest**: the image directory's files, the `manifest.json`
//! describing them, and writing both to `--out`.

use std::path::Path;
use std::sync::Arc;

use contracts::image;

use super::debs::Debs;
use super::kernel::Kernel;
use super::lock::Resolved;
use super::{write_atomic, Error};
use crate::fetch::sha256_hex;
use crate::manifest::{Artifact, Manifest, ManifestPackage};

/// One file of the image directory.
pub(super) struct OutFile {
    /// Its path in the directory (`ipxe/ipxe.efi`).
    pub(super) path: String,
    /// Its contents.
    pub(super) data: Arc<Vec<u8>>,
}

impl OutFile {
    /// The file `path` holding `data`.
    pub(super) fn new(path: impl Into<String>, data: Arc<Vec<u8>>) -> Self {
        OutFile {
            path: path.into(),
            data,
        }
    }
}

/// The files of the image directory, in the order they were made.
#[derive(Default)]
pub(super) struct ImageDir {
    /// The files so far.
    files: Vec<OutFile>,
}

impl ImageDir {
    /// Add a file.
    pub(super) fn push(&mut self, file: OutFile) {
        self.files.push(file);
    }

    /// The files so far.
    pub(super) fn files(&self) -> &[OutFile] {
        &self.files
    }

    /// The manifest of the files so far: the image, its kernel, the packages
    /// it was built from, and every file's size and SHA256 (sorted by path).
    pub(super) fn manifest(&self, resolved: &Resolved, debs: &Debs, kernel: &Kernel) -> Manifest {
        let recipe = &resolved.recipe;
        let packages = debs
            .packages
            .iter()
            .map(|p| ManifestPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                sha256: p.sha256.clone(),
            })
            .collect();
        let mut artifacts: Vec<Artifact> = self
            .files
            .iter()
            .map(|f| Artifact {
                path: f.path.clone(),
                size: f.data.len() as u64,
                sha256: sha256_hex(&f.data),
            })
            .collect();
        artifacts.sort_by(|x, y| x.path.cmp(&y.path));
        Manifest {
            name: recipe.name.clone(),
            suite: recipe.suite.clone(),
            architecture: recipe.architecture.debian().to_string(),
            kernel_version: kernel.version.clone(),
            kernel_cmdline: recipe.cmdline.clone(),
            packages,
            artifacts,
        }
    }

    /// Write every file, then `manifest.json`, below `out`.
    pub(super) fn write(&self, out: &Path, manifest: &Manifest) -> Result<(), Error> {
        for f in &self.files {
            write_atomic(&out.join(&f.path), &f.data)?;
        }
        write_atomic(&out.join(image::MANIFEST), manifest.to_json().as_bytes())?;
        Ok(())
    }
}
