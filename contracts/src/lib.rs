//! The contracts between omcluster's programs, as types the compiler checks.
//!
//! `ombuild`, `omboot`, `omnode init` and `omnode agent` run on different
//! machines at different times and meet only through formats: a file, a
//! kernel command line, a key. Each format lives here once, with its writer
//! and its reader side by side, so the two cannot drift apart.
//!
//! - [`image`]: the image directory `ombuild` writes and `omboot` serves:
//!   its paths and `manifest.json` ([`image::Manifest`]).
//! - [`cmdline`]: the kernel command line `omboot` writes and `omnode init`
//!   reads ([`cmdline::KernelCmdline`], folded into [`cmdline::Settings`]).
//! - [`key`]: the cluster key, its one text format and parse rule, and the
//!   sub-keys derived from it.
//! - [`admit`]: admission: the cluster key sealed to a booting machine's
//!   own key pair (HPKE), the admit request and answer, the admin's list
//!   and decisions and their signature.
//! - [`rotate`]: key rotation: the ring of keys a member holds while the
//!   cluster moves to a new key, and the new key sealed for `omboot`.
//! - [`http`]: the check-in body ([`http::Checkin`]) the agent sends and
//!   `omboot` reads, and the pure halves of the two small HTTP clients (URL
//!   split, request writer, response parse).
//! - [`announce`]: the head's multicast announcement, how a machine booted
//!   from the ISO or a USB stick finds the head on its LAN.
//! - [`mac`]: the one MAC address type.
//! - [`boot`]: each machine's boot stage as `omboot` records and serves it.
//! - [`share`]: the shared tree at `/cluster`: `om.share=` and `--share`
//!   ([`share::Share`]), and the kernel NFS mount a node makes of it.
//! - [`modules`]: the kernel module index in the initramfs (`modules.dep`,
//!   `modules.alias`, `modules.builtin`) and [`modules::module_name`].
//! - [`clock`]: the wall clock as Unix seconds and milliseconds, read in
//!   this one place.
//!
//! Architecture Invariant: this crate does no I/O; it parses and prints.
//! Files and sockets belong to the programs that use the formats (reading
//! the clock, in [`clock`], is neither).

pub mod admit;
pub mod announce;
pub mod boot;
pub mod clock;
pub mod cmdline;
pub mod http;
pub mod image;
pub mod key;
pub mod mac;
pub mod modules;
pub mod rotate;
pub mod share;
