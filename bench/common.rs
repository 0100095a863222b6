//! Helpers shared by the benchmark binaries (`bench/tftp.rs`, `bench/http.rs`):
//! RSS readings and the median of a round's figures; the child process
//! killed on drop and the test data are the `lab` crate's.

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
