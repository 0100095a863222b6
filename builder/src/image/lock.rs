//! Stage **resolve**: the recipe, where its packages come from, and the
//! exact packages, pinned by the lockfile beside the recipe.
//!
//! A lockfile that matches the recipe is used as is. Otherwise (or with
//! `--update`) the archive index is loaded, `InRelease` verified against
//! the keyring and `Packages` against `Release`, the recipe's roots
//! resolved, and the lockfile rewritten.

use std::io::Read;
use std::path::{Path, PathBuf};

use tracing::info;

use super::{write_atomic, Error, Options, LOG_TARGET};
use crate::debian;
use crate::fetch::{io_error, FetchError, Fetcher, Want};
use crate::lockfile::Lockfile;
use crate::mirror;
use crate::openpgp::Keyring;
use crate::recipe::Recipe;
use crate::resolve;

/// What the resolve stage settles for the rest of the build.
pub(super) struct Resolved {
    /// The recipe, validated.
    pub(super) recipe: Recipe,
    /// The timestamp of every generated file (`SOURCE_DATE_EPOCH` or the recipe's).
    pub(super) epoch: u64,
    /// The package cache directory.
    pub(super) cache: PathBuf,
    /// The mirror client (or, offline, the cache alone).
    pub(super) fetcher: Fetcher,
    /// The pinned packages.
    pub(super) lock: Lockfile,
    /// Whether the lockfile was (re)written.
    pub(super) lock_written: bool,
}

/// The lockfile path for a recipe: `x.toml` → `x.lock`.
pub fn lock_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock")
}

/// Read the recipe, pick the cache and the mirror, and read or (re)write
/// the lockfile.
pub(super) fn resolve(opts: &Options) -> Result<Resolved, Error> {
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
    let system = !recipe.system_packages.is_empty();

    let lock_file = lock_path(&opts.recipe);
    let existing = Lockfile::read(&lock_file)?;
    let (lock, lock_written) = match existing {
        Some(l)
            if !opts.update && l.matches(&recipe.suite, arch, &roots, &recipe.prune, system) =>
        {
            (l, false)
        }
        other => {
            if other.is_some() && !opts.update {
                info!(target: LOG_TARGET, lockfile = %lock_file.display(), "lockfile does not match the recipe, resolving again");
            }
            let index_dir = cache
                .join("dists")
                .join(sanitize(mirror_url.as_deref().unwrap_or("offline")))
                .join(&recipe.suite);
            let packages = load_index(&fetcher, &opts.keyring, &recipe, &index_dir)?;
            let index = resolve::Index::new(packages);
            // A system layer is a Debian system: it gets the archive's
            // Essential packages (shell, coreutils, base-files…) too.
            let essential: Vec<String> = if system {
                index.essential()
            } else {
                Vec::new()
            };
            let all_roots: Vec<String> = roots.iter().chain(&essential).cloned().collect();
            let sel = resolve::resolve(&index, &all_roots, &recipe.prune)?;
            let mut lock =
                Lockfile::from_selection(&recipe.suite, arch, &roots, &recipe.prune, &sel);
            lock.essential = essential;
            write_atomic(&lock_file, lock.to_toml().as_bytes())?;
            info!(target: LOG_TARGET, lockfile = %lock_file.display(), packages = lock.packages.len(), "lockfile written");
            (lock, true)
        }
    };
    Ok(Resolved {
        recipe,
        epoch,
        cache,
        fetcher,
        lock,
        lock_written,
    })
}

/// The timestamp of generated files: `SOURCE_DATE_EPOCH` if set, else the
/// recipe's.
fn effective_epoch(recipe: &Recipe) -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(recipe.epoch)
}

/// The cache directory name of a mirror URL.
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

/// Fetch (or, offline, read from the cache) and verify `InRelease`, then the
/// `Packages` index of each component, and parse them.
fn load_index(
    fetcher: &Fetcher,
    keyring_path: &Path,
    recipe: &Recipe,
    dir: &Path,
) -> Result<Vec<debian::Package>, Error> {
    let keyring_bytes = std::fs::read(keyring_path).map_err(|source| Error::Keyring {
        path: keyring_path.to_path_buf(),
        source,
    })?;
    let keyring = Keyring::parse(&keyring_path.display().to_string(), &keyring_bytes)?;
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
    info!(target: LOG_TARGET, suite = %suite, "InRelease signature verified");
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
    info!(target: LOG_TARGET, packages = packages.len(), "package index loaded");
    Ok(packages)
}
