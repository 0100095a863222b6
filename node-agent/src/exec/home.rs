//! The home side of an exec stream: send a job to its target and relay
//! between the caller (`omctl run` on the control socket) and the target
//! until the job ends, the target is lost or the caller goes away; and ask a
//! target which jobs it runs.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, info};

use super::{EXIT_NODE_LOST, SILENCE_LIMIT};
use crate::membership::NodeId;
use crate::stream::{connect, sealed_reader, SecureStream};
use crate::wire::{
    self, ExecRequest, ExitInfo, JobInfo, MigrateDone, MigrateOrder, PeerFrame, WireError,
};
use crate::wire::{HomeFrame, JobFrame, TargetFrame};

/// How long a node has to list its jobs: a node under emulation, busy
/// dumping and restoring, takes seconds, and `omctl ps --all` leaves out a
/// node that does not answer in time.
const PS_ANSWER: Duration = Duration::from_secs(10);

/// Asks the agent at `addr` which cluster jobs run there.
pub async fn remote_jobs(
    addr: SocketAddr,
    stream_key: &[u8; 32],
) -> Result<Vec<JobInfo>, WireError> {
    let mut s = connect(addr, stream_key).await?;
    wire::write_sealed(&mut s.wr, &mut s.send, &PeerFrame::Ps).await?;
    match tokio::time::timeout(PS_ANSWER, wire::read_sealed(&mut s.rd, &mut s.recv)).await {
        Ok(Ok(Some(PeerFrame::PsReply(jobs)))) => Ok(jobs),
        Ok(Err(e)) => Err(e),
        _ => Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no job list").into()),
    }
}

/// What the relay tells its caller while the job runs (its end is the
/// relay's [`RelayEnd`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// The job started on `node` as `pid`, the `seq`th job started there.
    Started {
        /// Where it runs.
        node: String,
        /// Its pid there.
        pid: u32,
        /// Its sequence number among the jobs started there.
        seq: u64,
    },
    /// Bytes from its stdout.
    Stdout(Vec<u8>),
    /// Bytes from its stderr.
    Stderr(Vec<u8>),
    /// It now runs on `node`.
    Moved {
        /// Where.
        node: String,
    },
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

/// How long a home node waits for a job being moved.
const MOVE_LIMIT: Duration = Duration::from_secs(330);
/// How long home keeps asking the target of a move whose source died
/// mid-move to hand it the job: the target may still be restoring it.
const FOLLOW_LIMIT: Duration = Duration::from_secs(90);
/// How long home waits for membership's verdict on a node whose link broke
/// mid-move (a dead node is declared so within seconds).
const VERDICT_WAIT: Duration = Duration::from_secs(10);
/// How long a node membership declares dead may still prove it runs the
/// job (any frame on its stream: it sends a heartbeat every second) before
/// home gives the job up. An overloaded node can miss membership's probes
/// while its stream to home is fine; its job must not be dropped for that.
const VERDICT_CONFIRM: Duration = Duration::from_secs(3);

/// `true` once membership declares `node` dead, `false` if it has not
/// within `within`.
async fn declared_dead(
    down: &mut broadcast::Receiver<NodeId>,
    node: &str,
    within: Duration,
) -> bool {
    let verdict = async {
        loop {
            match down.recv().await {
                Ok(id) if id.name == node => return true,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(within, verdict).await.unwrap_or(false)
}

/// Following a job to the target of a move whose source died: until when
/// the target may still not have it, and the dead source's name.
type Following = Option<(tokio::time::Instant, String)>;

/// While following, waits a moment and says to try the target again;
/// `false` once the time is up (or when not following).
async fn try_again(following: &Following) -> bool {
    match following {
        Some((until, _)) if tokio::time::Instant::now() < *until => {
            tokio::time::sleep(Duration::from_secs(1)).await;
            true
        }
        _ => false,
    }
}

/// Why following failed, if it did: the message says where the job was.
fn lost(following: &Following, target: &str, why: String) -> RelayEnd {
    let message = match following {
        Some((_, source)) => format!(
            "node {source} died while moving the job to node {target}, which does not have it: {why}"
        ),
        None => why,
    };
    RelayEnd::Failed(EXIT_NODE_LOST, message)
}

/// Runs `req` on the target at `addr` and relays between the caller's
/// control connection (`caller_rx`/`caller_tx`) and the target, following
/// the job when it moves (`Moved` is passed on to `caller_tx` too, so the
/// caller's records follow it). `down` names the nodes membership declares
/// dead: the job is lost if its current node is one, unless that node was
/// moving it: then the move's target has the only copy left, if any (it
/// restored the job and waits for word of the move), and home attaches
/// there, which is that word.
///
/// Each leg is one stream to the node running the job: [`open_leg`]
/// connects and sends the leg's first frame (`Exec`, then `Attach`), and
/// [`pump`] relays until the job ends, is lost, or moves on.
pub async fn relay(
    addr: SocketAddr,
    target: &str,
    keys: &crate::keys::Keys,
    req: ExecRequest,
    mut caller_rx: mpsc::Receiver<HomeFrame>,
    caller_tx: mpsc::Sender<RelayEvent>,
    mut down: broadcast::Receiver<NodeId>,
) -> RelayEnd {
    let job = req.job.clone();
    let mut leg = Leg {
        addr,
        target: target.to_string(),
        first: PeerFrame::Exec(req),
        following: None,
    };
    loop {
        let s = match open_leg(&leg, keys).await {
            Ok(s) => s,
            Err(Next::Retry) => continue,
            Err(Next::End(end)) => return end,
        };
        let Moved {
            to,
            to_addr,
            source_died,
        } = match pump(&mut leg, &job, s, &mut caller_rx, &caller_tx, &mut down).await {
            Ok(moved) => moved,
            Err(Next::Retry) => continue,
            Err(Next::End(end)) => return end,
        };
        if source_died {
            info!(%job, from = %leg.target, %to, "its node died while moving it: following the job to the move's target");
            leg.following = Some((
                tokio::time::Instant::now() + FOLLOW_LIMIT,
                leg.target.clone(),
            ));
        } else {
            debug!(%job, from = %leg.target, %to, "following the job");
        }
        let _ = caller_tx.send(RelayEvent::Moved { node: to.clone() }).await;
        leg.addr = to_addr;
        leg.target = to;
        leg.first = PeerFrame::Attach { job: job.clone() };
    }
}

/// One stream of a relay: where the job runs and what opens the stream.
struct Leg {
    addr: SocketAddr,
    target: String,
    first: PeerFrame,
    following: Following,
}

/// What a relay does after a leg that did not move on.
enum Next {
    /// Connect to the same node again (following a move whose source died).
    Retry,
    /// The relay ends so.
    End(RelayEnd),
}

/// Where the job went at the end of a leg.
struct Moved {
    to: String,
    to_addr: SocketAddr,
    /// Its node died mid-move: the move's target may have the only copy.
    source_died: bool,
}

/// While following, a failed leg is retried; otherwise it loses the job.
async fn retry_or_lose(leg: &Leg, why: String) -> Next {
    if try_again(&leg.following).await {
        Next::Retry
    } else {
        Next::End(lost(&leg.following, &leg.target, why))
    }
}

/// Connects to the leg's node and sends its first frame.
async fn open_leg(leg: &Leg, keys: &crate::keys::Keys) -> Result<SecureStream, Next> {
    let (addr, target) = (leg.addr, &leg.target);
    let mut s = match connect(addr, &keys.stream()).await {
        Ok(s) => s,
        Err(e) => {
            return Err(
                retry_or_lose(leg, format!("cannot reach node {target} at {addr}: {e}")).await,
            )
        }
    };
    if let Err(e) = wire::write_sealed(&mut s.wr, &mut s.send, &leg.first).await {
        return Err(retry_or_lose(leg, format!("cannot send the job to node {target}: {e}")).await);
    }
    Ok(s)
}

/// Relays one leg: the target's output to the caller, the caller's input
/// to the target, and watches for the job's end, its move, and its node's
/// death.
async fn pump(
    leg: &mut Leg,
    job: &str,
    s: SecureStream,
    caller_rx: &mut mpsc::Receiver<HomeFrame>,
    caller_tx: &mpsc::Sender<RelayEvent>,
    down: &mut broadcast::Receiver<NodeId>,
) -> Result<Moved, Next> {
    let target = leg.target.clone();
    let SecureStream {
        rd,
        mut wr,
        mut send,
        recv,
    } = s;
    // The reader belongs to this leg: it ends when we leave it.
    let mut tasks = JoinSet::new();
    let mut from_target = sealed_reader(rd, recv, &mut tasks);
    let mut last_heard = tokio::time::Instant::now();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    // While the job is frozen for a move (to this node), its input waits
    // here.
    let mut moving: Option<(String, SocketAddr)> = None;
    // When membership declared the job's node dead while its stream was
    // still open: the job is given up only if the stream stays silent for
    // [`VERDICT_CONFIRM`] after that.
    let mut doubted: Option<tokio::time::Instant> = None;
    let gone = |why: String| Err(Next::End(RelayEnd::Failed(EXIT_NODE_LOST, why)));
    let running_lost = || format!("lost the connection to node {target} while the job was running");
    loop {
        tokio::select! {
            f = from_target.recv() => match f {
                Some(Ok(f)) => {
                    let f = match f.into_job_frame() {
                        Ok(JobFrame::FromTarget(f)) => f,
                        Ok(JobFrame::FromHome(f)) => {
                            debug!(frame = ?f, "ignored a home's frame from target");
                            continue;
                        }
                        Err(f) => {
                            debug!(frame = ?f, "ignored frame from target");
                            continue;
                        }
                    };
                    if let TargetFrame::Failed { code, message } = f {
                        if try_again(&leg.following).await {
                            return Err(Next::Retry);
                        }
                        return Err(Next::End(match leg.following {
                            Some(_) => lost(&leg.following, &target, message),
                            None => RelayEnd::Failed(code, message),
                        }));
                    }
                    last_heard = tokio::time::Instant::now();
                    leg.following = None;
                    if doubted.take().is_some() {
                        info!(%job, node = %target, "the node declared dead still runs the job: going on");
                    }
                    let event = match f {
                        TargetFrame::Heartbeat | TargetFrame::Failed { .. } => None,
                        TargetFrame::Migrating { node, addr: to } => {
                            moving = Some((node, to));
                            None
                        }
                        TargetFrame::Resumed => {
                            moving = None;
                            None
                        }
                        TargetFrame::Moved { node, addr: to } => {
                            return Ok(Moved { to: node, to_addr: to, source_died: false })
                        }
                        TargetFrame::Exit(e) => return Err(Next::End(RelayEnd::Exit(e))),
                        TargetFrame::Stdout(b) => Some(RelayEvent::Stdout(b)),
                        TargetFrame::Stderr(b) => Some(RelayEvent::Stderr(b)),
                        TargetFrame::Started { node, pid, seq } => Some(RelayEvent::Started { node, pid, seq }),
                    };
                    if let Some(event) = event {
                        if caller_tx.send(event).await.is_err() {
                            return Err(Next::End(RelayEnd::CallerGone));
                        }
                    }
                }
                Some(Err(_)) | None if moving.is_some() => {
                    if declared_dead(down, &target, VERDICT_WAIT).await {
                        let (node, to) = moving.take().expect("checked");
                        return Ok(Moved { to: node, to_addr: to, source_died: true });
                    }
                    return gone(format!("lost the connection to node {target} while it moved the job"));
                }
                Some(Err(e)) => return gone(format!("lost node {target}: {e}")),
                None => return gone(running_lost()),
            },
            f = caller_rx.recv(), if moving.is_none() => match f {
                Some(input) => {
                    if wire::write_sealed(&mut wr, &mut send, &input.into()).await.is_err() {
                        return gone(running_lost());
                    }
                }
                None => {
                    let _ = wire::write_sealed(&mut wr, &mut send, &PeerFrame::Signal(libc::SIGHUP)).await;
                    return Err(Next::End(RelayEnd::CallerGone));
                }
            },
            d = down.recv() => match d {
                Ok(id) if id.name == target => match moving.take() {
                    Some((node, to)) => return Ok(Moved { to: node, to_addr: to, source_died: true }),
                    None => {
                        if doubted.is_none() {
                            info!(%job, node = %target, "membership declares the job's node dead: waiting for its stream to confirm");
                            doubted = Some(tokio::time::Instant::now());
                        }
                    }
                },
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => *down = broadcast::channel(1).1,
            },
            _ = check.tick() => {
                if doubted.is_some_and(|t| t.elapsed() >= VERDICT_CONFIRM) {
                    return gone(format!("node {target} died while running the job"));
                }
                let limit = if moving.is_some() { MOVE_LIMIT } else { SILENCE_LIMIT };
                if last_heard.elapsed() > limit {
                    return gone(format!("node {target} stopped answering while running the job"));
                }
            }
        }
    }
}

/// Sends `req` to `peer`'s agent and waits up to `limit` for its one
/// answer; `Failed` comes back as the error it carries. Errors name the
/// node and its address.
async fn ask(
    peer: &NodeId,
    stream_key: &[u8; 32],
    req: &PeerFrame,
    limit: Duration,
) -> Result<PeerFrame, (i32, String)> {
    let who = named(peer);
    let unreachable = |e: WireError| (EXIT_NODE_LOST, format!("cannot reach {who}: {e}"));
    let mut s = connect(peer.addr, stream_key).await.map_err(unreachable)?;
    wire::write_sealed(&mut s.wr, &mut s.send, req)
        .await
        .map_err(unreachable)?;
    match tokio::time::timeout(limit, wire::read_sealed(&mut s.rd, &mut s.recv)).await {
        Ok(Ok(Some(PeerFrame::Failed { code, message }))) => Err((code, message)),
        Ok(Ok(Some(f))) => Ok(f),
        Ok(Ok(None)) => Err((EXIT_NODE_LOST, format!("{who} hung up"))),
        Ok(Err(e)) => Err((EXIT_NODE_LOST, format!("lost {who}: {e}"))),
        Err(_) => Err((EXIT_NODE_LOST, format!("{who} did not answer in time"))),
    }
}

/// `peer` as errors name it: `node NAME (ADDR)`.
fn named(peer: &NodeId) -> String {
    format!("node {} ({})", peer.name, peer.addr)
}

/// The error for an answer of the wrong kind from `peer`.
fn odd_answer(peer: &NodeId, f: &PeerFrame) -> (i32, String) {
    (EXIT_NODE_LOST, format!("{} answered {f:?}", named(peer)))
}

/// Asks `source` (the node running the job) to carry out `order`.
pub async fn order_migration(
    source: &NodeId,
    stream_key: &[u8; 32],
    order: MigrateOrder,
) -> Result<MigrateDone, (i32, String)> {
    match ask(
        source,
        stream_key,
        &PeerFrame::MigrateJob(order),
        MOVE_LIMIT,
    )
    .await?
    {
        PeerFrame::Migrated(done) => Ok(done),
        other => Err(odd_answer(source, &other)),
    }
}

/// Hands `peer`'s agent a new cluster key during a rotation; a warning
/// line if it took the key only in memory.
pub async fn hand_key(
    peer: &NodeId,
    stream_key: &[u8; 32],
    key: crate::wire::KeyBytes,
    switch_in_ms: u64,
    window_ms: u64,
) -> Result<Vec<String>, (i32, String)> {
    let req = PeerFrame::NewKey {
        key,
        switch_in_ms,
        window_ms,
    };
    match ask(peer, stream_key, &req, Duration::from_secs(10)).await? {
        PeerFrame::KeyDone(lines) => Ok(lines),
        other => Err(odd_answer(peer, &other)),
    }
}

/// Asks `peer`'s agent, which runs the job, to signal or renice it; what
/// it did, one line.
pub async fn steer_job(
    peer: &NodeId,
    stream_key: &[u8; 32],
    order: crate::wire::SteerOrder,
) -> Result<String, (i32, String)> {
    // SIGSTOP waits up to 5 s for every process to stop.
    match ask(
        peer,
        stream_key,
        &PeerFrame::Steer(order),
        Duration::from_secs(15),
    )
    .await?
    {
        PeerFrame::Steered(line) => Ok(line),
        other => Err(odd_answer(peer, &other)),
    }
}

/// Asks `peer`'s agent to turn a knob or carry out `expel`/`bring`; what
/// it did, a line each.
pub async fn remote_knob(
    peer: &NodeId,
    stream_key: &[u8; 32],
    action: crate::balance::KnobAction,
) -> Result<Vec<String>, (i32, String)> {
    let req = PeerFrame::Knob { action };
    match ask(peer, stream_key, &req, MOVE_LIMIT).await? {
        PeerFrame::KnobDone(lines) => Ok(lines),
        other => Err(odd_answer(peer, &other)),
    }
}
