//! Stages **fetch** and **unpack**: the locked `.deb`s the image uses, into
//! the cache and then into memory.
//!
//! A package plays one or more of four roles, each the dependency closure
//! of recipe roots: the kernel (`kernel.package`), the initramfs
//! (`packages.initramfs`), the boot media (`packages.boot`) and the system
//! layer (`packages.system`, often none). Only those packages are fetched;
//! each role is unpacked into its own [`Tree`].

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::lock::Resolved;
use super::Error;
use crate::deb;
use crate::fetch::{io_error, sha256_hex, FetchError, Want};
use crate::lockfile::LockedPackage;
use crate::tree::Tree;

/// What the fetch stage leaves: the packages the image uses, in the cache.
pub(super) struct Debs {
    /// The locked packages of some role, in lockfile order.
    pub(super) packages: Vec<LockedPackage>,
    /// The cache directory they are in (`<cache>/debs`).
    dir: PathBuf,
    /// The names in the kernel package's closure.
    kernel: BTreeSet<String>,
    /// The names in the initramfs packages' closure.
    initramfs: BTreeSet<String>,
    /// The names in the boot packages' closure.
    boot: BTreeSet<String>,
    /// The names in the system packages' closure.
    system: BTreeSet<String>,
}

impl Debs {
    /// The system layer's packages, in lockfile order.
    pub(super) fn system_packages(&self) -> impl Iterator<Item = &LockedPackage> {
        self.packages
            .iter()
            .filter(|p| self.system.contains(&p.name))
    }

    /// Where a package's `.deb` is in the cache.
    fn path(&self, p: &LockedPackage) -> PathBuf {
        self.dir
            .join(p.filename.rsplit('/').next().unwrap_or(&p.filename))
    }
}

/// What the unpack stage leaves: the files of each role's packages.
pub(super) struct Trees {
    /// `boot/vmlinuz-*` and `lib/modules/…` of the kernel packages.
    pub(super) kernel: Tree,
    /// The initramfs packages, without documentation.
    pub(super) initramfs: Tree,
    /// The boot packages (iPXE, isolinux, systemd-boot), without documentation.
    pub(super) boot: Tree,
    /// The system layer's packages, without documentation (empty without
    /// `packages.system`).
    pub(super) system: Tree,
    /// The maintainer scripts of the system layer's packages, in lockfile
    /// order.
    pub(super) system_scripts: Vec<Scripts>,
}

/// The maintainer scripts of one package that [`crate::install`] reads
/// (empty when the package has none).
#[derive(Debug, Clone, Default)]
pub(super) struct Scripts {
    /// The package.
    pub(super) package: String,
    /// Its `preinst`.
    pub(super) preinst: String,
    /// Its `postinst`.
    pub(super) postinst: String,
}

/// Make sure every `.deb` of some role is in the cache with its SHA256,
/// downloading what is missing.
pub(super) fn fetch(resolved: &Resolved) -> Result<Debs, Error> {
    let (lock, recipe) = (&resolved.lock, &resolved.recipe);
    let kernel = lock.closure(std::slice::from_ref(&recipe.kernel_package));
    let initramfs = lock.closure(&recipe.initramfs_packages);
    let boot = lock.closure(&recipe.boot_packages);
    let system_roots: Vec<String> = recipe
        .system_packages
        .iter()
        .chain(&lock.essential)
        .cloned()
        .collect();
    let system = lock.closure(&system_roots);
    let packages = lock
        .packages
        .iter()
        .filter(|p| {
            [&kernel, &initramfs, &boot, &system]
                .iter()
                .any(|role| role.contains(&p.name))
        })
        .cloned()
        .collect();
    let debs = Debs {
        packages,
        dir: resolved.cache.join("debs"),
        kernel,
        initramfs,
        boot,
        system,
    };
    let wants: Vec<Want> = debs
        .packages
        .iter()
        .map(|p| Want {
            what: format!("{} {}", p.name, p.version),
            remote: p.filename.clone(),
            dest: debs.path(p),
            size: p.size,
            sha256: p.sha256.clone(),
        })
        .collect();
    resolved.fetcher.ensure_all(&wants)?;
    Ok(debs)
}

/// Unpack each role's packages in memory, the roles in parallel (the
/// kernel or the system layer dominates, the rest are small); the system
/// packages only when `system` (not when the layer is reused).
pub(super) fn unpack(debs: &Debs, system: bool) -> Result<Trees, Error> {
    let none = BTreeSet::new();
    let system_set = if system { &debs.system } else { &none };
    let (kernel, initramfs, boot, system) = std::thread::scope(|s| {
        let k = s.spawn(|| unpack_set(debs, &debs.kernel, &kernel_keep, None));
        let i = s.spawn(|| unpack_set(debs, &debs.initramfs, &no_docs, None));
        let sys = s.spawn(|| {
            let mut scripts = Vec::new();
            unpack_set(debs, system_set, &no_docs, Some(&mut scripts)).map(|t| (t, scripts))
        });
        let b = unpack_set(debs, &debs.boot, &no_docs, None);
        (
            k.join().expect("unpack thread"),
            i.join().expect("unpack thread"),
            b,
            sys.join().expect("unpack thread"),
        )
    });
    let (system, system_scripts) = system?;
    Ok(Trees {
        kernel: kernel?,
        initramfs: initramfs?,
        boot: boot?,
        system,
        system_scripts,
    })
}

/// Removes the initramfs package files the recipe's `exclude` globs match
/// (a `**` glob takes folders whole). A glob that matches nothing is an
/// error, so a stale list does not go unnoticed.
pub(super) fn exclude(tree: &mut Tree, globs: &[String]) -> Result<(), Error> {
    for glob in globs {
        let doomed: Vec<String> = tree
            .iter()
            .map(|(path, _)| path)
            .filter(|path| crate::modules::glob_match(glob, path))
            .map(str::to_string)
            .collect();
        if doomed.is_empty() {
            return Err(Error::ExcludeUnused { glob: glob.clone() });
        }
        for path in doomed {
            tree.remove(&path);
        }
    }
    Ok(())
}

/// Unpack the packages named in `set`, checking each `.deb` against its
/// SHA256 again, keeping the paths `keep` accepts; with `scripts`, also
/// collect each package's `preinst` and `postinst`.
fn unpack_set(
    debs: &Debs,
    set: &BTreeSet<String>,
    keep: &(dyn Fn(&str) -> bool + Sync),
    mut scripts: Option<&mut Vec<Scripts>>,
) -> Result<Tree, Error> {
    let mut tree = Tree::new();
    for p in debs.packages.iter().filter(|p| set.contains(&p.name)) {
        let path = debs.path(p);
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
        if let Some(scripts) = scripts.as_deref_mut() {
            let text = |name| -> Result<String, Error> {
                Ok(deb::control_file(&p.name, &data, name)?
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default())
            };
            scripts.push(Scripts {
                package: p.name.clone(),
                preinst: text("preinst")?,
                postinst: text("postinst")?,
            });
        }
    }
    Ok(tree)
}

/// The kernel packages' part of the image: the kernel and its modules.
fn kernel_keep(p: &str) -> bool {
    p.starts_with("boot/vmlinuz-") || p == "boot" || p.starts_with("lib/modules")
}

/// Everything but documentation, manuals and translations.
fn no_docs(p: &str) -> bool {
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
}
