//! The head announces itself on each LAN it serves, so machines booted from
//! the ISO or a USB stick (which have no `om.server=` on their command line)
//! find it and ask it for admission like netbooted nodes.
//!
//! One UDP socket per interface, bound to the server's address there (so the
//! kernel sends the multicast out of that interface), TTL 1; every
//! [`contracts::announce::INTERVAL_S`] seconds one
//! [`contracts::announce::Announcement`] to the group. A send that fails (a
//! cable pulled) is logged once and retried at the next tick: losing the
//! announcement never stops the boot server.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use contracts::announce::{Announcement, GROUP, INTERVAL_S, PORT};
use tokio_util::sync::CancellationToken;

/// One interface's socket and what it says there.
pub struct Announcer {
    socket: tokio::net::UdpSocket,
    datagram: Vec<u8>,
    name: String,
}

impl Announcer {
    /// Binds the socket for interface `name` at `addr`, which will announce
    /// `what`.
    pub fn bind(name: &str, addr: Ipv4Addr, what: &Announcement) -> std::io::Result<Self> {
        let socket = std::net::UdpSocket::bind(SocketAddr::from((addr, 0)))?;
        socket.set_multicast_ttl_v4(1)?;
        socket.set_nonblocking(true)?;
        Ok(Announcer {
            socket: tokio::net::UdpSocket::from_std(socket)?,
            datagram: what.encode(),
            name: name.to_string(),
        })
    }
}

/// Announces on every interface until `stop` is cancelled.
pub async fn run(announcers: Vec<Announcer>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(INTERVAL_S));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = vec![false; announcers.len()];
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (a, failing) in announcers.iter().zip(failing.iter_mut()) {
            match a.socket.send_to(&a.datagram, (GROUP, PORT)).await {
                Ok(_) if *failing => {
                    tracing::info!(iface = %a.name, "announcing the head again");
                    *failing = false;
                }
                Ok(_) => {}
                Err(e) if !*failing => {
                    tracing::warn!(iface = %a.name, error = %e, "cannot announce the head; retrying");
                    *failing = true;
                }
                Err(_) => {}
            }
        }
    }
}
