//! The early file systems PID 1 mounts: proc, sys, devtmpfs, devpts, tmpfs
//! and cgroup2, and the unmount pass at shutdown.
//!
//! [`EARLY`] is the table (data, in mount order); [`mount_early`] walks it
//! and reports each result, and keeps going when one fails so a kernel
//! without, say, cgroup2 still gets a shell.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

/// One mount.
#[derive(Debug, Clone, Copy)]
pub struct MountSpec {
    /// Source (device or file system name).
    pub source: &'static str,
    /// Mount point (created if missing).
    pub target: &'static str,
    /// File system type.
    pub fstype: &'static str,
    /// Mount flags.
    pub flags: MsFlags,
    /// File-system-specific options.
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// What `omnode init` mounts, in order (parents before children).
pub const EARLY: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "gid=5,mode=0620,ptmxmode=0666",
    },
    MountSpec {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=0755",
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
    },
];

/// A mount that failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// mount(2) refused.
    #[error("mount {fstype} on {target}: {errno}")]
    Mount {
        /// The file system type.
        fstype: String,
        /// The mount point.
        target: String,
        /// What the kernel said.
        errno: Errno,
    },
}

/// Mounts one entry, creating the mount point. Something already mounted
/// there (EBUSY) counts as success.
pub fn mount(spec: &MountSpec) -> Result<(), MountError> {
    let _ = std::fs::create_dir_all(spec.target);
    let data = (!spec.data.is_empty()).then_some(spec.data);
    match nix::mount::mount(
        Some(spec.source),
        spec.target,
        Some(spec.fstype),
        spec.flags,
        data,
    ) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(errno) => Err(MountError::Mount {
            fstype: spec.fstype.into(),
            target: spec.target.into(),
            errno,
        }),
    }
}

/// Mounts [`EARLY`] and adds the `/dev/fd`, `/dev/std*` links shells expect.
/// Returns the failures; the rest is mounted regardless.
pub fn mount_early() -> Vec<MountError> {
    let mut failed = Vec::new();
    for spec in EARLY {
        if let Err(e) = mount(spec) {
            failed.push(e);
        }
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        if !Path::new(link).exists() {
            let _ = std::os::unix::fs::symlink(target, link);
        }
    }
    failed
}

/// The mount points in `/proc/self/mounts` text, innermost (last mounted)
/// first, leaving out the root.
pub fn unmount_order(mounts: &str) -> Vec<String> {
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| *p != "/")
        .map(|p| p.replace("\\040", " "))
        .collect();
    points.reverse();
    points
}

/// Unmounts everything but the root, innermost first; busy ones are
/// detached. Returns the mount points that would not go.
pub fn unmount_all() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut stuck = Vec::new();
    for point in unmount_order(&text) {
        if nix::mount::umount2(point.as_str(), MntFlags::empty()).is_err()
            && nix::mount::umount2(point.as_str(), MntFlags::MNT_DETACH).is_err()
        {
            stuck.push(point);
        }
    }
    stuck
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_mounted_before_children() {
        for (i, spec) in EARLY.iter().enumerate() {
            for earlier in &EARLY[i + 1..] {
                assert!(
                    !spec.target.starts_with(&format!("{}/", earlier.target)),
                    "{} must come after {}",
                    spec.target,
                    earlier.target
                );
            }
        }
    }

    #[test]
    fn unmount_innermost_first() {
        let text = "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\ncgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n/dev/sr0 /run/omcluster/media\\040x iso9660 ro 0 0\n";
        assert_eq!(
            unmount_order(text),
            vec!["/run/omcluster/media x", "/sys/fs/cgroup", "/sys", "/proc"]
        );
    }
}
