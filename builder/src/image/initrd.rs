//! Stage **initramfs**: the programs, the recipe's extra files, the kernel
//! modules and the initramfs packages, assembled by [`initramfs::assemble`]
//! into one tree, written as a newc cpio and compressed.
//!
//! The agent (`omnode`) is required; `omctl` and `omboot` are left out when
//! they are not next to `ombuild` and no flag names them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::info;

use super::kernel::Kernel;
use super::lock::Resolved;
use super::{Error, Options, LOG_TARGET};
use crate::cpio;
use crate::initramfs::{self, Program};
use crate::recipe::{FileSource, Recipe};
use crate::tree::Tree;

/// What the initramfs stage leaves.
pub(super) struct Initrd {
    /// The compressed archive (`initrd.img`).
    pub(super) data: Arc<Vec<u8>>,
    /// The size of the uncompressed cpio archive.
    pub(super) cpio_size: u64,
}

/// Read the programs and extra files and build `initrd.img` from them, the
/// kernel's modules and the initramfs packages' files.
pub(super) fn assemble(
    opts: &Options,
    resolved: &Resolved,
    kernel: &Kernel,
    packages: &Tree,
) -> Result<Initrd, Error> {
    let recipe = &resolved.recipe;
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let here = here.as_deref();
    let agent = program(here, "agent", &opts.agent, "omnode", true)?.expect("required");
    let omctl = program(here, "omctl", &opts.omctl, "omctl", false)?;
    let omboot = program(here, "omboot", &opts.omboot, "omboot", false)?;
    let extra = extra_files(recipe)?;

    let tree = initramfs::assemble(initramfs::Parts {
        packages,
        kver: &kernel.version,
        modules: kernel.modules.clone(),
        module_indexes: kernel.indexes.clone(),
        agent,
        omctl,
        omboot,
        extra,
        multiarch: recipe.architecture.multiarch(),
        epoch: resolved.epoch,
    })?;
    let archive = cpio::write_newc(&tree, resolved.epoch)?;
    let data = initramfs::compress(&archive, recipe.compression)?;
    Ok(Initrd {
        data: Arc::new(data),
        cpio_size: archive.len() as u64,
    })
}

/// Read a program for the image: the path `given` by its flag, else `name`
/// next to this executable. An optional one that is not there is left out.
fn program(
    here: Option<&Path>,
    what: &'static str,
    given: &Option<PathBuf>,
    name: &str,
    required: bool,
) -> Result<Option<Program>, Error> {
    let path = match (given, here) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join(name),
        (None, None) => PathBuf::from(name),
    };
    match std::fs::read(&path) {
        Ok(data) => Ok(Some(Program {
            source: path.display().to_string(),
            data,
        })),
        Err(e) if !required && given.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            info!(target: LOG_TARGET, program = what, path = %path.display(), "not found, leaving it out of the image");
            Ok(None)
        }
        Err(source) => Err(Error::Program { what, path, source }),
    }
}

/// The recipe's extra files: (absolute path, contents, mode).
fn extra_files(recipe: &Recipe) -> Result<Vec<(String, Vec<u8>, u32)>, Error> {
    let mut extra = Vec::new();
    for f in &recipe.files {
        let data = match &f.contents {
            FileSource::Text(t) => t.clone().into_bytes(),
            FileSource::Source(p) => {
                let full = recipe.dir.join(p);
                std::fs::read(&full).map_err(|source| Error::ExtraFile {
                    path: full.clone(),
                    source,
                })?
            }
        };
        extra.push((f.path.clone(), data, f.mode));
    }
    Ok(extra)
}
