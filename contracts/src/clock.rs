//! The wall clock as Unix time: the one place in the workspace that reads
//! it for a timestamp, so that every time the programs store or exchange
//! (lease expiries, admin signatures' `x-om-time`, datagram stamps, key
//! rotation deadlines) comes from the same rule.
//!
//! Reading the clock is not file or socket I/O, so it may live in this
//! pure crate; the formats themselves still take times as arguments, and
//! only the programs call these. Monotonic timing (`Instant`) stays where
//! it is used: it is not a timestamp anyone else reads; nor is the builder
//! touching a cached file's modification time, which the file system keeps.
//!
//! A clock set before 1970 reads as 0 rather than failing: the callers
//! compare and subtract times, and a node with a broken clock is better
//! refused by its peers than stopped here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch, now.
pub fn unix_seconds() -> u64 {
    since_epoch().as_secs()
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_millis() -> u64 {
    // u64 milliseconds last 584 million years: the cast cannot truncate.
    since_epoch().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_agree() {
        let s = unix_seconds();
        let ms = unix_millis();
        let s2 = unix_seconds();
        // 2020-01-01: any clock this code runs under is past it.
        assert!(s > 1_577_836_800, "{s}");
        assert!(s * 1000 <= ms && ms / 1000 <= s2, "{s} {ms} {s2}");
    }
}
