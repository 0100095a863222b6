//! `omnode init`: PID 1 of the netbooted image.
//!
//! The boot, in order: mount the early file systems ([`mounts`]), make
//! `/dev/console` stdio ([`console`]), take over the signals ([`reaper`]),
//! read the `om.*` settings ([`cmdline`]), load the modules CRIU needs
//! ([`kmod`]; no device asks for them), start root shells on the console
//! (and serial), and in the background load the device modules,
//! bring up the wired NICs with DHCP ([`network`], [`dhcp_client`],
//! [`packet`], [`netif`], [`address`]). Once the network is up: the head
//! (named by `om.server=`, or heard announcing itself: [`announce`]), the
//! cluster key ([`key`]; the head makes a fresh one), the image's system
//! layer as the root when it has one ([`system`], over [`loopdev`]: from the
//! head's NFS export on a node, from the medium on the head; a layer that
//! cannot be had leaves the initramfs as the root), the shared tree at `/cluster`
//! with the head's users and groups ([`share`], over [`fetch`]), the agent
//! (after the tree is mounted, or a minute of trying), and on the head the
//! boot medium ([`media`]), the head's own tree ([`storage`]) and `omboot
//! serve` with the interface, mode and pool [`head`] derives from the
//! address the head got. Then PID 1 loops
//! forever: reap children, restart the supervised ones with backoff, and
//! power off or reboot on request ([`power`]). That sequence and the loop
//! are PID 1's supervisor (`supervisor`, one file per strand of the boot);
//! this file only checks it runs as PID 1 and hands over.
//!
//! PID 1 must never exit (the kernel would panic): every failure is printed
//! as an `omnode: ` line and retried; [`run`] returns only when it is not
//! PID 1 at all.
//!
//! Entry points for the `omnode` binary: [`run`] (`omnode init`, and `/init`)
//! and [`power::request`] (`omnode poweroff`, `omnode reboot`).
//!
//! # Layers
//!
//! Each module imports only from the layers below it (`say!` counts as an
//! import of [`console`]):
//!
//! 1. no imports within the crate: [`address`] (the [`address::Lease`] and
//!    [`address::IfAddress`] data), [`cmdline`], [`console`], [`fetch`],
//!    [`kmod`], [`loopdev`], [`mounts`], [`packet`];
//! 2. the pure cores and the thin system calls over layer 1: [`head`]
//!    (address, cmdline), `dhcp_client::client` (address), [`netif`]
//!    (address), [`reaper`] (console), [`announce`] (console), [`media`] (kmod), [`key`] (fetch),
//!    [`share`] (fetch, kmod), [`storage`] (kmod, media);
//! 3. the shells over them: `dhcp_client::shell` (its core, netif, packet),
//!    [`power`] (reaper, mounts), [`system`] (kmod, loopdev, share);
//! 4. [`network`] (dhcp_client, head, netif, kmod, reaper, cmdline);
//! 5. `supervisor`: PID 1's boot sequence and loop, over everything;
//! 6. this file: [`run`], over `supervisor`.
//!
//! Architecture Invariant: there is no import cycle among the modules; a
//! pure core ([`head`], `dhcp_client::client`) never imports the I/O shell that
//! drives it ([`network`], `dhcp_client::shell`), and the data both share
//! lives in [`address`], below both.

use std::convert::Infallible;
use std::path::PathBuf;

/// Prints an `omnode: ` progress line on the console.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(format_args!($($arg)*))
    };
}

pub mod address;
pub mod announce;
pub mod cmdline;
pub mod console;
pub mod dhcp_client;
pub mod fetch;
pub mod head;
pub mod key;
pub mod kmod;
pub mod loopdev;
pub mod media;
pub mod mounts;
pub mod netif;
pub mod network;
pub mod packet;
pub mod power;
pub mod reaper;
pub mod share;
pub mod storage;
pub mod system;

mod supervisor;

pub use power::{request as request_power, PowerAction, PowerError};

/// Options of `omnode init`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// Read the settings from this file instead of /proc/cmdline.
    #[arg(long, value_name = "FILE")]
    pub cmdline: Option<PathBuf>,
}

/// Why `omnode init` did not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `omnode init` was run by something other than the kernel.
    #[error(
        "omnode init must run as PID 1 (this is pid {0}); on an ordinary system use `omnode agent`"
    )]
    NotPid1(u32),
}

/// Runs PID 1. Returns only an error (when not PID 1); otherwise it never
/// returns: shutdown ends in the reboot syscall.
pub fn run(args: InitArgs) -> Result<Infallible, InitError> {
    let pid = std::process::id();
    if pid != 1 {
        return Err(InitError::NotPid1(pid));
    }
    let cmdline = args
        .cmdline
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    supervisor::run(&cmdline)
}
