//! The target side of an exec stream: accept the handshake, read the first
//! frame and dispatch: a job to run (`Exec`), a job list (`Ps`), or one of
//! the migration exchanges (see [`super::migrate`]). A running job is
//! driven by [`drive`]: its stdout/stderr and heartbeats go to the home
//! node, the home node's stdin and signals to the job, and a migration
//! order, if one comes, moves it away.

use std::time::Duration;

use contracts::clock::unix_millis;
use contracts::share::{find_mount, MOUNT_POINT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::migrate::{self, MigrateCmd};
use super::stream::{accept, sealed_reader, SecureStream};
use super::{ExecContext, EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_PERMISSION, HEARTBEAT};
use crate::crypto::FrameCipher;
use crate::job::{self, Started};
use crate::wire::{self, ExecRequest, ExitInfo, Frame, JobInfo, WireError};

/// Bytes of job output per frame.
const CHUNK: usize = 32 * 1024;

/// Handles one accepted exec connection on the target node.
pub async fn serve(stream: TcpStream, ctx: ExecContext) {
    let peer = stream.peer_addr().ok();
    let (mut s, first) = match accept(stream, &ctx.keys.stream_accepted()).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(e) => {
            warn!(?peer, cause = %e, "refused exec stream");
            return;
        }
    };
    match first {
        Frame::Exec(req) => {
            info!(job = %req.job, home = %req.home, uid = req.uid, argv = ?req.argv, "running job");
            run_job(req, ctx, s).await;
        }
        Frame::Ps => {
            let jobs = super::listed(&ctx.running, &ctx.criu);
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &Frame::PsReply(jobs)).await;
        }
        Frame::MigrateJob(order) => migrate::order(order, &ctx, s).await,
        Frame::Immigrate(imm) => migrate::immigrate(imm, ctx, s).await,
        Frame::Outcome { job, attempt } => {
            let done = ctx.outcomes.lock().expect("outcomes").answer(&job, attempt);
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &Frame::OutcomeReply(done)).await;
        }
        Frame::Knob { node: None, action } => {
            let answer = match &ctx.admin {
                Some(admin) => {
                    let (tx, rx) = oneshot::channel();
                    if admin.send((action, tx)).await.is_ok() {
                        rx.await.ok()
                    } else {
                        None
                    }
                }
                None => None,
            };
            let f = match answer {
                Some(Ok(lines)) => Frame::KnobDone(lines),
                Some(Err((code, message))) => Frame::Failed { code, message },
                None => Frame::Failed {
                    code: EXIT_NODE_LOST,
                    message: format!("node {} takes no knob requests now", ctx.node),
                },
            };
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &f).await;
        }
        Frame::Attach { job } => {
            let parked = ctx.parked.lock().expect("parked").remove(&job);
            match parked {
                Some(tx) => {
                    let _ = tx.send(s);
                }
                None => {
                    let message = format!("job {job} is not waiting on node {}", ctx.node);
                    let _ = wire::write_sealed(
                        &mut s.wr,
                        &mut s.send,
                        &Frame::Failed {
                            code: EXIT_NODE_LOST,
                            message,
                        },
                    )
                    .await;
                }
            }
        }
        Frame::NewKey {
            key,
            switch_in_ms,
            window_ms,
        } => {
            let new = crate::key::ClusterKey::from_bytes(key.0);
            let fingerprint = new.fingerprint(ctx.keys.cluster());
            let answer = match ctx.keys.rotate(new, switch_in_ms, window_ms) {
                Ok(fresh) => {
                    info!(?peer, %fingerprint, fresh, switch_in_ms, window_ms, "took a new cluster key");
                    Frame::KeyDone(Vec::new())
                }
                Err(crate::keys::KeysError::File(e)) => {
                    warn!(?peer, %fingerprint, cause = %e, "took a new cluster key but could not save it");
                    Frame::KeyDone(vec![format!(
                        "node {} took the new key, but {e}; after a restart it needs admission",
                        ctx.node
                    )])
                }
                Err(crate::keys::KeysError::Rotate(e)) => Frame::Failed {
                    code: EXIT_CANNOT_RUN,
                    message: e.to_string(),
                },
            };
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &answer).await;
        }
        other => warn!(?peer, frame = ?other, "exec stream did not start with a request"),
    }
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

/// Checks a request and starts the job under its holder.
async fn start(req: &ExecRequest, ctx: &ExecContext) -> Result<Started, (i32, String)> {
    let node = &ctx.node;
    if req.argv.is_empty() {
        return Err((EXIT_CANNOT_RUN, "empty command".into()));
    }
    if let Some(why) = ctx.refuses_guest(&req.home) {
        return Err((EXIT_CANNOT_RUN, why));
    }
    if let Some(why) = ctx.refuses_uid(req.uid) {
        return Err((EXIT_NO_PERMISSION, why));
    }
    if !std::path::Path::new(&req.cwd).is_dir() {
        return Err((EXIT_CANNOT_RUN, missing_cwd(&req.cwd, node)));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if euid != 0 && req.uid != euid {
        return Err((
            EXIT_NO_PERMISSION,
            format!(
                "the agent on node {node} is not root and cannot run jobs as uid {}",
                req.uid
            ),
        ));
    }
    let mut env = req.env.clone();
    env.retain(|(k, _)| k != "OM_NODE" && k != "OM_HOME" && k != "OM_JOB");
    env.push(("OM_NODE".into(), node.clone()));
    env.push(("OM_HOME".into(), req.home.clone()));
    env.push(("OM_JOB".into(), req.job.clone()));
    let cgroup = match &ctx.cgroup {
        Some(cg) => Some(
            cg.job(&req.job)
                .map_err(|e| (EXIT_CANNOT_RUN, e.to_string()))?,
        ),
        None => None,
    };
    job::start(job::Launch {
        argv: &req.argv,
        env,
        cwd: &req.cwd,
        uid: req.uid,
        gid: req.gid,
        cgroup: cgroup.as_deref(),
        node,
        holder: &ctx.holder,
    })
    .await
}

/// Runs an accepted request to its end.
async fn run_job(req: ExecRequest, ctx: ExecContext, s: SecureStream) {
    let mut home = HomeLink::new(s);
    let started = match start(&req, &ctx).await {
        Ok(c) => c,
        Err((code, message)) => {
            info!(job = %req.job, %message, "job refused");
            home.send(&Frame::Failed { code, message }).await;
            return;
        }
    };
    let info = JobInfo {
        job: req.job.clone(),
        argv: req.argv.clone(),
        uid: req.uid,
        node: ctx.node.clone(),
        home: req.home.clone(),
        pid: Some(started.init),
        started_ms: unix_millis(),
        moves: 0,
        cantmove: if req.lock {
            Some("locked (omctl run --lock)".to_string())
        } else {
            started.cantmove.clone()
        },
        since_ms: unix_millis(),
    };
    let job = RunningJob {
        info,
        gid: req.gid,
        started,
        stdin: Vec::new(),
        stdin_eof: false,
    };
    drive(job, Home::Link(home), ctx).await;
}

/// The stream to the job's home node, or none yet (a restored job before
/// its home attaches).
pub(super) struct HomeLink {
    link: Option<(tokio::net::tcp::OwnedWriteHalf, FrameCipher)>,
    frames: mpsc::Receiver<Result<Frame, WireError>>,
    /// Whether the home node still talks to us.
    open: bool,
    /// The frame reader's task.
    _tasks: JoinSet<()>,
}

impl HomeLink {
    /// A link over an exec stream.
    pub(super) fn new(s: SecureStream) -> Self {
        let mut tasks = JoinSet::new();
        let frames = sealed_reader(s.rd, s.recv, &mut tasks);
        HomeLink {
            link: Some((s.wr, s.send)),
            frames,
            open: true,
            _tasks: tasks,
        }
    }

    /// No link.
    pub(super) fn detached() -> Self {
        HomeLink {
            link: None,
            frames: mpsc::channel(1).1,
            open: false,
            _tasks: JoinSet::new(),
        }
    }

    /// Sends a frame; after the first failure, nothing more.
    pub(super) async fn send(&mut self, f: &Frame) {
        if let Some((wr, cipher)) = &mut self.link {
            if wire::write_sealed(wr, cipher, f).await.is_err() {
                self.link = None;
            }
        }
    }

    /// Ends the stream cleanly.
    async fn close(&mut self) {
        if let Some((mut wr, _)) = self.link.take() {
            let _ = wr.shutdown().await;
        }
    }

    fn hang_up(&mut self) {
        self.open = false;
        self.link = None;
    }
}

/// A job running here, as its driver holds it.
pub(super) struct RunningJob {
    pub(super) info: JobInfo,
    pub(super) gid: u32,
    pub(super) started: Started,
    /// Stdin received but not yet written to the job.
    pub(super) stdin: Vec<u8>,
    /// The home node closed stdin (closed here once `stdin` is written).
    pub(super) stdin_eof: bool,
}

/// Where a job's home node is, for [`drive`].
pub(super) enum Home {
    /// Connected.
    Link(HomeLink),
    /// A restored job: the home node attaches with `Attach` (registered in
    /// [`ExecContext::parked`] before the restore was announced).
    Awaiting(oneshot::Receiver<SecureStream>),
}

/// How [`drive`] ended.
enum End {
    Exited(ExitInfo),
    Moved,
}

/// Drives a running job until it exits or moves away: output to home,
/// input and signals to the job, migration orders.
pub(super) async fn drive(mut job: RunningJob, home: Home, ctx: ExecContext) {
    let name = job.info.job.clone();
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<MigrateCmd>(1);
    ctx.controls
        .lock()
        .expect("controls")
        .insert(name.clone(), ctl_tx);
    let seq = {
        ctx.running
            .lock()
            .expect("jobs lock")
            .insert(name.clone(), job.info.clone());
        ctx.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    };
    let (mut home, mut attach_rx, mut waiting_attach) = match home {
        Home::Link(l) => (l, oneshot::channel().1, false),
        Home::Awaiting(rx) => (HomeLink::detached(), rx, true),
    };
    let attach_deadline = tokio::time::sleep(Duration::from_secs(30));
    tokio::pin!(attach_deadline);
    let started_frame = Frame::Started {
        node: ctx.node.clone(),
        pid: job.started.init,
        seq,
    };
    if !waiting_attach {
        home.send(&started_frame).await;
    }
    let mut stdin = job.started.pipes.stdin.take();
    let mut obuf = vec![0u8; CHUNK];
    let mut ebuf = vec![0u8; CHUNK];
    let (mut out_open, mut err_open) = (true, true);
    let mut beat = tokio::time::interval(HEARTBEAT);
    let mut exited: Option<ExitInfo> = None;
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    let end = loop {
        if let (Some(exit), false, false) = (exited, out_open, err_open) {
            break End::Exited(exit);
        }
        if job.stdin_eof && job.stdin.is_empty() {
            stdin = None;
        }
        let holder_pid = job.started.holder.id();
        let signal = |sig: i32| {
            if let Some(p) = holder_pid {
                // SAFETY: plain kill(2) on the holder, which forwards it.
                unsafe { libc::kill(p as i32, sig) };
            }
        };
        let want_write = stdin.is_some() && !job.stdin.is_empty();
        tokio::select! {
            // Until home attaches, output waits in the pipes (a read now
            // would have nowhere to go).
            r = job.started.pipes.stdout.read(&mut obuf), if out_open && !waiting_attach => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => home.send(&Frame::Stdout(obuf[..n].to_vec())).await,
            },
            r = job.started.pipes.stderr.read(&mut ebuf), if err_open && !waiting_attach => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => home.send(&Frame::Stderr(ebuf[..n].to_vec())).await,
            },
            w = async { stdin.as_ref().expect("checked").writable().await }, if want_write => {
                if w.is_ok() {
                    match stdin.as_ref().expect("checked").try_write(&job.stdin) {
                        Ok(n) => { job.stdin.drain(..n); }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => { stdin = None; job.stdin.clear(); }
                    }
                }
            },
            f = home.frames.recv(), if home.open && !waiting_attach => match f {
                Some(Ok(Frame::Stdin(d))) => if stdin.is_some() { job.stdin.extend_from_slice(&d) },
                Some(Ok(Frame::StdinEof)) => job.stdin_eof = true,
                Some(Ok(Frame::Signal(sig))) => { debug!(job = %name, sig, "forwarding signal"); signal(sig); }
                Some(Ok(other)) => debug!(job = %name, frame = ?other, "ignored frame"),
                Some(Err(_)) | None => {
                    info!(job = %name, "home node went away, hanging up the job");
                    home.hang_up();
                    signal(libc::SIGHUP);
                    job::resume(job.started.init);
                }
            },
            s = &mut attach_rx, if waiting_attach => {
                waiting_attach = false;
                match s {
                    Ok(s) => {
                        home = HomeLink::new(s);
                        home.send(&started_frame).await;
                        // Output that waited for home drains from now.
                        if drain_deadline.is_some() {
                            drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                        }
                    }
                    Err(_) => home.hang_up(),
                }
            },
            () = &mut attach_deadline, if waiting_attach => {
                info!(job = %name, "its home node never attached, hanging up the job");
                waiting_attach = false;
                ctx.parked.lock().expect("parked").remove(&name);
                home.hang_up();
                signal(libc::SIGHUP);
            },
            cmd = ctl_rx.recv() => if let Some(cmd) = cmd {
                if exited.is_some() {
                    let _ = cmd.reply.send(Err((EXIT_CANNOT_RUN, format!("job {name} has ended"))));
                    continue;
                }
                let stdin_closed = stdin.is_none() || job.stdin_eof;
                if migrate::out(&mut job, &mut home, &ctx, cmd, stdin_closed).await {
                    break End::Moved;
                }
            },
            st = job.started.holder.wait(), if exited.is_none() => {
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
                // Something outside the job may still hold the pipes: give
                // the output a moment to drain, then report anyway.
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            },
            _ = beat.tick() => {
                if waiting_attach { continue; }
                home.send(&Frame::Heartbeat).await;
                if let Some(d) = drain_deadline {
                    if tokio::time::Instant::now() >= d { break End::Exited(exited.expect("set with the deadline")); }
                }
            },
        }
    };
    ctx.controls.lock().expect("controls").remove(&name);
    ctx.parked.lock().expect("parked").remove(&name);
    ctx.running.lock().expect("jobs lock").remove(&name);
    if let End::Moved = end {
        let _ = job.started.holder.wait().await;
    }
    if let Some(cg) = &ctx.cgroup {
        cg.remove_job(&name);
    }
    match end {
        End::Exited(exit) => {
            info!(job = %name, ?exit, "job ended");
            home.send(&Frame::Exit(exit)).await;
            home.close().await;
        }
        End::Moved => home.close().await,
    }
}
