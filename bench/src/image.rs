//! The benchmarks' node image: `images/node.toml` with the peers a
//! benchmark runs on the nodes added (`iperf3` for raw TCP, kernel modules
//! such as `nfsd`, tools such as `strace`), built by `ombuild` from a copy of the recipe and its
//! lockfile. Shared by `bench/share.rs` and `bench/migrate.rs`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};

/// Builds the node image plus `iperf3`, the initramfs `packages` and the
/// kernel `modules` into `work/image`; iperf3 needs the OpenSSL libraries
/// the node image leaves out, and not its packaging (a service user,
/// debconf, init scripts).
pub fn with_iperf3(
    bin: &Path,
    work: &Path,
    packages: &[&str],
    modules: &[&str],
) -> Result<PathBuf> {
    let images = lab::build::workspace().join("images");
    let recipe = std::fs::read_to_string(images.join("node.toml"))?;
    let no_modules = "\nmodules = []";
    ensure!(
        recipe.contains(no_modules),
        "images/node.toml no longer has `modules = []`; update bench/src/image.rs"
    );
    let initramfs = "\ninitramfs = [\"busybox\", ";
    ensure!(
        recipe.contains(initramfs),
        "images/node.toml's initramfs list changed; update bench/src/image.rs"
    );
    let quoted =
        |names: &[&str]| -> Vec<String> { names.iter().map(|m| format!("\"{m}\", ")).collect() };
    let modules: Vec<String> = modules.iter().map(|m| format!("\"{m}\"")).collect();
    let recipe: String = recipe
        .replace(no_modules, &format!("\nmodules = [{}]", modules.join(", ")))
        .replace(
            initramfs,
            &format!("{initramfs}\"iperf3\", {}", quoted(packages).concat()),
        )
        .replace(
            "\nprune = [",
            "\nprune = [\"adduser\", \"debconf\", \"init-system-helpers\", ",
        )
        .lines()
        .filter(|l| !l.contains("/libssl.so") && !l.contains("/libcrypto.so"))
        .map(|l| format!("{l}\n"))
        .collect();
    let dir = work.join("recipe");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("node.toml"), recipe)?;
    std::fs::copy(images.join("node.lock"), dir.join("node.lock"))?;
    let out = work.join("image");
    let status = Command::new(bin.join("ombuild"))
        .arg("image")
        .arg(dir.join("node.toml"))
        .arg("--out")
        .arg(&out)
        .status()
        .context("running ombuild image")?;
    ensure!(status.success(), "ombuild image failed ({status})");
    Ok(out)
}
