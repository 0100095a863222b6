//! Fixtures shared by the end-to-end tests: gating on the environment, the
//! static release build of the binaries that go into the image, and the image
//! build itself. Both builds are shared between test processes through a file
//! lock, so tests running at once build once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether the qemu end-to-end tests should run. Under `CI=true` they always
/// do, and a missing prerequisite is a failure; elsewhere `OM_QEMU_TESTS=1`
/// turns them on.
pub fn qemu_tests_enabled(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let wanted = std::env::var("OM_QEMU_TESTS").is_ok_and(|v| v == "1");
    if !(ci || wanted) {
        eprintln!("{test}: set OM_QEMU_TESTS=1 (root, qemu) to run this end-to-end test");
        return false;
    }
    true
}

fn locked<T>(name: &str, body: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = workspace().join("target/e2e");
    fs::create_dir_all(&dir)?;
    let file = File::create(dir.join(format!("{name}.lock")))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .context("locking the e2e fixture")?;
    body()
}

/// Builds `omnode`, `omctl`, `omboot` and `ombuild` as static release
/// binaries (what the image needs) with `scripts/static-build` and returns the
/// directory holding them.
pub fn static_binaries() -> Result<PathBuf> {
    locked("static", || {
        let output = Command::new(workspace().join("scripts/static-build"))
            .current_dir(workspace())
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running scripts/static-build")?;
        if !output.status.success() {
            bail!("scripts/static-build failed ({})", output.status);
        }
        Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
    })
}

/// Builds the default image (`images/node.toml`) with the static binaries and
/// returns the image directory.
pub fn default_image(bin: &Path) -> Result<PathBuf> {
    locked("image", || {
        let out = workspace().join("target/e2e/image");
        let status = Command::new(bin.join("ombuild"))
            .current_dir(workspace())
            .arg("image")
            .arg(workspace().join("images/node.toml"))
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

#[derive(Clone, Copy, Debug)]
/// How a machine has the ISO attached.
pub enum Medium {
    /// An IDE CD-ROM drive.
    Cd,
    /// A USB stick (the ISO `dd`-ed to it) on an xHCI controller.
    Usb,
}

/// The qemu arguments that attach `iso` as `medium`, first in the boot order.
pub fn medium_args(medium: Medium, iso: &std::path::Path) -> Vec<String> {
    let file = iso.display();
    match medium {
        Medium::Cd => vec![
            "-drive".into(),
            format!("if=none,id=boot,media=cdrom,readonly=on,format=raw,file={file}"),
            "-device".into(),
            "ide-cd,drive=boot,bootindex=0".into(),
        ],
        Medium::Usb => vec![
            "-drive".into(),
            format!("if=none,id=boot,readonly=on,format=raw,file={file}"),
            "-device".into(),
            "qemu-xhci".into(),
            "-device".into(),
            "usb-storage,drive=boot,bootindex=0".into(),
        ],
    }
}
