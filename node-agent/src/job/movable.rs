//! What keeps a job from moving, found in `/proc` before it is frozen: an
//! open socket, a device, a file or mapping that lives only on this node
//! (not in the shared tree `/cluster` nor in the image every node boots),
//! System V shared memory. The first reason found is the answer.
//!
//! "The image" is the root file system: the initramfs, or on a machine
//! running from a system layer the overlay's lower layers (the layer and
//! the initramfs), which every node has alike. There a file is the
//! image's when a lower layer holds it and the upper layer (this node's
//! writes, in RAM) does not, a folder when a lower layer holds it: asked
//! of the layers themselves, since the device numbers overlayfs reports
//! for files from a layer are its own.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use contracts::share::MOUNT_POINT;

/// Devices every node has and CRIU reopens by path.
const COMMON_DEVICES: [&str; 6] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// What the image is on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// The root file system's device (an initramfs).
    Device(u64),
    /// An overlay at `/`: its lower layers (top first) and upper layer.
    Overlay {
        /// The `lowerdir=` folders.
        lower: Vec<String>,
        /// The `upperdir=` folder.
        upper: String,
    },
}

impl Image {
    /// This machine's.
    fn here() -> Image {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        root_overlay(&mountinfo)
            .unwrap_or_else(|| Image::Device(std::fs::metadata("/").map(|m| m.dev()).unwrap_or(0)))
    }

    /// Whether the image holds `path` (absolute) as it is seen here.
    fn holds(&self, path: &str) -> bool {
        match self {
            Image::Device(dev) => std::fs::metadata(path).is_ok_and(|m| m.dev() == *dev),
            Image::Overlay { lower, upper } => {
                let under = |dir: &str| Path::new(&format!("{dir}{path}")).symlink_metadata();
                match lower.iter().find_map(|dir| under(dir).ok()) {
                    None => false,
                    // A folder of the layers is on every node (merged with
                    // this node's writes, which the files answer for).
                    Some(m) if m.is_dir() => true,
                    Some(_) => under(upper).is_err(),
                }
            }
        }
    }
}

/// Where a path lives, as far as moving is concerned: in the shared tree,
/// or in the image every node has.
fn on_every_node(path: &str, image: &Image) -> bool {
    Path::new(path).starts_with(MOUNT_POINT) || image.holds(path)
}

/// The overlay mounted at `/`, from a mount table (`/proc/self/mountinfo`
/// text): the `lowerdir=` and `upperdir=` of its super options. None when
/// `/` is not an overlay.
pub fn root_overlay(mountinfo: &str) -> Option<Image> {
    let options = mountinfo
        .lines()
        .filter_map(|line| {
            let (mount, fs) = line.split_once(" - ")?;
            let point = mount.split_whitespace().nth(4)?;
            let mut fs = fs.split_whitespace();
            let (fstype, _source, options) = (fs.next()?, fs.next()?, fs.next()?);
            (point == "/" && fstype == "overlay").then_some(options)
        })
        .next_back()?;
    let option = |name: &str| options.split(',').find_map(|o| o.strip_prefix(name));
    Some(Image::Overlay {
        lower: option("lowerdir=")?.split(':').map(String::from).collect(),
        upper: option("upperdir=")?.to_string(),
    })
}

/// Why the job with these processes cannot move, if it cannot.
pub fn check(procs: &[u32]) -> Result<(), String> {
    let image = Image::here();
    for &pid in procs {
        let base = format!("/proc/{pid}");
        if let Ok(cwd) = std::fs::read_link(format!("{base}/cwd")) {
            let cwd = cwd.display().to_string();
            if !on_every_node(&cwd, &image) {
                return Err(format!(
                    "its working directory {cwd} is on this node only (use {MOUNT_POINT})"
                ));
            }
        }
        if let Ok(fds) = std::fs::read_dir(format!("{base}/fd")) {
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                let target = target.display().to_string();
                let n = fd.file_name().to_string_lossy().to_string();
                if target.starts_with("socket:") {
                    return Err(format!(
                        "process {pid} has a socket open (fd {n}); sockets cannot move"
                    ));
                }
                if target.starts_with("pipe:") || target.starts_with("anon_inode:") {
                    continue;
                }
                if target.starts_with("/dev/") {
                    if COMMON_DEVICES.contains(&target.as_str()) {
                        continue;
                    }
                    return Err(format!("process {pid} uses the device {target}"));
                }
                if target.starts_with('/') && !on_every_node(&target, &image) {
                    return Err(format!(
                        "process {pid} has {target} open, which is on this node only (use {MOUNT_POINT})"
                    ));
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(format!("{base}/maps")) {
            for line in maps.lines() {
                let Some(path) = line.split_whitespace().nth(5) else {
                    continue;
                };
                if path.starts_with("/SYSV") {
                    return Err(format!(
                        "process {pid} uses System V shared memory, which cannot move"
                    ));
                }
                if path.starts_with("/dev/") && !COMMON_DEVICES.contains(&path) {
                    return Err(format!("process {pid} maps the device {path}"));
                }
                if path.starts_with('/')
                    && !path.starts_with("/dev/")
                    && !on_every_node(path, &image)
                {
                    return Err(format!(
                        "process {pid} maps {path}, which is on this node only"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roots_layers_come_from_its_overlay() {
        let layered = "\
21 1 0:20 / / rw,relatime - overlay system rw,lowerdir=/run/omcluster/system/layer:/run/omcluster/system/initramfs,upperdir=/run/omcluster/system/rw/upper,workdir=/run/omcluster/system/rw/work
22 21 0:5 / /proc rw,nosuid,nodev,noexec - proc proc rw
30 21 0:24 / /cluster rw,relatime shared:5 - nfs4 10.77.0.1:/cluster rw,vers=4.2
";
        assert_eq!(
            root_overlay(layered),
            Some(Image::Overlay {
                lower: vec![
                    "/run/omcluster/system/layer".into(),
                    "/run/omcluster/system/initramfs".into()
                ],
                upper: "/run/omcluster/system/rw/upper".into(),
            })
        );
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(root_overlay(initramfs), None);
    }

    #[test]
    fn a_path_is_the_images_when_a_lower_layer_holds_it_and_the_upper_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p);
        for (file, body) in [
            ("layer/usr/bin/python3", "py"),
            ("initramfs/bin/omnode", "om"),
            ("layer/etc/passwd", "debian"),
            ("upper/etc/passwd", "the head's"),
            ("upper/root/notes", "mine"),
        ] {
            std::fs::create_dir_all(at(file).parent().unwrap()).unwrap();
            std::fs::write(at(file), body).unwrap();
        }
        let s = |p: &str| at(p).display().to_string();
        let image = Image::Overlay {
            lower: vec![s("layer"), s("initramfs")],
            upper: s("upper"),
        };
        assert!(image.holds("/usr/bin/python3"));
        assert!(image.holds("/bin/omnode"));
        assert!(!image.holds("/etc/passwd"), "copied up: this node's");
        assert!(!image.holds("/root/notes"), "written here");
        assert!(!image.holds("/tmp/scratch"), "nowhere in the layers");
        assert!(image.holds("/"), "the root folder, merged");
        assert!(
            image.holds("/etc"),
            "a folder of the layer, with a file copied up"
        );
        assert!(!image.holds("/root"), "a folder made here");
    }
}
