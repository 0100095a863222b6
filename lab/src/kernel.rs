//! Debian's current amd64 kernel for the tests that boot one under qemu:
//! `vmlinuz` and just the modules a test asks for, downloaded once with
//! `apt-get download` and unpacked into `$XDG_CACHE_HOME/omcluster-test`
//! (default `~/.cache/omcluster-test`), not the whole 400 MB tree.
//!
//! [`debian_kernel`] runs under a file lock, so tests in several processes
//! download and unpack once.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::build::locked;
use crate::error::{io_err, LabError};
use crate::process::run;

/// The unpacked kernel package.
#[derive(Debug, Clone)]
pub struct DebianKernel {
    /// The package, e.g. `linux-image-6.1.0-28-amd64`.
    pub package: String,
    /// The kernel release, e.g. `6.1.0-28-amd64`.
    pub release: String,
    /// The kernel image.
    pub vmlinuz: PathBuf,
    /// `lib/modules/<release>` of the unpacked package.
    pub modules: PathBuf,
}

impl DebianKernel {
    /// The path of module `name` (`name.ko`, anywhere below
    /// [`DebianKernel::modules`]), if it was unpacked.
    pub fn module(&self, name: &str) -> Option<PathBuf> {
        find_file(&self.modules, &format!("{name}.ko"))
    }
}

/// The cache directory the kernel package and its unpacked files live in.
pub fn cache_dir() -> Result<PathBuf, LabError> {
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())).join(".cache")
        }
    };
    let dir = base.join("omcluster-test");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// Debian's current amd64 kernel (the package `linux-image-amd64` depends
/// on) with the modules named in `modules` (`e1000`, `isofs`…) unpacked at
/// their paths below `lib/modules/<release>`. Downloads and unpacks only
/// what is not cached yet.
pub fn debian_kernel(modules: &[&str]) -> Result<DebianKernel, LabError> {
    locked("kernel", || {
        let deps = run("apt-cache", ["depends", "linux-image-amd64"])?;
        let package = deps
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
            .ok_or_else(|| LabError::Command {
                command: "apt-cache depends linux-image-amd64".into(),
                stderr: format!("names no kernel (run apt-get update): {deps}"),
            })?
            .to_string();
        let release = package.trim_start_matches("linux-image-").to_string();
        let cache = cache_dir()?;
        let dir = cache.join(format!("kernel-{package}"));
        let kernel = DebianKernel {
            vmlinuz: dir.join(format!("boot/vmlinuz-{release}")),
            modules: dir.join(format!("lib/modules/{release}")),
            package,
            release,
        };
        let missing: Vec<&str> = modules
            .iter()
            .copied()
            .filter(|m| kernel.module(m).is_none())
            .collect();
        if kernel.vmlinuz.exists() && missing.is_empty() {
            return Ok(kernel);
        }
        let deb = match find_deb(&cache, &kernel.package)? {
            Some(deb) => deb,
            None => {
                let output = Command::new("apt-get")
                    .args(["download", &kernel.package])
                    .current_dir(&cache)
                    .output()
                    .map_err(io_err("running apt-get download"))?;
                if !output.status.success() {
                    return Err(LabError::Command {
                        command: format!("apt-get download {}", kernel.package),
                        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
                    });
                }
                find_deb(&cache, &kernel.package)?.ok_or_else(|| LabError::Command {
                    command: format!("apt-get download {}", kernel.package),
                    stderr: format!("left no .deb in {}", cache.display()),
                })?
            }
        };
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut script = format!(
            "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/vmlinuz-*'",
            deb.display(),
            dir.display()
        );
        for name in &missing {
            script.push_str(&format!(" './lib/modules/*/{name}.ko'"));
        }
        run("sh", ["-c", &script])?;
        if let Some(name) = missing.iter().find(|m| kernel.module(m).is_none()) {
            return Err(LabError::MissingFile {
                path: kernel.modules.join(format!("{name}.ko")),
                hint: format!("kernel package {} has no module {name}", kernel.package),
            });
        }
        Ok(kernel)
    })
}

/// The downloaded `<package>_*.deb` in `cache`, if any.
fn find_deb(cache: &Path, package: &str) -> Result<Option<PathBuf>, LabError> {
    let prefix = format!("{package}_");
    Ok(fs::read_dir(cache)
        .map_err(io_err(format!("reading {}", cache.display())))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        }))
}

/// The first file called `name` below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}
