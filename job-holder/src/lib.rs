//! The job holder: the processes that carry one cluster job on its node, in
//! the `omnode` binary (`omnode job-run`, `omnode job-restore`; hidden
//! subcommands the agent starts). Synchronous and single-threaded: they
//! fork without exec. A crate of its own, out of the daemon: it knows only
//! the job's spec (its arguments), the report it writes, and `omctl`'s exit
//! statuses ([`agent_control`]); the agent (`node_agent::job`) starts it and
//! reads its report.
//!
//! ```text
//!  agent ── holder (root PID namespace; the agent's child, waits, forwards signals)
//!             └─ job init (PID 1 of the job's own PID namespace: reaps, forwards)
//!                  └─ the program (and whatever it forks)
//! ```
//!
//! The job init and everything below it is what CRIU dumps and restores; the
//! holder stays on its node. On the target of a migration `job-restore`
//! becomes the holder: it is a child subreaper, runs `criu restore
//! --restore-detached`, and so inherits the restored job init when CRIU
//! exits.
//!
//! Both report to the agent on descriptor 3 with text lines
//! ([`Report`]): `init PID` once the job init exists, `fail STAGE ERRNO` if a
//! step of the start failed, `restore-failed MESSAGE` if CRIU failed. The
//! agent reads until end of file: the last writer closes it when the program
//! has been exec'd (its copy is close-on-exec) or the restore is complete.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

use agent_control::EXIT_CANNOT_RUN;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// The descriptor a holder reports on.
pub const REPORT_FD: RawFd = 3;
/// The first descriptor of the job's stdio pipes handed to `job-restore`
/// (stdin, stdout, stderr follow in order).
pub const INHERIT_BASE_FD: RawFd = 10;

/// Signals the holder and the job init pass on to the job.
const FORWARDED: [Signal; 13] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTERM,
    Signal::SIGWINCH,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGPIPE,
    Signal::SIGXCPU,
];

/// The step of a job's start that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Creating the PID namespace or forking.
    Namespace = 1,
    /// Entering the job cgroup.
    Cgroup = 2,
    /// Dropping to the caller's uid and gid.
    Credentials = 3,
    /// Changing to the working directory.
    Cwd = 4,
    /// Executing the program.
    Exec = 5,
}

impl Stage {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Stage::Namespace,
            2 => Stage::Cgroup,
            3 => Stage::Credentials,
            4 => Stage::Cwd,
            5 => Stage::Exec,
            _ => return None,
        })
    }
}

/// One line a holder writes on [`REPORT_FD`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The job init's PID in the holder's (the agent's) namespace.
    Init(u32),
    /// A step failed with this errno.
    Failed(Stage, i32),
    /// `criu restore` failed; what its log says.
    RestoreFailed(String),
    /// No PID namespace could be made (the agent is not root): the job runs
    /// in the agent's, and cannot move.
    NoNamespace(i32),
}

impl Report {
    /// The line, newline included.
    pub fn line(&self) -> String {
        match self {
            Report::Init(pid) => format!("init {pid}\n"),
            Report::Failed(stage, errno) => format!("fail {} {errno}\n", *stage as u8),
            Report::RestoreFailed(m) => format!("restore-failed {}\n", m.replace('\n', " ")),
            Report::NoNamespace(errno) => format!("shared-ns {errno}\n"),
        }
    }

    /// Reads every report line out of `text` (what the agent read until
    /// end of file); unknown lines are skipped.
    pub fn parse_all(text: &str) -> Vec<Report> {
        text.lines()
            .filter_map(|l| {
                let (word, rest) = l.split_once(' ')?;
                match word {
                    "init" => rest.parse().ok().map(Report::Init),
                    "fail" => {
                        let (s, e) = rest.split_once(' ')?;
                        Some(Report::Failed(
                            Stage::from_u8(s.parse().ok()?)?,
                            e.parse().ok()?,
                        ))
                    }
                    "restore-failed" => Some(Report::RestoreFailed(rest.to_string())),
                    "shared-ns" => rest.parse().ok().map(Report::NoNamespace),
                    _ => None,
                }
            })
            .collect()
    }
}

/// What `omnode job-run` is told.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Run the program as this user…
    #[arg(long)]
    pub uid: u32,
    /// …and group.
    #[arg(long)]
    pub gid: u32,
    /// Its working directory.
    #[arg(long)]
    pub cwd: PathBuf,
    /// The job's cgroup directory, if any.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The program and its arguments (its environment is ours).
    #[arg(last = true, required = true)]
    pub argv: Vec<OsString>,
}

/// What `omnode job-restore` is told.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// The directory holding the checkpoint.
    #[arg(long)]
    pub dir: PathBuf,
    /// The criu program.
    #[arg(long, default_value = "criu")]
    pub criu: PathBuf,
    /// The job's cgroup directory, if any.
    #[arg(long)]
    pub cgroup: Option<PathBuf>,
    /// The inodes of the job's stdin, stdout and stderr pipes in the
    /// checkpoint, in that order (descriptors 10, 11, 12 take their place).
    #[arg(long = "pipe-inode", num_args = 3)]
    pub pipe_inodes: Vec<u64>,
}

fn report(fd: RawFd, r: &Report) {
    // SAFETY: a borrowed write on a descriptor we own; ManuallyDrop keeps it open.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let _ = f.write_all(r.line().as_bytes());
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A handler that does nothing: a signal with a handler reaches a PID
/// namespace's init from outside (one left at default would be dropped),
/// and `sigwait` takes it before the handler would run.
extern "C" fn ignore(_: libc::c_int) {}

/// Blocks and catches the forwarded signals and SIGCHLD; returns the set.
fn take_signals() -> SigSet {
    let mut set = SigSet::empty();
    let action = signal::SigAction::new(
        SigHandler::Handler(ignore),
        signal::SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in FORWARDED.iter().copied().chain([Signal::SIGCHLD]) {
        set.add(s);
        // SAFETY: installing a handler that touches nothing.
        let _ = unsafe { signal::sigaction(s, &action) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    set
}

/// Undoes [`take_signals`] in a process about to exec.
fn release_signals(set: &SigSet) {
    for s in set.iter() {
        // SAFETY: restoring the default disposition.
        let _ = unsafe { signal::signal(s, SigHandler::SigDfl) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// The shell's convention for how a process ended.
fn status_code(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// Waits for signals: passes the forwarded ones to `forward` and, on
/// SIGCHLD, reaps every child; returns the exit code once `main` ended.
fn wait_loop(set: &SigSet, main: Pid, forward: impl Fn(Signal)) -> i32 {
    loop {
        // Reap first: the child may have ended before we started waiting.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(st) => {
                    if st.pid() == Some(main) {
                        if let Some(code) = status_code(st) {
                            return code;
                        }
                    }
                }
            }
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(s) => forward(s),
            Err(_) => {}
        }
    }
}

fn enter_cgroup(dir: &Option<PathBuf>) -> Result<(), i32> {
    if let Some(dir) = dir {
        std::fs::write(dir.join("cgroup.procs"), "0")
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    }
    Ok(())
}

/// `omnode job-run`: starts the program in a new PID namespace under a job
/// init and waits for it. Returns the holder's exit code (the job's).
pub fn run(args: RunArgs) -> i32 {
    let set = take_signals();
    let fail = |stage: Stage, e: i32| {
        report(REPORT_FD, &Report::Failed(stage, e));
        EXIT_CANNOT_RUN
    };
    let argv: Vec<CString> = match args
        .argv
        .iter()
        .map(|a| CString::new(a.clone().into_vec()))
        .collect::<Result<_, _>>()
    {
        Ok(v) => v,
        Err(_) => return fail(Stage::Exec, libc::EINVAL),
    };
    let Ok(cwd) = CString::new(args.cwd.clone().into_os_string().into_vec()) else {
        return fail(Stage::Cwd, libc::EINVAL);
    };
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID) {
        if e != nix::errno::Errno::EPERM {
            return fail(Stage::Namespace, e as i32);
        }
        report(REPORT_FD, &Report::NoNamespace(e as i32));
    }
    // SAFETY: this process is single-threaded (a fresh exec of omnode).
    match unsafe { fork() } {
        Err(e) => fail(Stage::Namespace, e as i32),
        Ok(ForkResult::Parent { child }) => {
            report(REPORT_FD, &Report::Init(child.as_raw() as u32));
            // SAFETY: closing our copy; the job init and program hold theirs.
            unsafe { libc::close(REPORT_FD) };
            wait_loop(&set, child, |s| {
                let _ = signal::kill(child, s);
            })
        }
        Ok(ForkResult::Child) => job_init(&args, &argv, &cwd, &set),
    }
}

/// PID 1 of the job's namespace: a session of its own, the cgroup, the
/// caller's identity and cwd, then the program as its child, in a process
/// group of its own; it forwards signals to that group (as a terminal
/// would) and ends with the program.
fn job_init(args: &RunArgs, argv: &[CString], cwd: &CString, set: &SigSet) -> i32 {
    let fail = |stage: Stage, e: i32| -> ! {
        report(REPORT_FD, &Report::Failed(stage, e));
        // SAFETY: leaving without running the parent's destructors.
        unsafe { libc::_exit(EXIT_CANNOT_RUN) }
    };
    let _ = nix::unistd::setsid();
    if let Err(e) = enter_cgroup(&args.cgroup) {
        fail(Stage::Cgroup, e);
    }
    // The init keeps its privileges and sits in the image's root: CRIU's
    // parasite in the root task of a PID namespace whose /proc is not its
    // own must mount one, which takes root (it makes `proc.crtools` in the
    // init's cwd, so `job::criu` dumps one job at a time); and nothing of
    // the init pins a directory of this node.
    // SAFETY: a NUL-terminated path.
    unsafe { libc::chdir(c"/".as_ptr()) };
    // SAFETY: still single-threaded.
    match unsafe { fork() } {
        Err(e) => fail(Stage::Namespace, e as i32),
        Ok(ForkResult::Child) => {
            let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            let (uid, gid) = (args.uid, args.gid);
            // SAFETY: plain credential system calls.
            let dropped = unsafe {
                nix::unistd::geteuid().as_raw() != 0
                    || (libc::setgroups(1, &gid) == 0
                        && libc::setgid(gid) == 0
                        && libc::setuid(uid) == 0)
            };
            if !dropped {
                fail(Stage::Credentials, errno());
            }
            // SAFETY: a NUL-terminated path.
            if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
                fail(Stage::Cwd, errno());
            }
            release_signals(set);
            // SAFETY: the report copy closes when exec succeeds.
            unsafe { libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
            let e = nix::unistd::execvp(&argv[0], argv).unwrap_err();
            fail(Stage::Exec, e as i32)
        }
        Ok(ForkResult::Parent { child }) => {
            // SAFETY: our copy of the report descriptor.
            unsafe { libc::close(REPORT_FD) };
            let code = wait_loop(set, child, |s| {
                let _ = signal::kill(Pid::from_raw(-child.as_raw()), s);
            });
            // SAFETY: leaving PID 1 of the namespace ends the job.
            unsafe { libc::_exit(code) }
        }
    }
}

/// `omnode job-restore`: restores a checkpoint with CRIU, becomes the
/// restored job init's parent (child subreaper) and waits for it like
/// [`run`]'s holder.
pub fn restore(args: RestoreArgs) -> i32 {
    let set = take_signals();
    // SAFETY: prctl with plain integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        report(
            REPORT_FD,
            &Report::RestoreFailed(format!(
                "cannot become a child subreaper: {}",
                std::io::Error::last_os_error()
            )),
        );
        return 1;
    }
    let pidfile = args.dir.join("restored.pid");
    let mut cmd = std::process::Command::new(&args.criu);
    cmd.arg("restore")
        .arg("-D")
        .arg(&args.dir)
        .args(["--restore-detached", "--manage-cgroups=ignore"])
        .arg("-o")
        .arg("restore.log")
        .arg("--pidfile")
        .arg(&pidfile);
    for (i, ino) in args.pipe_inodes.iter().enumerate() {
        cmd.arg("--inherit-fd")
            .arg(format!("fd[{}]:pipe:[{ino}]", INHERIT_BASE_FD + i as RawFd));
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let cgroup = args.cgroup.clone();
    // SAFETY: async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::fcntl(REPORT_FD, libc::F_SETFD, libc::FD_CLOEXEC);
            enter_cgroup(&cgroup).map_err(std::io::Error::from_raw_os_error)?;
            let empty = SigSet::empty();
            let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&empty), None);
            Ok(())
        });
    }
    let status = cmd.status();
    let ok = matches!(&status, Ok(s) if s.success());
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let (true, Some(pid)) = (ok, pid) else {
        let why = match status {
            Err(e) => format!("cannot run {}: {e}", args.criu.display()),
            Ok(s) => format!(
                "criu restore failed ({s}): {}",
                criu_log_tail(
                    &std::fs::read_to_string(args.dir.join("restore.log")).unwrap_or_default()
                )
            ),
        };
        report(REPORT_FD, &Report::RestoreFailed(why));
        return 1;
    };
    report(REPORT_FD, &Report::Init(pid as u32));
    for fd in [REPORT_FD]
        .into_iter()
        .chain((0..3).map(|i| INHERIT_BASE_FD + i))
    {
        // SAFETY: the restored job holds its own copies.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let init = Pid::from_raw(pid);
    wait_loop(&set, init, |s| {
        let _ = signal::kill(init, s);
    })
}

/// The lines of a CRIU log that say what went wrong (the last two errors,
/// or the last two lines).
pub fn criu_log_tail(log: &str) -> String {
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("Error")).collect();
    let mut pick: Vec<&str> = if errors.is_empty() {
        log.lines().rev().take(2).collect()
    } else {
        errors.into_iter().rev().take(2).collect()
    };
    pick.reverse();
    let text = pick.join(" / ");
    if text.is_empty() {
        "criu wrote no log".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines_round_trip() {
        let all = [
            Report::Init(4242),
            Report::Failed(Stage::Exec, 2),
            Report::RestoreFailed("criu restore failed: Error (criu/files.c:1): x\ny".into()),
        ];
        let text: String = all.iter().map(Report::line).collect();
        let back = Report::parse_all(&text);
        assert_eq!(back[..2], all[..2]);
        assert_eq!(
            back[2],
            Report::RestoreFailed("criu restore failed: Error (criu/files.c:1): x y".into())
        );
        assert!(Report::parse_all("garbage\nfail 9 1\n").is_empty());
    }
}
