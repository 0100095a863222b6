//! The crates of a workspace, found the way cargo finds them, and the
//! file system as a [`Files`] reader. The I/O shell around the pure
//! [`crate::tree`] and [`crate::graph`].
//!
//! The root `Cargo.toml`'s `[workspace] members` are the packages (plain
//! paths; a glob is an error), and the root itself if it has a
//! `[package]`. A package's crates: its library (`[lib] path`, or
//! `src/lib.rs`), its binaries (`[[bin]]` entries, and unless
//! `autobins = false`, `src/main.rs`, `src/bin/*.rs` and
//! `src/bin/*/main.rs`). Tests, examples and benches are not read: the
//! invariant is about the modules of the programs and libraries.

use crate::tree::Files;
use crate::Error;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A crate to check: what to call it, and its root file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `node-agent` for a library, `node-agent (bin omctl)` for a binary.
    pub name: String,
    /// The root file, relative to the workspace root.
    pub root: PathBuf,
}

/// Reads files below a directory; paths are relative to it.
#[derive(Debug)]
pub struct Disk {
    /// The workspace root.
    pub root: PathBuf,
}

impl Files for Disk {
    fn read(&self, path: &Path) -> Result<Option<String>, Error> {
        let full = self.root.join(path);
        match std::fs::read_to_string(&full) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read { path: full, source }),
        }
    }
}

/// The crates of the workspace (or package) at `root`, in the order of
/// its members, each library before its binaries.
pub fn targets(root: &Path) -> Result<Vec<Target>, Error> {
    let manifest = read_manifest(&root.join("Cargo.toml"))?;
    let mut packages = Vec::new();
    if let Some(workspace) = manifest.get("workspace") {
        let members = workspace.get("members").and_then(|m| m.as_array());
        for member in members.into_iter().flatten() {
            let member = member.as_str().ok_or_else(|| Error::Manifest {
                path: root.join("Cargo.toml"),
                message: "a workspace member is not a string".to_string(),
            })?;
            if member.contains(['*', '?', '[']) {
                return Err(Error::Manifest {
                    path: root.join("Cargo.toml"),
                    message: format!(
                        "workspace member `{member}` is a glob, which modcheck does not expand"
                    ),
                });
            }
            packages.push(PathBuf::from(member));
        }
    }
    if manifest.contains_key("package") {
        packages.insert(0, PathBuf::new());
    }
    if packages.is_empty() {
        return Err(Error::Manifest {
            path: root.join("Cargo.toml"),
            message: "neither a [package] nor [workspace] members".to_string(),
        });
    }
    let mut out = Vec::new();
    for package in packages {
        out.extend(package_targets(root, &package)?);
    }
    Ok(out)
}

/// The library and binaries of the package in `dir` (relative to `root`).
fn package_targets(root: &Path, dir: &Path) -> Result<Vec<Target>, Error> {
    let path = root.join(dir).join("Cargo.toml");
    let manifest = read_manifest(&path)?;
    let package = manifest.get("package").ok_or_else(|| Error::Manifest {
        path: path.clone(),
        message: "no [package]".to_string(),
    })?;
    let name = package
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or_else(|| Error::Manifest {
            path: path.clone(),
            message: "no package name".to_string(),
        })?;
    let exists = |p: &Path| root.join(dir).join(p).is_file();
    let mut out = Vec::new();
    let lib = manifest
        .get("lib")
        .and_then(|l| l.get("path"))
        .and_then(|p| p.as_str());
    match lib {
        Some(lib) => out.push(Target {
            name: name.to_string(),
            root: dir.join(lib),
        }),
        None if exists(Path::new("src/lib.rs")) => out.push(Target {
            name: name.to_string(),
            root: dir.join("src/lib.rs"),
        }),
        None => {}
    }
    // Binaries by root file: an explicit [[bin]] and the one discovered at
    // the same path are one.
    let mut bins: Vec<(String, PathBuf)> = Vec::new();
    for bin in manifest
        .get("bin")
        .and_then(|b| b.as_array())
        .into_iter()
        .flatten()
    {
        let bin_name = bin.get("name").and_then(|n| n.as_str()).unwrap_or(name);
        let file = match bin.get("path").and_then(|p| p.as_str()) {
            Some(p) => PathBuf::from(p),
            None if bin_name == name && exists(Path::new("src/main.rs")) => {
                PathBuf::from("src/main.rs")
            }
            None if exists(&Path::new("src/bin").join(bin_name).join("main.rs")) => {
                Path::new("src/bin").join(bin_name).join("main.rs")
            }
            None => Path::new("src/bin").join(format!("{bin_name}.rs")),
        };
        bins.push((bin_name.to_string(), file));
    }
    let autobins = package
        .get("autobins")
        .and_then(|a| a.as_bool())
        .unwrap_or(true);
    if autobins {
        if exists(Path::new("src/main.rs")) {
            bins.push((name.to_string(), PathBuf::from("src/main.rs")));
        }
        bins.extend(discovered_bins(&root.join(dir).join("src/bin"))?);
    }
    let mut seen = BTreeSet::new();
    for (bin_name, file) in bins {
        if seen.insert(file.clone()) {
            out.push(Target {
                name: format!("{name} (bin {bin_name})"),
                root: dir.join(file),
            });
        }
    }
    Ok(out)
}

/// `src/bin/x.rs` and `src/bin/x/main.rs`, by name, relative to the package.
fn discovered_bins(dir: &Path) -> Result<Vec<(String, PathBuf)>, Error> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut bins = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if let Some(stem) = file_name.strip_suffix(".rs").filter(|_| path.is_file()) {
            bins.push((stem.to_string(), Path::new("src/bin").join(file_name)));
        } else if path.join("main.rs").is_file() {
            bins.push((
                file_name.to_string(),
                Path::new("src/bin").join(file_name).join("main.rs"),
            ));
        }
    }
    bins.sort();
    Ok(bins)
}

fn read_manifest(path: &Path) -> Result<toml::Table, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<toml::Table>().map_err(|e| Error::Manifest {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}
