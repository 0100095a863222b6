//! PID 1's event loop parts: signals, reaping, and supervised children.
//!
//! PID 1 blocks every signal it handles and takes them one at a time with
//! `sigtimedwait`, so nothing runs in signal context. Worker threads wake
//! the loop with [`wake`] (a real-time signal) after they queue an event.
//! Every child is reaped here with `waitpid(-1)`: the orphans the kernel
//! reparents to us and the supervised [`Services`], which are restarted with
//! a doubling backoff.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The signals PID 1 handles.
const HANDLED: &[libc::c_int] = &[
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGHUP,
    libc::SIGPWR,
];

/// The signal worker threads use to wake the loop.
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

extern "C" fn noop(_: libc::c_int) {}

/// Installs no-op handlers for the handled signals (so the kernel does not
/// drop them as it does for PID 1's default dispositions) and blocks them,
/// in this thread and every thread spawned after. Also makes Ctrl-Alt-Del
/// send SIGINT instead of rebooting on the spot.
pub fn take_over_signals() {
    // SAFETY: sigaction/sigprocmask with locally built, valid structures.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in HANDLED.iter().chain(std::iter::once(&wake_signal())) {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = noop as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            sa.sa_flags = libc::SA_RESTART;
            libc::sigaction(sig, &sa, std::ptr::null_mut());
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let _ = nix::sys::reboot::set_cad_enabled(false);
}

/// Waits up to `timeout` for one of the handled signals; `None` on timeout.
pub fn wait_signal(timeout: Duration) -> Option<libc::c_int> {
    // SAFETY: sigtimedwait with a locally built set and timespec.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in HANDLED.iter().chain(std::iter::once(&wake_signal())) {
            libc::sigaddset(&mut set, sig);
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let sig = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        (sig > 0).then_some(sig)
    }
}

/// Wakes PID 1's loop (from any thread).
pub fn wake() {
    // SAFETY: kill(2) to our own process.
    unsafe {
        libc::kill(libc::getpid(), wake_signal());
    }
}

/// How a child ended, in words.
pub fn describe(status: &WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, code) => format!("exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => format!("was killed by {}", sig.as_str()),
        other => format!("{other:?}"),
    }
}

/// Reaps every child that has ended.
pub fn reap() -> Vec<(Pid, WaitStatus)> {
    let mut out = Vec::new();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(status) => {
                if let Some(pid) = status.pid() {
                    out.push((pid, status));
                }
            }
        }
    }
}

/// The wait before restarting a child that ran for `ran_for` after the
/// previous wait `prev`: 1 s, doubling to 60 s while it keeps dying young;
/// back to 1 s once it ran for 30 s.
pub fn next_backoff(prev: Option<Duration>, ran_for: Duration) -> Duration {
    const MIN: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);
    match prev {
        _ if ran_for >= Duration::from_secs(30) => MIN,
        None => MIN,
        Some(p) => (p * 2).clamp(MIN, MAX),
    }
}

/// Where a service's stdio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// The terminal, as its session leader (the shells).
    Tty(PathBuf),
    /// The console's stdout and stderr (what PID 1 has), stdin from
    /// /dev/null: for programs whose few lines a person should see.
    Console,
    /// This file, appended to (stdout and stderr), stdin from /dev/null:
    /// for chatty servers that would bury the shell on the console.
    LogFile(PathBuf),
}

/// A supervised child.
#[derive(Debug)]
pub struct Service {
    /// Short name for console lines (`agent`, `shell on /dev/ttyS0`).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Where it runs and writes.
    pub attach: Attach,
    pid: Option<Pid>,
    started: Option<Instant>,
    backoff: Option<Duration>,
    next_start: Option<Instant>,
}

/// The supervised children.
#[derive(Debug, Default)]
pub struct Services {
    list: Vec<Service>,
}

impl Services {
    /// Adds a service, to be started at the next [`Services::start_due`].
    pub fn add(&mut self, name: &str, argv: Vec<String>, attach: Attach, now: Instant) {
        self.list.push(Service {
            name: name.to_string(),
            argv,
            attach,
            pid: None,
            started: None,
            backoff: None,
            next_start: Some(now),
        });
    }

    /// Whether a service of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.list.iter().any(|s| s.name == name)
    }

    /// The pids of running services.
    pub fn pids(&self) -> Vec<Pid> {
        self.list.iter().filter_map(|s| s.pid).collect()
    }

    /// The pids of running services that sit on a terminal (the shells).
    pub fn tty_pids(&self) -> Vec<Pid> {
        self.list
            .iter()
            .filter(|s| matches!(s.attach, Attach::Tty(_)))
            .filter_map(|s| s.pid)
            .collect()
    }

    /// Gives every service on a terminal (the shells) `argv` and ends the
    /// running ones, so they start again with it, in PID 1's root as it is
    /// now (after the move into the system layer).
    pub fn restart_ttys(&mut self, argv: Vec<String>) {
        for svc in &mut self.list {
            if !matches!(svc.attach, Attach::Tty(_)) {
                continue;
            }
            svc.argv = argv.clone();
            svc.backoff = None;
            if let Some(pid) = svc.pid {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// The next time a service is due to (re)start.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.list.iter().filter_map(|s| s.next_start).min()
    }

    /// Starts every service whose time has come.
    pub fn start_due(&mut self, now: Instant) {
        for svc in &mut self.list {
            if svc.pid.is_some() || svc.next_start.is_none_or(|t| t > now) {
                continue;
            }
            svc.next_start = None;
            match spawn(svc) {
                Ok(pid) => {
                    svc.pid = Some(pid);
                    svc.started = Some(now);
                    tracing::debug!(service = %svc.name, pid = pid.as_raw(), "started");
                }
                Err(e) => {
                    let wait = next_backoff(svc.backoff, Duration::ZERO);
                    svc.backoff = Some(wait);
                    svc.next_start = Some(now + wait);
                    say!(
                        "cannot start {} ({}): {e}; retrying in {}s",
                        svc.name,
                        svc.argv.join(" "),
                        wait.as_secs()
                    );
                }
            }
        }
    }

    /// Notes that `pid` ended; schedules a restart if it was a service.
    /// Returns whether it was one.
    pub fn exited(&mut self, pid: Pid, status: &WaitStatus, now: Instant) -> bool {
        let Some(svc) = self.list.iter_mut().find(|s| s.pid == Some(pid)) else {
            return false;
        };
        let ran_for = svc.started.map(|t| now - t).unwrap_or_default();
        let wait = next_backoff(svc.backoff, ran_for);
        svc.pid = None;
        svc.backoff = Some(wait);
        svc.next_start = Some(now + wait);
        say!(
            "{} {}; restarting in {}s",
            svc.name,
            describe(status),
            wait.as_secs()
        );
        true
    }
}

/// The environment every child of PID 1 gets.
fn base_env(cmd: &mut Command) {
    cmd.env_clear()
        // Debian's order: a system layer's programs in /usr/bin come
        // before busybox's applets in /bin.
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("TERM", "linux")
        .env("SHELL", "/bin/sh");
}

fn spawn(svc: &Service) -> std::io::Result<Pid> {
    let (prog, args) = svc
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty command"))?;
    let mut cmd = Command::new(prog);
    cmd.args(args);
    base_env(&mut cmd);
    let _ = std::fs::create_dir_all("/root");
    cmd.current_dir(if std::path::Path::new("/root").is_dir() {
        "/root"
    } else {
        "/"
    });
    match &svc.attach {
        Attach::Tty(tty) => crate::console::on_tty(&mut cmd, tty)?,
        Attach::Console => {
            cmd.stdin(Stdio::null());
            crate::console::detached(&mut cmd);
        }
        Attach::LogFile(path) => {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            crate::console::detached(&mut cmd);
        }
    }
    let child = cmd.spawn()?;
    // The child is reaped by `reap` (waitpid(-1)); dropping the handle does
    // not wait.
    Ok(Pid::from_raw(child.id() as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let s = Duration::from_secs;
        assert_eq!(next_backoff(None, s(0)), s(1));
        assert_eq!(next_backoff(Some(s(1)), s(2)), s(2));
        assert_eq!(next_backoff(Some(s(16)), s(2)), s(32));
        assert_eq!(next_backoff(Some(s(32)), s(2)), s(60));
        assert_eq!(next_backoff(Some(s(60)), s(2)), s(60));
        assert_eq!(next_backoff(Some(s(60)), s(31)), s(1));
    }

    #[test]
    fn failed_start_is_retried_later() {
        let now = Instant::now();
        let mut svcs = Services::default();
        svcs.add(
            "ghost",
            vec!["/nonexistent/omnode-test-binary".into()],
            Attach::Console,
            now,
        );
        assert_eq!(svcs.next_deadline(), Some(now));
        svcs.start_due(now);
        assert!(svcs.pids().is_empty());
        assert_eq!(svcs.next_deadline(), Some(now + Duration::from_secs(1)));
        svcs.start_due(now + Duration::from_secs(1));
        assert_eq!(svcs.next_deadline(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn a_logged_service_appends_stdout_and_stderr_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("svc.log");
        std::fs::write(&log, "earlier run\n").unwrap();
        let now = Instant::now();
        let mut svcs = Services::default();
        svcs.add(
            "chatty",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo out; echo err >&2".into(),
            ],
            Attach::LogFile(log.clone()),
            now,
        );
        svcs.start_due(now);
        let pids = svcs.pids();
        assert_eq!(pids.len(), 1);
        let status = nix::sys::wait::waitpid(pids[0], None).unwrap();
        assert_eq!(status, nix::sys::wait::WaitStatus::Exited(pids[0], 0));
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "earlier run\nout\nerr\n"
        );
    }
}
