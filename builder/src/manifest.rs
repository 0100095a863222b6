//! `manifest.json` of an image directory: every package with its version and
//! hash, every artifact with its size and SHA256, the default kernel command
//! line and the kernel version. Serialised with a fixed field and entry
//! order so it is as reproducible as the artifacts.

use serde::{Deserialize, Serialize};

/// A package that went into the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestPackage {
    /// Package name.
    pub name: String,
    /// Exact version.
    pub version: String,
    /// SHA256 of the `.deb`.
    pub sha256: String,
}

/// A file of the image directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// Path relative to the image directory (`ipxe/undionly.kpxe`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA256 of the file.
    pub sha256: String,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image name from the recipe.
    pub name: String,
    /// Debian suite.
    pub suite: String,
    /// Debian architecture.
    pub architecture: String,
    /// Kernel release (`uname -r` on the node).
    pub kernel_version: String,
    /// Default kernel command line.
    pub kernel_cmdline: String,
    /// Packages, sorted by name.
    pub packages: Vec<ManifestPackage>,
    /// Artifacts, sorted by path.
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }
}
