//! `omnode agent`: the daemon. It wires the sealed UDP socket (discovery and
//! membership), the exec listener (TCP, same port), the control socket and
//! the job cgroup around the pure cores ([`crate::membership`],
//! [`crate::crypto`], [`crate::placement`]).
//!
//! [`Agent::run`] starts three parts, each its own module:
//! - `gossip`: the one loop that owns the membership and the sealing state
//!   and handles, in turn: datagrams, membership's timers (one queue,
//!   `timers`) and the presence tick (every 500 ms: our load vector, from
//!   `local_load`, to every member, and to the multicast group for
//!   discovery). It runs in `run` itself.
//! - `exec_listener`: exec streams from other agents, one task each; the
//!   one place that dispatches a stream's first frame.
//! - `control_server`: `omctl`'s connections, one task each.
//! - `balancer`: once a second, measures the jobs here and moves one to
//!   where it finishes sooner when that pays ([`crate::balance`]).
//! - `admin`: knob requests (`block`, `expel`, …) other agents forward.
//! - `admission`: the admin's admission requests, relayed signed to the
//!   boot server (on `omctl`'s connection, not a task of its own).
//! - `rotation`: `omctl key rotate`, handing a new cluster key to the boot
//!   server and every member (also on `omctl`'s connection). The keys
//!   themselves, two during a rotation, are a [`Keys`] every part shares.
//! - [`crate::checkin`]: with `--checkin`, the check-in with the boot server,
//!   which waits until the gossip loop reports the join.
//! - `web`: with `--web`, the web view ([`web_view`]) over this agent's
//!   controller and change stream; `omctl web` gets its login links here.
//!
//! They share the node's state ([`State`]: jobs, moves, knobs, the
//! membership view), each through its methods; the listeners and the check-in are
//! tasks of one `JoinSet` and the connections tasks of theirs: at shutdown the gossip
//! loop says goodbye, a `CancellationToken` stops the listeners and ends
//! every connection, and `run` waits for all of them before it returns.
//! Before it leaves, the agent sends its guests elsewhere (`expel`, for at
//! most [`EXPEL_ON_LEAVE`]); its own jobs are left running, as when the
//! agent is killed.
//!
//! The join line `omnode: node NAME joined cluster ID (N nodes)` is printed
//! once, when the first membership exchange completes (N counts us and the
//! members known at that moment), or, if nobody answered, after
//! [`DISCOVERY_WINDOW`] with N = 1.

mod admin;
mod admission;
mod balancer;
mod control_server;
mod exec_listener;
#[cfg(test)]
mod exec_tests;
mod gossip;
mod local_load;
mod rotation;
mod timers;
mod web;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use contracts::clock::unix_millis;
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cgroup::{self, CgroupError, JobCgroup};
use crate::discovery::{self, DiscoveryError, Interface};
use crate::exec::ExecContext;
use crate::key::ClusterKey;
use crate::keys::Keys;
use crate::load;
use crate::membership::NodeId;
use crate::state::State;

pub use crate::membership::node_number;
pub use crate::state::{NodeState, View};

use control_server::Controller;
use gossip::Gossip;
use local_load::LocalLoad;

/// How long a lone agent waits for peers before printing its join line.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(3);
/// Exec connections (jobs and handshakes) handled at once.
pub const MAX_EXEC_CONNECTIONS: usize = 1024;
/// How long a leaving agent tries to send its guests elsewhere.
pub const EXPEL_ON_LEAVE: Duration = Duration::from_secs(60);
/// How often the load vector goes out.
pub const PRESENCE_PERIOD: Duration = Duration::from_millis(500);

/// Everything `omnode agent` is told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster key.
    pub key: ClusterKey,
    /// The file it came from, rewritten when a rotation hands out a new key.
    pub key_file: Option<PathBuf>,
    /// Cluster id.
    pub cluster: String,
    /// This node's name.
    pub name: String,
    /// Control socket path.
    pub socket: PathBuf,
    /// Extra addresses to introduce ourselves to.
    pub seeds: Vec<SocketAddr>,
    /// CPU share for cluster jobs, percent of all CPUs (100 = uncapped).
    pub cpu_quota: u32,
    /// Interface to talk on (default: the first non-loopback one that is up).
    pub interface: Option<String>,
    /// UDP/TCP port.
    pub port: u16,
    /// Where the agent records its identity (`node.json`).
    pub state_dir: Option<PathBuf>,
    /// Relative speed; calibrated at start when `None`.
    pub speed: Option<f32>,
    /// The boot server's check-in URL (`omnode init` passes it); the agent
    /// posts there once it has joined.
    pub checkin: Option<String>,
    /// The shared tree this node should have at `/cluster` (`om.share=`),
    /// so a lost mount is reported.
    pub share: Option<String>,
    /// The admin knobs at start (`--block`, `--stay`, `--lstay`, `--quiet`).
    pub knobs: crate::balance::Knobs,
    /// Whether root's jobs may run here (`--allow-root-jobs`).
    pub allow_root_jobs: bool,
    /// Where to serve the web view (`--web`), if anywhere.
    pub web: Option<SocketAddr>,
    /// Whether the web view's `/metrics` needs no session (`--metrics-open`).
    pub metrics_open: bool,
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Interface or UDP socket trouble.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The job cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A listener could not be opened.
    #[error("cannot open {what}: {source}")]
    Listen {
        /// Which listener.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// The running agent.
pub struct Agent {
    cfg: AgentConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    control: UnixListener,
    me: NodeId,
    iface: Interface,
    cgroup: Option<JobCgroup>,
    speed: f32,
    web: Option<TcpListener>,
}

impl Agent {
    /// Opens the sockets, sets up the job cgroup and calibrates.
    pub async fn bind(cfg: AgentConfig) -> Result<Self, AgentError> {
        let iface = discovery::pick_interface(cfg.interface.as_deref())?;
        let udp = discovery::open_socket(cfg.port, &iface)?;
        let udp = UdpSocket::from_std(udp).map_err(|source| AgentError::Listen {
            what: format!("udp port {}", cfg.port),
            source,
        })?;
        let tcp = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], cfg.port)))
            .await
            .map_err(|source| AgentError::Listen {
                what: format!("tcp port {}", cfg.port),
                source,
            })?;
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(parent) = cfg.socket.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let control = UnixListener::bind(&cfg.socket).map_err(|source| AgentError::Listen {
            what: format!("control socket {}", cfg.socket.display()),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666));
        }
        // Jobs get cgroups of their own below the agent's; a quota needs
        // them, without one they are only a convenience.
        let cgroup = match cgroup::setup(
            &format!("{}-{}", cfg.cluster, cfg.name),
            cfg.cpu_quota,
            load::cpu_count(),
        ) {
            Ok(cg) => Some(cg),
            Err(e) if cfg.cpu_quota < 100 => return Err(e.into()),
            Err(e) => {
                tracing::warn!(cause = %e, "jobs run without cgroups of their own");
                None
            }
        };
        let web = match cfg.web {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| AgentError::Listen {
                            what: format!("the web view's address {addr}"),
                            source,
                        })?,
                )
            }
            None => None,
        };
        let speed = cfg.speed.unwrap_or_else(load::calibrate);
        let me = NodeId {
            name: cfg.name.clone(),
            addr: SocketAddr::new(IpAddr::V4(iface.addr), cfg.port),
            started_ms: unix_millis(),
            bump: 0,
        };
        info!(name = %me.name, addr = %me.addr, iface = %iface.name, speed, cpu_quota = cfg.cpu_quota, cgroup = ?cgroup.as_ref().map(|c| c.dir.display().to_string()), "agent starting");
        Ok(Self {
            cfg,
            udp,
            tcp,
            control,
            me,
            iface,
            cgroup,
            speed,
            web,
        })
    }

    /// This agent's identity.
    pub fn identity(&self) -> &NodeId {
        &self.me
    }

    /// Runs until `shutdown` resolves, then leaves the cluster, ends every
    /// connection and waits for them.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let Agent {
            cfg,
            udp,
            tcp,
            control,
            me,
            iface,
            cgroup,
            speed,
            web,
        } = self;
        let keys = Keys::new(cfg.key.clone(), &cfg.cluster, cfg.key_file.clone());
        let share_probe = Arc::new(crate::share::Probe::start(cfg.share.clone()).map_err(
            |source| AgentError::Listen {
                what: "the shared tree's probe thread".into(),
                source,
            },
        )?);
        let state = State::new(cfg.cluster.clone(), me.clone(), cfg.knobs);
        state.set_quota(cfg.cpu_quota);
        state.raise_speed(speed);
        let (admin_tx, admin_rx) = mpsc::channel(8);
        let (down, _) = broadcast::channel::<NodeId>(64);
        let mut exec_ctx = ExecContext::new(
            me.name.clone(),
            me.addr,
            keys.clone(),
            cgroup.clone(),
            state.clone(),
        );
        exec_ctx.admin = Some(admin_tx);
        exec_ctx.allow_root_jobs = cfg.allow_root_jobs;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let load = LocalLoad {
            cpu_features: crate::cpu::Features::from_cpuinfo(&cpuinfo),
            exec: exec_ctx.clone(),
            share: share_probe,
        };

        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        // Whether CRIU works with this kernel: asked once, off the async threads.
        let criu = state.clone();
        tasks.spawn(async move {
            let r = tokio::task::spawn_blocking(crate::job::criu::probe)
                .await
                .unwrap_or_else(|e| Err(format!("the CRIU probe failed: {e}")));
            match &r {
                Ok(()) => info!("criu works here: jobs can move in and out"),
                Err(why) => info!(%why, "jobs cannot move to or from this node"),
            }
            criu.set_criu(r);
        });
        tasks.spawn(exec_listener::serve(tcp, exec_ctx, stop.clone()));
        let web = web.map(|listener| {
            let gate = web::gate(&listener, iface.addr);
            (listener, gate)
        });
        let (power, power_rx) = tokio::sync::mpsc::channel(1);
        tasks.spawn(admin::power(power_rx, stop.clone()));
        let ctl = Controller {
            power,
            web: web.as_ref().map(|(_, gate)| gate.clone()),
            state: state.clone(),
            load: load.clone(),
            down: down.clone(),
            keys: keys.clone(),
            counter: Arc::new(AtomicU64::new(0)),
            boot_server: cfg
                .checkin
                .as_deref()
                .and_then(|url| admission::BootServer::from_checkin(url, keys.clone())),
        };
        tasks.spawn(control_server::serve(control, ctl.clone(), stop.clone()));
        tasks.spawn(admin::serve(admin_rx, ctl.clone(), stop.clone()));
        if let Some((listener, gate)) = web {
            info!(url = %gate.base(), "serving the web view");
            // On a head's console: where to point a browser.
            eprintln!(
                "omnode: web view at {} (run omctl web for a login link)",
                gate.base()
            );
            tasks.spawn(web::serve(
                listener,
                gate,
                ctl.clone(),
                cfg.metrics_open,
                stop.clone(),
            ));
        }
        tasks.spawn(balancer::run(
            balancer::Balancer::new(load.clone(), cfg.speed.is_none()),
            stop.clone(),
        ));
        // A node that leaves sends its guests elsewhere first; the gossip
        // loop keeps running meanwhile.
        let shutdown = async move {
            shutdown.await;
            let expel = ctl.knob_here(crate::balance::KnobAction::Expel);
            if let Ok(Ok(lines)) = tokio::time::timeout(EXPEL_ON_LEAVE, expel).await {
                for line in lines {
                    info!(%line, "leaving");
                }
            }
        };

        let on_join = cfg.checkin.clone().map(|url| {
            let (tx, rx) = oneshot::channel();
            tasks.spawn(crate::checkin::run(url, cfg.name.clone(), rx, stop.clone()));
            tx
        });
        let mut gossip = Gossip::new(&cfg, udp, me.clone(), state, load, down, on_join);
        gossip.run(shutdown).await;

        info!(name = %me.name, iface = %iface.name, "agent leaving");
        gossip.leave();
        stop.cancel();
        while tasks.join_next().await.is_some() {}
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(cg) = &cgroup {
            cg.remove();
        }
        Ok(())
    }
}
