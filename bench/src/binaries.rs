//! The workspace's own programs a benchmark starts (omnode and omctl, for
//! `bench/agent.rs`). Cargo names a package's binaries to its own
//! benchmarks only (`CARGO_BIN_EXE_*`), and these belong to `node-agent`
//! and `omctl`; so they are built first in the benchmark's profile (`cargo
//! build --profile bench -p node-agent -p omctl --bins`, which
//! `bench/agent.sh` runs) and
//! found where cargo puts them: the profile's folder, the parent of the
//! `deps/` folder the benchmark runs from.

use std::path::{Path, PathBuf};

/// Why a program a benchmark starts cannot be found.
#[derive(Debug, thiserror::Error)]
pub enum BinaryError {
    /// The running benchmark's own path could not be read.
    #[error("cannot read this benchmark's own path: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// The program is not built in the benchmark's profile.
    #[error(
        "{} is not built: build it in the bench profile first (bench/agent.sh does: \
         cargo build --profile bench -p node-agent -p omctl --bins)",
        path.display()
    )]
    NotBuilt {
        /// Where it was looked for.
        path: PathBuf,
    },
}

/// The path of the workspace binary `name`, built in the same target
/// directory and profile as the running benchmark.
pub fn built(name: &str) -> Result<PathBuf, BinaryError> {
    let exe = std::env::current_exe().map_err(BinaryError::CurrentExe)?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| Path::new("."));
    let path = profile_dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(BinaryError::NotBuilt { path })
    }
}

/// [`built`], or the end of benchmark `bench` with the reason on stderr.
pub fn built_or_exit(bench: &str, name: &str) -> PathBuf {
    built(name).unwrap_or_else(|e| {
        eprintln!("{bench} bench: {e}");
        std::process::exit(1);
    })
}
