//! The image directory: what `ombuild image --out DIR` writes and `omboot
//! serve --images DIR` serves (ARCHITECTURE.md, "Image directory").
//!
//! The paths of its files, relative to `DIR` (the TFTP root and the HTTP
//! static root; the ISO's root holds the same layout), and [`Manifest`],
//! `manifest.json`: every package with its version and hash, every artifact
//! with its size and SHA256, the default kernel command line and the kernel
//! version. The builder writes it with a fixed field and entry order so it is
//! as reproducible as the artifacts; `omboot` needs only `kernel_cmdline`,
//! so every other field may be absent when reading.

use serde::{Deserialize, Serialize};

/// The kernel.
pub const VMLINUZ: &str = "vmlinuz";
/// The initramfs (`/init` is `omnode`).
pub const INITRD: &str = "initrd.img";
/// BIOS PXE → iPXE.
pub const UNDIONLY_KPXE: &str = "ipxe/undionly.kpxe";
/// UEFI x64 PXE → iPXE, with the firmware's SNP driver.
pub const SNPONLY_EFI: &str = "ipxe/snponly.efi";
/// UEFI x64 → iPXE with its own drivers (optional for `omboot`).
pub const IPXE_EFI: &str = "ipxe/ipxe.efi";
/// The compressed read-only system layer a node runs from (squashfs),
/// when the recipe has `packages.system`.
pub const SYSTEM_LAYER: &str = "system.squashfs";
/// The NFSv4 path under which `omboot`'s file server exports the image
/// directory, read-only, when it holds a [`SYSTEM_LAYER`]: nodes mount it
/// and map the layer from it (`om.system=nfs://HEAD/images`), reading
/// only the blocks their programs touch.
pub const SYSTEM_EXPORT: &str = "/images";
/// The manifest ([`Manifest`]).
pub const MANIFEST: &str = "manifest.json";

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

/// `manifest.json`. Serialised in field order; only `kernel_cmdline` is
/// required when reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Image name from the recipe.
    #[serde(default)]
    pub name: String,
    /// Debian suite.
    #[serde(default)]
    pub suite: String,
    /// Debian architecture.
    #[serde(default)]
    pub architecture: String,
    /// Kernel release (`uname -r` on the node).
    #[serde(default)]
    pub kernel_version: String,
    /// Default kernel command line (the kernel's parameters and any `om.*`
    /// defaults; see [`crate::cmdline`]).
    pub kernel_cmdline: String,
    /// Packages, sorted by name.
    #[serde(default)]
    pub packages: Vec<ManifestPackage>,
    /// Artifacts, sorted by path.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// Pretty JSON with a trailing newline: the file's bytes.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("manifest serialises");
        s.push('\n');
        s
    }

    /// Reads the file's bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn the_file_is_fixed_and_reads_back() {
        let m = Manifest {
            name: "node".into(),
            suite: "bookworm".into(),
            architecture: "amd64".into(),
            kernel_version: "6.1.0-1-amd64".into(),
            kernel_cmdline: "console=ttyS0 quiet".into(),
            packages: vec![ManifestPackage {
                name: "busybox".into(),
                version: "1:1.35.0-4".into(),
                sha256: "00".into(),
            }],
            artifacts: vec![Artifact {
                path: UNDIONLY_KPXE.into(),
                size: 3,
                sha256: "11".into(),
            }],
        };
        let json = m.to_json();
        expect![[r#"
            {
              "name": "node",
              "suite": "bookworm",
              "architecture": "amd64",
              "kernel_version": "6.1.0-1-amd64",
              "kernel_cmdline": "console=ttyS0 quiet",
              "packages": [
                {
                  "name": "busybox",
                  "version": "1:1.35.0-4",
                  "sha256": "00"
                }
              ],
              "artifacts": [
                {
                  "path": "ipxe/undionly.kpxe",
                  "size": 3,
                  "sha256": "11"
                }
              ]
            }
        "#]]
        .assert_eq(&json);
        assert_eq!(Manifest::from_json(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn only_the_command_line_is_required() {
        let m =
            Manifest::from_json(br#"{"kernel_cmdline":"quiet","kernel_version":"6.1"}"#).unwrap();
        assert_eq!(
            (m.kernel_cmdline.as_str(), m.kernel_version.as_str()),
            ("quiet", "6.1")
        );
        let e = Manifest::from_json(br#"{"packages":[]}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "missing field `kernel_cmdline` at line 1 column 15"
        );
    }
}
