//! `omboot serve`: open the lease store, bind every socket, and run DHCP (or
//! ProxyDHCP), TFTP, HTTP, the head's announcement and its NFS server (the
//! shared tree and the system layer) until the shutdown future resolves.
//!
//! Binding happens here, before anything is served, so a port that cannot be
//! had stops the whole server at once with an error naming it; the servers
//! themselves take bound sockets (Architecture Invariant).
//!
//! [`run`] reads as its steps: `Bound::bind` opens the lease store and binds
//! every socket, `dhcp_engine` and `http_state` load what the servers decide
//! by (the boot files, the leases, the cluster keys, the admission book),
//! and `Servers::spawn` starts one task per server, all owned by one
//! [`JoinSet`] and stopped by one [`CancellationToken`];
//! `Servers::run_until` waits for the shutdown future or the first server to
//! stop, then stops and awaits the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use keystore::{KeyFile, KeyStore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::announce::Announcer;
use crate::boot::Available;
use crate::config::{Mode, ServeConfig};
use crate::dhcp::engine::{Engine, EngineConfig, PXE_PORT};
use crate::dhcp::{self, DhcpError, DhcpSocket};
use crate::http::HttpState;
use crate::leases::{LeaseError, LeaseStore};
use crate::nodes::{LeaseSource, NodeRegistry};
use crate::share::ShareConfig;
use crate::tftp::TftpLimits;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The lease store could not be opened.
    #[error(transparent)]
    Leases(#[from] LeaseError),
    /// DHCP failed (binding or committing leases).
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    /// A TFTP or HTTP socket could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// "tftp", "http" or "announce".
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A socket could not be registered with the runtime.
    #[error("cannot register socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The TFTP server failed.
    #[error(transparent)]
    Tftp(#[from] crate::tftp::TftpError),
    /// A server task panicked.
    #[error("server task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Http(std::io::Error),
    /// The shared tree's server could not start.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
    /// The cluster key could not be made or read.
    #[error(transparent)]
    Key(#[from] crate::config::ConfigError),
    /// The admission book could not be opened.
    #[error(transparent)]
    Admission(#[from] crate::admission::StoreError),
}

/// Run everything until `shutdown` resolves.
pub async fn run(
    config: ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let bound = Bound::bind(&config).await?;
    let engine = dhcp_engine(&config, bound.store.as_ref());
    let nodes = Arc::new(NodeRegistry::new());
    let http_state = http_state(&config, bound.store.as_ref(), &nodes)?;
    tracing::info!(
        mode = %config.mode,
        interfaces = ?config.interfaces.iter().map(|i| format!("{}={}", i.name, i.addr)).collect::<Vec<_>>(),
        images = %config.images.display(),
        state = %config.state.display(),
        admit = %config.admit,
        "omboot serving"
    );
    let servers = Servers::spawn(&config, bound, engine, nodes, http_state);
    let result = servers.run_until(shutdown).await;
    tracing::info!("omboot stopped");
    result
}

/// What `omboot serve` holds before it serves anything: the lease store (in
/// DHCP mode) and every socket on every interface.
struct Bound {
    store: Option<LeaseStore>,
    dhcp: Vec<DhcpSocket>,
    tftp: Vec<tokio::net::UdpSocket>,
    http: Vec<tokio::net::TcpListener>,
    announcers: Vec<Announcer>,
}

impl Bound {
    /// Opens the lease store, then binds the DHCP, TFTP, HTTP and
    /// announcement sockets; the first that fails is the error.
    async fn bind(config: &ServeConfig) -> Result<Self, ServeError> {
        let store = match config.mode {
            Mode::Dhcp => Some(LeaseStore::open(&config.state)?),
            Mode::Proxy => None,
        };
        let dhcp = bind_dhcp(config)?;
        let (tftp, http) = bind_tftp_http(config).await?;
        let announcers = bind_announcers(config)?;
        Ok(Bound {
            store,
            dhcp,
            tftp,
            http,
            announcers,
        })
    }
}

/// The DHCP port on every interface, and in ProxyDHCP mode the PXE port
/// (4011) too.
fn bind_dhcp(config: &ServeConfig) -> Result<Vec<DhcpSocket>, ServeError> {
    let mut sockets = Vec::new();
    for (i, iface) in config.interfaces.iter().enumerate() {
        let mut ports = vec![config.dhcp_port];
        if config.mode == Mode::Proxy {
            ports.push(PXE_PORT);
        }
        for port in ports {
            let s = dhcp::bind(&iface.name, port)?;
            sockets.push(DhcpSocket {
                socket: tokio::net::UdpSocket::from_std(s)?,
                iface: i,
                local_port: port,
            });
        }
    }
    Ok(sockets)
}

/// The TFTP socket and the HTTP listener on every interface's address.
async fn bind_tftp_http(
    config: &ServeConfig,
) -> Result<(Vec<tokio::net::UdpSocket>, Vec<tokio::net::TcpListener>), ServeError> {
    let mut tftp_sockets = Vec::new();
    let mut http_listeners = Vec::new();
    for iface in &config.interfaces {
        let addr = SocketAddr::from((iface.addr, config.tftp_port));
        let s = std::net::UdpSocket::bind(addr).map_err(|source| ServeError::Bind {
            what: "tftp",
            addr,
            source,
        })?;
        s.set_nonblocking(true)?;
        tftp_sockets.push(tokio::net::UdpSocket::from_std(s)?);
        let addr = SocketAddr::from((iface.addr, config.http_port));
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                what: "http",
                addr,
                source,
            })?;
        http_listeners.push(l);
    }
    Ok((tftp_sockets, http_listeners))
}

/// The head's announcement on every interface: the cluster, where the head
/// is, and the shared tree as the nodes on that interface mount it.
fn bind_announcers(config: &ServeConfig) -> Result<Vec<Announcer>, ServeError> {
    let mut announcers = Vec::new();
    for iface in &config.interfaces {
        let what = contracts::announce::Announcement {
            cluster: config.cluster.clone(),
            server: iface.addr,
            http_port: config.http_port,
            share: config.share.as_ref().map(|s| s.for_nodes(iface.addr)),
        };
        let a =
            Announcer::bind(&iface.name, iface.addr, &what).map_err(|source| ServeError::Bind {
                what: "announce",
                addr: SocketAddr::from((iface.addr, 0)),
                source,
            })?;
        announcers.push(a);
    }
    Ok(announcers)
}

/// What the HTTP server shares with the rest: the image, the node registry,
/// the leases (none in ProxyDHCP mode), the cluster keys (given, or the
/// state directory's, made on first use) and the admission book.
fn http_state(
    config: &ServeConfig,
    store: Option<&LeaseStore>,
    nodes: &Arc<NodeRegistry>,
) -> Result<HttpState, ServeError> {
    let leases: Arc<dyn LeaseSource> = match store {
        Some(s) => Arc::new(s.view()),
        None => Arc::new(Vec::<crate::nodes::LeaseView>::new()),
    };
    Ok(HttpState {
        image: Arc::new(config.image.clone()),
        registry: nodes.clone(),
        leases,
        cluster_id: config.cluster.clone(),
        keys: Arc::new(head_keys(config)?),
        admission: Arc::new(crate::admission::Store::open(&config.state, config.admit)?),
        share: config.share.clone(),
    })
}

/// The cluster key read from `--key-file`, or the state directory's (made
/// the first time).
fn head_keys(config: &ServeConfig) -> Result<KeyStore, ServeError> {
    Ok(match &config.key {
        Some(k) => KeyStore::new(k.clone(), config.key_file.clone().map(KeyFile::new)),
        None => {
            let (key, path, _) = crate::config::state_key(&config.state)?;
            KeyStore::new(key, Some(KeyFile::new(path)))
        }
    })
}

/// The DHCP engine: the settings it decides by, the boot files the image
/// has, and the leases already granted (none in ProxyDHCP mode).
fn dhcp_engine(config: &ServeConfig, store: Option<&LeaseStore>) -> Engine {
    let table = store.map(|s| s.table()).unwrap_or_default();
    Engine::new(
        EngineConfig {
            mode: config.mode,
            interfaces: config.interfaces.clone(),
            dhcp: config.dhcp.clone(),
            available: Available::scan(config.image.root()),
            http_port: config.http_port,
            dhcp_port: config.dhcp_port,
        },
        table,
    )
}

/// The server tasks `omboot serve` starts and owns, and the one token that
/// stops them all: any server failing stops the others.
struct Servers {
    tasks: JoinSet<Result<(), ServeError>>,
    stop: CancellationToken,
}

impl Servers {
    /// Starts TFTP and HTTP on every interface, DHCP, the announcement and,
    /// when there is anything to export, the file server.
    fn spawn(
        config: &ServeConfig,
        bound: Bound,
        engine: Engine,
        nodes: Arc<NodeRegistry>,
        http_state: HttpState,
    ) -> Servers {
        let mut servers = Servers {
            tasks: JoinSet::new(),
            stop: CancellationToken::new(),
        };
        servers.spawn_tftp(bound.tftp, config, &nodes);
        servers.spawn_http(bound.http, &http_state);
        servers.spawn_dhcp(config, bound.dhcp, engine, bound.store, nodes);
        servers.spawn_announce(bound.announcers);
        servers.spawn_share(config);
        servers
    }

    fn spawn_tftp(
        &mut self,
        sockets: Vec<tokio::net::UdpSocket>,
        config: &ServeConfig,
        nodes: &Arc<NodeRegistry>,
    ) {
        for socket in sockets {
            let (root, nodes, stop) = (
                config.image.root().to_owned(),
                nodes.clone(),
                self.stop.clone(),
            );
            self.tasks.spawn(async move {
                crate::tftp::serve(
                    socket,
                    root,
                    TftpLimits::default(),
                    nodes,
                    stop.cancelled_owned(),
                )
                .await
                .map_err(ServeError::from)
            });
        }
    }

    fn spawn_http(&mut self, listeners: Vec<tokio::net::TcpListener>, http_state: &HttpState) {
        for listener in listeners {
            let (state, stop) = (http_state.clone(), self.stop.clone());
            self.tasks.spawn(async move {
                crate::http::serve(listener, state, stop.cancelled_owned())
                    .await
                    .map_err(ServeError::Http)
            });
        }
    }

    fn spawn_dhcp(
        &mut self,
        config: &ServeConfig,
        sockets: Vec<DhcpSocket>,
        engine: Engine,
        store: Option<LeaseStore>,
        nodes: Arc<NodeRegistry>,
    ) {
        let names = config.interfaces.iter().map(|i| i.name.clone()).collect();
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            dhcp::run(
                sockets,
                engine,
                store,
                Some(nodes),
                names,
                stop.cancelled_owned(),
            )
            .await
            .map_err(ServeError::from)
        });
    }

    fn spawn_announce(&mut self, announcers: Vec<Announcer>) {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            crate::announce::run(announcers, stop).await;
            Ok(())
        });
    }

    /// The file server, for the shared tree and the system layer, when
    /// there is either.
    fn spawn_share(&mut self, config: &ServeConfig) {
        let exports = file_exports(config);
        if exports.is_empty() {
            return;
        }
        // One address when serving on one interface; the exports admit
        // only the boot networks either way.
        let bind = match config.interfaces.as_slice() {
            [one] => Some(one.addr),
            _ => None,
        };
        let clients = config.interfaces.iter().map(|i| i.net).collect();
        let (state, stop) = (config.state.clone(), self.stop.clone());
        self.tasks.spawn(async move {
            crate::share::serve(exports, bind, clients, &state, stop)
                .await
                .map_err(ServeError::from)
        });
    }

    /// Waits for `shutdown` or the first server to stop; then stops the
    /// others and awaits them. The result is the first error.
    async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::pin!(shutdown);
        let mut result = Ok(());
        tokio::select! {
            _ = &mut shutdown => {}
            Some(r) = self.tasks.join_next() => {
                result = r.unwrap_or_else(|e| Err(ServeError::Join(e)));
            }
        }
        self.stop.cancel();
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r.unwrap_or_else(|e| Err(ServeError::Join(e))) {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result
    }
}

/// What the head's file server exports: the shared tree (`--share DIR`) and
/// the image's system layer, each when there is one.
fn file_exports(config: &ServeConfig) -> Vec<crate::share::Export> {
    let tree = match &config.share {
        Some(ShareConfig::Serve(dir)) => Some(crate::share::Export::tree(dir.clone())),
        _ => None,
    };
    tree.into_iter()
        .chain(crate::share::Export::system_layer(config.image.root()))
        .collect()
}
