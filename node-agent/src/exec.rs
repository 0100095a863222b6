//! Remote execution. The home agent (where `omctl run` was called) connects to
//! the target agent over TCP, seals every frame (see [`crate::crypto`]), sends
//! an [`ExecRequest`], then relays stdin and signals one way and stdout,
//! stderr, heartbeats and the exit status the other way.
//!
//! On the target the job runs as the caller's uid/gid (`setgroups`, `setgid`,
//! `setuid` between fork and exec), in the caller's cwd, in its own process
//! group (signals go to the whole group), inside the agent's job cgroup.
//!
//! Exit statuses of `omctl run` besides the job's own (code, or 128+signal):
//! [`EXIT_CANNOT_RUN`] when the job could not start (cwd missing on the target,
//! command not found), [`EXIT_NODE_LOST`] when the target died or stopped
//! answering mid-job, [`EXIT_NO_AGENT`] when the request itself failed.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cgroup::JobCgroup;
use crate::crypto::{self, FrameCipher, Role};
use crate::wire::{self, ExecRequest, ExitInfo, Frame, JobInfo, WireError};

/// The job could not be started (cwd missing on the target, command not found).
pub const EXIT_CANNOT_RUN: i32 = 127;
/// The job could not be started for lack of permission.
pub const EXIT_NO_PERMISSION: i32 = 126;
/// The node running the job died or stopped answering.
pub const EXIT_NODE_LOST: i32 = 255;
/// The local agent refused or could not handle the request.
pub const EXIT_NO_AGENT: i32 = 254;
/// How often a target tells the home node the job is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which the home node gives up on a target.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);
const CHUNK: usize = 32 * 1024;

/// Jobs by id, shared with the agent's status view.
pub type Jobs = Arc<Mutex<BTreeMap<String, JobInfo>>>;

/// What a target agent needs to run jobs.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// This node's name (`OM_NODE`).
    pub node: String,
    /// Root key of exec streams.
    pub stream_key: [u8; 32],
    /// The job cgroup, if CPU capping is on.
    pub cgroup: Option<JobCgroup>,
    /// Jobs running here.
    pub running: Jobs,
    /// Jobs ever started here (incremented after a job enters `running`).
    pub started: Arc<AtomicU64>,
}

/// (jobs running, jobs ever started) with the guarantee that every job
/// counted in the second number and still running is counted in the first.
pub fn job_counts(running: &Jobs, started: &AtomicU64) -> (u32, u64) {
    let s = started.load(Ordering::SeqCst);
    let n = running.lock().expect("jobs lock").len() as u32;
    (n, s)
}

/// The sealed halves of an exec connection.
pub struct SecureStream {
    /// Reading half.
    pub rd: tokio::net::tcp::OwnedReadHalf,
    /// Writing half.
    pub wr: tokio::net::tcp::OwnedWriteHalf,
    /// Cipher for frames we send.
    pub send: FrameCipher,
    /// Cipher for frames we receive.
    pub recv: FrameCipher,
}

fn keepalive(stream: &TcpStream) {
    let s = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let _ = s.set_tcp_keepalive(&ka);
    let _ = stream.set_nodelay(true);
}

/// Connects to a target agent and performs the client side of the handshake.
pub async fn connect(addr: SocketAddr, stream_key: &[u8; 32]) -> Result<SecureStream, WireError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    keepalive(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let hello = crypto::client_hello();
    wr.write_all(&hello).await?;
    let mut reply = [0u8; crypto::REPLY_LEN];
    tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut reply))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let cn: [u8; 32] = hello[4..].try_into().expect("32 bytes");
    let (send, recv) = crypto::stream_ciphers(stream_key, &cn, &reply, Role::Client);
    Ok(SecureStream { rd, wr, send, recv })
}

/// Server side of the handshake on an accepted connection.
pub async fn accept(stream: TcpStream, stream_key: &[u8; 32]) -> Result<SecureStream, WireError> {
    keepalive(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = [0u8; crypto::HELLO_LEN];
    tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut hello))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let cn = crypto::parse_hello(&hello)?;
    let sn: [u8; 32] = rand10::random();
    wr.write_all(&sn).await?;
    let (send, recv) = crypto::stream_ciphers(stream_key, &cn, &sn, Role::Server);
    Ok(SecureStream { rd, wr, send, recv })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Spawns a task that reads sealed frames into a channel (so the main loops
/// select over channels, which is cancel-safe). The channel closes on end of
/// stream or on the first bad frame.
fn sealed_reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut cipher: FrameCipher,
) -> mpsc::Receiver<Result<Frame, WireError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let r = wire::read_sealed(&mut rd, &mut cipher).await;
            let stop = !matches!(r, Ok(Some(_)));
            let item = match r {
                Ok(Some(f)) => Ok(f),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    rx
}

/// Like [`sealed_reader`] for plain frames (the control socket).
pub fn plain_reader<R: AsyncRead + Unpin + Send + 'static>(
    mut rd: R,
) -> mpsc::Receiver<Result<Frame, WireError>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let r = wire::read_frame(&mut rd).await;
            let stop = !matches!(r, Ok(Some(_)));
            let item = match r {
                Ok(Some(f)) => Ok(f),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    rx
}

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

/// Checks a request and starts the process.
fn start(req: &ExecRequest, ctx: &ExecContext) -> Result<tokio::process::Child, (i32, String)> {
    let node = &ctx.node;
    let Some(program) = req.argv.first() else {
        return Err((EXIT_CANNOT_RUN, "empty command".into()));
    };
    if !std::path::Path::new(&req.cwd).is_dir() {
        return Err((
            EXIT_CANNOT_RUN,
            format!(
                "working directory {} does not exist on node {node}",
                req.cwd
            ),
        ));
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

fn pump<R: AsyncRead + Unpin + Send + 'static>(mut r: R, tx: mpsc::Sender<Frame>, stderr: bool) {
    tokio::spawn(async move {
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
    let (out_tx, mut out_rx) = mpsc::channel::<Frame>(64);
    if let Some(o) = child.stdout.take() {
        pump(o, out_tx.clone(), false);
    }
    if let Some(e) = child.stderr.take() {
        pump(e, out_tx.clone(), true);
    }
    drop(out_tx);
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(64);
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            while let Some(Some(data)) = in_rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
    }
    let mut frames = sealed_reader(rd, recv);
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

/// Asks the agent at `addr` which cluster jobs run there.
pub async fn remote_jobs(
    addr: SocketAddr,
    stream_key: &[u8; 32],
) -> Result<Vec<JobInfo>, WireError> {
    let mut s = connect(addr, stream_key).await?;
    wire::write_sealed(&mut s.wr, &mut s.send, &Frame::Ps).await?;
    match tokio::time::timeout(
        Duration::from_secs(3),
        wire::read_sealed(&mut s.rd, &mut s.recv),
    )
    .await
    {
        Ok(Ok(Some(Frame::PsReply(jobs)))) => Ok(jobs),
        Ok(Err(e)) => Err(e),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no job list").into()),
    }
}

/// How a relayed job ended, from the home node's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    /// The job's own exit.
    Exit(ExitInfo),
    /// It failed or was lost, with omctl's exit status.
    Failed(i32, String),
    /// omctl went away.
    CallerGone,
}

/// Runs `req` on the target at `addr` and relays between the caller's
/// control connection (`caller_rx`/`caller_tx`) and the target. `lost`
/// resolves if membership declares the target dead.
pub async fn relay(
    addr: SocketAddr,
    target: &str,
    stream_key: &[u8; 32],
    req: ExecRequest,
    mut caller_rx: mpsc::Receiver<Result<Frame, WireError>>,
    caller_tx: mpsc::Sender<Frame>,
    lost: impl std::future::Future<Output = ()>,
) -> RelayEnd {
    let s = match connect(addr, stream_key).await {
        Ok(s) => s,
        Err(e) => {
            return RelayEnd::Failed(
                EXIT_NODE_LOST,
                format!("cannot reach node {target} at {addr}: {e}"),
            )
        }
    };
    let SecureStream {
        rd,
        mut wr,
        mut send,
        recv,
    } = s;
    if let Err(e) = wire::write_sealed(&mut wr, &mut send, &Frame::Exec(req)).await {
        return RelayEnd::Failed(
            EXIT_NODE_LOST,
            format!("cannot send the job to node {target}: {e}"),
        );
    }
    let mut from_target = sealed_reader(rd, recv);
    tokio::pin!(lost);
    let mut last_heard = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            f = from_target.recv() => match f {
                Some(Ok(f)) => {
                    last_heard = tokio::time::Instant::now();
                    match f {
                        Frame::Heartbeat => {}
                        Frame::Exit(e) => return RelayEnd::Exit(e),
                        Frame::Failed { code, message } => return RelayEnd::Failed(code, message),
                        f @ (Frame::Stdout(_) | Frame::Stderr(_) | Frame::Started { .. }) => {
                            if caller_tx.send(f).await.is_err() {
                                return RelayEnd::CallerGone;
                            }
                        }
                        other => debug!(frame = ?other, "ignored frame from target"),
                    }
                }
                Some(Err(e)) => return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost node {target}: {e}")),
                None => return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost the connection to node {target} while the job was running")),
            },
            f = caller_rx.recv() => match f {
                Some(Ok(f @ (Frame::Stdin(_) | Frame::StdinEof | Frame::Signal(_)))) => {
                    if wire::write_sealed(&mut wr, &mut send, &f).await.is_err() {
                        return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost the connection to node {target} while the job was running"));
                    }
                }
                Some(Ok(other)) => debug!(frame = ?other, "ignored frame from caller"),
                Some(Err(_)) | None => {
                    let _ = wire::write_sealed(&mut wr, &mut send, &Frame::Signal(libc::SIGHUP)).await;
                    return RelayEnd::CallerGone;
                }
            },
            () = &mut lost => return RelayEnd::Failed(EXIT_NODE_LOST, format!("node {target} died while running the job")),
            _ = check.tick() => {
                if last_heard.elapsed() > SILENCE_LIMIT {
                    return RelayEnd::Failed(EXIT_NODE_LOST, format!("node {target} stopped answering while running the job"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    async fn target(key: [u8; 32]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctx = ExecContext {
            node: "t".into(),
            stream_key: key,
            cgroup: None,
            running: Jobs::default(),
            started: Arc::default(),
        };
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve(s, ctx.clone()));
            }
        });
        addr
    }

    fn request(marker: &std::path::Path) -> ExecRequest {
        ExecRequest {
            job: "h-1".into(),
            argv: vec![
                "sh".into(),
                "-c".into(),
                format!("echo ran >> {}; echo out; exit 4", marker.display()),
            ],
            cwd: "/".into(),
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            home: "h".into(),
        }
    }

    async fn frames_until_end(rd: &mut TcpStream, recv: &mut FrameCipher) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Ok(Some(f)) = wire::read_sealed(rd, recv).await {
            let end = matches!(f, Frame::Exit(_) | Frame::Failed { .. });
            out.push(f);
            if end {
                break;
            }
        }
        out
    }

    #[tokio::test]
    async fn wrong_key_and_replayed_streams_run_nothing() {
        let key = [5u8; 32];
        let addr = target(key).await;
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");

        // A real session, recording every byte the client sends.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let hello = crypto::client_hello();
        s.write_all(&hello).await.unwrap();
        let mut sn = [0u8; 32];
        s.read_exact(&mut sn).await.unwrap();
        let cn: [u8; 32] = hello[4..].try_into().unwrap();
        let (mut send, mut recv) = crypto::stream_ciphers(&key, &cn, &sn, Role::Client);
        let sealed = send.seal(&Frame::Exec(request(&marker)).encode());
        let mut chunk = (sealed.len() as u32).to_be_bytes().to_vec();
        chunk.extend_from_slice(&sealed);
        s.write_all(&chunk).await.unwrap();
        let frames = frames_until_end(&mut s, &mut recv).await;
        assert!(
            frames.contains(&Frame::Stdout(b"out\n".to_vec())),
            "{frames:?}"
        );
        assert_eq!(frames.last(), Some(&Frame::Exit(ExitInfo::Code(4))));
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");

        // The same bytes again: the server's fresh nonce makes them garbage.
        let mut r = TcpStream::connect(addr).await.unwrap();
        r.write_all(&hello).await.unwrap();
        r.write_all(&chunk).await.unwrap();
        let mut rest = Vec::new();
        let _ = r.read_to_end(&mut rest).await;
        assert_eq!(rest.len(), 32, "the server said more than its nonce");

        // The wrong key: the request is refused unread.
        let mut w = connect(addr, &[6u8; 32]).await.unwrap();
        wire::write_sealed(&mut w.wr, &mut w.send, &Frame::Exec(request(&marker)))
            .await
            .unwrap();
        assert!(!matches!(
            wire::read_sealed(&mut w.rd, &mut w.recv).await,
            Ok(Some(_))
        ));
        assert_eq!(
            std::fs::read_to_string(&marker).unwrap(),
            "ran\n",
            "a replayed or keyless request ran"
        );
    }

    #[tokio::test]
    async fn relay_streams_stdin_and_reports_a_missing_cwd() {
        let key = [7u8; 32];
        let addr = target(key).await;
        let (to_relay, caller_rx) = mpsc::channel(8);
        let (caller_tx, mut from_relay) = mpsc::channel(64);
        let mut req = request(std::path::Path::new("/dev/null"));
        req.argv = vec!["sh".into(), "-c".into(), "read a; echo \"[$a]\"".into()];
        to_relay
            .send(Ok(Frame::Stdin(b"hi\n".to_vec())))
            .await
            .unwrap();
        to_relay.send(Ok(Frame::StdinEof)).await.unwrap();
        let end = relay(
            addr,
            "t",
            &key,
            req,
            caller_rx,
            caller_tx,
            std::future::pending(),
        )
        .await;
        assert_eq!(end, RelayEnd::Exit(ExitInfo::Code(0)));
        let mut out = Vec::new();
        while let Ok(f) = from_relay.try_recv() {
            if let Frame::Stdout(d) = f {
                out.extend(d);
            }
        }
        assert_eq!(out, b"[hi]\n");
        drop(to_relay);

        let (_keep, caller_rx) = mpsc::channel(8);
        let (caller_tx, _out) = mpsc::channel(64);
        let mut req = request(std::path::Path::new("/dev/null"));
        req.cwd = "/nonexistent/omt-cwd".into();
        let end = relay(
            addr,
            "t",
            &key,
            req,
            caller_rx,
            caller_tx,
            std::future::pending(),
        )
        .await;
        assert_eq!(
            end,
            RelayEnd::Failed(
                EXIT_CANNOT_RUN,
                "working directory /nonexistent/omt-cwd does not exist on node t".into()
            )
        );
    }
}
