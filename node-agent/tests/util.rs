//! Shared fixtures for the node-agent integration tests: `omnode` and
//! `omctl`, and the lab's namespaces, gates and processes under the names
//! the tests use.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub use lab::gate::netns_tests;
pub use lab::netns::{netns_command, BridgeLan as Lan};
pub use lab::process::{shared_tempdir, wait_for, Reaped};

/// Path of a built binary: this crate's `omnode`, or `omctl` (a crate of
/// its own) from the static build the lab shares between tests.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "omnode" => PathBuf::from(env!("CARGO_BIN_EXE_omnode")),
        // Asked once: the build check costs a cargo run, and tests start
        // omctl in bursts.
        "omctl" => {
            static OMCTL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
            OMCTL
                .get_or_init(|| {
                    lab::build::static_binaries()
                        .expect("the static build of omctl")
                        .join("omctl")
                })
                .clone()
        }
        other => panic!("no binary {other}"),
    }
}

/// True if `p` exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}
