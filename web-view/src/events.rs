//! `GET /api/events`: the live stream the page follows
//! (`text/event-stream`), fed by the store's board, which follows the
//! agent's change stream. Each new board sends a `status` event (nodes,
//! efficiency, recent markers, the machines booting); a board whose job table changed also sends
//! a `jobs` event. A new stream starts with both. The stream ends at
//! shutdown, and when the session it was opened with ends.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde_json::json;
use tokio::sync::watch;

use crate::board::Board;
use crate::guard::{access, cookie, ApiError, Ctx};
use crate::Cluster;

/// A comment line this often keeps proxies from closing a quiet stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn status_event(b: &Board) -> Event {
    let data = json!({
        "seq": b.seq,
        "at_ms": b.at_ms,
        "status": b.status,
        "efficiency": b.efficiency,
        "markers": b.markers,
        "machines": machines_json(&b.machines),
    });
    Event::default().event("status").data(data.to_string())
}

/// The machines as the API gives them: `{"machines": […]}`, or
/// `{"machines": null, "why": "…"}`.
pub fn machines_json(m: &Result<Vec<crate::boot::Machine>, String>) -> serde_json::Value {
    match m {
        Ok(list) => json!({ "machines": list }),
        Err(why) => json!({ "machines": null, "why": why }),
    }
}

fn jobs_event(b: &Board) -> Event {
    let data = json!({ "seq": b.jobs_seq, "jobs": b.jobs });
    Event::default().event("jobs").data(data.to_string())
}

/// The stream's state between two boards.
struct Follow<C> {
    rx: watch::Receiver<std::sync::Arc<Board>>,
    ctx: Ctx<C>,
    session: String,
    jobs_sent: Option<u64>,
    queued: Option<Event>,
}

/// The event stream, for a caller with a session.
pub async fn stream<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    access(&ctx, &headers)?;
    let session = cookie(&headers).unwrap_or_default().to_string();
    let mut rx = ctx.store.subscribe();
    rx.mark_changed();
    let follow = Follow {
        rx,
        ctx,
        session,
        jobs_sent: None,
        queued: None,
    };
    let events = futures::stream::unfold(follow, |mut f| async move {
        if let Some(e) = f.queued.take() {
            return Some((Ok(e), f));
        }
        let changed = tokio::select! {
            biased;
            () = f.ctx.stop.cancelled() => false,
            r = f.rx.changed() => r.is_ok(),
        };
        if !changed || f.ctx.gate.check(&f.session).is_none() {
            return None;
        }
        let b = f.rx.borrow_and_update().clone();
        if f.jobs_sent != Some(b.jobs_seq) {
            f.jobs_sent = Some(b.jobs_seq);
            f.queued = Some(jobs_event(&b));
        }
        Some((Ok(status_event(&b)), f))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
