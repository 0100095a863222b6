//! The console: progress lines, PID 1's stdio, and the terminals that get a
//! root shell.
//!
//! `/dev/console` cannot be a controlling terminal, so shells go on the real
//! device behind it (`/sys/class/tty/console/active`, the last entry being
//! `/dev/console` itself; `tty0` means the current virtual terminal, tty1),
//! plus `ttyS0` when a serial port exists and the console is elsewhere.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The prefix of every line `omnode init` prints.
pub const PREFIX: &str = "omnode: ";

/// Prints one progress line on stderr (the console), whole, with the prefix.
pub fn say(args: std::fmt::Arguments<'_>) {
    let line = format!("{PREFIX}{args}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
    tracing::info!(target: "omnode::init", "{}", args);
}

/// Makes `/dev/console` PID 1's stdin, stdout and stderr. Leaves them as
/// they are if it cannot be opened (the kernel then already gave us one).
pub fn setup_stdio() -> std::io::Result<()> {
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open("/dev/console")?;
    for fd in 0..3 {
        nix::unistd::dup2(console.as_raw_fd(), fd)?;
    }
    Ok(())
}

use std::os::unix::fs::OpenOptionsExt;

/// Maps the names in `/sys/class/tty/console/active` to device paths,
/// `/dev/console`'s device first.
pub fn console_devices(active: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for name in active.split_whitespace().rev() {
        let name = if name == "tty0" { "tty1" } else { name };
        let p = PathBuf::from(format!("/dev/{name}"));
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The terminals that get a root shell: the console devices, and ttyS0 if
/// it is a real UART and not already among them.
pub fn shell_ttys() -> Vec<PathBuf> {
    let active = std::fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut ttys = console_devices(&active);
    let serial = PathBuf::from("/dev/ttyS0");
    // 8250 registers ports that have no hardware behind them; type 0 is
    // PORT_UNKNOWN, and opening such a port fails with EIO.
    let uart = std::fs::read_to_string("/sys/class/tty/ttyS0/type")
        .map(|t| t.trim() != "0")
        .unwrap_or(false);
    if uart && !ttys.contains(&serial) {
        ttys.push(serial);
    }
    if ttys.is_empty() {
        ttys.push(PathBuf::from("/dev/tty1"));
    }
    ttys
}

/// Makes `cmd` run in its own session with `tty` as controlling terminal
/// and stdio; the child also gets an empty signal mask (PID 1 blocks
/// everything and the mask survives exec).
pub fn on_tty(cmd: &mut Command, tty: &Path) -> std::io::Result<()> {
    let path = CString::new(tty.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe calls (sigprocmask, setsid, open, ioctl, dup2, close).
    unsafe {
        cmd.pre_exec(move || {
            unblock_all_signals();
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Steal the terminal if an old session still holds it.
            if libc::ioctl(fd, libc::TIOCSCTTY, 1) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for target in 0..3 {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if fd > 2 {
                libc::close(fd);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Gives the child its own session and an empty signal mask, keeping the
/// stdio it was given.
pub fn detached(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            unblock_all_signals();
            libc::setsid();
            Ok(())
        });
    }
}

/// Clears the signal mask (async-signal-safe).
pub fn unblock_all_signals() {
    // SAFETY: sigemptyset/sigprocmask on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_device_order() {
        assert_eq!(
            console_devices("ttyS0\n"),
            vec![PathBuf::from("/dev/ttyS0")]
        );
        assert_eq!(
            console_devices("tty0 ttyS0\n"),
            vec![PathBuf::from("/dev/ttyS0"), PathBuf::from("/dev/tty1")]
        );
        assert!(console_devices("").is_empty());
    }
}
