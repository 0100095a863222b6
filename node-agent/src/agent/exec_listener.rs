//! The exec listener: accepts exec streams from other agents (TCP, the
//! agent's port) until shutdown and serves each in a task of its own, at
//! most [`MAX_EXEC_CONNECTIONS`] at once. It is the one place that reads a
//! stream's first frame and dispatches it ([`dispatch`]): a job to run or a
//! job moving in (to [`exec`]), a job list, a migration order, a question
//! about a move, a job to attach to, a knob, a new key.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{admin, rotation, MAX_EXEC_CONNECTIONS};
use crate::exec::target::{self, migrate};
use crate::exec::{self, ExecContext, EXIT_NODE_LOST};
use crate::wire::{self, PeerFrame};

/// Accepts exec connections until `stop`, then waits for the open ones,
/// which `stop` ends too (a job's process is left running, as when the
/// agent is killed).
pub(super) async fn serve(listener: TcpListener, ctx: ExecContext, stop: CancellationToken) {
    // Unauthenticated peers can open connections: cap how many are handled
    // at once (each ends within the 5 s handshake timeout unless keyed).
    let slots = Arc::new(Semaphore::new(MAX_EXEC_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let (ctx, stop) = (ctx.clone(), stop.clone());
                        conns.spawn(async move {
                            // Cancellation first: a job whose home is this
                            // agent must not see its home hang up first.
                            tokio::select! {
                                biased;
                                () = stop.cancelled() => {}
                                () = dispatch(stream, ctx) => {}
                            }
                            drop(permit);
                        });
                    }
                    Err(_) => warn!(%peer, "too many exec connections, refusing"),
                },
                Err(e) => {
                    warn!(cause = %e, "exec accept failed");
                    stop.run_until_cancelled(tokio::time::sleep(Duration::from_millis(100))).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Handles one accepted exec connection: the handshake, then its first
/// frame, the request.
pub(crate) async fn dispatch(stream: TcpStream, ctx: ExecContext) {
    let peer = stream.peer_addr().ok();
    let (mut s, first) = match exec::accept(stream, &ctx.keys.stream_accepted()).await {
        Ok(Some(opened)) => opened,
        Ok(None) => return,
        Err(e) => {
            warn!(?peer, cause = %e, "refused exec stream");
            return;
        }
    };
    let answer = match first {
        PeerFrame::Exec(req) => {
            info!(job = %req.job, home = %req.home, uid = req.uid, argv = ?req.argv, "running job");
            return target::run_job(req, ctx, s).await;
        }
        PeerFrame::Immigrate(imm) => return migrate::immigrate(imm, ctx, s).await,
        PeerFrame::MigrateJob(order) => return migrate::order(order, &ctx, s).await,
        PeerFrame::Attach { job } => match ctx.state.unpark(&job) {
            Some(tx) => {
                let _ = tx.send(s);
                return;
            }
            None => PeerFrame::Failed {
                code: EXIT_NODE_LOST,
                message: format!("job {job} is not waiting on node {}", ctx.node),
            },
        },
        PeerFrame::Ps => PeerFrame::PsReply(ctx.state.jobs_here()),
        PeerFrame::Outcome { job, attempt } => {
            PeerFrame::OutcomeReply(ctx.state.ledger(|l| l.answer(&job, attempt)))
        }
        PeerFrame::Knob { action } => admin::for_peer(&ctx, action).await,
        PeerFrame::NewKey {
            key,
            switch_in_ms,
            window_ms,
        } => rotation::take_key(&ctx, key, switch_in_ms, window_ms, peer),
        PeerFrame::Steer(order) => target::steer::steer(order, &ctx).await,
        // The frames of an exchange already open, never a request.
        other @ (PeerFrame::PsReply(_)
        | PeerFrame::Started { .. }
        | PeerFrame::Stdin(_)
        | PeerFrame::StdinEof
        | PeerFrame::Signal(_)
        | PeerFrame::Stdout(_)
        | PeerFrame::Stderr(_)
        | PeerFrame::Heartbeat
        | PeerFrame::Exit(_)
        | PeerFrame::Failed { .. }
        | PeerFrame::Migrated(_)
        | PeerFrame::File { .. }
        | PeerFrame::FilesDone
        | PeerFrame::Restored { .. }
        | PeerFrame::Commit
        | PeerFrame::OutcomeReply(_)
        | PeerFrame::Migrating { .. }
        | PeerFrame::Resumed
        | PeerFrame::Moved { .. }
        | PeerFrame::KnobDone(_)
        | PeerFrame::KeyDone(_)
        | PeerFrame::Steered(_)) => {
            warn!(?peer, frame = ?other, "exec stream did not start with a request");
            return;
        }
    };
    let _ = wire::write_sealed(&mut s.wr, &mut s.send, &answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_a_connection_waiting_for_its_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = crate::keys::Keys::new(crate::key::ClusterKey::generate(), "t", None);
        let key = keys.stream();
        let me = crate::membership::NodeId {
            name: "t".into(),
            addr,
            started_ms: 1,
            bump: 0,
        };
        let state = crate::state::State::new("c".into(), me, Default::default());
        let ctx = ExecContext::new("t".into(), addr, keys, None, state);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ctx, stop.clone()));
        // After the handshake the target waits up to 5 s for the request.
        let mut s = exec::connect(addr, &key).await.unwrap();

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("the listener waited for the connection")
            .unwrap();
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            wire::read_sealed(&mut s.rd, &mut s.recv),
        )
        .await
        .expect("the connection outlived the listener");
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
    }
}
