//! omcluster's benchmarks: each `bench/X.rs` is one benchmark binary
//! (`harness = false`), run by its `bench/X.sh` (which sets what it needs,
//! such as `OM_QEMU_TESTS=1`) or by `cargo bench -p omcluster-bench --bench
//! X`. Each prints our figure, the peer's figure and the ratio, from one run.
//! `bench/dhcp.sh`, `bench/build.sh` and `bench/system.sh` are shell alone.
//!
//! This library is what the benchmarks share:
//! - at the root, for the servers under test (`tftp`, `http`, `boot`): the
//!   child process killed on drop ([`Proc`]) and the test data ([`pattern`]),
//!   both the `lab` crate's, RSS readings ([`rss_kib`]) and the median of a
//!   round's figures ([`median`]);
//! - [`image`]: the node image with the peers a benchmark runs on the nodes
//!   (`share`, `migrate`);
//! - [`binaries`]: the workspace's own programs a benchmark starts
//!   (`agent`, `web`: omnode and omctl), found beside the benchmark's binary;
//! - [`agents`]: a cluster of agents, one per network namespace (`agent`,
//!   `web`).

pub mod agents;
pub mod binaries;
pub mod image;

/// A child process (a server under test) killed and reaped when dropped.
pub use lab::process::Reaped as Proc;

/// `len` bytes of xorshift output: incompressible, reproducible file
/// contents to serve and compare.
pub fn pattern(len: usize) -> Vec<u8> {
    lab::pattern::pattern(len, 1)
}

/// A memory figure of process `pid` in KiB (`field` is `VmRSS:` or
/// `VmHWM:` from `/proc/PID/status`); 0 when unreadable.
pub fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The median of the rounds' figures.
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
