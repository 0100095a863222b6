//! The node's DHCPv4 client: a pure state machine ([`Client`]) and the socket
//! shell that drives it ([`Shell`]).
//!
//! The core follows RFC 2131's client states (INIT → SELECTING → REQUESTING →
//! BOUND → RENEWING → REBINDING). It is fed the current time and an [`Input`]
//! (start, timer, or a received DHCP payload) and answers with [`Action`]s:
//! packets to send (and to whom), a lease to configure, a lease lost, or a
//! notice worth a console line. It never touches a socket or a clock, so its
//! tests are scripts of inputs and expected actions.
//!
//! The shell sends and receives. Before the interface has an address it uses
//! an `AF_PACKET` socket with hand-built IPv4/UDP headers ([`crate::packet`]):
//! the replies may be addressed to an IP the interface does not have yet.
//! Once bound it renews over an ordinary UDP socket tied to the interface.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::packet::{self, PacketSocket};

/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;

/// A lease: the address and what came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Our address (yiaddr).
    pub address: Ipv4Addr,
    /// Option 1, or the classful mask when the server sent none.
    pub netmask: Ipv4Addr,
    /// Option 28.
    pub broadcast: Option<Ipv4Addr>,
    /// Option 3.
    pub routers: Vec<Ipv4Addr>,
    /// Option 6.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    pub domain: Option<String>,
    /// Option 12: the host name the server gives us.
    pub hostname: Option<String>,
    /// Option 54.
    pub server: Ipv4Addr,
    /// Option 51.
    pub lease_time: Duration,
    /// Option 58 (T1), default half the lease.
    pub renew_after: Duration,
    /// Option 59 (T2), default 7/8 of the lease.
    pub rebind_after: Duration,
}

impl Lease {
    /// The netmask as a prefix length.
    pub fn prefix_len(&self) -> u8 {
        u32::from(self.netmask).count_ones() as u8
    }
}

/// Where a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255, from 0.0.0.0 when we have no address.
    Broadcast,
    /// A server we hold a lease from (RENEWING).
    Unicast(Ipv4Addr),
}

/// Something worth telling the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Discovers sent so far got no offer.
    NoOffer {
        /// How many DISCOVERs went out.
        attempts: u32,
    },
    /// The server refused our REQUEST.
    Nak {
        /// Who said no.
        server: Ipv4Addr,
    },
    /// REQUESTs for an offer went unanswered; starting over.
    RequestTimedOut {
        /// The address we asked for.
        address: Ipv4Addr,
    },
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this DHCP payload.
    Send {
        /// The encoded DHCP message.
        payload: Vec<u8>,
        /// To whom.
        to: Destination,
        /// Our address if the interface has one (source of the packet).
        from: Option<Ipv4Addr>,
    },
    /// A new lease: configure the interface.
    Configure(Lease),
    /// The same address was renewed (times and options may have changed).
    Renewed(Lease),
    /// The lease is gone (expired or refused): remove the address.
    Deconfigure(Lease),
    /// Tell the operator.
    Notice(Notice),
}

/// What happened.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    /// Begin (sends the first DISCOVER).
    Start,
    /// The deadline from [`Client::deadline`] has passed.
    Timer,
    /// A DHCP payload arrived (the UDP payload, already past IP/UDP).
    Packet(&'a [u8]),
}

#[derive(Debug, Clone)]
enum State {
    Init,
    Selecting,
    Requesting { offer: Lease },
    Bound { lease: Lease, since: Instant },
    Renewing { lease: Lease, since: Instant },
    Rebinding { lease: Lease, since: Instant },
}

/// The client state machine for one interface.
#[derive(Debug, Clone)]
pub struct Client {
    mac: [u8; 6],
    xid: u32,
    state: State,
    tries: u32,
    exchange_started: Instant,
    deadline: Option<Instant>,
}

/// Retransmission delay after `tries` sends (RFC 2131 4.1 doubles from 4 s to
/// 64 s; we start at 2 s and cap at 32 s so a node whose server comes up late
/// still boots soon after).
pub fn backoff(tries: u32) -> Duration {
    Duration::from_secs((2u64 << tries.saturating_sub(1).min(4)).min(32))
}

/// How many DISCOVERs before a REQUEST exchange is abandoned and how many
/// REQUESTs before going back to DISCOVER.
const MAX_REQUESTS: u32 = 4;

impl Client {
    /// A client for the interface with hardware address `mac`; `xid` seeds
    /// the transaction ids (each new exchange adds one).
    pub fn new(mac: [u8; 6], xid: u32, now: Instant) -> Self {
        Client {
            mac,
            xid,
            state: State::Init,
            tries: 0,
            exchange_started: now,
            deadline: None,
        }
    }

    /// When the client next wants [`Input::Timer`], if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The address we hold, if any (the shell then uses the UDP socket).
    pub fn address(&self) -> Option<Ipv4Addr> {
        match &self.state {
            State::Bound { lease, .. }
            | State::Renewing { lease, .. }
            | State::Rebinding { lease, .. } => Some(lease.address),
            _ => None,
        }
    }

    /// The name of the current RFC 2131 state.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            State::Init => "INIT",
            State::Selecting => "SELECTING",
            State::Requesting { .. } => "REQUESTING",
            State::Bound { .. } => "BOUND",
            State::Renewing { .. } => "RENEWING",
            State::Rebinding { .. } => "REBINDING",
        }
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, now: Instant, input: Input<'_>) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.discover(now, &mut out),
            Input::Timer => {
                if self.deadline.is_some_and(|d| now >= d) {
                    self.on_timer(now, &mut out);
                }
            }
            Input::Packet(bytes) => {
                if let Some(msg) = self.accept(bytes) {
                    self.on_reply(now, &msg, &mut out);
                }
            }
        }
        out
    }

    fn new_exchange(&mut self, now: Instant) {
        self.xid = self.xid.wrapping_add(1);
        self.tries = 0;
        self.exchange_started = now;
    }

    fn discover(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.new_exchange(now);
        self.state = State::Selecting;
        self.send_discover(now, out);
    }

    fn send_discover(&mut self, now: Instant, out: &mut Vec<Action>) {
        let msg = self.message(now, MessageType::Discover, None, None, None);
        self.push_send(now, msg, Destination::Broadcast, None, out);
    }

    fn push_send(
        &mut self,
        now: Instant,
        msg: Message,
        to: Destination,
        from: Option<Ipv4Addr>,
        out: &mut Vec<Action>,
    ) {
        self.tries += 1;
        self.deadline = Some(now + backoff(self.tries));
        // Encoding a message we built ourselves cannot fail short of a bug in
        // dhcproto; if it ever does, skip the send and let the timer retry.
        if let Ok(payload) = msg.to_vec() {
            out.push(Action::Send { payload, to, from });
        }
    }

    fn message(
        &self,
        now: Instant,
        kind: MessageType,
        ciaddr: Option<Ipv4Addr>,
        requested: Option<Ipv4Addr>,
        server: Option<Ipv4Addr>,
    ) -> Message {
        let mut msg = Message::new(
            ciaddr.unwrap_or(Ipv4Addr::UNSPECIFIED),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        msg.set_xid(self.xid);
        let secs = now
            .saturating_duration_since(self.exchange_started)
            .as_secs();
        msg.set_secs(secs.min(u16::MAX as u64) as u16);
        if ciaddr.is_none() {
            // No address yet: ask for broadcast replies so they reach us.
            msg.set_flags(Flags::default().set_broadcast());
        }
        let opts = msg.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&self.mac);
        opts.insert(DhcpOption::ClientIdentifier(client_id));
        opts.insert(DhcpOption::MaxMessageSize(1500));
        opts.insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
            OptionCode::DomainNameServer,
            OptionCode::Hostname,
            OptionCode::DomainName,
            OptionCode::BroadcastAddr,
            OptionCode::AddressLeaseTime,
            OptionCode::Renewal,
            OptionCode::Rebinding,
        ]));
        if let Some(ip) = requested {
            opts.insert(DhcpOption::RequestedIpAddress(ip));
        }
        if let Some(ip) = server {
            opts.insert(DhcpOption::ServerIdentifier(ip));
        }
        msg
    }

    /// Decodes `bytes` and keeps it only if it is a reply to us.
    fn accept(&self, bytes: &[u8]) -> Option<Message> {
        let msg = Message::decode(&mut Decoder::new(bytes)).ok()?;
        if msg.opcode() != Opcode::BootReply
            || msg.xid() != self.xid
            || msg.chaddr().get(..6) != Some(&self.mac[..])
        {
            return None;
        }
        Some(msg)
    }

    fn on_timer(&mut self, now: Instant, out: &mut Vec<Action>) {
        match std::mem::replace(&mut self.state, State::Init) {
            State::Init => self.discover(now, out),
            State::Selecting => {
                self.state = State::Selecting;
                if self.tries == 3 || (self.tries > 3 && self.tries.is_multiple_of(10)) {
                    out.push(Action::Notice(Notice::NoOffer {
                        attempts: self.tries,
                    }));
                }
                self.send_discover(now, out);
            }
            State::Requesting { offer } => {
                if self.tries >= MAX_REQUESTS {
                    out.push(Action::Notice(Notice::RequestTimedOut {
                        address: offer.address,
                    }));
                    self.discover(now, out);
                } else {
                    let msg = self.message(
                        now,
                        MessageType::Request,
                        None,
                        Some(offer.address),
                        Some(offer.server),
                    );
                    self.state = State::Requesting { offer };
                    self.push_send(now, msg, Destination::Broadcast, None, out);
                }
            }
            State::Bound { lease, since } => self.lease_timer(now, lease, since, 0, out),
            State::Renewing { lease, since } => self.lease_timer(now, lease, since, 1, out),
            State::Rebinding { lease, since } => self.lease_timer(now, lease, since, 2, out),
        }
    }

    /// A timer while holding a lease; `phase` is where we were: 0 bound,
    /// 1 renewing, 2 rebinding.
    fn lease_timer(
        &mut self,
        now: Instant,
        lease: Lease,
        since: Instant,
        phase: u8,
        out: &mut Vec<Action>,
    ) {
        let elapsed = now.saturating_duration_since(since);
        let new_phase = if elapsed >= lease.lease_time {
            out.push(Action::Deconfigure(lease));
            self.discover(now, out);
            return;
        } else if elapsed >= lease.rebind_after {
            2
        } else if elapsed >= lease.renew_after {
            1
        } else {
            self.deadline = since.checked_add(lease.renew_after);
            self.state = State::Bound { lease, since };
            return;
        };
        if new_phase != phase {
            self.new_exchange(now);
        }
        let rebinding = new_phase == 2;
        let to = if rebinding {
            Destination::Broadcast
        } else {
            Destination::Unicast(lease.server)
        };
        let msg = self.message(now, MessageType::Request, Some(lease.address), None, None);
        // RFC 2131 4.4.5: retransmit at half the time left until T2 (or the
        // end of the lease), but not more often than every 60 s.
        let phase_end = if rebinding {
            lease.lease_time
        } else {
            lease.rebind_after
        };
        let left = phase_end.saturating_sub(elapsed);
        let wait = (left / 2)
            .max(Duration::from_secs(60))
            .min(left)
            .max(Duration::from_secs(1));
        let address = lease.address;
        self.state = if rebinding {
            State::Rebinding { lease, since }
        } else {
            State::Renewing { lease, since }
        };
        self.tries += 1;
        self.deadline = Some(now + wait);
        if let Ok(payload) = msg.to_vec() {
            out.push(Action::Send {
                payload,
                to,
                from: Some(address),
            });
        }
    }

    fn on_reply(&mut self, now: Instant, msg: &Message, out: &mut Vec<Action>) {
        let kind = msg.opts().msg_type();
        match (&self.state, kind) {
            (State::Selecting, Some(MessageType::Offer)) => {
                let Some(offer) = lease_from(msg, None) else {
                    return;
                };
                let request = self.message(
                    now,
                    MessageType::Request,
                    None,
                    Some(offer.address),
                    Some(offer.server),
                );
                self.tries = 0;
                self.state = State::Requesting { offer };
                self.push_send(now, request, Destination::Broadcast, None, out);
            }
            (State::Requesting { offer }, Some(MessageType::Ack)) => {
                let Some(lease) = lease_from(msg, Some(offer.server)) else {
                    return;
                };
                self.bind(now, lease.clone());
                out.push(Action::Configure(lease));
            }
            (State::Requesting { offer }, Some(MessageType::Nak)) => {
                out.push(Action::Notice(Notice::Nak {
                    server: server_id(msg).unwrap_or(offer.server),
                }));
                self.discover(now, out);
            }
            (
                State::Renewing { lease: old, .. } | State::Rebinding { lease: old, .. },
                Some(MessageType::Ack),
            ) => {
                let Some(lease) = lease_from(msg, None) else {
                    return;
                };
                let old = old.clone();
                self.bind(now, lease.clone());
                if lease.address == old.address {
                    out.push(Action::Renewed(lease));
                } else {
                    out.push(Action::Deconfigure(old));
                    out.push(Action::Configure(lease));
                }
            }
            (
                State::Renewing { lease, .. } | State::Rebinding { lease, .. },
                Some(MessageType::Nak),
            ) => {
                let lease = lease.clone();
                out.push(Action::Notice(Notice::Nak {
                    server: server_id(msg).unwrap_or(lease.server),
                }));
                out.push(Action::Deconfigure(lease));
                self.discover(now, out);
            }
            _ => {}
        }
    }

    fn bind(&mut self, now: Instant, lease: Lease) {
        self.tries = 0;
        self.deadline = now.checked_add(lease.renew_after);
        self.state = State::Bound { lease, since: now };
    }
}

fn server_id(msg: &Message) -> Option<Ipv4Addr> {
    match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

/// The classful netmask of `ip`, for servers that send no option 1.
fn classful_mask(ip: Ipv4Addr) -> Ipv4Addr {
    match ip.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Reads a lease out of an OFFER or ACK. `expected_server` rejects replies
/// from another server than the one we requested from.
fn lease_from(msg: &Message, expected_server: Option<Ipv4Addr>) -> Option<Lease> {
    let address = msg.yiaddr();
    if address.is_unspecified() || address.is_broadcast() {
        return None;
    }
    let server = match (server_id(msg), expected_server) {
        (Some(s), Some(e)) if s != e => return None,
        (Some(s), _) => s,
        (None, Some(e)) => e,
        (None, None) if !msg.siaddr().is_unspecified() => msg.siaddr(),
        (None, None) => return None,
    };
    let opts = msg.opts();
    let netmask = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(m)) => *m,
        _ => classful_mask(address),
    };
    let secs = |code| match opts.get(code) {
        Some(DhcpOption::AddressLeaseTime(s))
        | Some(DhcpOption::Renewal(s))
        | Some(DhcpOption::Rebinding(s)) => Some(Duration::from_secs(u64::from(*s))),
        _ => None,
    };
    let lease_time = secs(OptionCode::AddressLeaseTime).unwrap_or(Duration::from_secs(3600));
    let renew_after = secs(OptionCode::Renewal)
        .filter(|t| *t < lease_time)
        .unwrap_or(lease_time / 2);
    let rebind_after = secs(OptionCode::Rebinding)
        .filter(|t| *t < lease_time && *t >= renew_after)
        .unwrap_or(lease_time * 7 / 8)
        .max(renew_after);
    Some(Lease {
        address,
        netmask,
        broadcast: match opts.get(OptionCode::BroadcastAddr) {
            Some(DhcpOption::BroadcastAddr(b)) => Some(*b),
            _ => None,
        },
        routers: match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.clone(),
            _ => Vec::new(),
        },
        dns: match opts.get(OptionCode::DomainNameServer) {
            Some(DhcpOption::DomainNameServer(d)) => d.clone(),
            _ => Vec::new(),
        },
        domain: match opts.get(OptionCode::DomainName) {
            Some(DhcpOption::DomainName(d)) if !d.is_empty() => Some(d.clone()),
            _ => None,
        },
        hostname: match opts.get(OptionCode::Hostname) {
            Some(DhcpOption::Hostname(h)) if valid_hostname(h) => Some(h.clone()),
            _ => None,
        },
        server,
        lease_time,
        renew_after,
        rebind_after,
    })
}

/// Whether `name` is usable as a host name (RFC 1123 labels).
pub fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The host name a machine takes when DHCP gives none: its role (`node`
/// or `head`), `-` and the MAC in lowercase hex without separators, e.g.
/// `node-5254001234ab`.
pub fn hostname_from_mac(role: &str, mac: [u8; 6]) -> String {
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("{role}-{hex}")
}

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
        let mac = crate::netif::mac_address(iface).map_err(|source| DhcpError::Interface {
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

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};
    use std::fmt::Write;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0xab];
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

    /// A server reply to the last request the client sent.
    fn reply(kind: MessageType, xid: u32, yiaddr: Ipv4Addr, extra: &[DhcpOption]) -> Vec<u8> {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            yiaddr,
            SERVER,
            Ipv4Addr::UNSPECIFIED,
            &MAC,
        );
        m.set_opcode(Opcode::BootReply).set_xid(xid);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        for o in extra {
            m.opts_mut().insert(o.clone());
        }
        m.to_vec().unwrap()
    }

    fn full_options() -> Vec<DhcpOption> {
        vec![
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
            DhcpOption::Router(vec![SERVER]),
            DhcpOption::DomainNameServer(vec![SERVER, Ipv4Addr::new(10, 99, 0, 2)]),
            DhcpOption::Hostname("n1".into()),
            DhcpOption::DomainName("lab".into()),
            DhcpOption::AddressLeaseTime(600),
        ]
    }

    /// A script step: seconds since start, then what happens.
    enum Step {
        Start,
        Timer,
        /// A reply built from the client's current xid.
        Reply(MessageType, [u8; 4], Vec<DhcpOption>),
        /// A reply with a wrong transaction id.
        Stray(MessageType),
        /// Bytes that are not DHCP.
        Garbage,
    }

    fn render(actions: &[Action]) -> String {
        let mut s = String::new();
        for a in actions {
            match a {
                Action::Send { payload, to, from } => {
                    let m = Message::decode(&mut Decoder::new(payload)).unwrap();
                    let opt = |c| m.opts().get(c).cloned();
                    let mut extra = String::new();
                    if let Some(DhcpOption::RequestedIpAddress(ip)) = opt(OptionCode::RequestedIpAddress) {
                        write!(extra, " requested={ip}").unwrap();
                    }
                    if let Some(DhcpOption::ServerIdentifier(ip)) = opt(OptionCode::ServerIdentifier) {
                        write!(extra, " server={ip}").unwrap();
                    }
                    writeln!(
                        s,
                        "  send {:?} to={to:?} from={from:?} ciaddr={} bcast={} secs={}{extra}",
                        m.opts().msg_type().unwrap(),
                        m.ciaddr(),
                        m.flags().broadcast(),
                        m.secs(),
                    )
                    .unwrap();
                }
                Action::Configure(l) => writeln!(
                    s,
                    "  configure {}/{} gw={:?} dns={:?} host={:?} domain={:?} lease={}s t1={}s t2={}s",
                    l.address,
                    l.prefix_len(),
                    l.routers,
                    l.dns,
                    l.hostname,
                    l.domain,
                    l.lease_time.as_secs(),
                    l.renew_after.as_secs(),
                    l.rebind_after.as_secs()
                )
                .unwrap(),
                Action::Renewed(l) => writeln!(s, "  renewed {} lease={}s", l.address, l.lease_time.as_secs()).unwrap(),
                Action::Deconfigure(l) => writeln!(s, "  deconfigure {}", l.address).unwrap(),
                Action::Notice(n) => writeln!(s, "  notice {n:?}").unwrap(),
            }
        }
        s
    }

    /// Runs a script against a fresh client and compares the transcript:
    /// each step, the actions, the state and the next deadline.
    fn check(script: &[(u64, Step)], expect: Expect) {
        let t0 = Instant::now();
        let mut c = Client::new(MAC, 0x1000, t0);
        let mut out = String::new();
        for (at, step) in script {
            let now = t0 + Duration::from_secs(*at);
            let (label, actions) = match step {
                Step::Start => ("start".to_string(), c.handle(now, Input::Start)),
                Step::Timer => ("timer".to_string(), c.handle(now, Input::Timer)),
                Step::Reply(kind, ip, opts) => {
                    let bytes = reply(*kind, c.xid, Ipv4Addr::from(*ip), opts);
                    (
                        format!("{kind:?} {}", Ipv4Addr::from(*ip)),
                        c.handle(now, Input::Packet(&bytes)),
                    )
                }
                Step::Stray(kind) => {
                    let bytes = reply(
                        *kind,
                        c.xid ^ 0xffff,
                        Ipv4Addr::new(10, 99, 0, 66),
                        &full_options(),
                    );
                    (
                        format!("stray {kind:?}"),
                        c.handle(now, Input::Packet(&bytes)),
                    )
                }
                Step::Garbage => (
                    "garbage".to_string(),
                    c.handle(now, Input::Packet(b"\x02\x01junk")),
                ),
            };
            let next = c
                .deadline()
                .map(|d| format!("+{}s", d.saturating_duration_since(t0).as_secs()))
                .unwrap_or_else(|| "none".into());
            write!(
                out,
                "t={at} {label}\n{}  -> {} next {next}\n",
                render(&actions),
                c.state_name()
            )
            .unwrap();
        }
        expect.assert_eq(&out);
    }

    const IP: [u8; 4] = [10, 99, 0, 50];

    #[test]
    fn four_way_exchange_then_renewal() {
        check(
            &[
                (0, Step::Start),
                (1, Step::Stray(MessageType::Offer)),
                (1, Step::Garbage),
                (1, Step::Reply(MessageType::Offer, IP, full_options())),
                (1, Step::Reply(MessageType::Ack, IP, full_options())),
                (299, Step::Timer),
                (301, Step::Timer),
                (302, Step::Reply(MessageType::Ack, IP, full_options())),
            ],
            expect![[r#"
                t=0 start
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=1 stray Offer
                  -> SELECTING next +2s
                t=1 garbage
                  -> SELECTING next +2s
                t=1 Offer 10.99.0.50
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=1 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +3s
                t=1 Ack 10.99.0.50
                  configure 10.99.0.50/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
                  -> BOUND next +301s
                t=299 timer
                  -> BOUND next +301s
                t=301 timer
                  send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
                  -> RENEWING next +413s
                t=302 Ack 10.99.0.50
                  renewed 10.99.0.50 lease=600s
                  -> BOUND next +602s
            "#]],
        );
    }

    #[test]
    fn renew_unicast_then_rebind_broadcast_then_expire() {
        let short = vec![
            DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 0, 0)),
            DhcpOption::AddressLeaseTime(1000),
        ];
        check(
            &[
                (0, Step::Start),
                (0, Step::Reply(MessageType::Offer, IP, short.clone())),
                (0, Step::Reply(MessageType::Ack, IP, short.clone())),
                (500, Step::Timer),
                (700, Step::Timer),
                (875, Step::Timer),
                (1000, Step::Timer),
            ],
            expect![[r#"
                t=0 start
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=0 Offer 10.99.0.50
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +2s
                t=0 Ack 10.99.0.50
                  configure 10.99.0.50/16 gw=[] dns=[] host=None domain=None lease=1000s t1=500s t2=875s
                  -> BOUND next +500s
                t=500 timer
                  send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
                  -> RENEWING next +687s
                t=700 timer
                  send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=200
                  -> RENEWING next +787s
                t=875 timer
                  send Request to=Broadcast from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
                  -> REBINDING next +937s
                t=1000 timer
                  deconfigure 10.99.0.50
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +1002s
            "#]],
        );
    }

    #[test]
    fn no_answer_backs_off_and_says_so() {
        let mut script = vec![(0, Step::Start)];
        let mut t = 0;
        for _ in 0..5 {
            t += backoff(script.len() as u32).as_secs();
            script.push((t, Step::Timer));
        }
        check(
            &script,
            expect![[r#"
                t=0 start
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=2 timer
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=2
                  -> SELECTING next +6s
                t=6 timer
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=6
                  -> SELECTING next +14s
                t=14 timer
                  notice NoOffer { attempts: 3 }
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=14
                  -> SELECTING next +30s
                t=30 timer
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=30
                  -> SELECTING next +62s
                t=62 timer
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=62
                  -> SELECTING next +94s
            "#]],
        );
    }

    #[test]
    fn nak_and_unanswered_requests_start_over() {
        check(
            &[
                (0, Step::Start),
                (0, Step::Reply(MessageType::Offer, IP, full_options())),
                (0, Step::Reply(MessageType::Nak, [0, 0, 0, 0], vec![])),
                (1, Step::Reply(MessageType::Offer, IP, full_options())),
                (3, Step::Timer),
                (7, Step::Timer),
                (15, Step::Timer),
                (31, Step::Timer),
                // An offer without an address is ignored.
                (
                    32,
                    Step::Reply(MessageType::Offer, [0, 0, 0, 0], full_options()),
                ),
            ],
            expect![[r#"
                t=0 start
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=0 Offer 10.99.0.50
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +2s
                t=0 Nak 0.0.0.0
                  notice Nak { server: 10.99.0.1 }
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=1 Offer 10.99.0.50
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=1 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +3s
                t=3 timer
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=3 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +7s
                t=7 timer
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=7 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +15s
                t=15 timer
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=15 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +31s
                t=31 timer
                  notice RequestTimedOut { address: 10.99.0.50 }
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +33s
                t=32 Offer 0.0.0.0
                  -> SELECTING next +33s
            "#]],
        );
    }

    #[test]
    fn renewal_nak_and_address_change() {
        check(
            &[
                (0, Step::Start),
                (0, Step::Reply(MessageType::Offer, IP, full_options())),
                (0, Step::Reply(MessageType::Ack, IP, full_options())),
                (300, Step::Timer),
                (
                    301,
                    Step::Reply(MessageType::Ack, [10, 99, 0, 51], full_options()),
                ),
                (601, Step::Timer),
                (602, Step::Reply(MessageType::Nak, [0, 0, 0, 0], vec![])),
            ],
            expect![[r#"
                t=0 start
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +2s
                t=0 Offer 10.99.0.50
                  send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
                  -> REQUESTING next +2s
                t=0 Ack 10.99.0.50
                  configure 10.99.0.50/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
                  -> BOUND next +300s
                t=300 timer
                  send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
                  -> RENEWING next +412s
                t=301 Ack 10.99.0.51
                  deconfigure 10.99.0.50
                  configure 10.99.0.51/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
                  -> BOUND next +601s
                t=601 timer
                  send Request to=Unicast(10.99.0.1) from=Some(10.99.0.51) ciaddr=10.99.0.51 bcast=false secs=0
                  -> RENEWING next +713s
                t=602 Nak 0.0.0.0
                  notice Nak { server: 10.99.0.1 }
                  deconfigure 10.99.0.51
                  send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
                  -> SELECTING next +604s
            "#]],
        );
    }

    #[test]
    fn hostnames() {
        assert_eq!(hostname_from_mac("node", MAC), "node-5254001234ab");
        assert_eq!(hostname_from_mac("head", MAC), "head-5254001234ab");
        assert!(valid_hostname("n1.lab"));
        assert!(!valid_hostname("-x"));
        assert!(!valid_hostname("a b"));
        assert!(!valid_hostname(""));
    }
}
