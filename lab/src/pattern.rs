//! Reproducible test data: deterministic pseudo-random bytes (xorshift), so
//! a wrong offset shows up as a mismatch rather than matching repeated
//! content, and a file served and compared is incompressible.

use std::path::Path;

/// `len` pattern bytes for `seed` (seed 1 is what the benchmarks serve).
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

/// Writes `len` pattern bytes to `path`, creating parent directories, and
/// returns them (panics on I/O errors, as a test fixture).
pub fn write_pattern(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    let data = pattern(len, seed);
    std::fs::write(path, &data).unwrap();
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_one_is_the_benchmarks_pattern() {
        // The benchmarks' generator started from this state.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        assert_eq!(pattern(8, 1), x.to_le_bytes());
        assert_ne!(pattern(64, 1), pattern(64, 2));
    }
}
