//! The page, compiled into the binary: clusters are often offline, so
//! nothing comes from elsewhere. It is plain HTML, CSS and ES modules with
//! no build step (`web-view/ui/`), so `cargo build` needs no Node; the one
//! library, uPlot (charts), is its npm release's built file, committed with
//! its licence (`web-view/ui/vendor/`, from `web-view/package-lock.json`).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// (name, content type, bytes) of every file under `/ui/`.
const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    ),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/views.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../ui/style.css"),
    ),
    (
        "uPlot.esm.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/vendor/uPlot.esm.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_str!("../ui/vendor/uPlot.min.css"),
    ),
];

/// `GET /`: the page (its login form shows until a session exists).
pub async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../ui/index.html"),
    )
        .into_response()
}

/// `GET /ui/FILE`.
pub async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => {
            crate::guard::ApiError(StatusCode::NOT_FOUND, format!("no file {name} in the page"))
                .into_response()
        }
    }
}
