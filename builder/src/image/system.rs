//! Stage **system layer** (`system::layer` → an [`OutFile`] or none): the
//! unpacked `packages.system` tree as `system.squashfs`, the compressed
//! read-only root a node runs real programs from (see
//! [`crate::squashfs`]), after what the packages' maintainer scripts
//! would have set up ([`crate::install`]). A recipe without
//! `packages.system` has none.

use std::sync::Arc;

use contracts::image;
use tracing::{info, warn};

use super::dir::OutFile;
use super::lock::Resolved;
use super::{Error, LOG_TARGET};
use crate::tree::Tree;
use crate::{install, squashfs};

/// The system layer of `tree` (the unpacked system packages, whose
/// `postinst` scripts are `postinst`), installed, or none.
pub(super) fn layer(
    resolved: &Resolved,
    mut tree: Tree,
    postinst: &[(String, String)],
) -> Result<Option<OutFile>, Error> {
    if resolved.recipe.system_packages.is_empty() {
        return Ok(None);
    }
    let mut alts = Vec::new();
    for (package, text) in postinst {
        let (found, unread) = install::alternatives(text);
        if unread > 0 {
            warn!(target: LOG_TARGET, %package, unread, "update-alternatives lines with variables were left");
        }
        alts.extend(found);
    }
    let chosen = install::apply_alternatives(&mut tree, &alts, resolved.epoch)
        .map_err(|source| Error::Install { source })?;
    let accounts = install::base_accounts(&mut tree, resolved.epoch)
        .map_err(|source| Error::Install { source })?;
    info!(target: LOG_TARGET, alternatives = ?chosen, ?accounts, "installed");
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
