//! The `om.*` settings on the kernel command line (`/proc/cmdline`).
//!
//! The format is the contract [`contracts::cmdline`] (written by `omboot`,
//! read here); this module names what `omnode init` takes from it. A bad
//! value never stops the boot: PID 1 reports it and goes on with the
//! default, so [`parse`] returns the problems alongside the settings, not as
//! an `Err`.

pub use contracts::cmdline::{CmdlineError, KeySource, PxeMode, Role, Settings, StaticIp};

/// Parses the `om.*` parameters of a kernel command line; everything else
/// (`console=`, `initrd=`, `quiet`…) is the kernel's and is ignored.
pub fn parse(line: &str) -> (Settings, Vec<CmdlineError>) {
    Settings::from_cmdline(line)
}
