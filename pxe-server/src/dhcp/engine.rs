//! The DHCP and ProxyDHCP protocol core: a request, the lease state and the
//! time in; a reply, the lease records to persist and a log entry out. No
//! sockets, no files, no clock.
//!
//! dhcp mode follows RFC 2131: DISCOVER → OFFER (address held briefly for the
//! client, not persisted), REQUEST in its four shapes (selecting with our
//! server id, init-reboot, renewing, rebinding) → ACK (persisted) or NAK,
//! RELEASE, DECLINE (address quarantined), INFORM. The pool is chosen by
//! giaddr when a relay forwarded the request, else by the interface it came
//! in on. proxy mode answers only PXE/HTTP-boot clients, with boot
//! information and never an address, on port 67 (OFFER) and 4011 (ACK).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use crate::boot::{self, Available, Boot, ClientInfo, Decision, HttpBase};
use contracts::mac::MacAddr;

use crate::config::{DhcpConfig, Interface, Mode, PoolConfig};
use crate::dhcp::packet::{opt, MessageType, Packet, BOOTREQUEST, FLAG_BROADCAST};
use crate::leases::{LeaseRecord, LeaseState, LeaseTable};

/// How long an offered address is held for the client, in seconds.
pub const OFFER_HOLD: u64 = 30;
/// The ProxyDHCP boot-server port.
pub const PXE_PORT: u16 = 4011;
/// The DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// A request as the socket shell received it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The UDP payload.
    pub bytes: &'a [u8],
    /// Index of the interface (in the config) it arrived on.
    pub iface: usize,
    /// Source address and port.
    pub src: SocketAddrV4,
    /// The local port it arrived on (the DHCP port or 4011).
    pub local_port: u16,
}

/// A reply to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Encoded packet.
    pub bytes: Vec<u8>,
    /// Where to.
    pub dest: SocketAddrV4,
    /// Out of which interface.
    pub iface: usize,
    /// Out of the socket bound to which local port.
    pub local_port: u16,
}

/// One exchange, for the info log line and the node registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// The client.
    pub mac: MacAddr,
    /// The address concerned (offered, acked, released…).
    pub ip: Option<Ipv4Addr>,
    /// `DISCOVER→OFFER`, `REQUEST→NAK`, `RELEASE`…
    pub kind: String,
    /// The client's first architecture (option 93).
    pub arch: Option<u16>,
    /// The boot file or URL given, if any.
    pub file: Option<String>,
    /// Why nothing or a NAK was sent, or the boot decision's warning.
    pub note: Option<String>,
}

/// What handling a request produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Reply to send (after `persist` is durable).
    pub reply: Option<Outgoing>,
    /// Records to persist before the reply goes out.
    pub persist: Vec<LeaseRecord>,
    /// The log entry, if the request was one we answer or act on.
    pub exchange: Option<Exchange>,
}

/// Settings the engine runs on.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// dhcp or proxy.
    pub mode: Mode,
    /// Interfaces (index = [`Incoming::iface`]).
    pub interfaces: Vec<Interface>,
    /// Pools, reservations, lease time, options.
    pub dhcp: DhcpConfig,
    /// Boot files present in the image directory.
    pub available: Available,
    /// HTTP port for boot URLs.
    pub http_port: u16,
    /// The DHCP server port (relay replies go to giaddr on this port).
    pub dhcp_port: u16,
}

#[derive(Debug, Clone, Copy)]
struct Offer {
    mac: MacAddr,
    until: u64,
}

/// The protocol state machine.
#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    leases: LeaseTable,
    offers: HashMap<Ipv4Addr, Offer>,
    offer_by_mac: HashMap<MacAddr, Ipv4Addr>,
    reserved: HashMap<Ipv4Addr, MacAddr>,
    cursors: Vec<u32>,
    last_sweep: u64,
}

/// Which shape of REQUEST (RFC 2131 §4.3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    Selecting,
    InitReboot,
    Renewing,
    Rebinding,
}

impl Engine {
    /// A new engine starting from the committed leases.
    pub fn new(cfg: EngineConfig, leases: LeaseTable) -> Engine {
        let reserved = cfg
            .dhcp
            .reservations
            .iter()
            .map(|(m, r)| (r.address, *m))
            .collect();
        let cursors = vec![0; cfg.dhcp.pools.len()];
        Engine {
            cfg,
            leases,
            offers: HashMap::new(),
            offer_by_mac: HashMap::new(),
            reserved,
            cursors,
            last_sweep: 0,
        }
    }

    /// The leases as the engine sees them (committed or about to be).
    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Handle one request at unix time `now`.
    pub fn handle(&mut self, inc: Incoming<'_>, now: u64) -> Outcome {
        if now > self.last_sweep {
            // Offers never taken up (a client that went elsewhere, a load
            // generator) must not pile up.
            self.last_sweep = now;
            self.offers.retain(|_, o| o.until > now);
            let offers = &self.offers;
            self.offer_by_mac.retain(|_, ip| offers.contains_key(ip));
        }
        let Ok(p) = Packet::parse(inc.bytes) else {
            return Outcome::default();
        };
        if p.op != BOOTREQUEST
            || p.htype != 1
            || p.hlen != 6
            || inc.iface >= self.cfg.interfaces.len()
        {
            return Outcome::default();
        }
        let Some(kind) = p.msg_type() else {
            return Outcome::default();
        };
        match self.cfg.mode {
            Mode::Dhcp => self.handle_dhcp(&p, kind, inc, now),
            Mode::Proxy => self.handle_proxy(&p, kind, inc),
        }
    }

    fn client_info(p: &Packet) -> ClientInfo {
        ClientInfo::from_options(
            p.options.get(opt::CLIENT_ARCH),
            p.options.get(opt::VENDOR_CLASS),
            p.options.get(opt::USER_CLASS),
            p.options.has(opt::IPXE),
        )
    }

    fn server_addr(&self, iface: usize) -> Ipv4Addr {
        self.cfg.interfaces[iface].addr
    }

    /// The boot decision for a client reaching us on `iface`.
    pub fn decide(&self, info: &ClientInfo, iface: usize) -> Decision {
        let http = HttpBase {
            host: self.server_addr(iface).to_string(),
            port: self.cfg.http_port,
        };
        boot::decide(info, self.cfg.available, &http)
    }

    /// Put the boot fields and PXE options into a reply.
    fn add_boot(
        &self,
        reply: &mut Packet,
        req: &Packet,
        info: &ClientInfo,
        d: &Decision,
        iface: usize,
    ) {
        if let Some(f) = d.filename() {
            // next-server goes with every boot file, an HTTP URL included:
            // iPXE takes a ProxyDHCP answer only when it carries both
            // (dhcp_has_pxeopts), and ignores our ProxyDHCPACK otherwise.
            reply.siaddr = self.server_addr(iface);
            if matches!(d.boot, Boot::Tftp(_)) {
                reply.sname = self.server_addr(iface).to_string().into_bytes();
            }
            reply.file = f.as_bytes().to_vec();
        }
        if info.pxe_client {
            reply.options.set(opt::VENDOR_CLASS, b"PXEClient".to_vec());
            // PXE discovery control 8: no boot-server discovery, no menu,
            // take the boot file from this reply.
            reply.options.set(opt::VENDOR, vec![6, 1, 8, 255]);
        } else if info.http_client {
            reply.options.set(opt::VENDOR_CLASS, b"HTTPClient".to_vec());
        }
        if let Some(uuid) = req.options.get(opt::CLIENT_UUID) {
            reply.options.set(opt::CLIENT_UUID, uuid.to_vec());
        }
    }

    // ---- dhcp mode -------------------------------------------------------

    /// The pools serving a request: by giaddr if relayed, else by interface.
    fn pools_for(&self, p: &Packet, iface: usize) -> Vec<usize> {
        let net_ip = if p.giaddr.is_unspecified() {
            self.cfg.interfaces[iface].addr
        } else {
            p.giaddr
        };
        self.cfg
            .dhcp
            .pools
            .iter()
            .enumerate()
            .filter(|(_, pc)| pc.subnet.contains(&net_ip))
            .map(|(i, _)| i)
            .collect()
    }

    fn pool(&self, i: usize) -> &PoolConfig {
        &self.cfg.dhcp.pools[i]
    }

    /// Whether `ip` may be given to `mac` now (ignoring pool membership).
    fn assignable(&self, ip: Ipv4Addr, mac: MacAddr, now: u64) -> bool {
        if self.cfg.interfaces.iter().any(|i| i.addr == ip) {
            return false;
        }
        if let Some(&owner) = self.reserved.get(&ip) {
            if owner != mac {
                return false;
            }
        }
        if let Some(l) = self.leases.by_ip(ip) {
            if l.state == LeaseState::Declined && l.expires > now {
                return false;
            }
            if l.mac != mac && l.is_held(now) {
                return false;
            }
        }
        if let Some(o) = self.offers.get(&ip) {
            if o.mac != mac && o.until > now {
                return false;
            }
        }
        true
    }

    /// Whether `ip` is an address a client in `pools` may hold: in one of the
    /// ranges, or reserved for it in one of the subnets.
    fn in_scope(&self, ip: Ipv4Addr, mac: MacAddr, pools: &[usize]) -> bool {
        let reserved_here = self.cfg.dhcp.reservations.get(&mac).is_some_and(|r| {
            r.address == ip && pools.iter().any(|&i| self.pool(i).subnet.contains(&ip))
        });
        reserved_here || pools.iter().any(|&i| self.pool(i).range.contains(ip))
    }

    fn subnet_of(&self, ip: Ipv4Addr, pools: &[usize]) -> bool {
        pools.iter().any(|&i| self.pool(i).subnet.contains(&ip))
    }

    fn allocate(&mut self, mac: MacAddr, pools: &[usize], now: u64) -> Option<Ipv4Addr> {
        // First pass: addresses never leased; second: free ones with history.
        for fresh_only in [true, false] {
            for &pi in pools {
                let range = self.pool(pi).range;
                let start = u32::from(range.start);
                let len = range.len();
                let cursor = u64::from(self.cursors[pi]);
                for step in 0..len {
                    let off = ((cursor + step) % len) as u32;
                    let ip = Ipv4Addr::from(start + off);
                    let net = self.pool(pi).subnet;
                    if ip == net.network() || ip == net.broadcast() {
                        continue;
                    }
                    if fresh_only && self.leases.by_ip(ip).is_some() {
                        continue;
                    }
                    if self.assignable(ip, mac, now) {
                        self.cursors[pi] = ((u64::from(off) + 1) % len) as u32;
                        return Some(ip);
                    }
                }
            }
        }
        None
    }

    /// The address to offer `mac`.
    fn choose(&mut self, p: &Packet, mac: MacAddr, pools: &[usize], now: u64) -> Option<Ipv4Addr> {
        if let Some(r) = self.cfg.dhcp.reservations.get(&mac) {
            let ip = r.address;
            return (self.subnet_of(ip, pools) && self.assignable(ip, mac, now)).then_some(ip);
        }
        let candidates = [
            self.offer_by_mac.get(&mac).copied(),
            self.leases.by_mac(mac).map(|l| l.ip),
            p.options.ip(opt::REQUESTED_IP),
        ];
        for ip in candidates.into_iter().flatten() {
            if self.in_scope(ip, mac, pools) && self.assignable(ip, mac, now) {
                return Some(ip);
            }
        }
        self.allocate(mac, pools, now)
    }

    fn subnet_options(&self, reply: &mut Packet, ip: Ipv4Addr, pools: &[usize]) {
        if let Some(pc) = pools
            .iter()
            .map(|&i| self.pool(i))
            .find(|pc| pc.subnet.contains(&ip))
        {
            reply
                .options
                .set(opt::SUBNET_MASK, pc.subnet.netmask().octets());
            if let Some(r) = pc.router {
                reply.options.set(opt::ROUTER, r.octets());
            }
        }
        if !self.cfg.dhcp.dns.is_empty() {
            let v: Vec<u8> = self.cfg.dhcp.dns.iter().flat_map(|a| a.octets()).collect();
            reply.options.set(opt::DNS, v);
        }
        if let Some(d) = &self.cfg.dhcp.domain {
            reply.options.set(opt::DOMAIN, d.as_bytes().to_vec());
        }
    }

    fn lease_options(&self, reply: &mut Packet) {
        let t = self.cfg.dhcp.lease_time;
        reply.options.set(opt::LEASE_TIME, t.to_be_bytes());
        reply.options.set(opt::T1, (t / 2).to_be_bytes());
        reply.options.set(opt::T2, (t / 8 * 7).to_be_bytes());
    }

    /// Where a reply goes (RFC 2131 §4.1).
    fn dest(
        &self,
        req: &Packet,
        reply: &mut Packet,
        iface: usize,
        local_port: u16,
        nak: bool,
    ) -> Outgoing {
        let dest = if !req.giaddr.is_unspecified() {
            if nak {
                reply.flags |= FLAG_BROADCAST;
            }
            SocketAddrV4::new(req.giaddr, self.cfg.dhcp_port)
        } else if !nak && !req.ciaddr.is_unspecified() {
            SocketAddrV4::new(req.ciaddr, CLIENT_PORT)
        } else {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
        };
        Outgoing {
            bytes: reply.encode(),
            dest,
            iface,
            local_port,
        }
    }

    fn hostname_for(&self, p: &Packet, mac: MacAddr) -> Option<String> {
        self.cfg
            .dhcp
            .reservations
            .get(&mac)
            .and_then(|r| r.hostname.clone())
            .or_else(|| {
                p.options
                    .get(opt::HOSTNAME)
                    .map(|h| String::from_utf8_lossy(h).into_owned())
            })
    }

    fn handle_dhcp(
        &mut self,
        p: &Packet,
        kind: MessageType,
        inc: Incoming<'_>,
        now: u64,
    ) -> Outcome {
        let mac = p.mac();
        let iface = inc.iface;
        let server = self.server_addr(iface);
        let pools = self.pools_for(p, iface);
        let info = Self::client_info(p);
        let mut ex = Exchange {
            mac,
            ip: None,
            kind: kind.name().to_string(),
            arch: info.arches.first().copied(),
            file: None,
            note: None,
        };
        if pools.is_empty() {
            ex.note = Some(format!(
                "no pool for {}",
                if p.giaddr.is_unspecified() {
                    format!("interface {}", self.cfg.interfaces[iface].name)
                } else {
                    format!("relay {}", p.giaddr)
                }
            ));
            return Outcome {
                exchange: Some(ex),
                ..Outcome::default()
            };
        }
        match kind {
            MessageType::Discover => {
                let Some(ip) = self.choose(p, mac, &pools, now) else {
                    ex.note = Some("pool exhausted".into());
                    return Outcome {
                        exchange: Some(ex),
                        ..Outcome::default()
                    };
                };
                if let Some(old) = self.offer_by_mac.insert(mac, ip) {
                    self.offers.remove(&old);
                }
                self.offers.insert(
                    ip,
                    Offer {
                        mac,
                        until: now + OFFER_HOLD,
                    },
                );
                let mut r = p.reply(MessageType::Offer);
                r.yiaddr = ip;
                r.options.set(opt::SERVER_ID, server.octets());
                self.lease_options(&mut r);
                self.subnet_options(&mut r, ip, &pools);
                if let Some(h) = self
                    .cfg
                    .dhcp
                    .reservations
                    .get(&mac)
                    .and_then(|r| r.hostname.clone())
                {
                    r.options.set(opt::HOSTNAME, h.into_bytes());
                }
                self.finish_boot(&mut r, p, &info, iface, &mut ex);
                ex.kind = "DISCOVER→OFFER".into();
                ex.ip = Some(ip);
                let out = self.dest(p, &mut r, iface, inc.local_port, false);
                Outcome {
                    reply: Some(out),
                    persist: vec![],
                    exchange: Some(ex),
                }
            }
            MessageType::Request => self.request(p, mac, &pools, &info, inc, now, ex),
            MessageType::Release => {
                let ip = p.ciaddr;
                ex.ip = Some(ip);
                match self.leases.by_ip(ip) {
                    Some(l) if l.mac == mac && l.state == LeaseState::Active => {
                        let rec = LeaseRecord {
                            state: LeaseState::Released,
                            expires: now,
                            ..l.clone()
                        };
                        self.leases.apply(rec.clone());
                        Outcome {
                            reply: None,
                            persist: vec![rec],
                            exchange: Some(ex),
                        }
                    }
                    _ => {
                        ex.note = Some("not this client's lease: ignored".into());
                        Outcome {
                            exchange: Some(ex),
                            ..Outcome::default()
                        }
                    }
                }
            }
            MessageType::Decline => {
                let Some(ip) = p.options.ip(opt::REQUESTED_IP) else {
                    ex.note = Some("no requested address: ignored".into());
                    return Outcome {
                        exchange: Some(ex),
                        ..Outcome::default()
                    };
                };
                ex.ip = Some(ip);
                if p.options.ip(opt::SERVER_ID).is_some_and(|s| s != server)
                    || !self.in_scope(ip, mac, &pools)
                {
                    ex.note = Some("not ours: ignored".into());
                    return Outcome {
                        exchange: Some(ex),
                        ..Outcome::default()
                    };
                }
                let rec = LeaseRecord {
                    ip,
                    mac,
                    state: LeaseState::Declined,
                    expires: now + u64::from(self.cfg.dhcp.decline_quarantine),
                    hostname: None,
                };
                self.leases.apply(rec.clone());
                self.offers.remove(&ip);
                self.offer_by_mac.remove(&mac);
                ex.note = Some(format!(
                    "quarantined for {} s",
                    self.cfg.dhcp.decline_quarantine
                ));
                Outcome {
                    reply: None,
                    persist: vec![rec],
                    exchange: Some(ex),
                }
            }
            MessageType::Inform => {
                let mut r = p.reply(MessageType::Ack);
                r.ciaddr = p.ciaddr;
                r.options.set(opt::SERVER_ID, server.octets());
                self.subnet_options(&mut r, p.ciaddr, &pools);
                self.finish_boot(&mut r, p, &info, iface, &mut ex);
                ex.kind = "INFORM→ACK".into();
                ex.ip = Some(p.ciaddr);
                let out = self.dest(p, &mut r, iface, inc.local_port, false);
                Outcome {
                    reply: Some(out),
                    persist: vec![],
                    exchange: Some(ex),
                }
            }
            MessageType::Offer | MessageType::Ack | MessageType::Nak => Outcome::default(),
        }
    }

    fn finish_boot(
        &self,
        r: &mut Packet,
        p: &Packet,
        info: &ClientInfo,
        iface: usize,
        ex: &mut Exchange,
    ) {
        let d = self.decide(info, iface);
        self.add_boot(r, p, info, &d, iface);
        ex.file = d.filename().map(str::to_owned);
        if let Boot::Nothing(why) = &d.boot {
            ex.note = Some(why.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        p: &Packet,
        mac: MacAddr,
        pools: &[usize],
        info: &ClientInfo,
        inc: Incoming<'_>,
        now: u64,
        mut ex: Exchange,
    ) -> Outcome {
        let iface = inc.iface;
        let server = self.server_addr(iface);
        let sid = p.options.ip(opt::SERVER_ID);
        let requested = p.options.ip(opt::REQUESTED_IP);
        let rk = match (sid, requested, p.ciaddr.is_unspecified()) {
            (Some(_), _, _) => RequestKind::Selecting,
            (None, Some(_), true) => RequestKind::InitReboot,
            (None, _, false) if p.flags & FLAG_BROADCAST == 0 => RequestKind::Renewing,
            (None, _, false) => RequestKind::Rebinding,
            (None, None, true) => {
                ex.note = Some("request without address: ignored".into());
                return Outcome {
                    exchange: Some(ex),
                    ..Outcome::default()
                };
            }
        };
        if let Some(s) = sid {
            if s != server {
                // The client chose another server: free what we offered.
                if let Some(ip) = self.offer_by_mac.remove(&mac) {
                    self.offers.remove(&ip);
                }
                return Outcome::default();
            }
        }
        let ip = match rk {
            RequestKind::Selecting | RequestKind::InitReboot => requested.unwrap_or(p.ciaddr),
            RequestKind::Renewing | RequestKind::Rebinding => p.ciaddr,
        };
        ex.ip = Some(ip);
        let reserved = self.cfg.dhcp.reservations.get(&mac).map(|r| r.address);
        let why_not = if !self.subnet_of(ip, pools) {
            Some("wrong network")
        } else if reserved.is_some_and(|r| r != ip) {
            Some("client has another reserved address")
        } else if !self.in_scope(ip, mac, pools) {
            Some("not in a pool")
        } else if !self.assignable(ip, mac, now) {
            Some("address held by another client")
        } else {
            None
        };
        let tag = match rk {
            RequestKind::Selecting => "REQUEST",
            RequestKind::InitReboot => "REQUEST(init-reboot)",
            RequestKind::Renewing => "REQUEST(renew)",
            RequestKind::Rebinding => "REQUEST(rebind)",
        };
        if let Some(why) = why_not {
            let mut r = p.reply(MessageType::Nak);
            r.options.set(opt::SERVER_ID, server.octets());
            r.options.set(opt::MESSAGE, why.as_bytes().to_vec());
            ex.kind = format!("{tag}→NAK");
            ex.note = Some(why.into());
            let out = self.dest(p, &mut r, iface, inc.local_port, true);
            return Outcome {
                reply: Some(out),
                persist: vec![],
                exchange: Some(ex),
            };
        }
        let rec = LeaseRecord {
            ip,
            mac,
            state: LeaseState::Active,
            expires: now + u64::from(self.cfg.dhcp.lease_time),
            hostname: self.hostname_for(p, mac),
        };
        self.leases.apply(rec.clone());
        if self.offer_by_mac.get(&mac) == Some(&ip) {
            self.offer_by_mac.remove(&mac);
            self.offers.remove(&ip);
        }
        let mut r = p.reply(MessageType::Ack);
        r.yiaddr = ip;
        r.ciaddr = p.ciaddr;
        r.options.set(opt::SERVER_ID, server.octets());
        self.lease_options(&mut r);
        self.subnet_options(&mut r, ip, pools);
        if let Some(h) = &rec.hostname {
            if self.cfg.dhcp.reservations.contains_key(&mac) {
                r.options.set(opt::HOSTNAME, h.as_bytes().to_vec());
            }
        }
        self.finish_boot(&mut r, p, info, iface, &mut ex);
        ex.kind = format!("{tag}→ACK");
        let out = self.dest(p, &mut r, iface, inc.local_port, false);
        Outcome {
            reply: Some(out),
            persist: vec![rec],
            exchange: Some(ex),
        }
    }

    // ---- proxy mode ------------------------------------------------------

    fn handle_proxy(&mut self, p: &Packet, kind: MessageType, inc: Incoming<'_>) -> Outcome {
        let info = Self::client_info(p);
        if !info.pxe_client && !info.http_client {
            return Outcome::default();
        }
        let iface = inc.iface;
        let server = self.server_addr(iface);
        let mac = p.mac();
        let on_pxe_port = inc.local_port == PXE_PORT;
        let reply_kind = match kind {
            MessageType::Discover if !on_pxe_port => MessageType::Offer,
            MessageType::Request if on_pxe_port || p.options.ip(opt::SERVER_ID) == Some(server) => {
                MessageType::Ack
            }
            MessageType::Inform if on_pxe_port => MessageType::Ack,
            // The LAN's server handles everything else.
            _ => return Outcome::default(),
        };
        let mut ex = Exchange {
            mac,
            ip: (!p.ciaddr.is_unspecified()).then_some(p.ciaddr),
            kind: format!("proxy {}→{}", kind.name(), reply_kind.name()),
            arch: info.arches.first().copied(),
            file: None,
            note: None,
        };
        let mut r = p.reply(reply_kind);
        r.ciaddr = p.ciaddr;
        r.options.set(opt::SERVER_ID, server.octets());
        self.finish_boot(&mut r, p, &info, iface, &mut ex);
        if r.file.is_empty() {
            // Nothing to boot: stay silent so the firmware moves on.
            return Outcome {
                exchange: Some(ex),
                ..Outcome::default()
            };
        }
        let out = if on_pxe_port {
            // Answer the boot-server request where it came from.
            Outgoing {
                bytes: r.encode(),
                dest: inc.src,
                iface,
                local_port: inc.local_port,
            }
        } else {
            self.dest(p, &mut r, iface, inc.local_port, false)
        };
        Outcome {
            reply: Some(out),
            persist: vec![],
            exchange: Some(ex),
        }
    }
}

#[cfg(test)]
mod tests;
