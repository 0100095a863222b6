//! `ombuild image`: the whole build, from recipe to image directory.
//!
//! 1. read the recipe and its lockfile; if there is no lockfile, it no
//!    longer matches the recipe, or `--update` is given: fetch `InRelease`,
//!    verify its signature, fetch `Packages` checked against `Release`,
//!    resolve, write the lockfile;
//! 2. make sure every locked `.deb` is in the cache with its SHA256;
//! 3. unpack them in memory (kernel, initramfs and boot packages apart);
//! 4. select kernel modules, assemble the initramfs, write the cpio;
//! 5. write `vmlinuz`, `initrd.img`, `ipxe/…`, `<name>.iso`, `manifest.json`.
//!
//! Every output file is written to a temporary name and renamed, and
//! carries no timestamp or random value: the same recipe and lockfile give
//! the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use contracts::image;
use tracing::info;

use crate::deb::{self, DebError};
use crate::debian::{self, MetaError};
use crate::fetch::{io_error, sha256_hex, FetchError, Fetcher, Want};
use crate::initramfs::{self, InitramfsError, Program};
use crate::iso::{self, BootEntry, BootMedia, IsoError, IsoFile};
use crate::lockfile::{LockError, LockedPackage, Lockfile};
use crate::manifest::{Artifact, Manifest, ManifestPackage};
use crate::modules::{self, ModuleError};
use crate::openpgp::{Keyring, SignatureError};
use crate::recipe::{FileSource, Recipe, RecipeError};
use crate::resolve::{self, ResolveError};
use crate::tree::{Node, Tree};
use crate::{cpio, mirror};

/// The Debian archive keyring installed by `debian-archive-keyring`.
pub const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The boot kit files taken from the `ipxe` package: (path in it, output name).
pub const IPXE_FILES: &[(&str, &str)] = &[
    ("usr/lib/ipxe/undionly.kpxe", image::UNDIONLY_KPXE),
    ("usr/lib/ipxe/snponly.efi", image::SNPONLY_EFI),
    ("usr/lib/ipxe/ipxe.efi", image::IPXE_EFI),
];

const ISOLINUX_BIN: &str = "usr/lib/ISOLINUX/isolinux.bin";
const ISOHDPFX_BIN: &str = "usr/lib/ISOLINUX/isohdpfx.bin";
const LDLINUX_C32: &str = "usr/lib/syslinux/modules/bios/ldlinux.c32";

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

fn effective_epoch(recipe: &Recipe) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(recipe.epoch)
}

/// The lockfile path for a recipe: `x.toml` → `x.lock`.
pub fn lock_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

fn sanitize(url: &str) -> String {
    url.trim_start_matches("http://")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Build the image.
pub fn build(opts: &Options) -> Result<Report, Error> {
    let t0 = Instant::now();
    let recipe = Recipe::load(&opts.recipe)?;
    let epoch = effective_epoch(&recipe);
    let arch = recipe.architecture.debian();
    let cache = match &opts.cache {
        Some(c) => c.clone(),
        None => crate::fetch::default_cache_dir().ok_or(Error::NoCacheDir)?,
    };
    let mirror_url = recipe
        .mirror
        .clone()
        .or_else(|| opts.mirror.clone())
        .or_else(|| mirror::pick(&mirror::host_sources(&opts.apt_dir), &recipe.suite));
    if mirror_url.is_none() && !opts.offline {
        return Err(Error::NoMirror {
            suite: recipe.suite.clone(),
            apt_dir: opts.apt_dir.display().to_string(),
        });
    }
    let fetcher = Fetcher::new(mirror_url.clone(), opts.offline);
    let roots = recipe.roots();

    let lock_file = lock_path(&opts.recipe);
    let existing = Lockfile::read(&lock_file)?;
    let (lock, lock_written) = match existing {
        Some(l) if !opts.update && l.matches(&recipe.suite, arch, &roots, &recipe.prune) => {
            (l, false)
        }
        other => {
            if other.is_some() && !opts.update {
                info!(lockfile = %lock_file.display(), "lockfile does not match the recipe, resolving again");
            }
            let index_dir = cache
                .join("dists")
                .join(sanitize(mirror_url.as_deref().unwrap_or("offline")))
                .join(&recipe.suite);
            let packages = load_index(&fetcher, opts, &recipe, &index_dir)?;
            let index = resolve::Index::new(packages);
            let sel = resolve::resolve(&index, &roots, &recipe.prune)?;
            let lock = Lockfile::from_selection(&recipe.suite, arch, &roots, &recipe.prune, &sel);
            write_atomic(&lock_file, lock.to_toml().as_bytes())?;
            info!(lockfile = %lock_file.display(), packages = lock.packages.len(), "lockfile written");
            (lock, true)
        }
    };

    // Which locked packages play which part.
    let kernel_set = lock.closure(std::slice::from_ref(&recipe.kernel_package));
    let initramfs_set = lock.closure(&recipe.initramfs_packages);
    let boot_set = lock.closure(&recipe.boot_packages);
    let wanted: Vec<&LockedPackage> = lock
        .packages
        .iter()
        .filter(|p| {
            kernel_set.contains(&p.name)
                || initramfs_set.contains(&p.name)
                || boot_set.contains(&p.name)
        })
        .collect();
    let debs_dir = cache.join("debs");
    let deb_path =
        |p: &LockedPackage| debs_dir.join(p.filename.rsplit('/').next().unwrap_or(&p.filename));
    let wants: Vec<Want> = wanted
        .iter()
        .map(|p| Want {
            what: format!("{} {}", p.name, p.version),
            remote: p.filename.clone(),
            dest: deb_path(p),
            size: p.size,
            sha256: p.sha256.clone(),
        })
        .collect();
    fetcher.ensure_all(&wants)?;
    let t_fetch = t0.elapsed();

    // Unpack in parallel: the kernel dominates, the rest are small.
    let unpack =
        |set: &BTreeSet<String>, keep: &(dyn Fn(&str) -> bool + Sync)| -> Result<Tree, Error> {
            let mut tree = Tree::new();
            for p in wanted.iter().filter(|p| set.contains(&p.name)) {
                let path = deb_path(p);
                let data = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
                let actual = sha256_hex(&data);
                if actual != p.sha256 {
                    return Err(FetchError::HashMismatch {
                        what: format!("{} {} (cached {})", p.name, p.version, path.display()),
                        expected: p.sha256.clone(),
                        actual,
                    }
                    .into());
                }
                deb::unpack_into(&p.name, &data, &mut tree, keep)?;
            }
            Ok(tree)
        };
    let no_docs = |p: &str| {
        ![
            "usr/share/doc/",
            "usr/share/man/",
            "usr/share/info/",
            "usr/share/lintian/",
            "usr/share/locale/",
            "usr/share/bug/",
        ]
        .iter()
        .any(|d| p.starts_with(d) || p == &d[..d.len() - 1])
    };
    let kernel_keep =
        |p: &str| p.starts_with("boot/vmlinuz-") || p == "boot" || p.starts_with("lib/modules");
    let (kernel_tree, initramfs_tree, boot_tree) = std::thread::scope(|s| {
        let k = s.spawn(|| unpack(&kernel_set, &kernel_keep));
        let i = s.spawn(|| unpack(&initramfs_set, &no_docs));
        let b = unpack(&boot_set, &no_docs);
        (
            k.join().expect("unpack thread"),
            i.join().expect("unpack thread"),
            b,
        )
    });
    let (kernel_tree, initramfs_tree, boot_tree) = (kernel_tree?, initramfs_tree?, boot_tree?);
    let t_unpack = t0.elapsed();

    // Kernel and modules.
    let vmlinuz: Vec<(&str, Arc<Vec<u8>>)> = kernel_tree
        .under("boot")
        .filter_map(|(p, e)| match &e.node {
            Node::File(d) if p.starts_with("boot/vmlinuz-") => Some((p, d.clone())),
            _ => None,
        })
        .collect();
    let [(vmlinuz_path, vmlinuz)] = vmlinuz.as_slice() else {
        return Err(Error::Kernel {
            package: recipe.kernel_package.clone(),
            count: vmlinuz.len(),
        });
    };
    let kver = vmlinuz_path.trim_start_matches("boot/vmlinuz-").to_string();
    let mdir = format!("lib/modules/{kver}");
    let available: BTreeMap<String, &[u8]> = kernel_tree
        .under(&mdir)
        .filter_map(|(p, e)| match &e.node {
            Node::File(d) if p.ends_with(".ko") => {
                Some((p[mdir.len() + 1..].to_string(), d.as_slice()))
            }
            _ => None,
        })
        .collect();
    // Files are looked up through symlinks (ipxe.efi links to /boot/ipxe.efi).
    let file_of = |tree: &Tree, p: &str| match tree.resolve(p) {
        Some((
            _,
            crate::tree::Entry {
                node: Node::File(d),
                ..
            },
        )) => Some(d.clone()),
        _ => None,
    };
    let builtin_text =
        file_of(&kernel_tree, &format!("{mdir}/modules.builtin")).unwrap_or_default();
    let builtin = modules::parse_builtin(&String::from_utf8_lossy(&builtin_text));
    let mut patterns: Vec<String> = Vec::new();
    for set in &recipe.module_sets {
        let (_, pats) = modules::SETS
            .iter()
            .find(|(n, _)| n == set)
            .expect("validated by the recipe");
        patterns.extend(pats.iter().map(|p| p.to_string()));
    }
    patterns.extend(recipe.modules.iter().cloned());
    let selection = modules::select(&available, &patterns, &builtin)?;
    let module_files: Vec<(String, Arc<Vec<u8>>)> = selection
        .modules
        .iter()
        .map(|p| {
            (
                p.clone(),
                file_of(&kernel_tree, &format!("{mdir}/{p}")).expect("selected from this tree"),
            )
        })
        .collect();
    let mut module_indexes = vec![
        (
            "modules.dep".to_string(),
            selection.dep.clone().into_bytes(),
        ),
        (
            "modules.alias".to_string(),
            selection.alias.clone().into_bytes(),
        ),
    ];
    for name in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        if let Some(d) = file_of(&kernel_tree, &format!("{mdir}/{name}")) {
            module_indexes.push((name.to_string(), d.as_ref().clone()));
        }
    }

    // Programs and extra files.
    let here = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let program = |what: &'static str,
                   given: &Option<PathBuf>,
                   name: &str,
                   required: bool|
     -> Result<Option<Program>, Error> {
        let path = match (given, &here) {
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
                info!(program = what, path = %path.display(), "not found, leaving it out of the image");
                Ok(None)
            }
            Err(source) => Err(Error::Program { what, path, source }),
        }
    };
    let agent = program("agent", &opts.agent, "omnode", true)?.expect("required");
    let omctl = program("omctl", &opts.omctl, "omctl", false)?;
    let omboot = program("omboot", &opts.omboot, "omboot", false)?;
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

    let tree = initramfs::assemble(initramfs::Parts {
        packages: &initramfs_tree,
        kver: &kver,
        modules: module_files,
        module_indexes,
        agent,
        omctl,
        omboot,
        extra,
        multiarch: recipe.architecture.multiarch(),
        epoch,
    })?;
    let archive = cpio::write_newc(&tree, epoch)?;
    let initrd = initramfs::compress(&archive, recipe.compression)?;
    let t_initrd = t0.elapsed();

    // Outputs.
    let mut outputs: Vec<(String, Arc<Vec<u8>>)> = vec![
        (image::VMLINUZ.to_string(), vmlinuz.clone()),
        (image::INITRD.to_string(), Arc::new(initrd)),
    ];
    let boot_names = || recipe.boot_packages.join(", ");
    let boot_file = |p: &str| {
        file_of(&boot_tree, p).ok_or_else(|| Error::MissingFile {
            path: format!("/{p}"),
            packages: boot_names(),
        })
    };
    for (src, dst) in IPXE_FILES {
        outputs.push((dst.to_string(), boot_file(src)?));
    }
    let packages: Vec<ManifestPackage> = wanted
        .iter()
        .map(|p| ManifestPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            sha256: p.sha256.clone(),
        })
        .collect();
    let artifacts = |outs: &[(String, Arc<Vec<u8>>)]| {
        let mut a: Vec<Artifact> = outs
            .iter()
            .map(|(p, d)| Artifact {
                path: p.clone(),
                size: d.len() as u64,
                sha256: sha256_hex(d),
            })
            .collect();
        a.sort_by(|x, y| x.path.cmp(&y.path));
        a
    };
    let mut manifest = Manifest {
        name: recipe.name.clone(),
        suite: recipe.suite.clone(),
        architecture: arch.to_string(),
        kernel_version: kver.clone(),
        kernel_cmdline: recipe.cmdline.clone(),
        packages,
        artifacts: artifacts(&outputs),
    };

    // The ISO holds the image directory (its manifest lists everything but
    // the ISO itself) so a head node booted from it can serve the others.
    let iso_name = format!("{}.iso", recipe.name);
    let inner_manifest = manifest.to_json().into_bytes();
    let mut iso_files: Vec<IsoFile<'_>> = outputs
        .iter()
        .map(|(p, d)| IsoFile::new(p.clone(), d.as_slice()))
        .collect();
    iso_files.push(IsoFile::new(image::MANIFEST, &inner_manifest));
    let (isolinux_bin, isohdpfx, ldlinux, sdboot) = (
        boot_file(ISOLINUX_BIN)?,
        boot_file(ISOHDPFX_BIN)?,
        boot_file(LDLINUX_C32)?,
        boot_file(&format!(
            "usr/lib/systemd/boot/efi/systemd-boot{}.efi",
            recipe.architecture.efi_suffix()
        ))?,
    );
    let media = BootMedia {
        volume_id: format!("OMCLUSTER_{}", recipe.name)
            .to_ascii_uppercase()
            .replace('-', "_"),
        epoch,
        files: iso_files,
        kernel: image::VMLINUZ.into(),
        initrd: image::INITRD.into(),
        isolinux_bin: &isolinux_bin,
        ldlinux_c32: &ldlinux,
        isohdpfx: &isohdpfx,
        systemd_boot_efi: &sdboot,
        entries: vec![
            BootEntry {
                label: "node".into(),
                title: "omcluster compute node".into(),
                cmdline: recipe.cmdline.clone(),
            },
            BootEntry {
                label: "head".into(),
                title: "omcluster head node".into(),
                cmdline: format!("{} om.role=head", recipe.cmdline),
            },
        ],
    };
    let mut iso_bytes = std::io::Cursor::new(Vec::new());
    iso::write_hybrid_iso(&media, &mut iso_bytes)?;
    outputs.push((iso_name, Arc::new(iso_bytes.into_inner())));
    manifest.artifacts = artifacts(&outputs);
    let t_iso = t0.elapsed();

    for (path, data) in &outputs {
        write_atomic(&opts.out.join(path), data)?;
    }
    write_atomic(
        &opts.out.join(image::MANIFEST),
        manifest.to_json().as_bytes(),
    )?;
    info!(
        out = %opts.out.display(),
        kernel = %kver,
        modules = selection.modules.len(),
        cpio_bytes = archive.len(),
        fetch_s = t_fetch.as_secs_f32(),
        unpack_s = (t_unpack - t_fetch).as_secs_f32(),
        initrd_s = (t_initrd - t_unpack).as_secs_f32(),
        iso_s = (t_iso - t_initrd).as_secs_f32(),
        total_s = t0.elapsed().as_secs_f32(),
        "image written"
    );
    Ok(Report {
        manifest,
        cpio_size: archive.len() as u64,
        module_count: selection.modules.len(),
        lock_written,
    })
}

/// Fetch (or, offline, read from the cache) and verify `InRelease`, then the
/// `Packages` index of each component, and parse them.
fn load_index(
    fetcher: &Fetcher,
    opts: &Options,
    recipe: &Recipe,
    dir: &Path,
) -> Result<Vec<debian::Package>, Error> {
    let keyring_bytes = std::fs::read(&opts.keyring).map_err(|source| Error::Keyring {
        path: opts.keyring.clone(),
        source,
    })?;
    let keyring = Keyring::parse(&opts.keyring.display().to_string(), &keyring_bytes)?;
    let suite = &recipe.suite;
    let inrelease_path = dir.join("InRelease");
    let inrelease = if fetcher.offline() {
        std::fs::read(&inrelease_path).map_err(|_| FetchError::NotCached {
            what: format!("InRelease of {suite}"),
            path: inrelease_path.clone(),
        })?
    } else {
        let b = fetcher.get_bytes(
            &format!("dists/{suite}/InRelease"),
            "InRelease",
            &inrelease_path,
        )?;
        write_atomic(&inrelease_path, &b)?;
        b
    };
    let what = format!("InRelease of {suite}");
    let release_text = keyring.verify_cleartext(&what, &String::from_utf8_lossy(&inrelease))?;
    info!(suite = %suite, "InRelease signature verified");
    let release = debian::parse_release(&release_text)?;
    let arch = recipe.architecture.debian();
    let mut packages = Vec::new();
    for comp in &recipe.components {
        let (name, entry) = ["xz", "gz"]
            .iter()
            .map(|ext| format!("{comp}/binary-{arch}/Packages.{ext}"))
            .find_map(|n| release.sha256.get(&n).cloned().map(|e| (n, e)))
            .ok_or_else(|| Error::NoIndex {
                suite: suite.clone(),
                what: format!("{comp}/binary-{arch}/Packages"),
            })?;
        let path = dir.join(&name);
        let want = Want {
            what: format!("{name} of {suite}"),
            remote: format!("dists/{suite}/{name}"),
            dest: path.clone(),
            size: entry.size,
            sha256: entry.sha256.clone(),
        };
        fetcher.ensure_index(&want)?;
        let data = std::fs::read(&path).map_err(|e| io_error(&path, e))?;
        let mut text = String::new();
        let res = if name.ends_with(".xz") {
            liblzma::read::XzDecoder::new(data.as_slice()).read_to_string(&mut text)
        } else {
            flate2::read::GzDecoder::new(data.as_slice()).read_to_string(&mut text)
        };
        res.map_err(|source| Error::Decompress {
            what: name.clone(),
            source,
        })?;
        packages.extend(debian::parse_packages(&text)?);
    }
    info!(packages = packages.len(), "package index loaded");
    Ok(packages)
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
