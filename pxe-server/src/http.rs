//! HTTP side of the boot server: iPXE boot scripts, the image files, and the
//! JSON API.
//!
//! - `GET /boot.ipxe` without parameters is the first-stage script: it makes
//!   iPXE come back with its MAC, platform and build architecture. With `mac=`
//!   it is the per-MAC script: `kernel`, `initrd`, `boot`, the command line
//!   carrying the server address and cluster id, never the cluster key
//!   (a node gets that through admission, below). The address in the script is
//!   the local address of the connection the request came in on, so a head node
//!   on several networks hands every node an address it can reach.
//!   `initrd=initrd.img` is always on the command line: the 2019 iPXE that
//!   Debian ships does not pass the initrd to the EFI stub otherwise, and the
//!   BIOS path ignores it.
//! - `GET /{file}`: files of the image directory, streamed, with single-range
//!   requests (206/416), confined like TFTP (symlinks leading out are refused).
//!   `vmlinuz` and `initrd.img` record the Kernel and Initrd stages.
//! - `GET /api/v1/leases`, `GET /api/v1/nodes`, `POST /api/v1/checkin`.
//! - `POST /api/v1/admit`: a machine asks for the cluster key with a fresh
//!   public key; [`crate::admission`] decides, and an admitted machine gets
//!   the key sealed to that public key (`contracts::admit`). 200 admitted,
//!   202 pending, 403 refused, each with a JSON [`AdmitAnswer`].
//! - `GET`/`POST /api/v1/admission`: the admin's list and decisions
//!   (`omctl nodes --pending`, `omctl admit`, `omctl reject`), signed with
//!   the cluster key (`contracts::admit::check_admin`); 401 otherwise.
//! - `POST /api/v1/tokens` (signed like the above): registers a join token
//!   an admin made (`omctl token create`); `POST /api/v1/join`: a
//!   workstation joins with one (`omctl join`), proving it holds the
//!   token's secret; the key comes back sealed in HPKE's PSK mode.
//! - `GET /cluster/passwd`, `GET /cluster/group`: the head's user and group
//!   tables, which nodes install so the shared tree's owners have names.
//!
//! One info line per request. [`router`] needs [`ConnInfo`] connect info
//! (`into_make_service_with_connect_info::<ConnInfo>()`); [`serve`] does that.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::http::{HeaderMap, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use contracts::admit::{
    self, AdmitAnswer, AdmitRequest, Decision, JoinRequest, Token, TokenRequest, ADMISSION_PATH,
    ADMIT_PATH, AUTH_HEADER, JOIN_PATH, TIME_HEADER, TOKENS_PATH, TOKEN_ID_LEN,
};
use contracts::clock::unix_seconds;
use contracts::cmdline::{KernelCmdline, OmParam, Param, INITRD_PARAM};
use contracts::http::{Checkin, CHECKIN_PATH};
use contracts::image::{SYSTEM_EXPORT, SYSTEM_LAYER};
use contracts::mac::MacAddr;
use contracts::rotate::{self, RotateRequest, ROTATE_PATH};
use contracts::share::{NfsShare, Share, GROUP_PATH, PASSWD_PATH};
use keystore::{KeyStore, TakeError};
use serde::Deserialize;
use tower::ServiceExt;
use tracing::{info, warn};

use crate::admission::{Answer, BootSeen, Store};
use crate::image::ImageDir;
use crate::nodes::{BootStage, LeaseSource, NodeRegistry, Observation};
use crate::share::ShareConfig;
use crate::tftp::path::{open_confined, PathError};

/// What the HTTP server needs.
#[derive(Clone)]
pub struct HttpState {
    /// The image directory served.
    pub image: Arc<ImageDir>,
    /// Where boot stages are recorded.
    pub registry: Arc<NodeRegistry>,
    /// The lease table for `/api/v1/leases`.
    pub leases: Arc<dyn LeaseSource>,
    /// Cluster id put on the kernel command line (`om.cluster=`).
    pub cluster_id: String,
    /// The cluster keys: the newest sealed to admitted machines, every one
    /// still accepted the root of an admin's signature. A new key is
    /// written to the key file before it is taken ([`KeyStore::take`]), so
    /// a restarted `omboot` comes back on it.
    pub keys: Arc<KeyStore>,
    /// Who has been let in.
    pub admission: Arc<Store>,
    /// The shared tree, put on the command line as `om.share=`.
    pub share: Option<ShareConfig>,
}

/// Both ends of an accepted connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnInfo {
    /// The client.
    pub remote: SocketAddr,
    /// Our address the client connected to.
    pub local: SocketAddr,
}

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ConnInfo {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        let remote = *stream.remote_addr();
        let local = stream.io().local_addr().unwrap_or(remote);
        ConnInfo { remote, local }
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The routes; serve with `into_make_service_with_connect_info::<ConnInfo>()`.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/boot.ipxe", get(boot_script))
        .route("/api/v1/leases", get(leases))
        .route(contracts::boot::NODES_PATH, get(nodes))
        .route(CHECKIN_PATH, post(checkin))
        .route(ADMIT_PATH, post(admit_machine))
        .route(ADMISSION_PATH, get(admission_list).post(admission_decide))
        .route(TOKENS_PATH, post(register_token))
        .route(ROTATE_PATH, post(rotate_key))
        .route(JOIN_PATH, post(join))
        .route(PASSWD_PATH, get(passwd))
        .route(GROUP_PATH, get(group))
        .route("/{*path}", get(static_file))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(a) = listener.local_addr() {
        info!(addr = %a, root = %state.image.root().display(), "http listening");
    }
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<ConnInfo>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

async fn log_request(
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let resp = next.run(req).await;
    let bytes = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    info!(
        client = %canonical(conn.remote),
        method = %method,
        uri = %uri,
        status = resp.status().as_u16(),
        bytes,
        range,
        duration_ms = started.elapsed().as_millis() as u64,
        "http request"
    );
    resp
}

/// Query of `/boot.ipxe`, as the first-stage script sends it.
#[derive(Debug, Deserialize)]
pub struct BootQuery {
    /// `${net0/mac}`.
    pub mac: Option<String>,
    /// `${platform}`: `pcbios` or `efi`.
    pub platform: Option<String>,
    /// `${buildarch}`: `i386`, `x86_64`, `arm64`, …
    pub buildarch: Option<String>,
}

/// The RFC 4578 code for an iPXE platform and build architecture.
pub fn arch_code(platform: Option<&str>, buildarch: Option<&str>) -> Option<u16> {
    match (platform?, buildarch.unwrap_or("")) {
        ("pcbios", _) => Some(0),
        ("efi", "x86_64") => Some(7),
        ("efi", "i386") => Some(6),
        ("efi", "arm64") => Some(11),
        ("efi", "arm32") => Some(10),
        _ => None,
    }
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// The first-stage script: brings iPXE back with its identity.
pub fn first_stage_script(server: SocketAddr) -> String {
    let base = format!("http://{}:{}", host_of(server.ip()), server.port());
    format!(
        "#!ipxe\n\
         chain {base}/boot.ipxe?mac=${{net0/mac}}&platform=${{platform}}&buildarch=${{buildarch}}\n"
    )
}

/// What the per-MAC script tells a node beside the image's own command line.
#[derive(Debug, Clone, Copy)]
pub struct NodeParams<'a> {
    /// The cluster id (`om.cluster=`).
    pub cluster_id: &'a str,
    /// The shared tree (`om.share=`).
    pub share: Option<&'a ShareConfig>,
    /// Whether the image has a system layer, exported by this head's file
    /// server (`om.system=`).
    pub system_layer: bool,
}

/// The kernel command line of the per-MAC script: `initrd=initrd.img`, the
/// image's own line, then the head's address and HTTP port, the cluster id,
/// the shared tree and the system layer. Never the key: the node asks for
/// it (`/api/v1/admit`). `om.server=` and the head's own `om.share=` and
/// `om.system=` are left out when the node reached us over IPv6: `omnode
/// init` takes IPv4 only.
pub fn node_cmdline(
    server: SocketAddr,
    image_cmdline: &KernelCmdline,
    params: NodeParams<'_>,
) -> KernelCmdline {
    let NodeParams {
        cluster_id,
        share,
        system_layer,
    } = params;
    let mut line = KernelCmdline::default();
    line.push(Param::Other(INITRD_PARAM.into()));
    line.params.extend(image_cmdline.params.iter().cloned());
    if let IpAddr::V4(ip) = server.ip() {
        line.push(OmParam::Server(ip));
    }
    line.push(OmParam::Http(server.port()));
    line.push(OmParam::Cluster(cluster_id.into()));
    match (share, server.ip()) {
        (Some(ShareConfig::External(n)), _) => {
            line.push(OmParam::Share(Share::Nfs(n.clone())));
        }
        (Some(own), IpAddr::V4(ip)) => line.push(OmParam::Share(own.for_nodes(ip))),
        _ => {}
    }
    if let (true, IpAddr::V4(ip)) = (system_layer, server.ip()) {
        line.push(OmParam::System(Share::Nfs(NfsShare::head_export(
            ip,
            SYSTEM_EXPORT,
        ))));
    }
    line
}

/// The per-MAC script.
pub fn node_script(
    server: SocketAddr,
    mac: MacAddr,
    image_cmdline: &KernelCmdline,
    params: NodeParams<'_>,
) -> String {
    let base = format!("http://{}:{}", host_of(server.ip()), server.port());
    let cmdline = node_cmdline(server, image_cmdline, params);
    format!(
        "#!ipxe\n\
         echo omboot: booting {mac} from {base}\n\
         kernel {base}/vmlinuz {cmdline}\n\
         initrd {base}/initrd.img\n\
         boot\n"
    )
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn boot_script(
    State(st): State<HttpState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Query(q): Query<BootQuery>,
) -> Response {
    let (local, remote) = (canonical(conn.local), canonical(conn.remote));
    let Some(mac) = q.mac.as_deref() else {
        return text(StatusCode::OK, first_stage_script(local));
    };
    let mac: MacAddr = match mac.parse() {
        Ok(m) => m,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    st.registry.record(
        mac,
        BootStage::Script,
        Observation {
            address: Some(remote.ip()),
            architecture: arch_code(q.platform.as_deref(), q.buildarch.as_deref()),
            hostname: None,
        },
    );
    let script = node_script(
        local,
        mac,
        st.image.cmdline(),
        NodeParams {
            cluster_id: &st.cluster_id,
            share: st.share.as_ref(),
            system_layer: st.image.root().join(SYSTEM_LAYER).is_file(),
        },
    );
    text(StatusCode::OK, script)
}

/// Read size for static files. tower-http's default of 64 KiB costs a
/// blocking-pool hop and a task wake-up per chunk: 50 clients fetching the
/// initrd got 0.8x busybox httpd's throughput; 256 KiB gives 1.0-1.1x for
/// 40 MB of RSS at that load (1 MiB gave no more and took 114 MB).
const STATIC_CHUNK: usize = 1 << 18;

async fn static_file(
    State(st): State<HttpState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    UrlPath(path): UrlPath<String>,
    req: Request,
) -> Response {
    let root = st.image.root().to_path_buf();
    let name = path.clone();
    let opened = tokio::task::spawn_blocking(move || open_confined(&root, name.as_bytes()))
        .await
        .map_err(|e| PathError::Io(std::io::Error::other(e)))
        .and_then(|r| r);
    let real = match opened {
        Ok((_, real, _)) => real,
        Err(PathError::NotFound) => {
            return text(StatusCode::NOT_FOUND, format!("{path}: not found\n"))
        }
        Err(e @ PathError::Io(_)) => {
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}\n"))
        }
        Err(e) => return text(StatusCode::FORBIDDEN, format!("{path}: {e}\n")),
    };
    let stage = match path.trim_start_matches('/') {
        "vmlinuz" => Some(BootStage::Kernel),
        "initrd.img" => Some(BootStage::Initrd),
        _ => None,
    };
    if let Some(stage) = stage {
        let ip = canonical(conn.remote).ip();
        let reg = st.registry.clone();
        if reg.record_ip(ip, stage).is_none() {
            // The ARP table lives in /proc: keep the read off the async workers.
            let _ = tokio::task::spawn_blocking(move || reg.record_ip_or_arp(ip, stage)).await;
        }
    }
    match tower_http::services::ServeFile::new(real)
        .with_buf_chunk_size(STATIC_CHUNK)
        .oneshot(req)
        .await
    {
        Ok(resp) => resp.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{path}: {e}\n")),
    }
}

/// The head's user table: numeric owners in the shared tree show as the
/// same names on every node. Passwords are in `/etc/shadow`, never served.
async fn passwd() -> Response {
    system_table("/etc/passwd").await
}

/// The head's group table, beside [`passwd`].
async fn group() -> Response {
    system_table("/etc/group").await
}

async fn system_table(path: &'static str) -> Response {
    match tokio::fs::read_to_string(path).await {
        Ok(body) => text(StatusCode::OK, body),
        Err(e) => text(StatusCode::NOT_FOUND, format!("{path}: {e}\n")),
    }
}

async fn leases(State(st): State<HttpState>) -> Response {
    Json(st.leases.leases()).into_response()
}

async fn nodes(State(st): State<HttpState>) -> Response {
    Json(st.registry.snapshot()).into_response()
}

async fn checkin(
    State(st): State<HttpState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    Json(c): Json<Checkin>,
) -> Response {
    let address = c.address.unwrap_or(canonical(conn.remote).ip());
    st.registry.record(
        c.mac,
        BootStage::Agent,
        Observation {
            address: Some(address),
            architecture: None,
            hostname: c.name,
        },
    );
    match st.registry.get(c.mac) {
        Some(rec) => Json(rec).into_response(),
        None => text(StatusCode::INTERNAL_SERVER_ERROR, "node vanished\n".into()),
    }
}

fn json_status(status: StatusCode, body: impl serde::Serialize) -> Response {
    (status, Json(body)).into_response()
}

/// A machine asks for the cluster key. One info line per answer, a warning
/// per refusal.
async fn admit_machine(
    State(st): State<HttpState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    body: Bytes,
) -> Response {
    let address = canonical(conn.remote).ip();
    let req: AdmitRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json_status(
                StatusCode::BAD_REQUEST,
                AdmitAnswer::Refused {
                    reason: format!("malformed admission request: {e}"),
                },
            )
        }
    };
    let boot = st.registry.get(req.mac).and_then(|r| {
        r.booted_at.map(|at| BootSeen {
            at,
            address: r.address,
        })
    });
    let store = st.admission.clone();
    let asked = req.clone();
    let answer =
        tokio::task::spawn_blocking(move || store.ask(&asked, Some(address), boot, unix_seconds()))
            .await;
    let answer = match answer {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            warn!(mac = %req.mac, cause = %e, "admission not recorded");
            return json_status(
                StatusCode::SERVICE_UNAVAILABLE,
                AdmitAnswer::Pending {
                    reason: format!("the head cannot record admissions: {e}"),
                },
            );
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    };
    let key = req.public.fingerprint();
    match answer {
        Answer::Admit => {
            info!(mac = %req.mac, client = %address, key, name = req.name.as_deref().unwrap_or(""), "admitted");
            admitted(
                &st,
                admit::seal(&st.keys.newest(), &req.public, &st.cluster_id, req.mac),
            )
        }
        Answer::Pending(reason) => {
            info!(mac = %req.mac, client = %address, key, %reason, "admission pending");
            json_status(StatusCode::ACCEPTED, AdmitAnswer::Pending { reason })
        }
        Answer::Refuse(reason) => {
            warn!(mac = %req.mac, client = %address, key, %reason, "admission refused");
            json_status(StatusCode::FORBIDDEN, AdmitAnswer::Refused { reason })
        }
    }
}

/// The admin's signature on a request to `path`, or the 401.
fn check_admin(
    st: &HttpState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut outcome = Err(admit::AuthError::BadTag);
    for key in st.keys.accepted() {
        outcome = admit::check_admin(
            &key,
            &st.cluster_id,
            method.as_str(),
            path,
            header(TIME_HEADER),
            header(AUTH_HEADER),
            body,
            unix_seconds(),
        );
        if !matches!(outcome, Err(admit::AuthError::BadTag)) {
            break;
        }
    }
    match outcome {
        Ok(()) => None,
        Err(e) => {
            warn!(cause = %e, "admin request refused");
            Some(text(StatusCode::UNAUTHORIZED, format!("{e}\n")))
        }
    }
}

async fn admission_list(
    State(st): State<HttpState>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_admin(&st, &method, ADMISSION_PATH, &headers, &[]) {
        return refused;
    }
    Json(st.admission.list()).into_response()
}

async fn admission_decide(
    State(st): State<HttpState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_op(
        &st,
        (&method, ADMISSION_PATH, &headers, &body),
        StatusCode::NOT_FOUND,
        |store, d: Decision, now| {
            let done = store.decide(&d.machine, d.verdict, now);
            if let Ok(Ok(m)) = &done {
                info!(mac = %m.mac, verdict = ?d.verdict, key = m.public.fingerprint(), "admin decided");
            }
            done
        },
    )
    .await
}

async fn register_token(
    State(st): State<HttpState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    admin_op(
        &st,
        (&method, TOKENS_PATH, &headers, &body),
        StatusCode::BAD_REQUEST,
        |store, req: TokenRequest, now| {
            let done = store.register_token(&req, now);
            if let Ok(Ok(t)) = &done {
                info!(token = %t.id, expires = t.expires, uses = t.uses_left, "join token registered");
            }
            done
        },
    )
    .await
}

/// An admin's request (method, path, headers, body): the signature
/// checked, the body parsed as `R`, `op` run on the book off the async
/// workers; its value as JSON, or `refusal` with the reason it gives.
async fn admin_op<R, T, E>(
    st: &HttpState,
    (method, path, headers, body): (&Method, &str, &HeaderMap, &[u8]),
    refusal: StatusCode,
    op: impl FnOnce(&Store, R, u64) -> Result<Result<T, E>, crate::admission::StoreError>
        + Send
        + 'static,
) -> Response
where
    R: serde::de::DeserializeOwned + Send + 'static,
    T: serde::Serialize + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    if let Some(refused) = check_admin(st, method, path, headers, body) {
        return refused;
    }
    let req: R = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("malformed request: {e}\n")),
    };
    let store = st.admission.clone();
    match tokio::task::spawn_blocking(move || op(&store, req, unix_seconds())).await {
        Ok(Ok(Ok(value))) => Json(value).into_response(),
        Ok(Ok(Err(why))) => text(refusal, format!("{why}\n")),
        Ok(Err(e)) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// A member hands over the cluster's new key (`omctl key rotate`): signed
/// like every admin request, the key sealed under the old one.
async fn rotate_key(
    State(st): State<HttpState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = check_admin(&st, &method, ROTATE_PATH, &headers, &body) {
        return refused;
    }
    let req: RotateRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("malformed request: {e}\n")),
    };
    let accepted = st.keys.accepted();
    let new = match rotate::open_key(
        &accepted.iter().collect::<Vec<_>>(),
        &st.cluster_id,
        &req.sealed,
    ) {
        Ok(k) => k,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    let fingerprint = new.fingerprint(&st.cluster_id);
    let keys = st.keys.clone();
    match tokio::task::spawn_blocking(move || keys.take(new, req.switch_in_ms, req.window_ms)).await
    {
        Ok(Ok(fresh)) => {
            info!(%fingerprint, fresh, switch_in_ms = req.switch_in_ms, window_ms = req.window_ms, "new cluster key");
            text(StatusCode::OK, format!("{fingerprint}\n"))
        }
        Ok(Err(e @ TakeError::Rotate(_))) => text(StatusCode::CONFLICT, format!("{e}\n")),
        Ok(Err(e)) => {
            warn!(cause = %e, "new cluster key refused");
            text(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// A workstation joins with a token: the proof is checked before the token
/// is spent, so a forged request costs the token nothing.
async fn join(
    State(st): State<HttpState>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    body: Bytes,
) -> Response {
    let address = canonical(conn.remote).ip();
    let refused = |status: StatusCode, reason: String| {
        warn!(client = %address, %reason, "join refused");
        json_status(status, AdmitAnswer::Refused { reason })
    };
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refused(
                StatusCode::BAD_REQUEST,
                format!("malformed join request: {e}"),
            )
        }
    };
    // A token is made from the key of its day: during a rotation, from
    // either; after it, tokens of the old key are void.
    let mut tokens = Vec::new();
    for key in st.keys.accepted() {
        match Token::for_id(&key, &st.cluster_id, &req.token) {
            Ok(t) => tokens.push(t),
            Err(_) => {
                return refused(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "token id {:?} is not {} hex digits",
                        req.token,
                        2 * TOKEN_ID_LEN
                    ),
                )
            }
        }
    }
    let Some(token) = tokens
        .into_iter()
        .find(|t| admit::check_join_proof(t, &req.public, &req.name, &req.proof))
    else {
        return refused(
            StatusCode::FORBIDDEN,
            format!(
                "the proof does not match token {}: a forged or mistyped token, or one made for another cluster",
                req.token
            ),
        );
    };
    let store = st.admission.clone();
    let (token_id, mac, name, public) = (req.token.clone(), req.mac, req.name.clone(), req.public);
    let spent = tokio::task::spawn_blocking(move || {
        store.spend_token(
            &token_id,
            (mac, &name, public),
            Some(address),
            unix_seconds(),
        )
    })
    .await;
    match spent {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(why))) => return refused(StatusCode::FORBIDDEN, why),
        Ok(Err(e)) => return refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
    info!(client = %address, name = %req.name, token = %req.token, key = req.public.fingerprint(), "joined with a token");
    admitted(
        &st,
        admit::seal_for_join(&st.keys.newest(), &token, &req.public, &st.cluster_id),
    )
}

/// The 200 carrying the sealed cluster key.
fn admitted(st: &HttpState, sealed: Result<(String, String), admit::AdmitError>) -> Response {
    match sealed {
        Ok((enc, sealed)) => json_status(
            StatusCode::OK,
            AdmitAnswer::Admitted {
                cluster: st.cluster_id.clone(),
                enc,
                sealed,
            },
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}
