//! The contracts between omcluster's programs, as types the compiler checks.
//!
//! `ombuild`, `omboot`, `omnode init` and `omnode agent` run on different
//! machines at different times and meet only through formats: a file, a
//! kernel command line, a key. Each format lives here once, with its writer
//! and its reader side by side, so the two cannot drift apart.
//!
//! - [`key`]: the cluster key, its one text format and the sub-keys derived
//!   from it.
//!
//! Architecture Invariant: this crate does no I/O beyond the key file helpers;
//! it parses and prints.

pub mod cmdline;
pub mod http;
pub mod image;
pub mod key;
pub mod mac;
pub mod modules;
