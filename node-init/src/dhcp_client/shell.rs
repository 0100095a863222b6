//! The socket shell around the [`Client`]: sends its packets and feeds it
//! what arrives and the passing time, turning its actions into
//! [`LeaseEvent`]s for the caller.
//!
//! Before the interface has an address it uses an `AF_PACKET` socket with
//! hand-built IPv4/UDP headers ([`crate::packet`]): the replies may be
//! addressed to an IP the interface does not have yet. Once bound it renews
//! over an ordinary UDP socket tied to the interface.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::client::{Action, Client, Destination, Input, Notice, CLIENT_PORT, SERVER_PORT};
use crate::address::Lease;
use crate::netif;
use crate::packet::{self, PacketSocket};

/// A failure of the socket shell.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    /// The raw packet socket could not be opened or used.
    #[error("packet socket on {iface}: {source}")]
    Packet {
        /// The interface.
        iface: String,
        /// The error.
        source: std::io::Error,
    },
    /// The UDP socket for renewals could not be opened or used.
    #[error("udp socket on {iface}: {source}")]
    Udp {
        /// The interface.
        iface: String,
        /// The error.
        source: std::io::Error,
    },
    /// The interface has no index or hardware address.
    #[error("interface {iface}: {source}")]
    Interface {
        /// The interface.
        iface: String,
        /// The error.
        source: std::io::Error,
    },
}

/// What the shell reports to its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// A new lease: the caller configures the interface before returning.
    Bound(Lease),
    /// The lease was extended.
    Renewed(Lease),
    /// The lease is gone: the caller removes the address.
    Lost(Lease),
    /// Worth a console line.
    Notice(Notice),
}

/// Drives a [`Client`] over real sockets for one interface.
pub struct Shell {
    iface: String,
    ifindex: u32,
    client: Client,
    packet: Option<PacketSocket>,
    udp: Option<UdpSocket>,
}

impl Shell {
    /// A shell for `iface` (which must exist and be up).
    pub fn new(iface: &str) -> Result<Self, DhcpError> {
        let ifindex = nix::net::if_::if_nametoindex(iface).map_err(|e| DhcpError::Interface {
            iface: iface.to_string(),
            source: e.into(),
        })?;
        let mac = netif::mac_address(iface).map_err(|source| DhcpError::Interface {
            iface: iface.to_string(),
            source,
        })?;
        Ok(Shell {
            iface: iface.to_string(),
            ifindex,
            client: Client::new(mac, rand::random(), Instant::now()),
            packet: None,
            udp: None,
        })
    }

    /// The client's state name (for logs).
    pub fn state_name(&self) -> &'static str {
        self.client.state_name()
    }

    /// Runs the client until `on_event` breaks. Socket errors are returned;
    /// the caller decides whether to retry.
    pub fn run(
        &mut self,
        mut on_event: impl FnMut(&LeaseEvent) -> ControlFlow<()>,
    ) -> Result<(), DhcpError> {
        let mut input_buf = vec![0u8; 2048];
        let mut actions = self.client.handle(Instant::now(), Input::Start);
        loop {
            for action in std::mem::take(&mut actions) {
                let event = match action {
                    Action::Send { payload, to, from } => {
                        self.send(&payload, to, from)?;
                        continue;
                    }
                    Action::Configure(l) => LeaseEvent::Bound(l),
                    Action::Renewed(l) => LeaseEvent::Renewed(l),
                    Action::Deconfigure(l) => LeaseEvent::Lost(l),
                    Action::Notice(n) => LeaseEvent::Notice(n),
                };
                tracing::debug!(iface = %self.iface, ?event, "dhcp");
                if on_event(&event).is_break() {
                    return Ok(());
                }
            }
            let now = Instant::now();
            let wait = self
                .client
                .deadline()
                .map(|d| d.saturating_duration_since(now))
                .unwrap_or(Duration::from_secs(3600));
            if wait.is_zero() {
                actions = self.client.handle(now, Input::Timer);
                continue;
            }
            match self.recv(&mut input_buf, wait)? {
                Some(len) => {
                    actions = self
                        .client
                        .handle(Instant::now(), Input::Packet(&input_buf[..len]));
                }
                None => actions = self.client.handle(Instant::now(), Input::Timer),
            }
        }
    }

    fn packet_socket(&mut self) -> Result<&PacketSocket, DhcpError> {
        if self.packet.is_none() {
            self.udp = None;
            self.packet =
                Some(
                    PacketSocket::open(self.ifindex).map_err(|source| DhcpError::Packet {
                        iface: self.iface.clone(),
                        source,
                    })?,
                );
        }
        Ok(self.packet.as_ref().expect("opened above"))
    }

    fn udp_socket(&mut self) -> Result<&UdpSocket, DhcpError> {
        if self.udp.is_none() {
            // Holding the packet socket while bound would queue every IP
            // packet on the interface for nothing.
            self.packet = None;
            self.udp = Some(udp_socket(&self.iface).map_err(|source| DhcpError::Udp {
                iface: self.iface.clone(),
                source,
            })?);
        }
        Ok(self.udp.as_ref().expect("opened above"))
    }

    fn send(
        &mut self,
        payload: &[u8],
        to: Destination,
        from: Option<Ipv4Addr>,
    ) -> Result<(), DhcpError> {
        let dst = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast(ip) => ip,
        };
        if from.is_some() {
            let iface = self.iface.clone();
            let sock = self.udp_socket()?;
            sock.send_to(payload, SocketAddrV4::new(dst, SERVER_PORT))
                .map_err(|source| DhcpError::Udp { iface, source })?;
        } else {
            let iface = self.iface.clone();
            let frame = packet::ipv4_udp(
                Ipv4Addr::UNSPECIFIED,
                CLIENT_PORT,
                dst,
                SERVER_PORT,
                payload,
            );
            self.packet_socket()?
                .send_broadcast(&frame)
                .map_err(|source| DhcpError::Packet { iface, source })?;
        }
        Ok(())
    }

    /// Waits up to `wait` for a DHCP payload; `None` on timeout.
    fn recv(&mut self, buf: &mut [u8], wait: Duration) -> Result<Option<usize>, DhcpError> {
        let deadline = Instant::now() + wait;
        let iface = self.iface.clone();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            if self.client.address().is_some() {
                let sock = self.udp_socket()?;
                sock.set_read_timeout(Some(left))
                    .map_err(|source| DhcpError::Udp {
                        iface: iface.clone(),
                        source,
                    })?;
                match sock.recv_from(buf) {
                    Ok((n, _)) => return Ok(Some(n)),
                    Err(e) if is_timeout(&e) => return Ok(None),
                    Err(source) => return Err(DhcpError::Udp { iface, source }),
                }
            } else {
                let sock = self.packet_socket()?;
                match sock.recv(buf, left) {
                    Ok(Some(n)) => {
                        // Only UDP to the client port; move the payload to the front.
                        if let Some((off, len)) = packet::parse_ipv4_udp(&buf[..n], CLIENT_PORT)
                            .map(|u| (u.offset, u.len))
                        {
                            buf.copy_within(off..off + len, 0);
                            return Ok(Some(len));
                        }
                    }
                    Ok(None) => return Ok(None),
                    Err(source) => return Err(DhcpError::Packet { iface, source }),
                }
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A UDP socket on port 68 tied to `iface`, allowed to broadcast.
fn udp_socket(iface: &str) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
    socket::setsockopt(&fd, sockopt::BindToDevice, &std::ffi::OsString::from(iface))?;
    socket::bind(fd.as_raw_fd(), &SockaddrIn::new(0, 0, 0, 0, CLIENT_PORT))?;
    // SAFETY: `fd` is a freshly created, owned UDP socket; ownership moves.
    Ok(unsafe { UdpSocket::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) })
}
