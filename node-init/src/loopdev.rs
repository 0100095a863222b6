//! Loop devices: a file turned into a read-only block device, so the
//! kernel can mount the squashfs system layer that lives in a file (on the
//! head's NFS export or the boot medium).
//!
//! Two ioctls do it: `LOOP_CTL_GET_FREE` on `/dev/loop-control` finds a
//! free device, `LOOP_CONFIGURE` (Linux 5.8) binds the file to it with its
//! flags in one step. The structures are the kernel's `<linux/loop.h>`; the
//! `libc` crate does not carry them and the node has no `losetup`.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `LOOP_CTL_GET_FREE`.
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE`.
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LO_FLAGS_READ_ONLY`.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`: the device lets go of the file when its last user
/// (the mount) goes.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_FLAGS_DIRECT_IO`: reads bypass the backing file's page cache, so a
/// block is cached once (decompressed, by squashfs) rather than twice.
const LO_FLAGS_DIRECT_IO: u32 = 16;
/// How many times a device another process took between the two ioctls is
/// skipped before giving up.
const ATTEMPTS: usize = 8;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Why a file could not be attached.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file or device.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An ioctl failed.
    #[error("{what}: {source}")]
    Ioctl {
        /// Which step.
        what: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A loop device bound to a file, held open: the device clears itself
/// when its last user closes it, so it must be mounted before this is
/// dropped (the mount then is that user).
#[derive(Debug)]
pub struct LoopDevice {
    /// `/dev/loopN`.
    pub path: PathBuf,
    _open: File,
}

/// Attaches `file` read-only to a free loop device. Tries direct I/O
/// first, and buffered I/O where the file's file system refuses it.
pub fn attach_read_only(file: &Path) -> Result<LoopDevice, LoopError> {
    let backing = File::open(file).map_err(|source| LoopError::Open {
        path: file.to_owned(),
        source,
    })?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|source| LoopError::Open {
            path: "/dev/loop-control".into(),
            source,
        })?;
    let mut last = None;
    for _ in 0..ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(LoopError::Ioctl {
                what: "finding a free loop device".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = open_device(&path)?;
        let direct = configure(&device, &backing, file, LO_FLAGS_DIRECT_IO);
        let result = match direct {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                configure(&device, &backing, file, 0)
            }
            other => other,
        };
        match result {
            Ok(()) => {
                return Ok(LoopDevice {
                    path,
                    _open: device,
                })
            }
            // Another process took it between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => last = Some(e),
            Err(source) => {
                return Err(LoopError::Ioctl {
                    what: format!("attaching {} to {}", file.display(), path.display()),
                    source,
                })
            }
        }
    }
    Err(LoopError::Ioctl {
        what: format!(
            "attaching {}: every free loop device was taken",
            file.display()
        ),
        source: last.unwrap_or_else(|| std::io::Error::from_raw_os_error(libc::EBUSY)),
    })
}

/// Opens `/dev/loopN`, which devtmpfs may show a moment after the control
/// device made it.
fn open_device(path: &Path) -> Result<File, LoopError> {
    let mut tries = 0;
    loop {
        match OpenOptions::new().read(true).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 20 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(source) => {
                return Err(LoopError::Open {
                    path: path.to_owned(),
                    source,
                })
            }
        }
    }
}

/// `LOOP_CONFIGURE` of `device` with `backing`, read-only, auto-clearing,
/// plus `extra` flags.
fn configure(device: &File, backing: &File, name: &Path, extra: u32) -> std::io::Result<()> {
    let mut file_name = [0u8; 64];
    let bytes = name.as_os_str().as_encoded_bytes();
    let n = bytes.len().min(63);
    file_name[..n].copy_from_slice(&bytes[..n]);
    let config = LoopConfig {
        fd: backing.as_raw_fd() as u32,
        block_size: 0,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | extra,
            lo_file_name: file_name,
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: LOOP_CONFIGURE reads one `struct loop_config`, which
    // `config` is, laid out as the kernel's; it outlives the call.
    let r = unsafe { libc::ioctl(device.as_raw_fd(), LOOP_CONFIGURE as _, &config) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernels_sizes() {
        // <linux/loop.h>: loop_info64 is 232 bytes, loop_config 304.
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    /// Root only (CI is root: there it must run).
    fn root() -> bool {
        let root = nix::unistd::Uid::effective().is_root();
        assert!(
            root || std::env::var_os("CI").is_none(),
            "CI must run this test as root"
        );
        root
    }

    #[test]
    fn a_file_reads_back_through_its_device_and_the_device_clears_itself() {
        if !root() || !Path::new("/dev/loop-control").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("layer");
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let device = attach_read_only(&file).unwrap();
        let mut read = Vec::new();
        std::io::Read::read_to_end(&mut File::open(&device.path).unwrap(), &mut read).unwrap();
        assert!(read == data, "the device does not show the file");
        let name = device
            .path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let ro = std::fs::read_to_string(format!("/sys/block/{name}/ro")).unwrap();
        assert_eq!(ro.trim(), "1", "the device is writable");
        let path = device.path.clone();
        drop(device);
        // Nothing mounted it: the last close cleared it.
        let backing = format!("/sys/block/{name}/loop/backing_file");
        let mut cleared = false;
        for _ in 0..50 {
            if !Path::new(&backing).exists() {
                cleared = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cleared, "{} still holds the file", path.display());
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = attach_read_only(Path::new("/nonexistent/system.squashfs")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot open /nonexistent/system.squashfs: "),
            "{e}"
        );
    }
}
