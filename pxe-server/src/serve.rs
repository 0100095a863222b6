//! `omboot serve`: open the lease store, bind every socket, and run DHCP (or
//! ProxyDHCP), TFTP, HTTP, the head's announcement and its NFS server (the
//! shared tree and the system layer) until the shutdown future resolves.
//!
//! Binding happens here, before anything is served, so a port that cannot be
//! had stops the whole server at once with an error naming it; the servers
//! themselves take bound sockets (Architecture Invariant).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use keystore::{KeyFile, KeyStore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

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
    let store = match config.mode {
        Mode::Dhcp => Some(LeaseStore::open(&config.state)?),
        Mode::Proxy => None,
    };
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
    let table = store.as_ref().map(|s| s.table()).unwrap_or_default();
    let engine = Engine::new(
        EngineConfig {
            mode: config.mode,
            interfaces: config.interfaces.clone(),
            dhcp: config.dhcp.clone(),
            available: Available::scan(config.image.root()),
            http_port: config.http_port,
            dhcp_port: config.dhcp_port,
        },
        table,
    );
    let nodes = Arc::new(NodeRegistry::new());
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
    let mut announcers = Vec::new();
    for iface in &config.interfaces {
        let what = contracts::announce::Announcement {
            cluster: config.cluster.clone(),
            server: iface.addr,
            http_port: config.http_port,
            share: config.share.as_ref().map(|s| s.for_nodes(iface.addr)),
        };
        let a =
            crate::announce::Announcer::bind(&iface.name, iface.addr, &what).map_err(|source| {
                ServeError::Bind {
                    what: "announce",
                    addr: SocketAddr::from((iface.addr, 0)),
                    source,
                }
            })?;
        announcers.push(a);
    }
    let leases: Arc<dyn LeaseSource> = match &store {
        Some(s) => Arc::new(s.view()),
        None => Arc::new(Vec::<crate::nodes::LeaseView>::new()),
    };
    let http_state = HttpState {
        image: Arc::new(config.image.clone()),
        registry: nodes.clone(),
        leases,
        cluster_id: config.cluster.clone(),
        keys: Arc::new(match &config.key {
            Some(k) => KeyStore::new(k.clone(), config.key_file.clone().map(KeyFile::new)),
            None => {
                let (key, path, _) = crate::config::state_key(&config.state)?;
                KeyStore::new(key, Some(KeyFile::new(path)))
            }
        }),
        admission: Arc::new(crate::admission::Store::open(&config.state, config.admit)?),
        share: config.share.clone(),
    };
    tracing::info!(
        mode = %config.mode,
        interfaces = ?config.interfaces.iter().map(|i| format!("{}={}", i.name, i.addr)).collect::<Vec<_>>(),
        images = %config.images.display(),
        state = %config.state.display(),
        admit = %config.admit,
        "omboot serving"
    );
    let names = config.interfaces.iter().map(|i| i.name.clone()).collect();

    // One token stops every server; any server failing stops the others.
    let stop = CancellationToken::new();
    let mut servers: JoinSet<Result<(), ServeError>> = JoinSet::new();
    for socket in tftp_sockets {
        let (root, nodes, stop) = (config.image.root().to_owned(), nodes.clone(), stop.clone());
        servers.spawn(async move {
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
    for listener in http_listeners {
        let (state, stop) = (http_state.clone(), stop.clone());
        servers.spawn(async move {
            crate::http::serve(listener, state, stop.cancelled_owned())
                .await
                .map_err(ServeError::Http)
        });
    }
    {
        let stop = stop.clone();
        servers.spawn(async move {
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
    {
        let stop = stop.clone();
        servers.spawn(async move {
            crate::announce::run(announcers, stop).await;
            Ok(())
        });
    }
    let exports = file_exports(&config);
    if !exports.is_empty() {
        // One address when serving on one interface; the exports admit
        // only the boot networks either way.
        let bind = match config.interfaces.as_slice() {
            [one] => Some(one.addr),
            _ => None,
        };
        let clients = config.interfaces.iter().map(|i| i.net).collect();
        let (state, stop) = (config.state.clone(), stop.clone());
        servers.spawn(async move {
            crate::share::serve(exports, bind, clients, &state, stop)
                .await
                .map_err(ServeError::from)
        });
    }
    tokio::pin!(shutdown);
    let mut result = Ok(());
    tokio::select! {
        _ = &mut shutdown => {}
        Some(r) = servers.join_next() => {
            result = r.unwrap_or_else(|e| Err(ServeError::Join(e)));
        }
    }
    stop.cancel();
    while let Some(r) = servers.join_next().await {
        if let Err(e) = r.unwrap_or_else(|e| Err(ServeError::Join(e))) {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    tracing::info!("omboot stopped");
    result
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
