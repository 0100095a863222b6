//! What a job uses, read from `/proc` for the balancer: the time its
//! threads ran and waited to run (`/proc/PID/task/TID/schedstat`, whose
//! difference over an interval is the CPUs the job wants) and its resident
//! memory (`/proc/PID/statm`), its processes' states and nice value
//! (`/proc/PID/stat`). The parsers are pure; [`of`] reads.

use agent_control::model::RunState;

/// A job's counters at one moment, summed over its processes and threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Nanoseconds its threads ran on a CPU.
    pub run_ns: u64,
    /// Nanoseconds its threads waited in a run queue.
    pub wait_ns: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Its busiest process's state (`None`: no process found).
    pub state: Option<RunState>,
    /// Its first process's nice value.
    pub nice: Option<i32>,
}

/// Parses `stat`: (state letter, nice value). The command name in
/// parentheses may hold spaces and parentheses itself, so the fields are
/// counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<(char, i32)> {
    let rest = text.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    let state = f.next()?.chars().next()?;
    // After the state: ppid … priority are fields 4–18; nice is 19.
    let nice = f.nth(15)?.parse().ok()?;
    Some((state, nice))
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
    let mut letters = Vec::new();
    for pid in pids {
        if let Some((state, nice)) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            letters.push(state);
            u.nice.get_or_insert(nice);
        }
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
    u.state = RunState::of(letters);
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
        let stat =
            "4242 (a (b) c) T 1 4242 4242 0 -1 4194304 100 0 0 0 5 6 0 0 30 10 1 0 77 1000 50";
        assert_eq!(parse_stat(stat), Some(('T', 10)));
        assert_eq!(parse_stat("1 (x) R 0"), None);
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
        assert!(u.state.is_some() && u.nice.is_some(), "{u:?}");
    }
}
