//! The cluster's web view, openMosixView for today: a page any browser on
//! the LAN opens, served by an agent (`omnode agent --web ADDR:PORT`; the
//! head's by default), with everything it needs inside the binary.
//!
//! The agent gives the view its cluster through [`Cluster`]; the view keeps
//! a picture of it up to date ([`store`]), serves it as a JSON API, a live
//! event stream and Prometheus metrics ([`api`]), and the page that uses
//! nothing but that API ([`assets`]).
//!
//! - [`session`]: login tokens (what `omctl web` prints) and sessions, read
//!   or steer; pure.
//! - [`board`]: the picture at one moment, the balance efficiency, and the
//!   markers found by comparing two pictures; pure.
//! - [`boot`]: the machines on their way in: boot stage and admission;
//!   pure.
//! - [`history`]: the last hour each second, the last day each minute,
//!   where each job ran, the markers; bounded; pure.
//! - [`metrics`]: the Prometheus text exposition; pure.
//! - [`store`]: the one owner of the picture, the history and the
//!   counters, and the loop that refreshes them from the [`Cluster`] on
//!   its change stream and every second.
//! - [`api`]: the HTTP routes.
//! - [`guard`]: sessions from cookies, cross-site checks, the error shape.
//! - [`events`]: the server-push stream (`text/event-stream`).
//! - [`assets`]: the page (plain ES modules, no build step) and the
//!   charting library, compiled in.
//!
//! Architecture invariant: the page has no other door than the documented
//! API, and nothing but a session (or `--metrics-open` for `/metrics`)
//! opens it.

pub mod api;
pub mod assets;
pub mod board;
pub mod boot;
pub mod events;
pub mod guard;
pub mod history;
pub mod metrics;
pub mod session;
pub mod store;

use std::future::Future;
use std::sync::{Arc, Mutex};

use agent_control::knobs::KnobAction;
use agent_control::model::{ClusterStatus, JobInfo, MigrateDone};
use agent_control::steer::JobOrder;
use futures::stream::BoxStream;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use session::Access;

/// The port the head serves the view on by default.
pub const DEFAULT_PORT: u16 = contracts::http::WEB_VIEW_PORT;

/// A refusal from the cluster: the exit status `omctl` would give, and the
/// one-line reason.
pub type Refusal = (i32, String);

/// What changed, as far as the view cares: it refreshes that part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nudge {
    /// A job started, moved or ended.
    Jobs,
    /// A node's liveness, knobs or load changed.
    Nodes,
}

/// The cluster as the serving agent knows it and acts on it.
pub trait Cluster: Clone + Send + Sync + 'static {
    /// Every node, with its last load vector.
    fn status(&self) -> ClusterStatus;
    /// Every cluster job on every live node.
    fn jobs(&self) -> impl Future<Output = Vec<JobInfo>> + Send;
    /// Moves `job` to `to` (a node, `home` or `best`), as root.
    fn migrate(
        &self,
        job: String,
        to: String,
    ) -> impl Future<Output = Result<MigrateDone, Refusal>> + Send;
    /// Carries out a knob word on `node`, as root: the lines it said.
    fn knob(
        &self,
        node: String,
        action: KnobAction,
    ) -> impl Future<Output = Result<Vec<String>, Refusal>> + Send;
    /// Signals or renices `job` (its id), as root: the line it said.
    fn steer(
        &self,
        job: String,
        order: JobOrder,
    ) -> impl Future<Output = Result<String, Refusal>> + Send;
    /// What the boot server knows (`Err`: why it cannot be asked).
    fn boot(&self) -> impl Future<Output = Result<boot::BootPicture, String>> + Send;
    /// Admits (`true`) or rejects a machine (MAC or name) waiting at the
    /// boot server, as root: the line it said.
    fn admit(
        &self,
        machine: String,
        admit: bool,
    ) -> impl Future<Output = Result<String, Refusal>> + Send;
    /// The serving agent's changes, from now on.
    fn nudges(&self) -> BoxStream<'static, Nudge>;
}

/// Hands out login links: shared by the web view (which takes the tokens)
/// and the agent's control socket (where `omctl web` asks for one).
#[derive(Debug, Clone)]
pub struct Gate {
    sessions: Arc<Mutex<session::Sessions>>,
    base: String,
}

impl Gate {
    /// A gate for the view at `base` (`http://HOST:PORT`).
    pub fn new(base: String) -> Self {
        Gate {
            sessions: Arc::default(),
            base,
        }
    }

    /// Where the view is.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A one-time login link of `access`.
    pub fn login_url(&self, access: Access) -> String {
        let secret: [u8; 32] = rand10::random();
        let token = self
            .lock()
            .issue(secret, access, contracts::clock::unix_millis());
        format!("{}/#login={token}", self.base)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, session::Sessions> {
        // Sessions stay consistent through a panic elsewhere (each method
        // changes them whole).
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Exchanges a login token for a session id.
    pub(crate) fn login(&self, token: &str) -> Result<(String, Access), session::LoginError> {
        let secret: [u8; 32] = rand10::random();
        self.lock()
            .login(token, secret, contracts::clock::unix_millis())
    }

    /// What session `id` may do.
    pub(crate) fn check(&self, id: &str) -> Option<Access> {
        self.lock().check(id, contracts::clock::unix_millis())
    }

    /// Ends session `id`.
    pub(crate) fn logout(&self, id: &str) {
        self.lock().logout(id)
    }
}

/// How the view is served.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Whether `/metrics` answers without a session.
    pub metrics_open: bool,
}

/// Serves the view on `listener` until `stop`, refreshing its picture of
/// `cluster` meanwhile; open event streams end with it.
pub async fn serve<C: Cluster>(
    listener: TcpListener,
    cluster: C,
    gate: Gate,
    options: Options,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let store = store::Store::new();
    let app = api::router(guard::Ctx {
        cluster: cluster.clone(),
        gate,
        store: store.clone(),
        options,
        stop: stop.clone(),
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let (served, ()) = tokio::join!(server, store.refresh(cluster, stop.clone()));
    served
}
