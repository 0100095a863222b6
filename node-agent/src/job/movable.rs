//! What keeps a job from moving, found in `/proc` before it is frozen: an
//! open socket, a device, a file or mapping that lives only on this node
//! (not in the shared tree `/cluster` nor in the image every node boots),
//! System V shared memory. The first reason found is the answer.

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

/// Where a path lives, as far as moving is concerned.
fn on_every_node(path: &str, root_dev: u64) -> bool {
    if Path::new(path).starts_with(MOUNT_POINT) {
        return true;
    }
    // The image: the initramfs every node unpacks (the root file system).
    std::fs::metadata(path).is_ok_and(|m| m.dev() == root_dev)
}

/// Why the job with these processes cannot move, if it cannot.
pub fn check(procs: &[u32]) -> Result<(), String> {
    let root_dev = std::fs::metadata("/").map(|m| m.dev()).unwrap_or(0);
    for &pid in procs {
        let base = format!("/proc/{pid}");
        if let Ok(cwd) = std::fs::read_link(format!("{base}/cwd")) {
            let cwd = cwd.display().to_string();
            if !on_every_node(&cwd, root_dev) {
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
                if target.starts_with('/') && !on_every_node(&target, root_dev) {
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
                    && !on_every_node(path, root_dev)
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
