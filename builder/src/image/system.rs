//! Stage **system layer** (`system::layer` → an [`OutFile`] or none): the
//! unpacked `packages.system` tree as `system.squashfs`, the compressed
//! read-only root a node runs real programs from (see
//! [`crate::squashfs`]). A recipe without `packages.system` has none.

use std::sync::Arc;

use contracts::image;
use tracing::info;

use super::dir::OutFile;
use super::lock::Resolved;
use super::{Error, LOG_TARGET};
use crate::squashfs;
use crate::tree::Tree;

/// The system layer of `tree` (the unpacked system packages), or none.
pub(super) fn layer(resolved: &Resolved, tree: &Tree) -> Result<Option<OutFile>, Error> {
    if resolved.recipe.system_packages.is_empty() {
        return Ok(None);
    }
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
