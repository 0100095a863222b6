//! Fixtures of the end-to-end tests that only they use: the default image,
//! built once for all test processes (under the lab's build lock). The
//! static binaries, the gates and the machines come from the `lab` crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Builds the default image (`images/node.toml`) with the static binaries in
/// `bin` and returns the image directory.
pub fn default_image(bin: &Path) -> Result<PathBuf> {
    let workspace = lab::build::workspace();
    lab::build::locked("image", || {
        let out = workspace.join("target/e2e/image");
        let status = Command::new(bin.join("ombuild"))
            .current_dir(&workspace)
            .arg("image")
            .arg(workspace.join("images/node.toml"))
            .arg("--out")
            .arg(&out)
            .status()
            .context("running ombuild image")?;
        if !status.success() {
            bail!("ombuild image failed ({status})");
        }
        Ok(out)
    })
}
