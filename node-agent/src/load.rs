//! The load vector each agent gossips at least once a second, how it is read
//! from `/proc`, and the start-up speed calibration (openMosix's "yardstick").

use std::time::Instant;

pub use agent_control::LoadVector;

/// Parses `/proc/loadavg`: (1-minute average, runnable tasks).
pub fn parse_loadavg(text: &str) -> Option<(f32, u32)> {
    let mut fields = text.split_whitespace();
    let one: f32 = fields.next()?.parse().ok()?;
    let runnable: u32 = fields.nth(2)?.split('/').next()?.parse().ok()?;
    Some((one, runnable))
}

/// Parses `/proc/meminfo`: (total KiB, available KiB).
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let mut total = None;
    let mut avail = None;
    let mut free = None;
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let (Some(key), Some(value)) = (it.next(), it.next()) else {
            continue;
        };
        let value: u64 = match value.parse() {
            Ok(v) => v,
            Err(_) => continue,
        };
        match key {
            "MemTotal:" => total = Some(value),
            "MemAvailable:" => avail = Some(value),
            "MemFree:" => free = Some(value),
            _ => {}
        }
    }
    Some((total?, avail.or(free)?))
}

/// Online CPUs of this machine.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
}

/// Reads this node's load vector (everything but speed, jobs and quota, which
/// the agent knows).
pub fn sample(speed: f32, jobs: u32, started: u64, cpu_quota: u32) -> LoadVector {
    let (loadavg, runnable) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t))
        .unwrap_or((0.0, 0));
    let (mem_total_kib, mem_free_kib) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo(&t))
        .unwrap_or((0, 0));
    LoadVector {
        cpus: cpu_count(),
        speed,
        loadavg,
        runnable,
        mem_total_kib,
        mem_free_kib,
        jobs,
        started,
        cpu_quota,
        share: None,
        criu: false,
        demand: runnable.saturating_sub(1) as f32,
        knobs: Default::default(),
        guests: 0,
        moved_in: 0,
        moved_out: 0,
        root_jobs: false,
        cpu_features: Default::default(),
    }
}

/// Iterations of the calibration workload.
pub const YARDSTICK_ROUNDS: u64 = 20_000_000;
/// How long the reference machine takes for [`YARDSTICK_ROUNDS`], in ns.
pub const YARDSTICK_REFERENCE_NS: f64 = 40_000_000.0;

/// The calibration workload: a fixed chain of integer operations.
pub fn yardstick(rounds: u64) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x = x.wrapping_add(i);
    }
    std::hint::black_box(x)
}

/// Relative speed of one CPU: the best of three timed runs of [`yardstick`]
/// against the reference time (so a momentary hiccup does not make a node
/// look slow).
pub fn calibrate() -> f32 {
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            yardstick(std::hint::black_box(YARDSTICK_ROUNDS));
            t.elapsed().as_nanos() as f64
        })
        .fold(f64::MAX, f64::min)
        .max(1.0);
    (YARDSTICK_REFERENCE_NS / best) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("0.52 0.41 0.30 3/512 12345\n"),
            Some((0.52, 3))
        );
        assert_eq!(parse_loadavg("garbage"), None);
    }

    #[test]
    fn meminfo() {
        let text =
            "MemTotal:       16000000 kB\nMemFree:         1000 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_meminfo(text), Some((16_000_000, 8_000_000)));
        assert_eq!(
            parse_meminfo("MemTotal: 10 kB\nMemFree: 5 kB\n"),
            Some((10, 5))
        );
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn capacity_follows_quota() {
        let mut v = sample(1.0, 0, 0, 50);
        v.cpus = 4;
        assert_eq!(v.capacity(), 2.0);
        v.cpu_quota = 100;
        assert_eq!(v.capacity(), 4.0);
    }

    #[test]
    fn calibration_is_positive() {
        assert!(calibrate() > 0.0);
    }
}
