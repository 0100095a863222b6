//! The exec listener: accepts exec streams from other agents (TCP, the
//! agent's port) until shutdown and serves each in a task of its own
//! ([`exec::serve`]), at most [`MAX_EXEC_CONNECTIONS`] at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::MAX_EXEC_CONNECTIONS;
use crate::exec::{self, ExecContext};

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
                                () = exec::serve(stream, ctx) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire;

    #[tokio::test]
    async fn shutdown_ends_a_connection_waiting_for_its_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let keys = crate::keys::Keys::new(crate::key::ClusterKey::generate(), "t", None);
        let key = keys.stream();
        let ctx = ExecContext::new("t".into(), addr, keys, None);
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
