//! Moving a running job to another node, between the agents involved:
//!
//! ```text
//!  requester ─MigrateJob─▶ source (runs the job)        home (omctl run)
//!                            │ checks what could keep it here (`job::movable`)
//!                            │ ──Migrating──────────────▶ holds stdin and signals
//!                            │ stops every process, drains its output to home
//!                            │ criu dump --leave-stopped (tmpfs)
//!                            │ ──Immigrate, File…, FilesDone──▶ target
//!                            │                      restores (stopped), ◀─Restored
//!                            │ kills its copy, ──Commit──▶ target resumes the job
//!                            │ ──Moved(target)──────────▶ attaches to the target
//!  requester ◀─Migrated──────┘
//! ```
//!
//! Never two live copies, never none: the target's copy stays stopped until
//! `Commit`; the source's copy stays (stopped) until `Restored`, and is
//! resumed if anything fails before it. The source settles each attempt
//! once, in its [`Ledger`](crate::state::Ledger): `Restored` commits it, a failure
//! keeps it. If the link breaks before the target hears `Commit`, the
//! target asks the source (`Outcome`), and asking settles a pending attempt
//! as kept, so a `Restored` that arrives late commits nothing. The target
//! also resumes when home attaches: home does so when the source says
//! `Moved` (its copy gone), or when membership declares the source dead
//! while it was moving the job (its copy died with it, and it never said
//! `Resumed`). A source alive but unreachable for a while is presumed to
//! have kept the job: the target drops its copy.

use contracts::clock::unix_millis;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{drive, Home, HomeLink, RunningJob};
use crate::exec::{ExecContext, EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_AGENT};
use crate::job;
use crate::state::{MigrateCmd, MigrateResult};
use crate::stream::{connect, SecureStream};
use crate::wire::{self, Immigrant, MigrateDone, MigrateOrder, PeerFrame};

/// Where checkpoints are written (tmpfs on a netbooted node).
pub const SPOOL: &str = "/run/omnode/migrate";
/// Where the log of the last failed `criu dump` is kept, in [`SPOOL`].
pub const FAILED_DUMP_LOG: &str = "last-failed-dump.log";
/// Bytes of checkpoint per frame.
const FILE_CHUNK: usize = 512 * 1024;
/// How long the source waits for the target's restore.
const RESTORE_LIMIT: Duration = Duration::from_secs(300);
/// How long a target keeps asking an unreachable source what it decided.
const OUTCOME_LIMIT: Duration = Duration::from_secs(30);

/// Answers a `MigrateJob` stream: hands the order to the job's driver and
/// sends back what became of it.
pub(crate) async fn order(order: MigrateOrder, ctx: &ExecContext, mut s: SecureStream) {
    let result = run_order(order, ctx).await;
    let f = match result {
        Ok(done) => PeerFrame::Migrated(done),
        Err((code, message)) => PeerFrame::Failed { code, message },
    };
    let _ = wire::write_sealed(&mut s.wr, &mut s.send, &f).await;
}

async fn run_order(order: MigrateOrder, ctx: &ExecContext) -> MigrateResult {
    let node = &ctx.node;
    let info = super::owned_job(ctx, &order.job, order.uid, "move")?;
    if let Some(why) = &info.cantmove {
        return Err((
            EXIT_CANNOT_RUN,
            format!("job {} cannot move: {why}", info.job),
        ));
    }
    if let Some(why) = ctx.cannot_restore() {
        return Err((
            EXIT_CANNOT_RUN,
            format!(
                "job {} cannot move: node {node} cannot checkpoint jobs: {why}",
                info.job
            ),
        ));
    }
    if order.to == *node {
        return Err((
            EXIT_CANNOT_RUN,
            format!("job {} already runs on node {node}", info.job),
        ));
    }
    let (tx, rx) = oneshot::channel();
    let job = order.job.clone();
    if ctx
        .state
        .order_move(&job, MigrateCmd { order, reply: tx })
        .await
        .is_err()
    {
        return Err((EXIT_CANNOT_RUN, format!("job {job} is not running")));
    }
    rx.await
        .unwrap_or_else(|_| Err((EXIT_CANNOT_RUN, "the job ended while moving".into())))
}

/// The checkpoint's files, name → size.
fn files_of(dir: &Path) -> std::io::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with(".log") || !e.file_type()?.is_file() {
            continue;
        }
        out.insert(name, e.metadata()?.len());
    }
    Ok(out)
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::io::Read;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Streams the checkpoint in `dir` to the target and waits for its
/// answer: the pid of the restored (stopped) job init.
async fn send_checkpoint(
    s: &mut SecureStream,
    imm: Immigrant,
    dir: &Path,
) -> Result<(u32, u64), String> {
    let w = |e: wire::WireError| format!("lost the target: {e}");
    wire::write_sealed(&mut s.wr, &mut s.send, &PeerFrame::Immigrate(imm))
        .await
        .map_err(w)?;
    let mut bytes = 0;
    for name in files_of(dir)
        .map_err(|e| format!("cannot read the checkpoint: {e}"))?
        .keys()
    {
        // A piece at a time: the pages of a large job are as large as the
        // job, and they sit in tmpfs already.
        let mut file =
            std::fs::File::open(dir.join(name)).map_err(|e| format!("cannot read {name}: {e}"))?;
        loop {
            let mut data = vec![0u8; FILE_CHUNK];
            let n =
                read_full(&mut file, &mut data).map_err(|e| format!("cannot read {name}: {e}"))?;
            data.truncate(n);
            bytes += n as u64;
            // Every file is sent, an empty one as one empty piece.
            let f = PeerFrame::File {
                name: name.clone(),
                data,
            };
            wire::write_sealed(&mut s.wr, &mut s.send, &f)
                .await
                .map_err(w)?;
            // Sealing a piece keeps the CPU busy; with one CPU the agent
            // has one runtime thread, and membership must still answer its
            // probes meanwhile, or the cluster declares this node dead in
            // the middle of the move.
            tokio::task::yield_now().await;
            if n < FILE_CHUNK {
                break;
            }
        }
    }
    wire::write_sealed(&mut s.wr, &mut s.send, &PeerFrame::FilesDone)
        .await
        .map_err(w)?;
    match tokio::time::timeout(RESTORE_LIMIT, wire::read_sealed(&mut s.rd, &mut s.recv)).await {
        Ok(Ok(Some(PeerFrame::Restored { pid }))) => Ok((pid, bytes)),
        Ok(Ok(Some(PeerFrame::Failed { message, .. }))) => Err(message),
        Ok(Ok(Some(other))) => Err(format!("the target answered {other:?}")),
        Ok(Ok(None)) => Err("the target closed the connection during the restore".into()),
        Ok(Err(e)) => Err(format!("lost the target during the restore: {e}")),
        Err(_) => Err("the target did not restore the job in time".into()),
    }
}

/// Moves `job` away as `cmd` says. Returns true if it moved (the driver
/// ends without an exit status); otherwise the job runs here as before and
/// the requester has the reason.
pub(super) async fn out(
    job: &mut RunningJob,
    home: &mut HomeLink,
    ctx: &ExecContext,
    cmd: MigrateCmd,
    stdin_closed: bool,
) -> bool {
    let MigrateCmd { order, reply } = cmd;
    let t0 = Instant::now();
    let name = job.info.job.clone();
    let init = job.started.init;
    let procs = job::processes(init);
    if let Err(why) = job::movable::check(&procs) {
        let _ = reply.send(Err((
            EXIT_CANNOT_RUN,
            format!("job {name} cannot move: {why}"),
        )));
        return false;
    }
    let attempt = ctx.state.next_attempt();
    ctx.state.ledger(|l| l.begin(&name, attempt));
    let dir = PathBuf::from(SPOOL).join(format!("{name}.{attempt}.out"));
    info!(job = %name, to = %order.to, attempt, "moving job");
    home.send(&PeerFrame::Migrating {
        node: order.to.clone(),
        addr: order.to_addr,
    })
    .await;
    let result = freeze_and_send(job, home, ctx, &order, attempt, &dir, stdin_closed).await;
    if result.is_err() {
        // CRIU's own account of a failed dump, for whoever looks into it.
        let _ = std::fs::rename(dir.join("dump.log"), Path::new(SPOOL).join(FAILED_DUMP_LOG));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // Settled here, once: a target that lost its link and asked meanwhile
    // was told "kept", and has dropped its copy.
    let result = ctx.state.ledger(|ledger| match result {
        Ok(sent) if ledger.commit(&name, attempt) => Ok(sent),
        Ok(_) => Err("the target lost its link to this node before the move was confirmed".into()),
        Err(why) => {
            ledger.keep(&name, attempt);
            Err(why)
        }
    });
    match result {
        Ok(mut sent) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // If this is lost, the target asks (`Outcome`) and learns it.
            let s = &mut sent.stream;
            let _ = wire::write_sealed(&mut s.wr, &mut s.send, &PeerFrame::Commit).await;
            home.send(&PeerFrame::Moved {
                node: order.to.clone(),
                addr: order.to_addr,
            })
            .await;
            ctx.state.note_move(false);
            let total = t0.elapsed();
            info!(job = %name, to = %order.to, bytes = sent.bytes, ms = total.as_millis() as u64, "job moved");
            let _ = reply.send(Ok(MigrateDone {
                job: name,
                from: ctx.node.clone(),
                to: order.to,
                pid: sent.pid,
                bytes: sent.bytes,
                freeze_ms: sent.frozen_at.elapsed().as_millis() as u64,
                total_ms: total.as_millis() as u64,
            }));
            true
        }
        Err(why) => {
            job::resume(init);
            home.send(&PeerFrame::Resumed).await;
            warn!(job = %name, to = %order.to, %why, "job stays");
            let _ = reply.send(Err((
                EXIT_NODE_LOST,
                format!("job {name} stays on node {}: {why}", ctx.node),
            )));
            false
        }
    }
}

/// A checkpoint the target restored.
struct Sent {
    stream: SecureStream,
    pid: u32,
    bytes: u64,
    frozen_at: Instant,
}

/// Stops the job, drains its output to home, dumps it and sends it to the
/// target; the job stays stopped here whatever happens.
async fn freeze_and_send(
    job: &mut RunningJob,
    home: &mut HomeLink,
    ctx: &ExecContext,
    order: &MigrateOrder,
    attempt: u64,
    dir: &Path,
    stdin_closed: bool,
) -> Result<Sent, String> {
    let init = job.started.init;
    let turn = job::criu::dump_turn().await;
    let frozen_at = Instant::now();
    job::stop(init).await?;
    drain(job, home).await;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    // Input the job has not read yet goes with it (a copy: it stays in the
    // pipe here in case the move fails).
    let unread = job::peek_unread(init, job.started.pipes.inodes[0])
        .map_err(|e| format!("cannot copy the job's unread input: {e}"))?;
    let took = job::criu::dump(init, dir, &turn).await?;
    drop(turn);
    info!(job = %job.info.job, ms = took.as_millis() as u64, "dumped");
    let mut s = connect(order.to_addr, &ctx.keys.stream())
        .await
        .map_err(|e| format!("cannot reach node {}: {e}", order.to))?;
    let pending_stdin = std::mem::take(&mut job.stdin);
    let imm = Immigrant {
        info: job.info.clone(),
        gid: job.gid,
        pipe_inodes: job.started.pipes.inodes,
        stdin: [unread.as_slice(), pending_stdin.as_slice()].concat(),
        stdin_closed,
        attempt,
        from_addr: ctx.addr,
    };
    match send_checkpoint(&mut s, imm, dir).await {
        Ok((pid, bytes)) => Ok(Sent {
            stream: s,
            pid,
            bytes,
            frozen_at,
        }),
        Err(e) => {
            job.stdin = pending_stdin;
            Err(e)
        }
    }
}

/// Reads what the stopped job left in its stdout and stderr pipes and
/// sends it home, so that nothing is printed twice or lost.
async fn drain(job: &mut RunningJob, home: &mut HomeLink) {
    let mut buf = vec![0u8; 64 * 1024];
    for err in [false, true] {
        loop {
            let p = if err {
                &job.started.pipes.stderr
            } else {
                &job.started.pipes.stdout
            };
            if job::pending_bytes(p) == 0 {
                break;
            }
            // read(2) itself, not `try_read`: tokio's readiness for the pipe
            // may not have caught up with the last write before the stop,
            // and a line left in the pipe would not survive the move.
            match job::read_now(p, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = buf[..n].to_vec();
                    let f = if err {
                        PeerFrame::Stderr(data)
                    } else {
                        PeerFrame::Stdout(data)
                    };
                    home.send(&f).await;
                }
            }
        }
    }
}

/// Refuses an immigrant with a reason.
async fn refuse(s: &mut SecureStream, message: String) {
    warn!(%message, "refused a job moving in");
    let f = PeerFrame::Failed {
        code: EXIT_NO_AGENT,
        message,
    };
    let _ = wire::write_sealed(&mut s.wr, &mut s.send, &f).await;
}

/// Receives a checkpoint's files into `dir`, up to `FilesDone`.
async fn receive_files(s: &mut SecureStream, dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut open: BTreeMap<String, std::fs::File> = BTreeMap::new();
    loop {
        let f = tokio::time::timeout(
            Duration::from_secs(30),
            wire::read_sealed(&mut s.rd, &mut s.recv),
        )
        .await
        .map_err(|_| "the source stopped sending the checkpoint".to_string())?
        .map_err(|e| format!("lost the source: {e}"))?;
        match f {
            Some(PeerFrame::File { name, data }) => {
                if name.is_empty() || name.contains('/') || name.starts_with('.') {
                    return Err(format!("bad checkpoint file name {name:?}"));
                }
                if !open.contains_key(&name) {
                    let file = std::fs::File::create(dir.join(&name))
                        .map_err(|e| format!("cannot write {name}: {e}"))?;
                    open.insert(name.clone(), file);
                }
                open.get_mut(&name)
                    .expect("inserted")
                    .write_all(&data)
                    .map_err(|e| format!("cannot write {name}: {e}"))?;
                // Opening a piece is as busy as sealing it (see
                // `send_checkpoint`): let membership answer in between.
                tokio::task::yield_now().await;
            }
            Some(PeerFrame::FilesDone) => return Ok(()),
            Some(other) => return Err(format!("unexpected {other:?} in a checkpoint")),
            None => return Err("the source hung up during the checkpoint".into()),
        }
    }
}

/// What the source says about `attempt`, asked once after the link
/// broke: `Some(true)` if its copy is gone; `None` if it cannot be asked.
async fn ask_source(from: SocketAddr, key: &[u8; 32], job: &str, attempt: u64) -> Option<bool> {
    let mut s = connect(from, key).await.ok()?;
    let q = PeerFrame::Outcome {
        job: job.to_string(),
        attempt,
    };
    wire::write_sealed(&mut s.wr, &mut s.send, &q).await.ok()?;
    match tokio::time::timeout(
        Duration::from_secs(5),
        wire::read_sealed(&mut s.rd, &mut s.recv),
    )
    .await
    {
        Ok(Ok(Some(PeerFrame::OutcomeReply(done)))) => Some(done),
        _ => None,
    }
}

/// Waits for the home node's `Attach`; never returns if none can come.
async fn attach_of(attach: &mut oneshot::Receiver<SecureStream>) -> SecureStream {
    match attach.await {
        Ok(s) => s,
        Err(_) => std::future::pending().await,
    }
}

/// What the target learnt about a job it restored (stopped).
enum Word {
    /// Resume it: the source's copy is gone. With the home node's stream
    /// if home attached already.
    Resume(Option<SecureStream>),
    /// Drop it: the source kept the job.
    Drop,
}

/// The one-copy rule on the target: announces the restore and waits for
/// the source's word. `Commit` resumes; so does home attaching: home
/// attaches only after the source said `Moved` (its copy gone), or after
/// membership declared the source dead mid-move (its copy died with it,
/// and it never said `Resumed`). If the link breaks first, the source is
/// asked (`Outcome`), which settles a pending attempt as kept. With no
/// answer and no `Attach` for [`OUTCOME_LIMIT`], the source is presumed to
/// have kept the job: it commits only on our `Restored`, and one that got
/// through would have brought a `Commit` or an `Attach`.
async fn await_word(
    mut s: SecureStream,
    pid: u32,
    imm: &Immigrant,
    ctx: &ExecContext,
    attach: &mut oneshot::Receiver<SecureStream>,
) -> Word {
    let source = imm.info.node.as_str();
    info!(job = %imm.info.job, %source, "restored; waiting for the source's word");
    // One for both phases: an `Attach` is not missed in between, and a
    // finished receiver is never polled again.
    let home = attach_of(attach);
    tokio::pin!(home);
    if wire::write_sealed(&mut s.wr, &mut s.send, &PeerFrame::Restored { pid })
        .await
        .is_ok()
    {
        tokio::select! {
            f = tokio::time::timeout(RESTORE_LIMIT, wire::read_sealed(&mut s.rd, &mut s.recv)) => {
                if let Ok(Ok(Some(PeerFrame::Commit))) = f {
                    return Word::Resume(None);
                }
            }
            h = &mut home => return Word::Resume(Some(h)),
        }
    }
    drop(s);
    warn!(job = %imm.info.job, %source, "lost the link to the source before its word; asking it");
    let key = ctx.keys.stream();
    let ask = async {
        loop {
            if let Some(done) = ask_source(imm.from_addr, &key, &imm.info.job, imm.attempt).await {
                return done;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    tokio::select! {
        done = ask => if done { Word::Resume(None) } else { Word::Drop },
        h = &mut home => Word::Resume(Some(h)),
        () = tokio::time::sleep(OUTCOME_LIMIT) => {
            warn!(job = %imm.info.job, %source, "the source stayed unreachable and alive: it kept the job");
            Word::Drop
        }
    }
}

/// The target's side: receive, restore stopped, answer `Restored`, wait
/// for `Commit` (or ask), resume, and drive the job until it ends or moves
/// on; the home node attaches with `Attach`.
pub(crate) async fn immigrate(imm: Immigrant, ctx: ExecContext, mut s: SecureStream) {
    let name = imm.info.job.clone();
    if let Some(why) = ctx.cannot_restore() {
        refuse(&mut s, format!("node {} cannot take jobs: {why}", ctx.node)).await;
        return;
    }
    if let Some(why) = ctx
        .refuses_guest(&imm.info.home)
        .or_else(|| ctx.refuses_uid(imm.info.uid))
    {
        refuse(&mut s, why).await;
        return;
    }
    let dir = PathBuf::from(SPOOL).join(format!("{name}.{}.in", imm.attempt));
    if let Err(e) = receive_files(&mut s, &dir).await {
        let _ = std::fs::remove_dir_all(&dir);
        refuse(&mut s, e).await;
        return;
    }
    let cgroup = match ctx.cgroup.as_ref().map(|c| c.job(&name)).transpose() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            refuse(&mut s, e.to_string()).await;
            return;
        }
    };
    let started = match job::restore(&ctx.holder, &dir, imm.pipe_inodes, cgroup.as_deref()).await {
        Ok(st) => st,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            refuse(&mut s, format!("restore on node {} failed: {e}", ctx.node)).await;
            return;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let init = started.init;
    // Parked before the source hears of the restore: it tells home at once.
    let (attach_tx, mut attach_rx) = oneshot::channel();
    ctx.state.park(&name, attach_tx);
    let word = await_word(s, init, &imm, &ctx, &mut attach_rx).await;
    let mut started = started;
    let attach_rx = match word {
        Word::Resume(None) => attach_rx,
        // Home attached already: hand its stream on as if it came now.
        Word::Resume(Some(home)) => {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(home);
            rx
        }
        Word::Drop => {
            info!(job = %name, "the source kept the job; dropping the restored copy");
            ctx.state.unpark(&name);
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = started.holder.wait().await;
            return;
        }
    };
    job::resume(init);
    info!(job = %name, from = %imm.info.node, "job moved in");
    let mut info = imm.info;
    info.node = ctx.node.clone();
    info.pid = Some(init);
    info.moves += 1;
    info.since_ms = unix_millis();
    ctx.state.note_move(true);
    let job = RunningJob {
        info,
        gid: imm.gid,
        started,
        stdin: imm.stdin,
        stdin_eof: imm.stdin_closed,
    };
    drive(job, Home::Awaiting(attach_rx), ctx).await;
}
