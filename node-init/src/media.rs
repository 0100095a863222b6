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

/// The block devices (from `/sys/class/block`) that hold ISO 9660, whole
/// disks and partitions alike.
pub fn find_iso9660() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/block") else {
        return out;
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    names.sort();
    for name in names {
        let dev = PathBuf::from(format!("/dev/{name}"));
        let mut sector = [0u8; 8];
        let ok = File::open(&dev)
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(32768))?;
                f.read_exact(&mut sector)
            })
            .is_ok();
        if ok && is_iso9660(&sector) {
            out.push(dev);
        }
    }
    out
}

/// Whether the kernel knows file system `fs` (`/proc/filesystems`).
fn fs_available(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
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
    if !fs_available("iso9660") {
        let dir =
            crate::kmod::modules_dir().ok_or("cannot read the kernel release to load isofs")?;
        match crate::kmod::load_named(&dir, &["isofs".to_string()]) {
            Ok(loaded) if !loaded.is_empty() => say!("loaded modules: {}", loaded.join(" ")),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot load the iso9660 file system: {e}")),
        }
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
