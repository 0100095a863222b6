//! The pure DHCPv4 client: the RFC 2131 state machine ([`Client`]) and the
//! reading of a lease out of a reply. Packets and time in, packets to send
//! and lease events out; no sockets, no clock.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use contracts::mac::MacAddr;
use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::address::Lease;

/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;
/// The DHCP server port.
pub const SERVER_PORT: u16 = 67;

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
    mac: MacAddr,
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
    pub fn new(mac: MacAddr, xid: u32, now: Instant) -> Self {
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

    /// The transaction id of the current exchange (replies must carry it).
    pub fn xid(&self) -> u32 {
        self.xid
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
            &self.mac.0,
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
        client_id.extend_from_slice(&self.mac.0);
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
            || msg.chaddr().get(..6) != Some(&self.mac.0[..])
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
pub fn hostname_from_mac(role: &str, mac: MacAddr) -> String {
    mac.default_hostname(role)
}
