//! The lockfile (`images/node.lock`, beside the recipe): the exact packages
//! of the last resolution, with versions, pool file names, sizes and SHA256
//! hashes, plus the recipe inputs it was resolved from. When present and
//! matching the recipe it is used as is (no index download at all); the
//! `.deb`s are checked against its hashes. `--update` resolves afresh from a
//! verified index and rewrites it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::resolve::Selected;

/// Errors reading or writing a lockfile.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file could not be read or written.
    #[error("lockfile {path}: {source}")]
    Io {
        /// The lockfile path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("lockfile {path} is malformed: {message}")]
    Parse {
        /// The lockfile path.
        path: String,
        /// The parser's message.
        message: String,
    },
}

/// Current format version.
pub const FORMAT: u32 = 1;

/// One pinned package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// Debian architecture (`amd64`, `all`).
    pub architecture: String,
    /// Path in the mirror's pool.
    pub filename: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA256 of the `.deb`.
    pub sha256: String,
    /// Locked packages its dependencies were satisfied by.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends: Vec<String>,
}

/// The lockfile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lockfile {
    /// Format version ([`FORMAT`]).
    pub format: u32,
    /// Suite resolved against.
    pub suite: String,
    /// Debian architecture resolved for.
    pub architecture: String,
    /// Root packages of the recipe at resolution time.
    pub roots: Vec<String>,
    /// Pruned names at resolution time.
    pub prune: Vec<String>,
    /// The archive's Essential packages, roots of the system layer besides
    /// the recipe's `packages.system` (empty without a system layer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub essential: Vec<String>,
    /// The packages, sorted by name.
    #[serde(rename = "package")]
    pub packages: Vec<LockedPackage>,
}

impl Lockfile {
    /// Build a lockfile from a resolution.
    pub fn from_selection(
        suite: &str,
        architecture: &str,
        roots: &[String],
        prune: &[String],
        sel: &BTreeMap<String, Selected>,
    ) -> Self {
        Lockfile {
            format: FORMAT,
            suite: suite.to_string(),
            architecture: architecture.to_string(),
            roots: roots.to_vec(),
            prune: prune.to_vec(),
            essential: Vec::new(),
            packages: sel
                .values()
                .map(|s| LockedPackage {
                    name: s.package.name.clone(),
                    version: s.package.version.clone(),
                    architecture: s.package.architecture.clone(),
                    filename: s.package.filename.clone(),
                    size: s.package.size,
                    sha256: s.package.sha256.clone(),
                    depends: s.depends.iter().cloned().collect(),
                })
                .collect(),
        }
    }

    /// Whether this lock was made for these recipe inputs.
    pub fn matches(
        &self,
        suite: &str,
        architecture: &str,
        roots: &[String],
        prune: &[String],
        system: bool,
    ) -> bool {
        self.format == FORMAT
            && self.suite == suite
            && self.architecture == architecture
            && self.roots == roots
            && self.prune == prune
            && self.essential.is_empty() != system
    }

    /// Look a package up by name.
    pub fn get(&self, name: &str) -> Option<&LockedPackage> {
        self.packages.iter().find(|p| p.name == name)
    }

    /// The names in the dependency closure of `roots` (roots included).
    pub fn closure(&self, roots: &[String]) -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<String> = roots.to_vec();
        while let Some(n) = stack.pop() {
            // A virtual root was locked under its provider's name.
            let Some(p) = self.get(&n) else { continue };
            if seen.insert(p.name.clone()) {
                stack.extend(p.depends.iter().cloned());
            }
        }
        seen
    }

    /// Serialise with a header comment.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string(self).expect("lockfile serialises");
        format!("# Generated by `ombuild image --update`: the exact Debian packages of this image.\n# Do not edit by hand.\n\n{body}")
    }

    /// Read a lockfile; `Ok(None)` if it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LockError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| LockError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            })
    }
}
