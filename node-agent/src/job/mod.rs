//! A cluster job's processes on the node that runs it, as the agent handles
//! them: started under a holder in a PID namespace of their own (the [`job_holder`] crate),
//! stopped and resumed as a whole, checked for what would keep them from
//! moving ([`movable`]), dumped and restored with CRIU ([`criu`]), measured
//! for the balancer ([`usage`]).
//!
//! The agent holds the other ends of the job's stdin, stdout and stderr
//! pipes ([`JobPipes`]); a migration re-plugs the restored job's pipes to
//! new ones on the target by their inodes.

pub mod criu;
pub mod movable;
pub mod usage;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use job_holder::{Report, Stage, INHERIT_BASE_FD, REPORT_FD};

/// The agent's ends of a job's stdio pipes.
#[derive(Debug)]
pub struct JobPipes {
    /// Writes the job's stdin (`None` once closed).
    pub stdin: Option<pipe::Sender>,
    /// Reads its stdout.
    pub stdout: pipe::Receiver,
    /// Reads its stderr.
    pub stderr: pipe::Receiver,
    /// The pipes' inodes (stdin, stdout, stderr): what CRIU calls them.
    pub inodes: [u64; 3],
}

/// A job started (or restored) under a holder.
#[derive(Debug)]
pub struct Started {
    /// The holder: its exit is the job's.
    pub holder: tokio::process::Child,
    /// The job init's pid here.
    pub init: u32,
    /// The agent's ends of the job's stdio.
    pub pipes: JobPipes,
    /// Why it cannot move, if the holder could not give it a PID namespace.
    pub cantmove: Option<String>,
}

/// Why a job could not start: omctl's exit status and the message.
pub type StartError = (i32, String);

fn inode(fd: &impl AsRawFd) -> u64 {
    nix::sys::stat::fstat(fd.as_raw_fd())
        .map(|s| s.st_ino)
        .unwrap_or(0)
}

/// Three pipes: the job's ends (stdin read end, stdout and stderr write
/// ends) and the agent's.
fn make_pipes() -> std::io::Result<([OwnedFd; 3], JobPipes)> {
    let (in_r, in_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let inodes = [inode(&in_r), inode(&out_r), inode(&err_r)];
    let pipes = JobPipes {
        stdin: Some(pipe::Sender::from_owned_fd(in_w)?),
        stdout: pipe::Receiver::from_owned_fd(out_r)?,
        stderr: pipe::Receiver::from_owned_fd(err_r)?,
        inodes,
    };
    Ok(([in_r, out_w, err_w], pipes))
}

/// The holder program: this very binary (`omnode`).
pub fn holder_exe() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/bin/omnode"))
}

/// Spawns a holder with `args`, the report pipe on descriptor 3 and
/// `fds` at 0, 1, 2 or at [`INHERIT_BASE_FD`]…; reads its reports to the end.
async fn spawn_holder(
    args: &mut std::process::Command,
    fds: [OwnedFd; 3],
    at_stdio: bool,
    limit: Duration,
) -> std::io::Result<(tokio::process::Child, Vec<Report>)> {
    let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let rep_raw = rep_w.as_raw_fd();
    let raws: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    // Kept open until the holder is spawned (at 10.. it dup2s them).
    let mut keep = Vec::new();
    if at_stdio {
        let [a, b, c] = fds;
        args.stdin(Stdio::from(a))
            .stdout(Stdio::from(b))
            .stderr(Stdio::from(c));
    } else {
        keep.extend(fds);
        args.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }
    // SAFETY: only dup2 between fork and exec, on descriptors opened before.
    unsafe {
        args.pre_exec(move || {
            if libc::dup2(rep_raw, REPORT_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if !at_stdio {
                for (i, fd) in raws.iter().enumerate() {
                    if libc::dup2(*fd, INHERIT_BASE_FD + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    args.process_group(0);
    let mut cmd =
        tokio::process::Command::from(std::mem::replace(args, std::process::Command::new("/")));
    cmd.kill_on_drop(false);
    let child = cmd.spawn()?;
    drop(rep_w);
    drop(keep);
    let mut reader = pipe::Receiver::from_owned_fd(rep_r)?;
    let mut text = String::new();
    let _ = tokio::time::timeout(limit, reader.read_to_string(&mut text)).await;
    Ok((child, Report::parse_all(&text)))
}

/// What the target needs to start a job.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Working directory (checked to exist by the caller).
    pub cwd: &'a str,
    /// Identity.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The job's cgroup, if any.
    pub cgroup: Option<&'a Path>,
    /// This node's name, for messages.
    pub node: &'a str,
    /// The holder program ([`holder_exe`]).
    pub holder: &'a Path,
}

/// Starts a job under `omnode job-run`.
pub async fn start(l: Launch<'_>) -> Result<Started, StartError> {
    use agent_control::{EXIT_CANNOT_RUN, EXIT_NO_PERMISSION};
    let program = &l.argv[0];
    let (job_fds, pipes) =
        make_pipes().map_err(|e| (EXIT_CANNOT_RUN, format!("cannot make pipes: {e}")))?;
    let mut cmd = std::process::Command::new(l.holder);
    cmd.arg("job-run")
        .arg("--uid")
        .arg(l.uid.to_string())
        .arg("--gid")
        .arg(l.gid.to_string())
        .arg("--cwd")
        .arg(l.cwd);
    if let Some(cg) = l.cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd.arg("--").args(l.argv).env_clear().envs(l.env);
    let (mut child, reports) = spawn_holder(&mut cmd, job_fds, true, Duration::from_secs(30))
        .await
        .map_err(|e| {
            (
                EXIT_CANNOT_RUN,
                format!("cannot start the job holder on node {}: {e}", l.node),
            )
        })?;
    let mut init = None;
    let mut cantmove = None;
    for r in reports {
        match r {
            Report::Init(p) => init = Some(p),
            Report::NoNamespace(errno) => {
                cantmove = Some(format!(
                    "it has no PID namespace of its own ({}; the agent on node {} is not root)",
                    std::io::Error::from_raw_os_error(errno),
                    l.node
                ))
            }
            Report::Failed(stage, errno) => {
                let _ = child.wait().await;
                let e = std::io::Error::from_raw_os_error(errno);
                let node = l.node;
                return Err(match stage {
                    Stage::Exec => (
                        if e.kind() == std::io::ErrorKind::PermissionDenied {
                            EXIT_NO_PERMISSION
                        } else {
                            EXIT_CANNOT_RUN
                        },
                        format!("cannot run {program} on node {node}: {e}"),
                    ),
                    Stage::Cwd => (
                        EXIT_CANNOT_RUN,
                        format!("cannot enter {} on node {node}: {e}", l.cwd),
                    ),
                    Stage::Cgroup => (
                        EXIT_CANNOT_RUN,
                        format!("cannot enter the job cgroup on node {node}: {e}"),
                    ),
                    Stage::Credentials => (
                        EXIT_NO_PERMISSION,
                        format!("cannot run as uid {} on node {node}: {e}", l.uid),
                    ),
                    Stage::Namespace => (
                        EXIT_CANNOT_RUN,
                        format!("cannot make the job's PID namespace on node {node}: {e}"),
                    ),
                });
            }
            Report::RestoreFailed(_) => {}
        }
    }
    let Some(init) = init else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Err((
            EXIT_CANNOT_RUN,
            format!("the job holder on node {} did not report", l.node),
        ));
    };
    Ok(Started {
        holder: child,
        init,
        pipes,
        cantmove,
    })
}

/// Restores the checkpoint in `dir` under `omnode job-restore`, its stdio
/// re-plugged to new pipes in place of the pipes with `inodes`.
pub async fn restore(
    holder: &Path,
    dir: &Path,
    inodes: [u64; 3],
    cgroup: Option<&Path>,
) -> Result<Started, String> {
    let (job_fds, pipes) = make_pipes().map_err(|e| format!("cannot make pipes: {e}"))?;
    let mut cmd = std::process::Command::new(holder);
    cmd.arg("job-restore").arg("--dir").arg(dir);
    if let Some(cg) = cgroup {
        cmd.arg("--cgroup").arg(cg);
    }
    cmd.arg("--pipe-inode")
        .args(inodes.iter().map(|i| i.to_string()));
    let (mut child, reports) = spawn_holder(&mut cmd, job_fds, false, Duration::from_secs(300))
        .await
        .map_err(|e| format!("cannot start the restore holder: {e}"))?;
    for r in reports {
        match r {
            Report::Init(init) => {
                return Ok(Started {
                    holder: child,
                    init,
                    pipes,
                    cantmove: None,
                })
            }
            Report::RestoreFailed(m) => {
                let _ = child.wait().await;
                return Err(m);
            }
            Report::Failed(..) | Report::NoNamespace(_) => {}
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    Err("the restore holder did not report".into())
}

/// Every process of the machine and its parent, read once from `/proc`:
/// what [`ProcTable::below`] walks for each job, so that a round over all
/// jobs reads `/proc` once rather than once per job.
#[derive(Debug, Default)]
pub struct ProcTable {
    children: std::collections::HashMap<u32, Vec<u32>>,
    present: std::collections::HashSet<u32>,
}

impl ProcTable {
    /// The machine's processes now.
    pub fn read() -> Self {
        let mut t = ProcTable::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return t;
        };
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parent_in_stat(&s))
            {
                t.present.insert(pid);
                t.children.entry(ppid).or_default().push(pid);
            }
        }
        t
    }

    /// `init` and every process below it (empty if `init` is gone).
    pub fn below(&self, init: u32) -> Vec<u32> {
        if !self.present.contains(&init) {
            return Vec::new();
        }
        let mut out = vec![init];
        let mut i = 0;
        while i < out.len() {
            if let Some(kids) = self.children.get(&out[i]) {
                out.extend(kids);
            }
            i += 1;
        }
        out
    }
}

/// The parent pid in a `/proc/PID/stat` line (the command name in
/// parentheses may hold anything, so the fields count from the last `)`).
fn parent_in_stat(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The parent of process `pid`.
pub fn parent(pid: u32) -> Option<u32> {
    parent_in_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The job init `init` (its pid here) and every process below it.
pub fn processes(init: u32) -> Vec<u32> {
    ProcTable::read().below(init)
}

fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Stops every process of the job and waits until each is stopped (or
/// gone). Returns how many were stopped.
pub async fn stop(init: u32) -> Result<usize, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // Each process gets one SIGSTOP: a second one sent after it stopped
    // would stay pending and interrupt CRIU's parasite in it ("Unexpected
    // task interruption"), which a CPU-bound process, slow to stop, made
    // likely.
    let mut signalled = std::collections::HashSet::new();
    loop {
        let procs = processes(init);
        if procs.is_empty() {
            return Err("the job has ended".into());
        }
        for &p in &procs {
            if signalled.insert(p) {
                let _ = signal::kill(Pid::from_raw(p as i32), Signal::SIGSTOP);
            }
        }
        let running: Vec<u32> = procs
            .iter()
            .copied()
            .filter(
                |&p| matches!(state(p), Some(s) if s != 'T' && s != 't' && s != 'Z' && s != 'X'),
            )
            .collect();
        if running.is_empty() {
            // A process forked while we stopped the others is stopped on the
            // next pass; recount once nothing runs.
            if processes(init).len() == procs.len() {
                return Ok(procs.len());
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("processes {running:?} did not stop"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Lets every process of the job run again.
pub fn resume(init: u32) {
    for p in processes(init) {
        let _ = signal::kill(Pid::from_raw(p as i32), Signal::SIGCONT);
    }
}

/// A copy of what the stopped job has not read yet from its input pipe
/// (inode `inode`), left in the pipe. CRIU gives a pipe handed back with
/// `--inherit-fd` none of the data it held, so these bytes travel with the
/// job's pending input instead; if the move fails they are still where
/// they were. Reached through a job process's own descriptor (`/proc`), so
/// it works after this agent closed its end at end of input.
pub fn peek_unread(init: u32, inode: u64) -> std::io::Result<Vec<u8>> {
    use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags};
    use std::os::unix::fs::OpenOptionsExt;
    let want = format!("pipe:[{inode}]");
    let Some(link) = processes(init).into_iter().find_map(|p| {
        std::fs::read_dir(format!("/proc/{p}/fd"))
            .ok()?
            .flatten()
            .map(|fd| fd.path())
            .find(|path| std::fs::read_link(path).is_ok_and(|l| l.as_os_str() == want.as_str()))
    }) else {
        return Ok(Vec::new());
    };
    // Opened for reading, a pipe's link is one more read end of it.
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&link)?;
    let waiting = pending_bytes(&pipe);
    if waiting == 0 {
        return Ok(Vec::new());
    }
    // tee(2) duplicates without consuming, into a pipe as large as this one.
    let (rd, wr) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
    let size = nix::fcntl::fcntl(pipe.as_raw_fd(), FcntlArg::F_GETPIPE_SZ)?;
    nix::fcntl::fcntl(wr.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(size))?;
    let copied = nix::fcntl::tee(&pipe, &wr, waiting, SpliceFFlags::SPLICE_F_NONBLOCK)?;
    drop(wr);
    let mut out = vec![0u8; copied];
    let mut n = 0;
    while n < copied {
        match read_now(&rd, &mut out[n..])? {
            0 => break,
            k => n += k,
        }
    }
    out.truncate(n);
    if n < waiting {
        return Err(std::io::Error::other(format!(
            "copied {n} of the {waiting} bytes waiting in the job's input"
        )));
    }
    Ok(out)
}

/// One read(2) on a (non-blocking) descriptor, whatever the async
/// runtime believes about its readiness.
pub fn read_now(fd: &impl AsRawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reads into a buffer we own, of its length.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Bytes waiting in a pipe.
pub fn pending_bytes(fd: &impl AsRawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) } < 0 {
        return 0;
    }
    n.max(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_table_finds_a_process_and_its_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let me = std::process::id();
        let t = ProcTable::read();
        let mine = t.below(me);
        assert_eq!(mine[0], me);
        assert!(mine.contains(&child.id()), "{mine:?}");
        assert_eq!(t.below(child.id()), vec![child.id()]);
        assert_eq!(parent(child.id()), Some(me));
        assert_eq!(parent_in_stat("7 (a) b) c) S 42 7 7"), Some(42));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(processes(child.id()).is_empty());
    }

    #[test]
    fn unread_input_is_copied_and_left_in_the_pipe_even_after_the_writer_closed() {
        let (rd, wr) = nix::unistd::pipe().unwrap();
        let inode = inode(&rd);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(Stdio::from(rd))
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut w = std::fs::File::from(wr);
        w.write_all(b"line 1\nline 2\n").unwrap();
        assert_eq!(peek_unread(pid, inode).unwrap(), b"line 1\nline 2\n");
        drop(w);
        // Still there, and reachable with no writer left.
        assert_eq!(peek_unread(pid, inode).unwrap(), b"line 1\nline 2\n");
        // A pipe no process of the job holds: nothing.
        assert!(peek_unread(pid, inode + 1).unwrap().is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
