//! Stage **system layer** (`system::layer` → an [`OutFile`] or none): the
//! unpacked `packages.system` tree as `system.squashfs`, the compressed
//! read-only root a node runs real programs from (see
//! [`crate::squashfs`]), after what the packages' maintainer scripts
//! would have set up ([`crate::install`]). A recipe without
//! `packages.system` has none.
//!
//! A warm build reuses the layer: [`layer_key`] names it by everything its
//! bytes follow from (the packages with their hashes, the epoch and this
//! `ombuild` itself), and [`cached`] finds it under `<cache>/layers/`,
//! where [`remember`] put it; then the system packages are neither
//! unpacked nor compressed again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use contracts::image;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::debs::{Debs, Scripts};
use super::dir::OutFile;
use super::lock::Resolved;
use super::{write_atomic, Error, LOG_TARGET};
use crate::install::accounts;
use crate::tree::Tree;
use crate::{install, squashfs};

/// How many layers the cache keeps (the most recently used): each is
/// hundreds of MiB.
const KEEP_LAYERS: usize = 3;

/// The cache name of the layer `debs`' system packages make, or none
/// without `packages.system` (or when this program cannot read itself, so
/// a changed `ombuild` could not be told apart).
pub(super) fn layer_key(resolved: &Resolved, debs: &Debs) -> Option<String> {
    if resolved.recipe.system_packages.is_empty() {
        return None;
    }
    let exe = std::fs::read(std::env::current_exe().ok()?).ok()?;
    let mut hash = Sha256::new();
    hash.update(b"omcluster system layer 1\n");
    hash.update(Sha256::digest(&exe));
    hash.update(format!("epoch {}\n", resolved.epoch));
    for p in debs.system_packages() {
        hash.update(format!("{} {} {}\n", p.name, p.version, p.sha256));
    }
    Some(hex::encode(hash.finalize()))
}

fn layer_path(resolved: &Resolved, key: &str) -> PathBuf {
    resolved
        .cache
        .join("layers")
        .join(format!("{key}.squashfs"))
}

/// The layer named `key` from the cache, if it is there (marked as just
/// used).
pub(super) fn cached(resolved: &Resolved, key: &str) -> Option<OutFile> {
    let path = layer_path(resolved, key);
    let data = std::fs::read(&path).ok()?;
    if let Ok(f) = std::fs::File::options().append(true).open(&path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
    info!(target: LOG_TARGET, path = %path.display(), bytes = data.len(), "system layer unchanged: reused from the cache");
    Some(OutFile::new(image::SYSTEM_LAYER, Arc::new(data)))
}

/// Keeps `layer` in the cache as `key`, and drops all but the
/// [`KEEP_LAYERS`] most recently used. A cache that cannot be written only
/// costs the next build the time.
pub(super) fn remember(resolved: &Resolved, key: &str, layer: &OutFile) {
    let path = layer_path(resolved, key);
    if let Err(e) = write_atomic(&path, &layer.data) {
        warn!(target: LOG_TARGET, error = %e, "cannot keep the system layer in the cache");
        return;
    }
    if let Some(dir) = path.parent() {
        prune(dir, KEEP_LAYERS);
    }
}

/// Removes all but the `keep` most recently modified `*.squashfs` in `dir`.
fn prune(dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut layers: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "squashfs"))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    layers.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, old) in layers.into_iter().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
}

/// The account and ownership requests of the packages' scripts (preinst
/// before postinst, in package order), then of the layer's sysusers.d
/// files (by name, as `systemd-sysusers` reads them); what could not be
/// read is logged per package.
fn account_requests(tree: &Tree, scripts: &[Scripts]) -> Vec<accounts::Request> {
    let mut all = Vec::new();
    let mut take = |source: &str, found: accounts::Found| {
        if !found.unread.is_empty() {
            warn!(target: LOG_TARGET, %source, unread = ?found.unread, "account or owner commands that only running the script could read were left");
        }
        all.extend(found.requests);
    };
    for s in scripts {
        for text in [&s.preinst, &s.postinst] {
            take(&s.package, accounts::requests(text));
        }
    }
    let confs: Vec<(String, Vec<u8>)> = tree
        .under("usr/lib/sysusers.d")
        .filter(|(path, _)| path.ends_with(".conf"))
        .filter_map(|(path, _)| Some((path.to_string(), tree.file(path)?.to_vec())))
        .collect();
    for (path, conf) in confs {
        take(&path, accounts::sysusers(&String::from_utf8_lossy(&conf)));
    }
    all
}

/// The system layer of `tree` (the unpacked system packages, whose
/// maintainer scripts are `scripts`), installed, or none.
pub(super) fn layer(
    resolved: &Resolved,
    mut tree: Tree,
    scripts: &[Scripts],
) -> Result<Option<OutFile>, Error> {
    if resolved.recipe.system_packages.is_empty() {
        return Ok(None);
    }
    let mut alts = Vec::new();
    for s in scripts {
        let (found, unread) = install::alternatives(&s.postinst);
        if unread > 0 {
            warn!(target: LOG_TARGET, package = %s.package, unread, "update-alternatives lines with variables were left");
        }
        alts.extend(found);
    }
    let install_err = |source| Error::Install { source };
    let chosen =
        install::apply_alternatives(&mut tree, &alts, resolved.epoch).map_err(install_err)?;
    let base = install::base_accounts(&mut tree, resolved.epoch).map_err(install_err)?;
    let requests = account_requests(&tree, scripts);
    let report = accounts::apply(&mut tree, &requests, resolved.epoch).map_err(install_err)?;
    for why in &report.failed {
        warn!(target: LOG_TARGET, "{why}");
    }
    info!(target: LOG_TARGET, alternatives = ?chosen, accounts = ?base, made = ?report.made, owners_and_modes = report.changed, "installed");
    let tree = &tree;
    let bytes = tree.file_bytes();
    let bar = squashfs::progress(bytes, "compressing the system layer");
    let data = squashfs::image(tree, resolved.epoch, &bar)?;
    info!(
        target: LOG_TARGET,
        files = tree.len(),
        bytes,
        squashfs_bytes = data.len(),
        "system layer"
    );
    Ok(Some(OutFile::new(image::SYSTEM_LAYER, Arc::new(data))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_keeps_the_most_recent_layers() {
        let dir = tempfile::tempdir().unwrap();
        let now = std::time::SystemTime::now();
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            let path = dir.path().join(format!("{name}.squashfs"));
            std::fs::write(&path, name).unwrap();
            let f = std::fs::File::options().append(true).open(&path).unwrap();
            f.set_modified(now - std::time::Duration::from_secs(100 * (4 - i as u64)))
                .unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "kept").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["c.squashfs", "d.squashfs", "notes.txt"]);
    }
}
