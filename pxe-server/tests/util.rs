//! Fixtures shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

/// Whether we run under CI, where a missing prerequisite is a failure.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Whether `tool` is on PATH. Under `CI=true` a missing tool panics; otherwise
/// the caller skips and a note is printed.
pub fn have_tool(tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false);
    if !found {
        if ci() {
            panic!("{tool} is not installed (required under CI=true)");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Deterministic pseudo-random bytes (xorshift), so a wrong offset shows up as
/// a mismatch rather than matching repeated content.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Writes `len` pattern bytes to `path`, creating parent directories.
pub fn write_pattern(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    let data = pattern(len, seed);
    std::fs::write(path, &data).unwrap();
    data
}
