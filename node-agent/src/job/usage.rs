//! What a job uses, read from `/proc` for the balancer: the time its
//! threads ran and waited to run (`/proc/PID/task/TID/schedstat`, whose
//! difference over an interval is the CPUs the job wants) and its resident
//! memory (`/proc/PID/statm`). The parsers are pure; [`of`] reads.

/// A job's counters at one moment, summed over its processes and threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Nanoseconds its threads ran on a CPU.
    pub run_ns: u64,
    /// Nanoseconds its threads waited in a run queue.
    pub wait_ns: u64,
    /// Resident memory, bytes.
    pub rss: u64,
}

/// Parses `schedstat`: (run ns, wait ns).
pub fn parse_schedstat(text: &str) -> Option<(u64, u64)> {
    let mut f = text.split_whitespace();
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// Parses `statm`: resident pages.
pub fn parse_statm(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The usage of the processes `pids` (a job's, from [`super::processes`]).
pub fn of(pids: &[u32]) -> Usage {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut u = Usage::default();
    for pid in pids {
        if let Some(pages) = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|t| parse_statm(&t))
        {
            u.rss += pages * page;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some((run, wait)) = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| parse_schedstat(&s))
            {
                u.run_ns += run;
                u.wait_ns += wait;
            }
        }
    }
    u
}

/// Runnable tasks of the whole machine now (`procs_running` of `/proc/stat`).
pub fn procs_running(stat: &str) -> Option<u32> {
    stat.lines()
        .find_map(|l| l.strip_prefix("procs_running "))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_schedstat("123456 7890 12\n"), Some((123_456, 7890)));
        assert_eq!(parse_schedstat("x"), None);
        assert_eq!(parse_statm("2000 350 100 1 0 200 0\n"), Some(350));
        assert_eq!(
            procs_running("cpu  1 2 3\nprocs_running 7\nprocs_blocked 0\n"),
            Some(7)
        );
    }

    #[test]
    fn this_process_uses_something() {
        let me = std::process::id();
        let u = of(&[me]);
        assert!(u.rss > 0, "{u:?}");
    }
}
