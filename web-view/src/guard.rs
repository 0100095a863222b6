//! Who may come in, and how a refusal looks: the context every route
//! gets, the session from the cookie, the cross-site checks every action
//! passes, and the error every route answers with (`{"error": "one
//! line"}` and a 4xx).

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::{Access, Gate, Options};

/// The session cookie's name.
pub const COOKIE: &str = "om_session";

/// What every route gets.
#[derive(Clone)]
pub struct Ctx<C> {
    /// The cluster to show and steer.
    pub cluster: C,
    /// Tokens and sessions.
    pub gate: Gate,
    /// The picture, history and counters.
    pub store: Store,
    /// How the view is served.
    pub options: Options,
    /// Ends the event streams at shutdown.
    pub stop: CancellationToken,
}

/// A refusal: its status and one line.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) fn err(code: StatusCode, msg: impl Into<String>) -> ApiError {
    ApiError(code, msg.into())
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        err(StatusCode::BAD_REQUEST, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        err(StatusCode::BAD_REQUEST, r.body_text())
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The session cookie's value, if sent.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// What the caller's session may do; 401 without one.
pub fn access<C>(ctx: &Ctx<C>, headers: &HeaderMap) -> ApiResult<Access> {
    let id = cookie(headers).ok_or_else(|| {
        err(
            StatusCode::UNAUTHORIZED,
            "log in first: open the link omctl web prints",
        )
    })?;
    ctx.gate.check(id).ok_or_else(|| {
        err(
            StatusCode::UNAUTHORIZED,
            "the session has ended: open a new link from omctl web",
        )
    })
}

/// A state-changing request from this page, not another site's: a JSON
/// body (a cross-site form cannot send one without asking first), and an
/// `Origin` or `Sec-Fetch-Site`, when the browser sends them, that name
/// this site.
pub(crate) fn same_site(method: &Method, headers: &HeaderMap) -> ApiResult<()> {
    debug_assert_eq!(method, Method::POST);
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim() == "application/json")
        });
    if !json {
        return Err(err(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "actions take a JSON body (Content-Type: application/json)",
        ));
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let ours = host.is_some_and(|h| {
            origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"))
                == Some(h)
        });
        if !ours {
            return Err(err(
                StatusCode::FORBIDDEN,
                format!("requests from {origin} are not taken"),
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s == "cross-site" || s == "same-site")
    {
        return Err(err(
            StatusCode::FORBIDDEN,
            "requests from other sites are not taken",
        ));
    }
    Ok(())
}

/// A steering session and a same-site request; 403 for a read-only one.
pub(crate) fn steer<C>(ctx: &Ctx<C>, headers: &HeaderMap) -> ApiResult<()> {
    same_site(&Method::POST, headers)?;
    match access(ctx, headers)? {
        Access::Steer => Ok(()),
        Access::Read => Err(err(
            StatusCode::FORBIDDEN,
            "this session may look but not act (its token was made with omctl web --read-only)",
        )),
    }
}

/// The JSON body as `T`, or a 400 naming what is wrong.
pub(crate) fn body<T: for<'de> Deserialize<'de>>(b: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(b)
        .map_err(|e| err(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
}
