//! The cluster key on disk, written once for every program that keeps it:
//! `omnode keygen`, `omnode init` (PID 1, synchronous: this crate has no
//! async runtime), `omnode agent` and `omctl join`, and `omboot`.
//!
//! - [`file`]: [`KeyFile`], one key in a file of mode 0600: read it, make
//!   it without overwriting a key, replace it atomically.
//! - [`store`]: [`KeyStore`], the key ring of [`contracts::rotate`] and the
//!   key file that holds its newest key, changed together when a rotation
//!   hands out a new key.
//!
//! The formats (the key's text, the ring's phases) are `contracts`'s, which
//! does no I/O; this crate is the file half around them. Times come from
//! [`contracts::clock`].

pub mod file;
pub mod store;

pub use file::{KeyFile, LoadError, WriteError};
pub use store::{FollowError, KeyStore, TakeError};
