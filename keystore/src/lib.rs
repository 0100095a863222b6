//! The cluster key on disk, written once for every program that keeps it:
//! `omnode keygen`, `omnode init` (PID 1, synchronous: this crate has no
//! async runtime), `omnode agent` and `omctl join`, and `omboot`.
//!
//! - [`file`]: [`KeyFile`], one key in a file of mode 0600: read it, make
//!   it without overwriting a key, replace it atomically.
//!
//! The key's text format is `contracts`'s, which does no I/O; this crate
//! is the file half around it.

pub mod file;

pub use file::{KeyFile, LoadError, WriteError};
