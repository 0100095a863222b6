//! `ombuild image`: the whole build, from recipe to image directory.
//!
//! [`build`] runs the stages below in order, each a function in a
//! submodule of this one that takes the results of the stages before it
//! and returns its own typed result:
//!
//! 1. **resolve** (`lock::resolve` → `Resolved`): read the recipe, pick the
//!    cache and the mirror, read the lockfile; if there is none, it no
//!    longer matches the recipe, or `--update` is given: fetch `InRelease`,
//!    verify its signature, fetch `Packages` checked against `Release`,
//!    resolve, write the lockfile;
//! 2. **fetch** (`debs::fetch` → `Debs`): make sure every locked `.deb` the
//!    image uses (the kernel, initramfs and boot roles) is in the cache with
//!    its SHA256;
//! 3. **unpack** (`debs::unpack` → `Trees`): check each `.deb` again and
//!    unpack it in memory, one tree per role, the roles in parallel (the
//!    system packages not when the cache holds their layer already:
//!    `system::layer_key`, `system::cached`);
//! 4. **kernel** (`kernel::select` → `Kernel`): find `vmlinuz`, select the
//!    recipe's modules with their dependencies, make `modules.dep` and
//!    `modules.alias`;
//! 5. **initramfs** (`initrd::assemble` → `Initrd`): read the programs
//!    (agent, omctl, omboot) and the recipe's extra files, assemble the
//!    initramfs, write the cpio and compress it;
//! 6. **boot kit** (`media::boot_kit` → `ImageDir`): `vmlinuz`,
//!    `initrd.img` and `ipxe/…` from the boot packages;
//! 7. **system layer** (`system::layer` → `OutFile`, when the recipe has
//!    `packages.system`): `system.squashfs`, kept in the cache for the
//!    next build (`system::remember`);
//! 8. **iso** (`media::iso` → `OutFile`): `<name>.iso`, holding the image
//!    directory and its manifest;
//! 9. **manifest** (`ImageDir::manifest` → `Manifest`, then
//!    `ImageDir::write`, in `dir`): `manifest.json` over every file, and
//!    everything written to `--out`.
//!
//! [`Options`] (the flags), [`Error`] (every stage's errors, with the exit
//! codes) and [`Report`] live here. The stages log under this module's
//! target (`info!(target: LOG_TARGET, …)`) so the progress lines keep the
//! prefix they had before the stages were split out.
//!
//! Every output file is written to a temporary name and renamed, and
//! carries no timestamp or random value: the same recipe and lockfile give
//! the same bytes.

mod debs;
mod dir;
mod initrd;
mod kernel;
mod lock;
mod media;
mod system;

use std::path::{Path, PathBuf};
use std::time::Instant;

use tracing::info;

use crate::cpio;
use crate::deb::DebError;
use crate::debian::MetaError;
use crate::fetch::{io_error, FetchError};
use crate::initramfs::InitramfsError;
use crate::iso::IsoError;
use crate::lockfile::LockError;
use crate::manifest::Manifest;
use crate::modules::ModuleError;
use crate::openpgp::SignatureError;
use crate::recipe::RecipeError;
use crate::resolve::ResolveError;

pub use lock::lock_path;
pub use media::IPXE_FILES;

/// The tracing target of every stage's log lines: this module's path.
const LOG_TARGET: &str = "builder::image";

/// The Debian archive keyring installed by `debian-archive-keyring`.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// What to build and how (the CLI flags).
#[derive(Debug, Clone)]
pub struct Options {
    /// The recipe file.
    pub recipe: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// `--mirror`: used when the recipe names none.
    pub mirror: Option<String>,
    /// `--offline`: use the cache only.
    pub offline: bool,
    /// `--update`: resolve afresh and rewrite the lockfile.
    pub update: bool,
    /// `--agent`: the `omnode` binary (default: next to this executable).
    pub agent: Option<PathBuf>,
    /// `--omboot` (default: next to this executable, if there).
    pub omboot: Option<PathBuf>,
    /// `--omctl` (default: next to this executable, if there).
    pub omctl: Option<PathBuf>,
    /// `--keyring`.
    pub keyring: PathBuf,
    /// `--cache` (default: the XDG cache directory).
    pub cache: Option<PathBuf>,
    /// Where apt's configuration lives (`/etc/apt`), for finding the mirror.
    pub apt_dir: PathBuf,
}

impl Options {
    /// Options with the defaults for everything but recipe and output.
    pub fn new(recipe: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Options {
            recipe: recipe.into(),
            out: out.into(),
            mirror: None,
            offline: false,
            update: false,
            agent: None,
            omboot: None,
            omctl: None,
            keyring: PathBuf::from(DEFAULT_KEYRING),
            cache: None,
            apt_dir: PathBuf::from("/etc/apt"),
        }
    }
}

/// Errors from a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recipe is wrong.
    #[error(transparent)]
    Recipe(#[from] RecipeError),
    /// The lockfile is unreadable.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Downloading or the cache failed (network, hash, full disk).
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The InRelease signature did not verify.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// Archive metadata does not parse.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// Dependencies cannot be resolved.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// A package cannot be unpacked.
    #[error(transparent)]
    Deb(#[from] DebError),
    /// Module selection failed.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The initramfs cannot be assembled.
    #[error(transparent)]
    Initramfs(#[from] InitramfsError),
    /// The cpio archive is too large.
    #[error(transparent)]
    Cpio(#[from] cpio::CpioError),
    /// The ISO cannot be written.
    #[error(transparent)]
    Iso(#[from] IsoError),
    /// The system layer's installation failed.
    #[error("installing the system layer: {source}")]
    Install {
        /// The tree refused a link.
        source: crate::tree::TreeError,
    },
    /// The system layer cannot be written.
    #[error(transparent)]
    Squashfs(#[from] crate::squashfs::SquashfsError),
    /// No mirror was given and none is configured for apt.
    #[error("no Debian mirror for suite {suite}: set mirror in the recipe, pass --mirror, or add a source to {apt_dir}")]
    NoMirror {
        /// The suite wanted.
        suite: String,
        /// Where apt sources were looked for.
        apt_dir: String,
    },
    /// No cache directory can be determined.
    #[error("no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache")]
    NoCacheDir,
    /// The keyring cannot be read.
    #[error("cannot read keyring {path}: {source}")]
    Keyring {
        /// The keyring path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Release does not list the Packages index needed.
    #[error("Release of {suite} lists no {what}")]
    NoIndex {
        /// The suite.
        suite: String,
        /// The index wanted.
        what: String,
    },
    /// The Packages index is not valid compressed data.
    #[error("decompressing {what}: {source}")]
    Decompress {
        /// The file.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The kernel package has no single `boot/vmlinuz-*`.
    #[error("kernel package {package} holds {count} boot/vmlinuz-* files, expected one")]
    Kernel {
        /// The kernel package.
        package: String,
        /// How many were found.
        count: usize,
    },
    /// A `packages.exclude` glob matches no file of the initramfs packages
    /// (a typo, or a package that changed).
    #[error("packages.exclude: /{glob} matches no file of the initramfs packages")]
    ExcludeUnused {
        /// The glob.
        glob: String,
    },
    /// A file expected in a Debian package is not there.
    #[error("{path} not found in packages {packages} (add them to packages.boot)")]
    MissingFile {
        /// The file.
        path: String,
        /// The packages searched.
        packages: String,
    },
    /// A program to put into the image cannot be read.
    #[error("cannot read {what} at {path}: {source} (build it, or pass --{what} PATH)")]
    Program {
        /// agent, omctl or omboot.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// An extra file of the recipe cannot be read.
    #[error("recipe file {path}: {source}")]
    ExtraFile {
        /// The file on the host.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl Error {
    /// The process exit code for this error (see `ombuild --help`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Recipe(_) => 3,
            Error::Signature(_) | Error::Fetch(FetchError::HashMismatch { .. }) => 4,
            Error::Fetch(
                FetchError::Http { .. }
                | FetchError::Status { .. }
                | FetchError::Gone { .. }
                | FetchError::NotCached { .. },
            )
            | Error::NoMirror { .. } => 5,
            Error::Fetch(FetchError::DiskFull { .. }) => 6,
            Error::Resolve(_) => 7,
            _ => 1,
        }
    }
}

/// What a build produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The manifest written.
    pub manifest: Manifest,
    /// Uncompressed initramfs size.
    pub cpio_size: u64,
    /// Number of kernel modules in the initramfs.
    pub module_count: usize,
    /// Whether the lockfile was (re)written.
    pub lock_written: bool,
}

/// Build the image: the stages of the module doc, in order.
pub fn build(opts: &Options) -> Result<Report, Error> {
    let t0 = Instant::now();
    let resolved = lock::resolve(opts)?;
    let debs = debs::fetch(&resolved)?;
    let t_fetch = t0.elapsed();
    let layer_key = system::layer_key(&resolved, &debs);
    let reused = layer_key
        .as_deref()
        .and_then(|key| system::cached(&resolved, key));
    let mut trees = debs::unpack(&debs, reused.is_none())?;
    debs::exclude(&mut trees.initramfs, &resolved.recipe.exclude)?;
    let t_unpack = t0.elapsed();
    let kernel = kernel::select(&resolved.recipe, &trees.kernel)?;
    let initrd = initrd::assemble(opts, &resolved, &kernel, &trees.initramfs)?;
    let t_initrd = t0.elapsed();

    let boot = media::BootFiles::new(&trees.boot, &resolved.recipe.boot_packages);
    let mut dir = media::boot_kit(&kernel, &initrd, &boot)?;
    if let Some(layer) = reused {
        dir.push(layer);
    } else {
        let system_tree = std::mem::take(&mut trees.system);
        if let Some(layer) = system::layer(&resolved, system_tree, &trees.system_scripts)? {
            if let Some(key) = &layer_key {
                system::remember(&resolved, key, &layer);
            }
            dir.push(layer);
        }
    }
    let t_system = t0.elapsed();
    // The ISO holds the image directory (its manifest lists everything but
    // the ISO itself) so a head node booted from it can serve the others.
    let inner = dir.manifest(&resolved, &debs, &kernel);
    let iso = media::iso(&resolved, &dir, &inner, &boot)?;
    dir.push(iso);
    let manifest = dir.manifest(&resolved, &debs, &kernel);
    let t_iso = t0.elapsed();

    dir.write(&opts.out, &manifest)?;
    info!(
        out = %opts.out.display(),
        kernel = %kernel.version,
        modules = kernel.modules.len(),
        cpio_bytes = initrd.cpio_size,
        fetch_s = t_fetch.as_secs_f32(),
        unpack_s = (t_unpack - t_fetch).as_secs_f32(),
        initrd_s = (t_initrd - t_unpack).as_secs_f32(),
        system_s = (t_system - t_initrd).as_secs_f32(),
        iso_s = (t_iso - t_system).as_secs_f32(),
        total_s = t0.elapsed().as_secs_f32(),
        "image written"
    );
    Ok(Report {
        manifest,
        cpio_size: initrd.cpio_size,
        module_count: kernel.modules.len(),
        lock_written: resolved.lock_written,
    })
}

/// Write a file through a temporary name in the same directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FetchError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    let res = std::fs::write(&tmp, data).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(path, e));
    }
    Ok(())
}
