//! A job's life on the node running it: started for an `Exec` request
//! ([`run_job`]), or restored after a move ([`migrate`]), then driven by
//! [`drive`]: its stdout/stderr and heartbeats go to the home node, the home
//! node's stdin and signals to the job, and a migration order, if one
//! comes, moves it away ([`migrate`] again).
//!
//! - `migrate`: moving a running job between nodes (CRIU), source and
//!   target sides, and the rules that keep exactly one copy.

use contracts::clock::unix_millis;
use std::time::Duration;

use contracts::share::{find_mount, MOUNT_POINT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info};

pub mod migrate;
pub mod steer;

use super::{ExecContext, EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_PERMISSION, HEARTBEAT};
use crate::crypto::FrameCipher;
use crate::job::{self, Started};
use crate::state::{DriverCmd, MigrateCmd, SteerCmd};
use crate::stream::{sealed_reader, SecureStream};
use crate::wire::{self, ExecRequest, ExitInfo, JobInfo, PeerFrame, WireError};
use crate::wire::{HomeFrame, JobFrame};

/// Bytes of job output per frame.
const CHUNK: usize = 32 * 1024;

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

/// The job `job` running here, if the caller `uid` may `act` on it (its
/// owner or root): what a move and a signal or renice both check first.
pub(crate) fn owned_job(
    ctx: &ExecContext,
    job: &str,
    uid: u32,
    act: &str,
) -> Result<JobInfo, (i32, String)> {
    let Some(info) = ctx.state.job(job) else {
        return Err((
            EXIT_CANNOT_RUN,
            format!("job {job} does not run on node {}", ctx.node),
        ));
    };
    if uid != 0 && uid != info.uid {
        return Err((
            EXIT_NO_PERMISSION,
            format!(
                "job {} belongs to uid {}; only its owner or root may {act} it",
                info.job, info.uid
            ),
        ));
    }
    Ok(info)
}

/// Runs an accepted request to its end.
pub(crate) async fn run_job(req: ExecRequest, ctx: ExecContext, s: SecureStream) {
    let mut home = HomeLink::new(s);
    let started = match start(&req, &ctx).await {
        Ok(c) => c,
        Err((code, message)) => {
            info!(job = %req.job, %message, "job refused");
            home.send(&PeerFrame::Failed { code, message }).await;
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
        usage: None,
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
    frames: mpsc::Receiver<Result<PeerFrame, WireError>>,
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
    pub(super) async fn send(&mut self, f: &PeerFrame) {
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
    /// A restored job: the home node attaches with `Attach` (parked in the
    /// node's state before the restore was announced).
    Awaiting(oneshot::Receiver<SecureStream>),
}

/// How [`drive`] ended.
enum End {
    /// The job ended so.
    Exited(ExitInfo),
    /// The job moved; it runs on this node now.
    Moved(String),
}

/// Drives a running job until it exits or moves away: output to home,
/// input and signals to the job, migration orders. Its steps are
/// [`Driver`]'s methods, one per event.
pub(super) async fn drive(job: RunningJob, home: Home, ctx: ExecContext) {
    let (ctl_tx, mut orders) = mpsc::channel::<DriverCmd>(1);
    let arrived = matches!(home, Home::Awaiting(_));
    let seq = ctx.state.job_runs(job.info.clone(), ctl_tx, arrived);
    let (home, mut attach_rx, waiting_attach) = match home {
        Home::Link(l) => (l, oneshot::channel().1, false),
        Home::Awaiting(rx) => (HomeLink::detached(), rx, true),
    };
    let mut d = Driver::new(job, home, ctx, seq, waiting_attach).await;
    let attach_deadline = tokio::time::sleep(ATTACH_LIMIT);
    tokio::pin!(attach_deadline);
    let mut obuf = vec![0u8; CHUNK];
    let mut ebuf = vec![0u8; CHUNK];
    let mut beat = tokio::time::interval(HEARTBEAT);
    let end = loop {
        if let (Some(exit), false, false) = (d.exited, d.out_open, d.err_open) {
            break End::Exited(exit);
        }
        if d.job.stdin_eof && d.job.stdin.is_empty() {
            d.stdin = None;
        }
        let want_write = d.stdin.is_some() && !d.job.stdin.is_empty();
        tokio::select! {
            // Until home attaches, output waits in the pipes (a read now
            // would have nowhere to go).
            r = d.job.started.pipes.stdout.read(&mut obuf), if d.out_open && !d.waiting_attach => match r {
                Ok(0) | Err(_) => d.out_open = false,
                Ok(n) => d.home.send(&PeerFrame::Stdout(obuf[..n].to_vec())).await,
            },
            r = d.job.started.pipes.stderr.read(&mut ebuf), if d.err_open && !d.waiting_attach => match r {
                Ok(0) | Err(_) => d.err_open = false,
                Ok(n) => d.home.send(&PeerFrame::Stderr(ebuf[..n].to_vec())).await,
            },
            w = async { d.stdin.as_ref().expect("checked").writable().await }, if want_write => {
                if w.is_ok() {
                    d.write_stdin();
                }
            },
            f = d.home.frames.recv(), if d.home.open && !d.waiting_attach => d.home_said(f),
            s = &mut attach_rx, if d.waiting_attach => d.attached(s).await,
            () = &mut attach_deadline, if d.waiting_attach => d.never_attached(),
            cmd = orders.recv() => match cmd {
                Some(DriverCmd::Move(cmd)) => if let Some(to) = d.ordered(cmd).await {
                    break End::Moved(to);
                },
                Some(DriverCmd::Steer(cmd)) => d.steered(cmd).await,
                None => {}
            },
            st = d.job.started.holder.wait(), if d.exited.is_none() => d.holder_exited(st),
            _ = beat.tick() => {
                if d.waiting_attach { continue; }
                d.home.send(&PeerFrame::Heartbeat).await;
                if d.drain_deadline.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    break End::Exited(d.exited.expect("set with the deadline"));
                }
            },
        }
    };
    d.finish(end).await;
}

/// How long a restored job waits for its home node to attach.
const ATTACH_LIMIT: Duration = Duration::from_secs(30);
/// How long output may still drain after the job's end, or after a late
/// attach, before the end is reported anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// A running job as [`drive`] holds it between events.
struct Driver {
    name: String,
    ctx: ExecContext,
    job: RunningJob,
    home: HomeLink,
    /// The job's stdin, until it is closed.
    stdin: Option<tokio::net::unix::pipe::Sender>,
    out_open: bool,
    err_open: bool,
    /// A restored job whose home has not attached yet.
    waiting_attach: bool,
    exited: Option<ExitInfo>,
    /// When to report the end even if output has not drained.
    drain_deadline: Option<tokio::time::Instant>,
    /// What tells home where the job runs (again after an attach).
    started_frame: PeerFrame,
    /// Its owner stopped it (SIGSTOP): it stays here until SIGCONT.
    held: bool,
}

impl Driver {
    /// Tells home where the job runs, unless home is yet to attach.
    async fn new(
        mut job: RunningJob,
        mut home: HomeLink,
        ctx: ExecContext,
        seq: u64,
        waiting_attach: bool,
    ) -> Self {
        let started_frame = PeerFrame::Started {
            node: ctx.node.clone(),
            pid: job.started.init,
            seq,
        };
        if !waiting_attach {
            home.send(&started_frame).await;
        }
        Driver {
            name: job.info.job.clone(),
            stdin: job.started.pipes.stdin.take(),
            ctx,
            job,
            home,
            out_open: true,
            err_open: true,
            waiting_attach,
            exited: None,
            drain_deadline: None,
            started_frame,
            held: false,
        }
    }

    /// Delivers `sig` to the job through its holder, which forwards it.
    fn signal(&self, sig: i32) {
        if let Some(p) = self.job.started.holder.id() {
            // SAFETY: plain kill(2) on the holder.
            unsafe { libc::kill(p as i32, sig) };
        }
    }

    /// Writes what stdin can take now of what home sent.
    fn write_stdin(&mut self) {
        let Some(stdin) = &self.stdin else { return };
        match stdin.try_write(&self.job.stdin) {
            Ok(n) => {
                self.job.stdin.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                self.stdin = None;
                self.job.stdin.clear();
            }
        }
    }

    /// A frame from home: input, its end, a signal; or home went away.
    fn home_said(&mut self, f: Option<Result<PeerFrame, WireError>>) {
        let name = &self.name;
        let f = match f.map(|r| r.map(PeerFrame::into_job_frame)) {
            Some(Ok(Ok(JobFrame::FromHome(f)))) => f,
            Some(Ok(Ok(JobFrame::FromTarget(f)))) => {
                return debug!(job = %name, frame = ?f, "ignored a target's frame from home")
            }
            Some(Ok(Err(f))) => return debug!(job = %name, frame = ?f, "ignored frame"),
            Some(Err(_)) | None => {
                info!(job = %name, "home node went away, hanging up the job");
                self.home.hang_up();
                self.signal(libc::SIGHUP);
                job::resume(self.job.started.init);
                return;
            }
        };
        match f {
            HomeFrame::Stdin(d) => {
                if self.stdin.is_some() {
                    self.job.stdin.extend_from_slice(&d)
                }
            }
            HomeFrame::StdinEof => self.job.stdin_eof = true,
            HomeFrame::Signal(sig) => {
                debug!(job = %name, sig, "forwarding signal");
                self.signal(sig);
            }
        }
    }

    /// Home attached to the restored job (or gave up on it).
    async fn attached(&mut self, s: Result<SecureStream, oneshot::error::RecvError>) {
        self.waiting_attach = false;
        match s {
            Ok(s) => {
                self.home = HomeLink::new(s);
                self.home.send(&self.started_frame).await;
                // Output that waited for home drains from now.
                if self.drain_deadline.is_some() {
                    self.drain_deadline = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
                }
            }
            Err(_) => self.home.hang_up(),
        }
    }

    /// Home never attached to the restored job: it is hung up.
    fn never_attached(&mut self) {
        info!(job = %self.name, "its home node never attached, hanging up the job");
        self.waiting_attach = false;
        self.ctx.state.unpark(&self.name);
        self.home.hang_up();
        self.signal(libc::SIGHUP);
    }

    /// A migration order: where the job went, if it moved.
    async fn ordered(&mut self, cmd: MigrateCmd) -> Option<String> {
        if self.exited.is_some() {
            let why = format!("job {} has ended", self.name);
            let _ = cmd.reply.send(Err((EXIT_CANNOT_RUN, why)));
            return None;
        }
        if self.held {
            let why = format!("job {} cannot move: {}", self.name, steer::HELD);
            let _ = cmd.reply.send(Err((EXIT_CANNOT_RUN, why)));
            return None;
        }
        let stdin_closed = self.stdin.is_none() || self.job.stdin_eof;
        let to = cmd.order.to.clone();
        migrate::out(&mut self.job, &mut self.home, &self.ctx, cmd, stdin_closed)
            .await
            .then_some(to)
    }

    /// A signal or nice value for the job, between two moves.
    async fn steered(&mut self, cmd: SteerCmd) {
        let r = if self.exited.is_some() {
            Err((EXIT_CANNOT_RUN, format!("job {} has ended", self.name)))
        } else {
            let init = self.job.started.init;
            steer::carry_out(&self.name, &self.ctx.node, init, cmd.order, cmd.uid).await
        };
        if r.is_ok() {
            if let Some(why) = steer::held_after(cmd.order, &self.job.info.cantmove) {
                self.held = why.as_deref() == Some(steer::HELD);
                self.ctx.state.hold(&self.name, why);
            }
        }
        let _ = cmd.reply.send(r);
    }

    /// The holder exited: the job ended so.
    fn holder_exited(&mut self, st: std::io::Result<std::process::ExitStatus>) {
        self.exited = Some(match st {
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
        // Something outside the job may still hold the pipes: give the
        // output a moment to drain, then report anyway.
        self.drain_deadline = Some(tokio::time::Instant::now() + DRAIN_LIMIT);
    }

    /// The job no longer runs here: the node's state forgets it, its
    /// cgroup goes, and home hears how it ended.
    async fn finish(mut self, end: End) {
        let name = &self.name;
        let moved_to = match &end {
            End::Moved(to) => Some(to.clone()),
            End::Exited(_) => None,
        };
        self.ctx.state.job_gone(name, moved_to);
        if let End::Moved(_) = end {
            let _ = self.job.started.holder.wait().await;
        }
        if let Some(cg) = &self.ctx.cgroup {
            cg.remove_job(name);
        }
        match end {
            End::Exited(exit) => {
                info!(job = %name, ?exit, "job ended");
                self.home.send(&PeerFrame::Exit(exit)).await;
                self.home.close().await;
            }
            End::Moved(_) => self.home.close().await,
        }
    }
}
