//! DHCP and ProxyDHCP: the pure protocol core and the socket shell around it.
//!
//! - [`packet`]: the DHCPv4 wire format, every option kept raw.
//! - [`engine`]: the state machine (request + leases + time → reply + records).
//! - this file: binding the per-interface sockets ([`bind`]) and [`run`], the
//!   shell that feeds received packets to the engine in batches, commits the
//!   batch's lease records with one fsync (group commit) and only then sends
//!   its replies, so no client ever holds an ACK the disk does not.

pub mod engine;
pub mod packet;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use contracts::clock::unix_seconds;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use crate::leases::LeaseRecord;
use crate::leases::{LeaseError, LeaseStore};
use crate::nodes::NodeRegistry;
use engine::{Engine, Exchange, Incoming, Outcome};

/// Most packets handled (and committed) as one batch.
const MAX_BATCH: usize = 512;
/// Replies sent back to back before a 1 ms pause. A group commit releases
/// hundreds of ACKs at once; a relay agent (or one load generator) receives
/// them all on one socket, whose buffer holds about 170 packets.
const BURST: usize = 64;

/// Spaces out reply bursts (see [`BURST`]).
#[derive(Default)]
struct Pacer {
    sent: usize,
}

impl Pacer {
    async fn tick(&mut self) {
        self.sent += 1;
        if self.sent.is_multiple_of(BURST) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

/// A DHCP shell error.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// A socket could not be created, configured or bound.
    #[error("cannot bind UDP port {port} on {iface}: {source}")]
    Bind {
        /// Interface name.
        iface: String,
        /// Port.
        port: u16,
        /// Why.
        source: std::io::Error,
    },
    /// The lease log could not be written: the server stops rather than
    /// hand out leases it cannot keep.
    #[error(transparent)]
    Leases(#[from] LeaseError),
    /// The commit task died.
    #[error("lease commit task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Bind a UDP socket on `0.0.0.0:port` that sees only `iface`'s traffic and
/// may broadcast (SO_BINDTODEVICE, SO_BROADCAST, SO_REUSEADDR), so several
/// interfaces can each have their own port-67 socket.
pub fn bind(iface: &str, port: u16) -> Result<std::net::UdpSocket, DhcpError> {
    let err = |source| DhcpError::Bind {
        iface: iface.to_owned(),
        port,
        source,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    s.set_reuse_address(true).map_err(err)?;
    s.set_broadcast(true).map_err(err)?;
    s.bind_device(Some(iface.as_bytes())).map_err(err)?;
    // Bursts of thousands of DISCOVERs must queue, not drop; as root, past
    // net.core.rmem_max.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &(4 << 20));
    let _ = s.set_send_buffer_size(4 << 20);
    s.set_nonblocking(true).map_err(err)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(err)?;
    Ok(s.into())
}

/// A bound socket and what it is for.
#[derive(Debug)]
pub struct DhcpSocket {
    /// The socket (already bound).
    pub socket: UdpSocket,
    /// Index of its interface in the config.
    pub iface: usize,
    /// The local port (DHCP port or 4011).
    pub local_port: u16,
}

fn log_exchange(ex: &Exchange, iface: &str) {
    let ip = ex.ip.map(|i| i.to_string());
    let arch = ex.arch.map(crate::nodes::arch_name);
    tracing::info!(
        mac = %ex.mac,
        ip = ip.as_deref().unwrap_or("-"),
        r#type = %ex.kind,
        arch = arch.unwrap_or("-"),
        file = ex.file.as_deref().unwrap_or("-"),
        iface,
        note = ex.note.as_deref().unwrap_or(""),
        "dhcp"
    );
}

struct Received {
    bytes: Vec<u8>,
    sock: usize,
    from: SocketAddrV4,
}

/// Serve DHCP on `sockets` until `shutdown` resolves.
///
/// `store` is `None` in proxy mode (no leases). `nodes`, when given, gets a
/// DHCP-stage record for every boot client (one that sent an architecture or
/// got a boot file).
pub async fn run(
    sockets: Vec<DhcpSocket>,
    mut engine: Engine,
    mut store: Option<LeaseStore>,
    nodes: Option<Arc<NodeRegistry>>,
    iface_names: Vec<String>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DhcpError> {
    let meta: Vec<(usize, u16)> = sockets.iter().map(|s| (s.iface, s.local_port)).collect();
    let socks: Vec<Arc<UdpSocket>> = sockets.into_iter().map(|s| Arc::new(s.socket)).collect();
    for (i, (iface, port)) in meta.iter().enumerate() {
        let name = iface_names.get(*iface).map(String::as_str).unwrap_or("?");
        tracing::info!(iface = name, port, local = ?socks[i].local_addr().ok(), "dhcp listening");
    }
    let (tx, mut rx) = mpsc::channel::<Received>(8192);
    let mut readers = tokio::task::JoinSet::new();
    for (i, s) in socks.iter().enumerate() {
        let s = s.clone();
        let tx = tx.clone();
        readers.spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, from) = match s.recv_from(&mut buf).await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!(cause = %e, "dhcp recv");
                        continue;
                    }
                };
                let SocketAddr::V4(from) = from else { continue };
                let msg = Received {
                    bytes: buf[..n].to_vec(),
                    sock: i,
                    from,
                };
                if tx.send(msg).await.is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    // Replies that need no durable state (OFFER, NAK, INFORM's ACK) go out
    // at once; outcomes with lease records go to the committer, which writes
    // everything queued so far with one fsync and only then sends their
    // replies. The engine keeps deciding while a sync is in flight.
    let (commit_tx, commit_rx) = mpsc::unbounded_channel::<Vec<Pending>>();
    let committer = tokio::spawn(commit_loop(
        commit_rx,
        store.take(),
        socks.clone(),
        meta.clone(),
        iface_names.clone(),
        nodes.clone(),
    ));
    tokio::pin!(shutdown);
    let mut batch: Vec<Received> = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            _ = &mut shutdown => break,
            m = rx.recv() => match m { Some(m) => m, None => break },
        };
        batch.clear();
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let now = unix_seconds();
        let mut pending = Vec::new();
        let mut pacer = Pacer::default();
        for m in &batch {
            let (iface, local_port) = meta[m.sock];
            let o = engine.handle(
                Incoming {
                    bytes: &m.bytes,
                    iface,
                    src: m.from,
                    local_port,
                },
                now,
            );
            if o.persist.is_empty() {
                if o.reply.is_some() {
                    pacer.tick().await;
                }
                deliver(iface, o, &socks, &meta, &iface_names, nodes.as_deref()).await;
            } else {
                pending.push(Pending { iface, outcome: o });
            }
        }
        if !pending.is_empty() && commit_tx.send(pending).is_err() {
            // The committer stopped on a write error; its result says why.
            break;
        }
    }
    drop(commit_tx);
    let committed = committer.await?;
    readers.abort_all();
    while readers.join_next().await.is_some() {}
    committed
}

/// An outcome waiting for its lease records to be durable.
struct Pending {
    iface: usize,
    outcome: Outcome,
}

/// Log an exchange, record it in the node registry, send its reply.
async fn deliver(
    iface: usize,
    o: Outcome,
    socks: &[Arc<UdpSocket>],
    meta: &[(usize, u16)],
    iface_names: &[String],
    nodes: Option<&NodeRegistry>,
) {
    if let Some(ex) = &o.exchange {
        log_exchange(
            ex,
            iface_names.get(iface).map(String::as_str).unwrap_or("?"),
        );
        if let Some(n) = nodes {
            if ex.arch.is_some() || ex.file.is_some() {
                n.record_dhcp(ex.mac, ex.ip.map(Into::into), ex.arch, None);
            } else if let Some(lease) = o
                .persist
                .iter()
                .find(|l| l.mac == ex.mac && l.state == crate::leases::LeaseState::Active)
            {
                // Not a network boot (a machine booted from the ISO or a
                // USB stick), but a lease this head granted.
                n.record_lease(lease.mac, lease.ip.into());
            }
        }
    }
    if let Some(r) = o.reply {
        let Some(si) = meta
            .iter()
            .position(|&(i, p)| i == r.iface && p == r.local_port)
        else {
            return;
        };
        if let Err(e) = socks[si].send_to(&r.bytes, r.dest).await {
            tracing::warn!(dest = %r.dest, cause = %e, "dhcp send failed");
        }
    }
}

/// Group commit: take everything queued, write it with one fsync, then
/// deliver. Stops (and so stops the server) on a write error: a lease that
/// cannot be kept must not be ACKed.
async fn commit_loop(
    mut rx: mpsc::UnboundedReceiver<Vec<Pending>>,
    mut store: Option<LeaseStore>,
    socks: Vec<Arc<UdpSocket>>,
    meta: Vec<(usize, u16)>,
    iface_names: Vec<String>,
    nodes: Option<Arc<NodeRegistry>>,
) -> Result<(), DhcpError> {
    while let Some(mut group) = rx.recv().await {
        while let Ok(more) = rx.try_recv() {
            group.extend(more);
        }
        let records: Vec<LeaseRecord> = group
            .iter_mut()
            .flat_map(|p| std::mem::take(&mut p.outcome.persist))
            .collect();
        if let Some(s) = store.take() {
            let (s, res) = tokio::task::spawn_blocking(move || {
                let mut s = s;
                let r = s.commit(&records);
                (s, r)
            })
            .await?;
            store = Some(s);
            if let Err(e) = res {
                tracing::error!(cause = %e, "lease commit failed: stopping, no ACK sent for uncommitted leases");
                return Err(e.into());
            }
        }
        let mut pacer = Pacer::default();
        for p in group {
            if p.outcome.reply.is_some() {
                pacer.tick().await;
            }
            deliver(
                p.iface,
                p.outcome,
                &socks,
                &meta,
                &iface_names,
                nodes.as_deref(),
            )
            .await;
        }
    }
    Ok(())
}
