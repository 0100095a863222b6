//! The target side of an exec stream: accept the handshake, read the
//! request (or answer a job list), start the job as the caller, then pump its
//! stdout/stderr and heartbeats to the home node and the home node's stdin
//! and signals to the job until it exits.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use contracts::share::{find_mount, MOUNT_POINT};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::stream::{accept, sealed_reader, SecureStream};
use super::{now_ms, ExecContext, EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_PERMISSION, HEARTBEAT};
use crate::wire::{self, ExecRequest, ExitInfo, Frame, JobInfo};

/// Bytes of job output per frame.
const CHUNK: usize = 32 * 1024;

/// Handles one accepted exec connection on the target node.
pub async fn serve(stream: TcpStream, ctx: ExecContext) {
    let peer = stream.peer_addr().ok();
    let mut s = match accept(stream, &ctx.stream_key).await {
        Ok(s) => s,
        Err(e) => {
            warn!(?peer, cause = %e, "exec handshake failed");
            return;
        }
    };
    let req = match tokio::time::timeout(
        Duration::from_secs(5),
        wire::read_sealed(&mut s.rd, &mut s.recv),
    )
    .await
    {
        Ok(Ok(Some(Frame::Exec(req)))) => req,
        Ok(Ok(Some(Frame::Ps))) => {
            let jobs: Vec<JobInfo> = ctx
                .running
                .lock()
                .expect("jobs lock")
                .values()
                .cloned()
                .collect();
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &Frame::PsReply(jobs)).await;
            return;
        }
        Ok(Ok(other)) => {
            warn!(?peer, frame = ?other.map(|f| format!("{f:?}")), "exec stream did not start with a request");
            return;
        }
        Ok(Err(e)) => {
            warn!(?peer, cause = %e, "refused exec stream");
            return;
        }
        Err(_) => {
            warn!(?peer, "exec stream sent no request");
            return;
        }
    };
    info!(job = %req.job, home = %req.home, uid = req.uid, argv = ?req.argv, "running job");
    run_job(req, ctx, s).await;
}

/// Why a job's working directory is missing here, and the way out: the
/// shared tree at `/cluster` is the same on every node.
fn missing_cwd(cwd: &str, node: &str) -> String {
    let shared = std::path::Path::new(cwd).starts_with(MOUNT_POINT);
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| find_mount(&m))
        .is_some();
    let hint = match (shared, mounted) {
        (true, false) => format!("{MOUNT_POINT} is not mounted on node {node}"),
        (true, true) => format!("it is not in {MOUNT_POINT} as node {node} sees it"),
        (false, _) => {
            format!("start jobs from a directory under {MOUNT_POINT}, the tree every node shares")
        }
    };
    format!("working directory {cwd} does not exist on node {node} ({hint})")
}

/// Checks a request and starts the process.
fn start(req: &ExecRequest, ctx: &ExecContext) -> Result<tokio::process::Child, (i32, String)> {
    let node = &ctx.node;
    let Some(program) = req.argv.first() else {
        return Err((EXIT_CANNOT_RUN, "empty command".into()));
    };
    if !std::path::Path::new(&req.cwd).is_dir() {
        return Err((EXIT_CANNOT_RUN, missing_cwd(&req.cwd, node)));
    }
    let euid = nix::unistd::geteuid().as_raw();
    let root = euid == 0;
    if !root && req.uid != euid {
        return Err((
            EXIT_NO_PERMISSION,
            format!(
                "the agent on node {node} is not root and cannot run jobs as uid {}",
                req.uid
            ),
        ));
    }
    let cwd = CString::new(req.cwd.clone())
        .map_err(|_| (EXIT_CANNOT_RUN, "cwd contains a NUL byte".to_string()))?;
    let procs: Option<OwnedFd> = match &ctx.cgroup {
        Some(cg) => match std::fs::OpenOptions::new()
            .write(true)
            .open(cg.procs_file())
        {
            Ok(f) => Some(f.into()),
            Err(e) => {
                return Err((
                    EXIT_CANNOT_RUN,
                    format!(
                        "cannot enter job cgroup {} on node {node}: {e}",
                        cg.dir.display()
                    ),
                ))
            }
        },
        None => None,
    };
    let procs_raw = procs.as_ref().map(|f| f.as_raw_fd());
    let (uid, gid) = (req.uid, req.gid);
    let mut cmd = std::process::Command::new(program);
    cmd.args(&req.argv[1..])
        .env_clear()
        .envs(req.env.iter().map(|(k, v)| (k, v)))
        .env("OM_NODE", node)
        .env("OM_HOME", &req.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes
    // async-signal-safe system calls on values prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_raw {
                if libc::write(fd, b"0".as_ptr().cast(), 1) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if root
                && (libc::setgroups(1, &gid) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::chdir(cwd.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(false);
    let child = cmd.spawn().map_err(|e| {
        let code = match e.kind() {
            std::io::ErrorKind::PermissionDenied => EXIT_NO_PERMISSION,
            _ => EXIT_CANNOT_RUN,
        };
        (code, format!("cannot run {program} on node {node}: {e}"))
    });
    drop(procs);
    child
}

/// Copies a job's stdout or stderr into frames, in a task of `tasks`.
fn pump<R: AsyncRead + Unpin + Send + 'static>(
    mut r: R,
    tx: mpsc::Sender<Frame>,
    stderr: bool,
    tasks: &mut JoinSet<()>,
) {
    tasks.spawn(async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    let f = if stderr {
                        Frame::Stderr(data)
                    } else {
                        Frame::Stdout(data)
                    };
                    if tx.send(f).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Runs an accepted request to its end. The helper tasks (output pumps, the
/// stdin writer, the frame reader) belong to this call and end with it.
async fn run_job(req: ExecRequest, ctx: ExecContext, s: SecureStream) {
    let SecureStream {
        rd,
        mut wr,
        mut send,
        recv,
    } = s;
    let mut child = match start(&req, &ctx) {
        Ok(c) => c,
        Err((code, message)) => {
            info!(job = %req.job, %message, "job refused");
            let _ = wire::write_sealed(&mut wr, &mut send, &Frame::Failed { code, message }).await;
            return;
        }
    };
    let pid = child.id().unwrap_or(0);
    ctx.running.lock().expect("jobs lock").insert(
        req.job.clone(),
        JobInfo {
            job: req.job.clone(),
            argv: req.argv.clone(),
            uid: req.uid,
            node: ctx.node.clone(),
            home: req.home.clone(),
            pid: Some(pid),
            started_ms: now_ms(),
        },
    );
    let seq = ctx.started.fetch_add(1, Ordering::SeqCst) + 1;
    let mut tasks = JoinSet::new();
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    if let Some(o) = child.stdout.take() {
        pump(o, out_tx.clone(), false, &mut tasks);
    }
    if let Some(e) = child.stderr.take() {
        pump(e, out_tx.clone(), true, &mut tasks);
    }
    drop(out_tx);
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    if let Some(mut stdin) = child.stdin.take() {
        tasks.spawn(async move {
            while let Some(Some(data)) = in_rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut frames = sealed_reader(rd, recv, &mut tasks);
    let signal = |sig: i32| {
        if pid > 0 {
            // SAFETY: plain kill(2) on the job's process group.
            unsafe { libc::kill(-(pid as i32), sig) };
        }
    };
    let mut ok = wire::write_sealed(
        &mut wr,
        &mut send,
        &Frame::Started {
            node: ctx.node.clone(),
            pid,
            seq,
        },
    )
    .await
    .is_ok();
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut exited: Option<ExitInfo> = None;
    let mut outputs_open = true;
    let mut home_open = true;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    while exited.is_none() || outputs_open {
        tokio::select! {
            f = out_rx.recv(), if outputs_open => match f {
                Some(f) => {
                    if ok { ok = wire::write_sealed(&mut wr, &mut send, &f).await.is_ok(); }
                }
                None => outputs_open = false,
            },
            f = frames.recv(), if home_open => match f {
                Some(Ok(Frame::Stdin(d))) => { let _ = in_tx.send(Some(d)).await; }
                Some(Ok(Frame::StdinEof)) => { let _ = in_tx.send(None).await; }
                Some(Ok(Frame::Signal(sig))) => { debug!(job = %req.job, sig, "forwarding signal"); signal(sig); }
                Some(Ok(other)) => debug!(job = %req.job, frame = ?other, "ignored frame"),
                Some(Err(_)) | None => {
                    // The home node is gone: the job has nobody to report to.
                    info!(job = %req.job, "home node went away, hanging up the job");
                    home_open = false;
                    ok = false;
                    signal(libc::SIGHUP);
                    signal(libc::SIGCONT);
                }
            },
            st = child.wait(), if exited.is_none() => {
                exited = Some(match st {
                    Ok(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        match (st.code(), st.signal()) {
                            (Some(c), _) => ExitInfo::Code(c),
                            (None, Some(s)) => ExitInfo::Signal(s),
                            _ => ExitInfo::Code(EXIT_NODE_LOST),
                        }
                    }
                    Err(_) => ExitInfo::Code(EXIT_NODE_LOST),
                });
                // A background grandchild may keep the pipes open: give the
                // output a moment to drain, then report anyway.
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            },
            _ = beat.tick() => {
                if ok { ok = wire::write_sealed(&mut wr, &mut send, &Frame::Heartbeat).await.is_ok(); }
                if let Some(d) = drain_deadline {
                    if tokio::time::Instant::now() >= d { break; }
                }
            },
        }
    }
    let exit = exited.unwrap_or(ExitInfo::Code(EXIT_NODE_LOST));
    info!(job = %req.job, ?exit, "job ended");
    ctx.running.lock().expect("jobs lock").remove(&req.job);
    if ok {
        let _ = wire::write_sealed(&mut wr, &mut send, &Frame::Exit(exit)).await;
        let _ = wr.shutdown().await;
    }
}
