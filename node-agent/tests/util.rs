//! Shared fixtures for the node-agent integration tests: this crate's
//! binaries, and the lab's namespaces, gates and processes under the names
//! the tests use.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use lab::gate::netns_tests;
pub use lab::netns::{netns_command, BridgeLan as Lan};
pub use lab::process::{shared_tempdir, wait_for, Reaped};

/// Path of a built binary of this crate.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "omnode" => PathBuf::from(env!("CARGO_BIN_EXE_omnode")),
        "omctl" => PathBuf::from(env!("CARGO_BIN_EXE_omctl")),
        other => panic!("no binary {other}"),
    }
}

/// True if `p` exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
