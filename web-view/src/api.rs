//! The HTTP routes: the page's files, the JSON API (the page's only door),
//! the event stream and `/metrics`. Every route but the page's files and
//! `POST /api/login` wants a session cookie; every action wants a steering
//! session and passes the cross-site checks ([`same_site`]). Errors are a
//! 4xx with `{"error": "one line"}`.
//!
//! | method, path | what |
//! |---|---|
//! | `POST /api/login` `{"token"}` | a session cookie for a token from `omctl web` |
//! | `POST /api/logout` | ends the session |
//! | `GET /api/session` | `{"access": "read" \| "steer"}` |
//! | `GET /api/cluster` | nodes, efficiency, recent markers |
//! | `GET /api/jobs[?node=N]` | every cluster job (on node N) |
//! | `GET /api/nodes/{node}` | one node and the jobs on it |
//! | `POST /api/jobs/{job}/migrate` `{"to"}` | move a job to a node, `home` or `best` |
//! | `POST /api/jobs/{job}/signal` `{"signal"}` | `STOP`, `CONT`, `TERM`, `KILL`, `HUP`, `INT`, … |
//! | `POST /api/jobs/{job}/renice` `{"nice"}` | a nice value, -20 to 19 |
//! | `POST /api/nodes/{node}/knob` `{"word"}` | `block`, `noblock`, `stay`, … `expel`, `bring` |
//! | `GET /api/machines` | the machines the boot server saw: boot stage, admission |
//! | `POST /api/machines/{mac}/admit`, `…/reject` `{}` | let a waiting machine in, or turn it away |
//! | `GET /api/events` | the live stream (see [`crate::events`]) |
//! | `GET /api/history?metric=&since=&until=` | one metric, every node and the total |
//! | `GET /api/history/jobs?at=` | which job ran where at a Unix ms |
//! | `GET /api/history/markers?since=` | markers since a Unix ms |
//! | `GET /api/history.csv` | every sample |
//! | `GET /metrics` | Prometheus text format |

use std::collections::HashMap;

use agent_control::knobs::KnobAction;
use agent_control::steer::JobOrder;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use crate::guard::{access, body, cookie, err, same_site, steer, ApiError, ApiResult, Ctx, COOKIE};
use crate::{assets, events, history, metrics, Cluster, Nudge};

/// The routes.
pub fn router<C: Cluster>(ctx: Ctx<C>) -> Router {
    Router::new()
        .route("/", get(assets::index))
        .route("/ui/{file}", get(assets::file))
        .route("/api/login", post(login::<C>))
        .route("/api/logout", post(logout::<C>))
        .route("/api/session", get(session::<C>))
        .route("/api/cluster", get(cluster::<C>))
        .route("/api/jobs", get(jobs::<C>))
        .route("/api/nodes/{node}", get(node::<C>))
        .route("/api/jobs/{job}/migrate", post(migrate::<C>))
        .route("/api/jobs/{job}/signal", post(signal::<C>))
        .route("/api/jobs/{job}/renice", post(renice::<C>))
        .route("/api/nodes/{node}/knob", post(knob::<C>))
        .route("/api/machines", get(machines::<C>))
        .route("/api/machines/{mac}/{verdict}", post(decide::<C>))
        .route("/api/events", get(events::stream::<C>))
        .route("/api/history", get(history_series::<C>))
        .route("/api/history/jobs", get(history_jobs::<C>))
        .route("/api/history/markers", get(history_markers::<C>))
        .route("/api/history.csv", get(history_csv::<C>))
        .route("/metrics", get(metrics_text::<C>))
        .fallback(|| async {
            err(
                StatusCode::NOT_FOUND,
                "no such page or endpoint (see the API list in the README)",
            )
        })
        .with_state(ctx)
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers every answer carries: nothing from elsewhere runs in the page,
/// and no other site may frame it (a drag there would steer the cluster).
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    token: String,
}

async fn login<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    b: Bytes,
) -> ApiResult<Response> {
    same_site(&Method::POST, &headers)?;
    let LoginBody { token } = body(&b)?;
    let (id, access) = ctx
        .gate
        .login(token.trim())
        .map_err(|e| err(StatusCode::UNAUTHORIZED, e.to_string()))?;
    info!(access = access.as_str(), "web view: a session opened");
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        crate::session::SESSION_TTL_MS / 1000
    );
    let mut r = Json(json!({ "access": access })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| err(StatusCode::BAD_REQUEST, e.to_string()))?,
    );
    Ok(r)
}

async fn logout<C: Cluster>(State(ctx): State<Ctx<C>>, headers: HeaderMap) -> ApiResult<Response> {
    same_site(&Method::POST, &headers)?;
    if let Some(id) = cookie(&headers) {
        ctx.gate.logout(id);
    }
    let mut r = Json(json!({ "access": null })).into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("om_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(r)
}

async fn session<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    let a = access(&ctx, &headers)?;
    Ok(Json(
        json!({ "access": a, "cluster": ctx.store.board().status.cluster }),
    ))
}

async fn cluster<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let b = ctx.store.board();
    Ok(Json(json!({
        "seq": b.seq,
        "at_ms": b.at_ms,
        "status": b.status,
        "efficiency": b.efficiency,
        "markers": b.markers,
    })))
}

async fn jobs<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let Query(q) = q?;
    let b = ctx.store.board();
    let jobs: Vec<_> = match q.get("node") {
        Some(n) => {
            known_node(&b.status, n)?;
            b.jobs.iter().filter(|j| &j.node == n).collect()
        }
        None => b.jobs.iter().collect(),
    };
    Ok(Json(json!({ "seq": b.jobs_seq, "jobs": jobs })))
}

/// 404 unless `name` is a node the cluster knows.
fn known_node(status: &agent_control::model::ClusterStatus, name: &str) -> ApiResult<()> {
    if status.nodes.iter().any(|n| n.name == name) {
        Ok(())
    } else {
        Err(err(
            StatusCode::NOT_FOUND,
            format!("no node {name} in cluster {}", status.cluster),
        ))
    }
}

async fn node<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let Path(name) = p?;
    let b = ctx.store.board();
    known_node(&b.status, &name)?;
    let node = b.status.nodes.iter().find(|n| n.name == name);
    let jobs: Vec<_> = b.jobs.iter().filter(|j| j.node == name).collect();
    Ok(Json(json!({ "node": node, "jobs": jobs })))
}

/// What every action starts with: a steering session and a same-site
/// request, then the one name in its path and its JSON body.
fn action<C, T: for<'de> Deserialize<'de>>(
    ctx: &Ctx<C>,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    b: &Bytes,
) -> ApiResult<(String, T)> {
    steer(ctx, headers)?;
    let Path(name) = path?;
    Ok((name, body(b)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrateBody {
    to: String,
}

async fn migrate<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    b: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (job, MigrateBody { to }) = action(&ctx, &headers, p, &b)?;
    let info = running(&ctx, &job).await?;
    if to != "home" && to != "best" {
        known_node(&ctx.store.board().status, &to)?;
    }
    info!(%job, %to, "web view: migration asked for");
    match ctx.cluster.migrate(job.clone(), to.clone()).await {
        Ok(done) => {
            ctx.store.poke(Nudge::Jobs);
            Ok(Json(json!({ "moved": done, "line": done.to_string() })))
        }
        Err((_, why)) => {
            ctx.store.move_failed(&job, &info.node, &to, &why);
            Err(err(StatusCode::CONFLICT, why))
        }
    }
}

/// The running job `job`, refreshing the table once if it is not there
/// (it may have started since); 404 if it still is not.
async fn running<C: Cluster>(ctx: &Ctx<C>, job: &str) -> ApiResult<agent_control::JobInfo> {
    let mut board = ctx.store.board();
    if !board.jobs.iter().any(|j| j.job == job) {
        ctx.store.jobs_now(ctx.cluster.jobs().await);
        board = ctx.store.board();
    }
    board
        .jobs
        .iter()
        .find(|j| j.job == job)
        .cloned()
        .ok_or_else(|| err(StatusCode::NOT_FOUND, format!("no running job {job}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    signal: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReniceBody {
    nice: i32,
}

async fn signal<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    b: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (job, SignalBody { signal }) = action(&ctx, &headers, p, &b)?;
    let order = JobOrder::signal(&signal).map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    steer_job(&ctx, job, order).await
}

async fn renice<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    b: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (job, ReniceBody { nice }) = action(&ctx, &headers, p, &b)?;
    let order = JobOrder::renice(nice).map_err(|e| err(StatusCode::BAD_REQUEST, e))?;
    steer_job(&ctx, job, order).await
}

/// Carries out a signal or renice on a running job.
async fn steer_job<C: Cluster>(
    ctx: &Ctx<C>,
    job: String,
    order: JobOrder,
) -> ApiResult<Json<serde_json::Value>> {
    running(ctx, &job).await?;
    info!(%job, order = %order.describe(), "web view: job steered");
    let line = ctx
        .cluster
        .steer(job, order)
        .await
        .map_err(|(_, why)| err(StatusCode::CONFLICT, why))?;
    ctx.store.poke(Nudge::Jobs);
    Ok(Json(json!({ "line": line })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KnobBody {
    word: String,
}

async fn knob<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    b: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (node, KnobBody { word }) = action(&ctx, &headers, p, &b)?;
    let action = KnobAction::parse(&word).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!(
                "no knob word {word:?} (one of {})",
                agent_control::knobs::KNOB_WORDS.join(", ")
            ),
        )
    })?;
    known_node(&ctx.store.board().status, &node)?;
    info!(%node, %word, "web view: knob");
    let lines = ctx
        .cluster
        .knob(node, action)
        .await
        .map_err(|(_, why)| err(StatusCode::CONFLICT, why))?;
    ctx.store.poke(Nudge::Jobs);
    Ok(Json(json!({ "lines": lines })))
}

async fn machines<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    Ok(Json(events::machines_json(&ctx.store.board().machines)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DecideBody {}

async fn decide<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    p: Result<Path<(String, String)>, PathRejection>,
    b: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    steer(&ctx, &headers)?;
    let Path((mac, verdict)) = p?;
    let DecideBody {} = body(&b)?;
    let admit = match verdict.as_str() {
        "admit" => true,
        "reject" => false,
        other => {
            return Err(err(
                StatusCode::NOT_FOUND,
                format!("no action {other:?} on a machine (admit or reject)"),
            ))
        }
    };
    let known = match &ctx.store.board().machines {
        Ok(list) => list
            .iter()
            .any(|m| m.mac.eq_ignore_ascii_case(&mac) || m.name.as_deref() == Some(&mac)),
        Err(why) => return Err(err(StatusCode::CONFLICT, why.clone())),
    };
    if !known {
        return Err(err(
            StatusCode::NOT_FOUND,
            format!("no machine {mac} at the boot server"),
        ));
    }
    info!(%mac, %verdict, "web view: admission decided");
    let line = ctx
        .cluster
        .admit(mac, admit)
        .await
        .map_err(|(_, why)| err(StatusCode::CONFLICT, why))?;
    ctx.store.machines_now(ctx.cluster.boot().await);
    Ok(Json(json!({ "line": line })))
}

/// A query parameter as a number, or a 400 naming it.
fn number(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<u64>> {
    q.get(key)
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                err(
                    StatusCode::BAD_REQUEST,
                    format!("{key}={v:?} is not a whole number"),
                )
            })
        })
        .transpose()
}

async fn history_series<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let Query(q) = q?;
    let metric = q.get("metric").map(String::as_str).unwrap_or("load");
    let metric = history::Metric::parse(metric).ok_or_else(|| {
        err(
            StatusCode::BAD_REQUEST,
            format!("no metric {metric:?} (load, mem or jobs)"),
        )
    })?;
    let now = contracts::clock::unix_seconds();
    let since = number(&q, "since")?.unwrap_or(now.saturating_sub(3600));
    let until = number(&q, "until")?.unwrap_or(u64::MAX);
    if since > until {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("since={since} is after until={until}"),
        ));
    }
    let (series, markers) = ctx.store.history(|h| {
        let m: Vec<_> = h
            .markers_since(since * 1000)
            .into_iter()
            .filter(|m| m.at_ms / 1000 <= until)
            .collect();
        (h.series(metric, since, until), m)
    });
    Ok(Json(json!({ "series": series, "markers": markers })))
}

async fn history_jobs<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let Query(q) = q?;
    let at = number(&q, "at")?
        .ok_or_else(|| err(StatusCode::BAD_REQUEST, "at= (Unix ms) is missing"))?;
    Ok(Json(
        json!({ "at_ms": at, "stays": ctx.store.history(|h| h.stays_at(at)) }),
    ))
}

async fn history_markers<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
    q: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> ApiResult<Json<serde_json::Value>> {
    access(&ctx, &headers)?;
    let Query(q) = q?;
    let since = number(&q, "since")?.unwrap_or(0);
    Ok(Json(
        json!({ "markers": ctx.store.history(|h| h.markers_since(since)) }),
    ))
}

async fn history_csv<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    access(&ctx, &headers)?;
    let csv = ctx.store.history(|h| h.csv());
    let name = format!(
        "attachment; filename=\"omcluster-{}-history.csv\"",
        ctx.store
            .board()
            .status
            .cluster
            .replace(['"', '\\', '/'], "_")
    );
    let mut r = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response();
    if let Ok(v) = HeaderValue::from_str(&name) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn metrics_text<C: Cluster>(
    State(ctx): State<Ctx<C>>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    if !ctx.options.metrics_open {
        access(&ctx, &headers).map_err(|e| {
            ApiError(
                e.0,
                format!(
                    "{} (or start the agent with --metrics-open for a scraper)",
                    e.1
                ),
            )
        })?;
    }
    let board = ctx.store.board();
    let text = metrics::render(
        &board.status,
        &ctx.store.counters(),
        board.machines.as_deref().ok(),
        Some(ctx.store.history(|h| h.approx_bytes())),
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
