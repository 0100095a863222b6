//! The head's boot medium: the block device holding the ISO 9660 image it
//! booted from, mounted read-only so `omboot serve` can serve its files.
//!
//! Finding it needs the block driver (sr_mod, ata, virtio_blk, usb-storage)
//! to be in the initramfs and loaded by modalias like any other; the scan
//! looks at every `/sys/class/block` entry for the ISO 9660 signature.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Where the medium is mounted.
pub const MEDIA_DIR: &str = "/run/omcluster/media";

/// Whether `sector` (2048 bytes read at byte 32768, the first volume
/// descriptor) is an ISO 9660 volume descriptor.
pub fn is_iso9660(sector: &[u8]) -> bool {
    sector.len() >= 6 && &sector[1..6] == b"CD001"
}

/// The block devices of `/sys/class/block`, whole disks and partitions
/// alike (loop and RAM disks left out), sorted by name.
pub fn block_devices() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| PathBuf::from(format!("/dev/{n}")))
        .collect()
}

/// `len` bytes of `dev` from byte `offset`; `None` when it cannot be read
/// (no medium, too short).
pub fn read_at(dev: &Path, offset: u64, len: usize) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut f = File::open(dev).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

/// The block devices that hold ISO 9660.
pub fn find_iso9660() -> Vec<PathBuf> {
    block_devices()
        .into_iter()
        .filter(|dev| read_at(dev, 32768, 8).is_some_and(|s| is_iso9660(&s)))
        .collect()
}

/// Mounts the first ISO 9660 device read-only at [`MEDIA_DIR`], loading the
/// `isofs` module first when the kernel has it as a module (PID 1 has no
/// modprobe for the kernel to call).
pub fn mount_media() -> Result<PathBuf, String> {
    let devices = find_iso9660();
    let Some(dev) = devices.first() else {
        return Err(
            "no block device with an ISO 9660 file system (is the CD/USB driver in the image?)"
                .into(),
        );
    };
    let loaded = crate::kmod::ensure_filesystem("iso9660", "isofs")?;
    if !loaded.is_empty() {
        say!("loaded modules: {}", loaded.join(" "));
    }
    let _ = std::fs::create_dir_all(MEDIA_DIR);
    nix::mount::mount(
        Some(dev.as_path()),
        Path::new(MEDIA_DIR),
        Some("iso9660"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(|e| format!("mount {} on {MEDIA_DIR}: {e}", dev.display()))?;
    Ok(dev.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature() {
        assert!(is_iso9660(b"\x01CD001\x01\x00"));
        assert!(is_iso9660(b"\xffCD001\x01\x00"));
        assert!(!is_iso9660(b"\x01CD002\x01\x00"));
        assert!(!is_iso9660(b"\x01CD0"));
    }
}
