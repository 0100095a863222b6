//! Host programs the lab runs: finding them, running them to completion, and
//! keeping long-running ones (servers, agents, dnsmasq) that are killed and
//! reaped when their handle is dropped.
//!
//! [`run`] is the one place a command's failure becomes a
//! [`LabError::Command`]; [`Background`] logs to a file, [`Reaped`] leaves
//! the child's pipes to its owner. [`wait_for`] polls a condition with a
//! generous bound (a liveness check, never a timing assertion).

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::{io_err, LabError};

/// Finds an executable on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Runs `program` with `args` to completion and returns its stdout; a
/// failure names the command line and what it printed on stderr.
pub fn run<I, S>(program: &str, args: I) -> Result<String, LabError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command.args(args);
    run_command(&mut command)
}

/// Runs `command` to completion (stdin from /dev/null) and returns its
/// stdout; a failure names the command line and what it printed on stderr.
pub fn run_command(command: &mut Command) -> Result<String, LabError> {
    let line = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {line}")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: line,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// [`run_command`] for tests: panics with the failure.
pub fn must_run(command: &mut Command) -> String {
    run_command(command).unwrap_or_else(|e| panic!("{e}"))
}

/// Whether long-running children get process groups of their own.
static OWN_GROUPS: AtomicBool = AtomicBool::new(false);

/// From now on, the lab's long-running children (servers, agents, qemu)
/// start in process groups of their own, so the terminal's signals do not
/// reach them: closing the terminal (SIGHUP to its foreground group) leaves
/// them running, and Ctrl-C reaches only this process, which tears them
/// down itself. For `omlab demo`, whose `--keep` cluster outlives it; tests
/// leave it off, so that interrupting a test run stops its machines too.
pub fn own_process_groups() {
    OWN_GROUPS.store(true, Ordering::Relaxed);
}

/// Applies [`own_process_groups`] to `command` if it was asked for.
pub(crate) fn prepare(command: &mut Command) -> &mut Command {
    if OWN_GROUPS.load(Ordering::Relaxed) {
        command.process_group(0);
    }
    command
}

/// A background process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    /// Starts `command` with stdout and stderr going to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Result<Self, LabError> {
        let out = fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        let child = prepare(&mut command)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!(
                "starting {:?}",
                command.get_args().collect::<Vec<_>>()
            )))?;
        Ok(Background {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Stops the process with SIGINT (tcpdump closes its file cleanly on
    /// it) and waits up to 5 s before the kill of [`Drop`].
    pub fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(5) {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Fails if the process has exited, naming its log.
    pub fn check_running(&mut self, what: &str) -> Result<(), LabError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(LabError::Command {
                command: what.to_string(),
                stderr: format!("exited ({status}); last output: {}", tail(&self.log, 10)),
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last `lines` lines of the file at `path`, joined by ` | ` (empty when
/// it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

/// A child process killed and reaped when dropped; its pipes are the owner's.
#[derive(Debug)]
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops `children` gracefully: SIGTERM to each at once, then up to `grace`
/// for them to exit (agents leave their cluster and remove their job
/// cgroups on SIGTERM). What still runs is killed when its [`Reaped`] drops.
pub fn terminate<'a>(children: impl IntoIterator<Item = &'a mut Reaped>, grace: Duration) {
    let mut children: Vec<&mut Reaped> = children.into_iter().collect();
    for child in &children {
        let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    let start = Instant::now();
    for child in &mut children {
        while start.elapsed() < grace && matches!(child.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls `f` every 200 ms until it returns `Ok`, or panics after `limit`
/// with `what` and the last observation (a generous bound: this is a
/// liveness check, not a timing assertion).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last: {last}");
}

/// A temporary directory that root-dropped jobs (uid nobody) can enter.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}
