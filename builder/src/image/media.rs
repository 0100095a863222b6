//! Stages **boot kit** and **iso**: the boot media, from the files of the
//! boot packages.
//!
//! The boot kit is what `omboot` serves to network-booting machines:
//! `vmlinuz`, `initrd.img` and the iPXE binaries. The hybrid BIOS/UEFI ISO
//! ([`iso::write_hybrid_iso`]) holds that image directory with its manifest
//! and boots isolinux or systemd-boot into a node or a head.

use std::sync::Arc;

use contracts::image;

use super::dir::{ImageDir, OutFile};
use super::initrd::Initrd;
use super::kernel::Kernel;
use super::lock::Resolved;
use super::Error;
use crate::iso::{self, BootEntry, BootMedia, IsoFile};
use crate::manifest::Manifest;
use crate::tree::Tree;

/// The boot kit files taken from the `ipxe` package: (path in it, output name).
pub const IPXE_FILES: &[(&str, &str)] = &[
    ("usr/lib/ipxe/undionly.kpxe", image::UNDIONLY_KPXE),
    ("usr/lib/ipxe/snponly.efi", image::SNPONLY_EFI),
    ("usr/lib/ipxe/ipxe.efi", image::IPXE_EFI),
];

const ISOLINUX_BIN: &str = "usr/lib/ISOLINUX/isolinux.bin";
const ISOHDPFX_BIN: &str = "usr/lib/ISOLINUX/isohdpfx.bin";
const LDLINUX_C32: &str = "usr/lib/syslinux/modules/bios/ldlinux.c32";

/// The files of the boot packages, looked up by path.
pub(super) struct BootFiles<'a> {
    /// The unpacked boot packages.
    tree: &'a Tree,
    /// The recipe's boot packages, for the error message.
    packages: &'a [String],
}

impl<'a> BootFiles<'a> {
    /// The files of `tree`, unpacked from the recipe's boot `packages`.
    pub(super) fn new(tree: &'a Tree, packages: &'a [String]) -> Self {
        BootFiles { tree, packages }
    }

    /// The file at `path`, following symlinks (`ipxe.efi` links to
    /// `/boot/ipxe.efi`).
    fn get(&self, path: &str) -> Result<Arc<Vec<u8>>, Error> {
        self.tree.file(path).ok_or_else(|| Error::MissingFile {
            path: format!("/{path}"),
            packages: self.packages.join(", "),
        })
    }
}

/// The image directory without the ISO: `vmlinuz`, `initrd.img`, `ipxe/…`.
pub(super) fn boot_kit(
    kernel: &Kernel,
    initrd: &Initrd,
    boot: &BootFiles<'_>,
) -> Result<ImageDir, Error> {
    let mut dir = ImageDir::default();
    dir.push(OutFile::new(image::VMLINUZ, kernel.vmlinuz.clone()));
    dir.push(OutFile::new(image::INITRD, initrd.data.clone()));
    for (src, dst) in IPXE_FILES {
        dir.push(OutFile::new(*dst, boot.get(src)?));
    }
    Ok(dir)
}

/// `<name>.iso`, holding the files of `dir` and its `manifest`.
pub(super) fn iso(
    resolved: &Resolved,
    dir: &ImageDir,
    manifest: &Manifest,
    boot: &BootFiles<'_>,
) -> Result<OutFile, Error> {
    let recipe = &resolved.recipe;
    let iso_name = format!("{}.iso", recipe.name);
    let inner_manifest = manifest.to_json().into_bytes();
    let mut iso_files: Vec<IsoFile<'_>> = dir
        .files()
        .iter()
        .map(|f| IsoFile::new(f.path.clone(), f.data.as_slice()))
        .collect();
    iso_files.push(IsoFile::new(image::MANIFEST, &inner_manifest));
    let (isolinux_bin, isohdpfx, ldlinux, sdboot) = (
        boot.get(ISOLINUX_BIN)?,
        boot.get(ISOHDPFX_BIN)?,
        boot.get(LDLINUX_C32)?,
        boot.get(&format!(
            "usr/lib/systemd/boot/efi/systemd-boot{}.efi",
            recipe.architecture.efi_suffix()
        ))?,
    );
    let media = BootMedia {
        volume_id: format!("OMCLUSTER_{}", recipe.name)
            .to_ascii_uppercase()
            .replace('-', "_"),
        epoch: resolved.epoch,
        files: iso_files,
        kernel: image::VMLINUZ.into(),
        initrd: image::INITRD.into(),
        isolinux_bin: &isolinux_bin,
        ldlinux_c32: &ldlinux,
        isohdpfx: &isohdpfx,
        systemd_boot_efi: &sdboot,
        entries: vec![
            BootEntry {
                label: "node".into(),
                title: "omcluster compute node".into(),
                cmdline: recipe.cmdline.clone(),
            },
            BootEntry {
                label: "head".into(),
                title: "omcluster head node".into(),
                cmdline: format!("{} om.role=head", recipe.cmdline),
            },
        ],
    };
    let mut iso_bytes = std::io::Cursor::new(Vec::new());
    iso::write_hybrid_iso(&media, &mut iso_bytes)?;
    Ok(OutFile::new(iso_name, Arc::new(iso_bytes.into_inner())))
}
