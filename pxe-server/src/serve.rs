//! `omboot serve`: open the lease store, bind every socket, and run DHCP (or
//! ProxyDHCP), TFTP and HTTP until the shutdown future resolves.
//!
//! Binding happens here, before anything is served, so a port that cannot be
//! had stops the whole server at once with an error naming it; the servers
//! themselves take bound sockets (Architecture Invariant).

use std::future::Future;
use std::sync::Arc;

use crate::boot::Available;
use crate::config::{Mode, ServeConfig};
use crate::dhcp::engine::{Engine, EngineConfig, PXE_PORT};
use crate::dhcp::{self, DhcpError, DhcpSocket};
use crate::leases::{LeaseError, LeaseStore};
use crate::nodes::NodeRegistry;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The lease store could not be opened.
    #[error(transparent)]
    Leases(#[from] LeaseError),
    /// DHCP failed (binding or committing leases).
    #[error(transparent)]
    Dhcp(#[from] DhcpError),
    /// A socket could not be registered with the runtime.
    #[error("cannot register socket: {0}")]
    Socket(#[from] std::io::Error),
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
            available: Available::scan(&config.images),
            http_port: config.http_port,
            dhcp_port: config.dhcp_port,
        },
        table,
    );
    let nodes = Arc::new(NodeRegistry::new());
    tracing::info!(
        mode = %config.mode,
        interfaces = ?config.interfaces.iter().map(|i| format!("{}={}", i.name, i.addr)).collect::<Vec<_>>(),
        images = %config.images.display(),
        state = %config.state.display(),
        "omboot serving"
    );
    let names = config.interfaces.iter().map(|i| i.name.clone()).collect();
    dhcp::run(sockets, engine, store, Some(nodes), names, shutdown).await?;
    tracing::info!("omboot stopped");
    Ok(())
}
