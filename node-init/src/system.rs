//! The system layer as the root: the image's `system.squashfs` (real
//! Debian programs: POV-Ray, Blender, Python…) below, a tmpfs above,
//! joined by overlayfs, and PID 1 moved into it.
//!
//! [`mount_layer`] builds the new root at [`NEW_ROOT`] from the layer file,
//! which lives on the head's NFS export `om.system=` names (mapped through
//! a loop device: the kernel reads only the blocks programs touch, nothing
//! is copied into RAM whole) or on the boot medium. The overlay's lower
//! layers are, in order, the squashfs and the initramfs itself (bound
//! read-only at [`INITRAMFS_DIR`]): where both hold a path the layer wins,
//! so `/bin/sh` is Debian's; what only the initramfs has (our binaries,
//! `/lib/modules`, criu and busybox's applets) still shows. Writes go to the
//! tmpfs.
//!
//! [`switch_root`] then moves every top-level mount (`/proc`, `/sys`,
//! `/dev`, `/run`, `/tmp`, `/cluster`…) into the new root, moves the new
//! root onto `/` and `chroot`s into it, as `switch_root(8)` does, except
//! that the initramfs is kept: its files stay reachable. Every thread of
//! PID 1 shares its root, so the whole process moves; children started
//! afterwards (the agent, the shells) run in the layer.
//!
//! The pure parts, the overlay options and which mounts to move, are
//! functions of text ([`overlay_options`], [`mounts_to_move`]).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use contracts::image::SYSTEM_LAYER;
use contracts::share::NfsShare;
use nix::mount::{MntFlags, MsFlags};

use crate::{kmod, loopdev, share};

/// Where the new root is assembled: a directory of the initramfs itself,
/// not under a mount that is moved into the new root.
pub const NEW_ROOT: &str = "/sysroot";
/// The layer's working mounts, under `/run` (which moves into the new
/// root, so they stay visible there).
pub const WORK_DIR: &str = "/run/omcluster/system";
/// The head's image export, mounted read-only.
pub const IMAGES_DIR: &str = "/run/omcluster/system/images";
/// The squashfs, mounted read-only.
pub const LAYER_DIR: &str = "/run/omcluster/system/layer";
/// The tmpfs holding the overlay's upper and work directories.
pub const RW_DIR: &str = "/run/omcluster/system/rw";
/// The initramfs, bound read-only: the overlay's lowest layer, and the
/// way to its files once the layer is the root.
pub const INITRAMFS_DIR: &str = "/run/omcluster/system/initramfs";

/// Where the layer file is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    /// On an NFS export (`om.system=nfs://HEAD/images`); `client` is this
    /// machine's address toward the server.
    Nfs {
        /// The export holding [`SYSTEM_LAYER`].
        export: NfsShare,
        /// This machine's address.
        client: Ipv4Addr,
    },
    /// A file already reachable (the boot medium's copy).
    File(PathBuf),
}

impl std::fmt::Display for LayerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerSource::Nfs { export, .. } => write!(f, "{export}/{SYSTEM_LAYER}"),
            LayerSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Why the layer could not become the root.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A module could not be loaded.
    #[error("loading {module}: {reason}")]
    Module {
        /// The module.
        module: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The export could not be mounted.
    #[error(transparent)]
    Nfs(#[from] share::ShareError),
    /// The layer file is not there.
    #[error("{0}: no such file (was the image built with packages.system?)")]
    Missing(PathBuf),
    /// The loop device could not be set up.
    #[error(transparent)]
    Loop(#[from] loopdev::LoopError),
    /// A mount failed.
    #[error("{what}: {errno}")]
    Mount {
        /// What was being mounted or moved.
        what: String,
        /// What the kernel said.
        errno: nix::errno::Errno,
    },
    /// A directory could not be made.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The layer holds no root file system.
    #[error("{0} holds no /usr: not a system layer")]
    NotARoot(String),
}

/// The modules the layer needs, in load order (Debian builds them as
/// modules; `loop` is in the image's `storage` set, squashfs and overlay in
/// `overlay`).
const MODULES: [(&str, &str); 2] = [("squashfs", "squashfs"), ("overlay", "overlay")];

/// The overlayfs options: `layer` above `initramfs` as lower layers, the
/// writes in `rw`'s `upper` and `work`.
pub fn overlay_options(layer: &str, initramfs: &str, rw: &str) -> String {
    format!("lowerdir={layer}:{initramfs},upperdir={rw}/upper,workdir={rw}/work")
}

/// The mount points to move into the new root at `new_root`, from a mount
/// table (`/proc/self/mounts` text): every mount directly below `/`, once,
/// in table order, except `/` itself and the new root. Their own submounts
/// (`/dev/pts`, `/sys/fs/cgroup`, everything under `/run`) move with them.
pub fn mounts_to_move(mounts: &str, new_root: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in mounts.lines() {
        let Some(target) = line.split_whitespace().nth(1) else {
            continue;
        };
        let target = unescape(target);
        let top = target
            .strip_prefix('/')
            .is_some_and(|rest| !rest.is_empty() && !rest.contains('/') && target != new_root);
        if top && !out.contains(&target) {
            out.push(target);
        }
    }
    out
}

/// `/proc/self/mounts` writes a space in a path as `\040` (and tab,
/// newline and backslash likewise).
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn mkdir(path: &str) -> Result<(), SystemError> {
    std::fs::create_dir_all(path).map_err(|source| SystemError::Dir {
        path: path.to_string(),
        source,
    })
}

fn mount(
    what: impl FnOnce() -> String,
    source: Option<&str>,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), SystemError> {
    nix::mount::mount(source, target, fstype, flags, data).map_err(|errno| SystemError::Mount {
        what: what(),
        errno,
    })
}

/// Builds the new root at [`NEW_ROOT`] from the layer at `source`. On
/// failure, what was mounted is taken down again, so a later try (or the
/// initramfs carrying on) starts clean.
pub fn mount_layer(source: &LayerSource) -> Result<(), SystemError> {
    let mut mounted: Vec<&str> = Vec::new();
    let result = assemble(source, &mut mounted);
    if result.is_err() {
        for target in mounted.iter().rev() {
            let _ = nix::mount::umount2(*target, MntFlags::MNT_DETACH);
        }
    }
    result
}

fn assemble(source: &LayerSource, mounted: &mut Vec<&'static str>) -> Result<(), SystemError> {
    if let Some(dir) = kmod::modules_dir() {
        for (fs, module) in MODULES {
            kmod::ensure_filesystem(fs, module)
                .map_err(|reason| SystemError::Module { module, reason })?;
        }
        // No device asks for loop: loaded by name (built in elsewhere).
        if !Path::new("/dev/loop-control").exists() {
            kmod::load_named(&dir, &["loop".to_string()]).map_err(|e| SystemError::Module {
                module: "loop",
                reason: e.to_string(),
            })?;
        }
    }
    let file = match source {
        LayerSource::Nfs { export, client } => {
            mkdir(IMAGES_DIR)?;
            share::mount_at(export, *client, Path::new(IMAGES_DIR), MsFlags::MS_RDONLY)?;
            mounted.push(IMAGES_DIR);
            Path::new(IMAGES_DIR).join(SYSTEM_LAYER)
        }
        LayerSource::File(path) => path.clone(),
    };
    if !file.is_file() {
        return Err(SystemError::Missing(file));
    }
    let device = loopdev::attach_read_only(&file)?;
    mkdir(LAYER_DIR)?;
    let device_text = device.path.display().to_string();
    mount(
        || format!("mounting {device_text} ({}) on {LAYER_DIR}", file.display()),
        Some(&device_text),
        LAYER_DIR,
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None,
    )?;
    // The mount holds the device now; it clears itself when that goes.
    drop(device);
    mounted.push(LAYER_DIR);
    if !Path::new(LAYER_DIR).join("usr").is_dir() {
        return Err(SystemError::NotARoot(file.display().to_string()));
    }
    mkdir(RW_DIR)?;
    mount(
        || format!("mounting tmpfs on {RW_DIR}"),
        Some("system-rw"),
        RW_DIR,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )?;
    mounted.push(RW_DIR);
    for dir in ["upper", "work"] {
        mkdir(&format!("{RW_DIR}/{dir}"))?;
    }
    mkdir(INITRAMFS_DIR)?;
    mount(
        || format!("binding the initramfs on {INITRAMFS_DIR}"),
        Some("/"),
        INITRAMFS_DIR,
        None,
        MsFlags::MS_BIND,
        None,
    )?;
    mounted.push(INITRAMFS_DIR);
    mount(
        || format!("making {INITRAMFS_DIR} read-only"),
        None,
        INITRAMFS_DIR,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
        None,
    )?;
    mkdir(NEW_ROOT)?;
    let options = overlay_options(LAYER_DIR, INITRAMFS_DIR, RW_DIR);
    mount(
        || format!("mounting the overlay on {NEW_ROOT} ({options})"),
        Some("system"),
        NEW_ROOT,
        Some("overlay"),
        MsFlags::empty(),
        Some(&options),
    )?;
    mounted.push(NEW_ROOT);
    Ok(())
}

/// Moves this process (every thread of it) into [`NEW_ROOT`]: the
/// top-level mounts go along, the new root goes onto `/`, then `chroot`.
/// If a mount cannot be moved, those already moved go back and nothing
/// has changed.
pub fn switch_root() -> Result<(), SystemError> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut moved: Vec<(String, String)> = Vec::new();
    for target in mounts_to_move(&table, NEW_ROOT) {
        let inside = format!("{NEW_ROOT}{target}");
        let result = mkdir(&inside).and_then(|()| {
            mount(
                || format!("moving {target} to {inside}"),
                Some(&target),
                &inside,
                None,
                MsFlags::MS_MOVE,
                None,
            )
        });
        if let Err(e) = result {
            for (from, to) in moved.iter().rev() {
                let _ = nix::mount::mount(
                    Some(to.as_str()),
                    from.as_str(),
                    None::<&str>,
                    MsFlags::MS_MOVE,
                    None::<&str>,
                );
            }
            return Err(e);
        }
        moved.push((target, inside));
    }
    let chroot = |what: &str, r: nix::Result<()>| {
        r.map_err(|errno| SystemError::Mount {
            what: what.to_string(),
            errno,
        })
    };
    chroot("chdir to the new root", nix::unistd::chdir(NEW_ROOT))?;
    mount(
        || format!("moving {NEW_ROOT} onto /"),
        Some("."),
        "/",
        None,
        MsFlags::MS_MOVE,
        None,
    )?;
    chroot("chroot into the new root", nix::unistd::chroot("."))?;
    chroot("chdir to /", nix::unistd::chdir("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn overlay_puts_the_layer_above_the_initramfs() {
        expect!["lowerdir=/run/omcluster/system/layer:/run/omcluster/system/initramfs,upperdir=/run/omcluster/system/rw/upper,workdir=/run/omcluster/system/rw/work"]
            .assert_eq(&overlay_options(LAYER_DIR, INITRAMFS_DIR, RW_DIR));
    }

    #[test]
    fn top_level_mounts_move_with_their_submounts() {
        let table = "rootfs / rootfs rw 0 0\n\
            proc /proc proc rw 0 0\n\
            sysfs /sys sysfs rw 0 0\n\
            cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n\
            devtmpfs /dev devtmpfs rw 0 0\n\
            devpts /dev/pts devpts rw 0 0\n\
            tmpfs /run tmpfs rw 0 0\n\
            10.77.0.1:/images /run/omcluster/system/images nfs4 ro 0 0\n\
            tmpfs /tmp tmpfs rw 0 0\n\
            cluster /cluster tmpfs rw 0 0\n\
            system /sysroot overlay rw 0 0\n\
            tmpfs /my\\040data tmpfs rw 0 0\n\
            tmpfs /tmp tmpfs rw 0 0\n";
        expect![[r#"
            [
                "/proc",
                "/sys",
                "/dev",
                "/run",
                "/tmp",
                "/cluster",
                "/my data",
            ]
        "#]]
        .assert_debug_eq(&mounts_to_move(table, NEW_ROOT));
    }

    #[test]
    fn sources_read_as_their_place() {
        let nfs = LayerSource::Nfs {
            export: "nfs://10.77.0.1/images".parse().unwrap(),
            client: Ipv4Addr::new(10, 77, 0, 100),
        };
        assert_eq!(nfs.to_string(), "nfs://10.77.0.1/images/system.squashfs");
        let medium = LayerSource::File("/run/omcluster/media/system.squashfs".into());
        assert_eq!(medium.to_string(), "/run/omcluster/media/system.squashfs");
    }
}
