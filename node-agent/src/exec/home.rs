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

/// What the caller (`omctl run`) sends its job while it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerInput {
    /// Bytes for its stdin.
    Stdin(Vec<u8>),
    /// Its stdin is closed.
    StdinEof,
    /// A signal for its process group.
    Signal(i32),
}

impl From<CallerInput> for PeerFrame {
    fn from(i: CallerInput) -> Self {
        match i {
            CallerInput::Stdin(b) => PeerFrame::Stdin(b),
            CallerInput::StdinEof => PeerFrame::StdinEof,
            CallerInput::Signal(s) => PeerFrame::Signal(s),
        }
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
pub async fn relay(
    addr: SocketAddr,
    target: &str,
    keys: &crate::keys::Keys,
    req: ExecRequest,
    mut caller_rx: mpsc::Receiver<CallerInput>,
    caller_tx: mpsc::Sender<RelayEvent>,
    mut down: broadcast::Receiver<NodeId>,
) -> RelayEnd {
    let job = req.job.clone();
    let (mut addr, mut target) = (addr, target.to_string());
    let mut first = PeerFrame::Exec(req);
    let mut following: Following = None;
    'connect: loop {
        let s = match connect(addr, &keys.stream()).await {
            Ok(s) => s,
            Err(e) => {
                if try_again(&following).await {
                    continue 'connect;
                }
                return lost(
                    &following,
                    &target,
                    format!("cannot reach node {target} at {addr}: {e}"),
                );
            }
        };
        let SecureStream {
            rd,
            mut wr,
            mut send,
            recv,
        } = s;
        if let Err(e) = wire::write_sealed(&mut wr, &mut send, &first).await {
            if try_again(&following).await {
                continue 'connect;
            }
            return lost(
                &following,
                &target,
                format!("cannot send the job to node {target}: {e}"),
            );
        }
        // The reader belongs to this connection: it ends when we leave it.
        let mut tasks = JoinSet::new();
        let mut from_target = sealed_reader(rd, recv, &mut tasks);
        let mut last_heard = tokio::time::Instant::now();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        // While the job is frozen for a move (to this node), its input
        // waits here.
        let mut moving: Option<(String, SocketAddr)> = None;
        // When membership declared the job's node dead while its stream
        // was still open: the job is given up only if the stream stays
        // silent for [`VERDICT_CONFIRM`] after that.
        let mut doubted: Option<tokio::time::Instant> = None;
        // Where the job goes next: a move's target, and whether its source
        // died on the way.
        let (to, to_addr, source_died) = loop {
            tokio::select! {
                f = from_target.recv() => match f {
                    Some(Ok(PeerFrame::Failed { code, message })) => {
                        if try_again(&following).await {
                            continue 'connect;
                        }
                        return match following {
                            Some(_) => lost(&following, &target, message),
                            None => RelayEnd::Failed(code, message),
                        };
                    }
                    Some(Ok(f)) => {
                        last_heard = tokio::time::Instant::now();
                        following = None;
                        if doubted.take().is_some() {
                            info!(%job, node = %target, "the node declared dead still runs the job: going on");
                        }
                        match f {
                            PeerFrame::Heartbeat => {}
                            PeerFrame::Migrating { node, addr: to } => moving = Some((node, to)),
                            PeerFrame::Resumed => moving = None,
                            PeerFrame::Moved { node, addr: to } => break (node, to, false),
                            PeerFrame::Exit(e) => return RelayEnd::Exit(e),
                            PeerFrame::Stdout(b) => if caller_tx.send(RelayEvent::Stdout(b)).await.is_err() {
                                return RelayEnd::CallerGone;
                            },
                            PeerFrame::Stderr(b) => if caller_tx.send(RelayEvent::Stderr(b)).await.is_err() {
                                return RelayEnd::CallerGone;
                            },
                            PeerFrame::Started { node, pid, seq } => if caller_tx.send(RelayEvent::Started { node, pid, seq }).await.is_err() {
                                return RelayEnd::CallerGone;
                            },
                            // Frames a target never sends on a job's stream.
                            other @ (PeerFrame::Ps
                            | PeerFrame::PsReply(_)
                            | PeerFrame::Exec(_)
                            | PeerFrame::Stdin(_)
                            | PeerFrame::StdinEof
                            | PeerFrame::Signal(_)
                            | PeerFrame::Failed { .. }
                            | PeerFrame::MigrateJob(_)
                            | PeerFrame::Migrated(_)
                            | PeerFrame::Immigrate(_)
                            | PeerFrame::File { .. }
                            | PeerFrame::FilesDone
                            | PeerFrame::Restored { .. }
                            | PeerFrame::Commit
                            | PeerFrame::Outcome { .. }
                            | PeerFrame::OutcomeReply(_)
                            | PeerFrame::Attach { .. }
                            | PeerFrame::Knob { .. }
                            | PeerFrame::KnobDone(_)
                            | PeerFrame::KeyDone(_)
                            | PeerFrame::NewKey { .. }) => debug!(frame = ?other, "ignored frame from target"),
                        }
                    }
                    Some(Err(_)) | None if moving.is_some() => {
                        if declared_dead(&mut down, &target, VERDICT_WAIT).await {
                            let (node, to) = moving.take().expect("checked");
                            break (node, to, true);
                        }
                        return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost the connection to node {target} while it moved the job"));
                    }
                    Some(Err(e)) => return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost node {target}: {e}")),
                    None => return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost the connection to node {target} while the job was running")),
                },
                f = caller_rx.recv(), if moving.is_none() => match f {
                    Some(input) => {
                        if wire::write_sealed(&mut wr, &mut send, &input.into()).await.is_err() {
                            return RelayEnd::Failed(EXIT_NODE_LOST, format!("lost the connection to node {target} while the job was running"));
                        }
                    }
                    None => {
                        let _ = wire::write_sealed(&mut wr, &mut send, &PeerFrame::Signal(libc::SIGHUP)).await;
                        return RelayEnd::CallerGone;
                    }
                },
                d = down.recv() => match d {
                    Ok(id) if id.name == target => match moving.take() {
                        Some((node, to)) => break (node, to, true),
                        None => {
                            if doubted.is_none() {
                                info!(%job, node = %target, "membership declares the job's node dead: waiting for its stream to confirm");
                                doubted = Some(tokio::time::Instant::now());
                            }
                        }
                    },
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => down = broadcast::channel(1).1,
                },
                _ = check.tick() => {
                    if doubted.is_some_and(|t| t.elapsed() >= VERDICT_CONFIRM) {
                        return RelayEnd::Failed(EXIT_NODE_LOST, format!("node {target} died while running the job"));
                    }
                    let limit = if moving.is_some() { MOVE_LIMIT } else { SILENCE_LIMIT };
                    if last_heard.elapsed() > limit {
                        return RelayEnd::Failed(EXIT_NODE_LOST, format!("node {target} stopped answering while running the job"));
                    }
                }
            }
        };
        if source_died {
            info!(%job, from = %target, to = %to, "its node died while moving it: following the job to the move's target");
            following = Some((tokio::time::Instant::now() + FOLLOW_LIMIT, target.clone()));
        } else {
            debug!(%job, from = %target, to = %to, "following the job");
        }
        let _ = caller_tx.send(RelayEvent::Moved { node: to.clone() }).await;
        (addr, target) = (to_addr, to);
        first = PeerFrame::Attach { job: job.clone() };
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
