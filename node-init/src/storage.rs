//! Where a head booted from the ISO keeps the shared tree: an ext2/3/4
//! partition labelled [`LABEL`] when a disk has one (files survive a reboot
//! of the head), else tmpfs (half the RAM, lost at power-off). Either is
//! mounted at [`MOUNT_POINT`], which `omboot serve --share` then exports.
//!
//! Making the partition is the administrator's one step:
//! `mkfs.ext4 -L OMCLUSTER /dev/sdX1`. A fresh file system is opened to
//! every user (mode 1777, like `/tmp`) so `omctl run` jobs can make their
//! own folders in it.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use contracts::share::MOUNT_POINT;
use nix::mount::MsFlags;

use crate::media;

/// The file-system label that marks the tree's partition.
pub const LABEL: &str = "OMCLUSTER";

/// Where the superblock of an ext2/3/4 file system starts.
const EXT_SUPERBLOCK: u64 = 1024;

/// What the head's tree is kept on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The partition labelled [`LABEL`].
    Disk(PathBuf),
    /// RAM.
    Tmpfs,
}

impl fmt::Display for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Storage::Disk(dev) => write!(
                f,
                "{} (the partition labelled {LABEL}; kept across reboots)",
                dev.display()
            ),
            Storage::Tmpfs => write!(
                f,
                "tmpfs (lost at power-off; a partition made with mkfs.ext4 -L {LABEL} keeps it)"
            ),
        }
    }
}

/// The volume label of an ext2/3/4 file system whose superblock (1024
/// bytes read at byte 1024) is `sb`; `None` when it is not one or has no
/// label.
pub fn ext_label(sb: &[u8]) -> Option<String> {
    // s_magic at 0x38, s_volume_name (16 bytes, NUL-padded) at 0x78.
    if sb.get(0x38..0x3a)? != [0x53, 0xef] {
        return None;
    }
    let name = sb.get(0x78..0x88)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let label = std::str::from_utf8(&name[..end]).ok()?;
    (!label.is_empty()).then(|| label.to_string())
}

/// The first block device holding an ext file system labelled `label`.
pub fn find_labelled(label: &str) -> Option<PathBuf> {
    media::block_devices().into_iter().find(|dev| {
        media::read_at(dev, EXT_SUPERBLOCK, 1024).and_then(|sb| ext_label(&sb))
            == Some(label.to_string())
    })
}

/// Mounts the tree at [`MOUNT_POINT`]: the [`LABEL`] partition if a disk
/// has one, else tmpfs. The error is a console line; the caller falls back
/// to tmpfs itself only when the partition was not found, never when it
/// failed to mount (that would hide the user's files behind an empty tree).
pub fn prepare() -> Result<Storage, String> {
    let _ = std::fs::create_dir_all(MOUNT_POINT);
    if let Some(dev) = find_labelled(LABEL) {
        let mut loaded = crate::kmod::ensure_filesystem("ext4", "ext4")?;
        // ext4's checksums need the crc32c cipher, a soft dependency the
        // kernel asks modprobe for; PID 1 has none, so it is loaded here.
        if let Some(dir) = crate::kmod::modules_dir() {
            match crate::kmod::load_named(&dir, &["crc32c_generic".to_string()]) {
                Ok(more) => loaded.extend(more),
                Err(e) => say!("cannot load crc32c_generic for ext4: {e}"),
            }
        }
        if !loaded.is_empty() {
            say!("loaded modules: {}", loaded.join(" "));
        }
        nix::mount::mount(
            Some(dev.as_path()),
            MOUNT_POINT,
            Some("ext4"),
            MsFlags::MS_NOATIME,
            None::<&str>,
        )
        .map_err(|e| format!("mount {} on {MOUNT_POINT}: {e}", dev.display()))?;
        if is_fresh(Path::new(MOUNT_POINT)) {
            std::fs::set_permissions(MOUNT_POINT, std::fs::Permissions::from_mode(0o1777))
                .map_err(|e| format!("chmod 1777 {MOUNT_POINT}: {e}"))?;
        }
        return Ok(Storage::Disk(dev));
    }
    nix::mount::mount(
        Some("cluster"),
        MOUNT_POINT,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777,size=50%"),
    )
    .map_err(|e| format!("mount tmpfs on {MOUNT_POINT}: {e}"))?;
    Ok(Storage::Tmpfs)
}

/// Whether `dir` is a file system as mkfs left it: nothing but
/// `lost+found`.
fn is_fresh(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| e.file_name() == std::ffi::OsStr::new("lost+found"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock(magic: [u8; 2], label: &[u8]) -> Vec<u8> {
        let mut sb = vec![0u8; 1024];
        sb[0x38..0x3a].copy_from_slice(&magic);
        sb[0x78..0x78 + label.len()].copy_from_slice(label);
        sb
    }

    #[test]
    fn labels_are_read_from_ext_superblocks() {
        assert_eq!(
            ext_label(&superblock([0x53, 0xef], b"OMCLUSTER")).as_deref(),
            Some("OMCLUSTER")
        );
        // A full 16-byte label has no NUL.
        assert_eq!(
            ext_label(&superblock([0x53, 0xef], b"0123456789abcdef")).as_deref(),
            Some("0123456789abcdef")
        );
        assert_eq!(ext_label(&superblock([0x53, 0xef], b"")), None);
        assert_eq!(ext_label(&superblock([0, 0], b"OMCLUSTER")), None);
        assert_eq!(ext_label(&[0u8; 16]), None);
    }

    #[test]
    fn a_real_mkfs_label_is_found() {
        // mke2fs (e2fsprogs, on every Debian) makes an image file.
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let made = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", LABEL])
            .arg(&img)
            .arg("4M")
            .status()
            .expect("mkfs.ext4 (e2fsprogs) runs");
        assert!(made.success());
        let sb = media::read_at(&img, EXT_SUPERBLOCK, 1024).unwrap();
        assert_eq!(ext_label(&sb).as_deref(), Some(LABEL));
    }
}
