//! DHCPv4 wire format (RFC 2131/2132): parse a BOOTP packet with every option
//! kept as raw bytes, and encode replies.
//!
//! Written here rather than taken from `dhcproto` because the boot decision
//! needs options that crate drops or leaves opaque (every option 93 entry,
//! option 175, RFC 3004 user classes) and because parsing must never fail on
//! an option the server does not care about. Long options split over several
//! entries are concatenated (RFC 3396); option overload (52) is honoured.

use std::net::Ipv4Addr;

use contracts::mac::MacAddr;

/// The magic cookie that starts the options.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// BOOTREQUEST.
pub const BOOTREQUEST: u8 = 1;
/// BOOTREPLY.
pub const BOOTREPLY: u8 = 2;
/// The broadcast bit in `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes used here.
pub mod opt {
    /// Subnet mask.
    pub const SUBNET_MASK: u8 = 1;
    /// Routers.
    pub const ROUTER: u8 = 3;
    /// DNS servers.
    pub const DNS: u8 = 6;
    /// Host name.
    pub const HOSTNAME: u8 = 12;
    /// Domain name.
    pub const DOMAIN: u8 = 15;
    /// Vendor-specific information (PXE sub-options).
    pub const VENDOR: u8 = 43;
    /// Requested IP address.
    pub const REQUESTED_IP: u8 = 50;
    /// Lease time.
    pub const LEASE_TIME: u8 = 51;
    /// Option overload.
    pub const OVERLOAD: u8 = 52;
    /// DHCP message type.
    pub const MSG_TYPE: u8 = 53;
    /// Server identifier.
    pub const SERVER_ID: u8 = 54;
    /// Message (NAK reason).
    pub const MESSAGE: u8 = 56;
    /// Renewal time T1.
    pub const T1: u8 = 58;
    /// Rebinding time T2.
    pub const T2: u8 = 59;
    /// Vendor class identifier.
    pub const VENDOR_CLASS: u8 = 60;
    /// Client identifier.
    pub const CLIENT_ID: u8 = 61;
    /// Boot file name.
    pub const BOOTFILE: u8 = 67;
    /// User class.
    pub const USER_CLASS: u8 = 77;
    /// Client system architecture.
    pub const CLIENT_ARCH: u8 = 93;
    /// Client machine identifier (UUID/GUID).
    pub const CLIENT_UUID: u8 = 97;
    /// iPXE encapsulated options.
    pub const IPXE: u8 = 175;
    /// End.
    pub const END: u8 = 255;
    /// Pad.
    pub const PAD: u8 = 0;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// 1
    Discover,
    /// 2
    Offer,
    /// 3
    Request,
    /// 4
    Decline,
    /// 5
    Ack,
    /// 6
    Nak,
    /// 7
    Release,
    /// 8
    Inform,
}

impl MessageType {
    /// From the option byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
    /// The option byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Self::Discover => 1,
            Self::Offer => 2,
            Self::Request => 3,
            Self::Decline => 4,
            Self::Ack => 5,
            Self::Nak => 6,
            Self::Release => 7,
            Self::Inform => 8,
        }
    }
    /// Upper-case name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Discover => "DISCOVER",
            Self::Offer => "OFFER",
            Self::Request => "REQUEST",
            Self::Decline => "DECLINE",
            Self::Ack => "ACK",
            Self::Nak => "NAK",
            Self::Release => "RELEASE",
            Self::Inform => "INFORM",
        }
    }
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than the fixed BOOTP header plus cookie.
    #[error("packet of {0} bytes is shorter than a DHCP header (240)")]
    TooShort(usize),
    /// The magic cookie is wrong (plain BOOTP or garbage).
    #[error("bad magic cookie {0:02x?}")]
    BadCookie([u8; 4]),
    /// An option's length runs past the end of the packet.
    #[error("option {code} length {len} runs past the end of the packet")]
    TruncatedOption {
        /// Option code.
        code: u8,
        /// Claimed length.
        len: usize,
    },
}

/// Options in order of first appearance, split options concatenated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options(Vec<(u8, Vec<u8>)>);

impl Options {
    /// Raw value of an option.
    pub fn get(&self, code: u8) -> Option<&[u8]> {
        self.0.iter().find(|(c, _)| *c == code).map(|(_, v)| &v[..])
    }
    /// Whether an option is present.
    pub fn has(&self, code: u8) -> bool {
        self.get(code).is_some()
    }
    /// An option holding one IPv4 address.
    pub fn ip(&self, code: u8) -> Option<Ipv4Addr> {
        match self.get(code)? {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }
    /// Set (replace) an option.
    pub fn set(&mut self, code: u8, value: impl Into<Vec<u8>>) {
        let value = value.into();
        match self.0.iter_mut().find(|(c, _)| *c == code) {
            Some(slot) => slot.1 = value,
            None => self.0.push((code, value)),
        }
    }
    /// Iterate in order.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> {
        self.0.iter().map(|(c, v)| (*c, &v[..]))
    }
    fn append(&mut self, code: u8, data: &[u8]) {
        match self.0.iter_mut().find(|(c, _)| *c == code) {
            Some(slot) => slot.1.extend_from_slice(data),
            None => self.0.push((code, data.to_vec())),
        }
    }
    fn parse_into(&mut self, mut b: &[u8]) -> Result<(), PacketError> {
        while let Some((&code, rest)) = b.split_first() {
            match code {
                opt::PAD => b = rest,
                opt::END => break,
                _ => {
                    let Some((&len, rest)) = rest.split_first() else {
                        return Err(PacketError::TruncatedOption { code, len: 0 });
                    };
                    let len = len as usize;
                    if rest.len() < len {
                        return Err(PacketError::TruncatedOption { code, len });
                    }
                    self.append(code, &rest[..len]);
                    b = &rest[len..];
                }
            }
        }
        Ok(())
    }
}

/// A DHCP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// BOOTREQUEST or BOOTREPLY.
    pub op: u8,
    /// Hardware type (1 = Ethernet).
    pub htype: u8,
    /// Hardware address length.
    pub hlen: u8,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client began.
    pub secs: u16,
    /// Flags (broadcast bit).
    pub flags: u16,
    /// Client address (renewing, rebinding, inform).
    pub ciaddr: Ipv4Addr,
    /// Your address.
    pub yiaddr: Ipv4Addr,
    /// Next server.
    pub siaddr: Ipv4Addr,
    /// Relay agent.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (16 bytes, `hlen` used).
    pub chaddr: [u8; 16],
    /// Server host name (64 bytes, NUL padded).
    pub sname: Vec<u8>,
    /// Boot file name (128 bytes, NUL padded).
    pub file: Vec<u8>,
    /// Options.
    pub options: Options,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn trim_nul(b: &[u8]) -> Vec<u8> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b[..end].to_vec()
}

impl Packet {
    /// Parse a packet. Never panics on any input.
    pub fn parse(b: &[u8]) -> Result<Packet, PacketError> {
        if b.len() < 240 {
            return Err(PacketError::TooShort(b.len()));
        }
        let cookie = [b[236], b[237], b[238], b[239]];
        if cookie != MAGIC {
            return Err(PacketError::BadCookie(cookie));
        }
        let mut options = Options::default();
        options.parse_into(&b[240..])?;
        let mut sname = trim_nul(&b[44..108]);
        let mut file = trim_nul(&b[108..236]);
        let overload = options.get(opt::OVERLOAD).and_then(|v| v.first().copied());
        if let Some(o) = overload {
            if o & 1 != 0 {
                options.parse_into(&b[108..236])?;
                file.clear();
            }
            if o & 2 != 0 {
                options.parse_into(&b[44..108])?;
                sname.clear();
            }
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&b[28..44]);
        Ok(Packet {
            op: b[0],
            htype: b[1],
            hlen: b[2],
            hops: b[3],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            flags: u16::from_be_bytes([b[10], b[11]]),
            ciaddr: ip_at(b, 12),
            yiaddr: ip_at(b, 16),
            siaddr: ip_at(b, 20),
            giaddr: ip_at(b, 24),
            chaddr,
            sname,
            file,
            options,
        })
    }

    /// The message type (option 53), if valid.
    pub fn msg_type(&self) -> Option<MessageType> {
        self.options
            .get(opt::MSG_TYPE)
            .and_then(|v| v.first().copied())
            .and_then(MessageType::from_u8)
    }

    /// The first six bytes of `chaddr` (Ethernet MAC).
    pub fn mac(&self) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&self.chaddr[..6]);
        MacAddr(m)
    }

    /// A reply skeleton to this request: same xid, flags, giaddr, chaddr.
    pub fn reply(&self, kind: MessageType) -> Packet {
        let mut options = Options::default();
        options.set(opt::MSG_TYPE, [kind.to_u8()]);
        Packet {
            op: BOOTREPLY,
            htype: self.htype,
            hlen: self.hlen,
            hops: 0,
            xid: self.xid,
            secs: 0,
            flags: self.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: self.giaddr,
            chaddr: self.chaddr,
            sname: Vec::new(),
            file: Vec::new(),
            options,
        }
    }

    /// Encode. Options longer than 255 bytes are split (RFC 3396); a boot
    /// file name that does not fit the 128-byte field goes into option 67.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(548);
        out.extend_from_slice(&[self.op, self.htype, self.hlen, self.hops]);
        out.extend_from_slice(&self.xid.to_be_bytes());
        out.extend_from_slice(&self.secs.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        for ip in [self.ciaddr, self.yiaddr, self.siaddr, self.giaddr] {
            out.extend_from_slice(&ip.octets());
        }
        out.extend_from_slice(&self.chaddr);
        let mut sname = [0u8; 64];
        let n = self.sname.len().min(63);
        sname[..n].copy_from_slice(&self.sname[..n]);
        out.extend_from_slice(&sname);
        let mut file = [0u8; 128];
        let long_file = self.file.len() > 127;
        if !long_file {
            file[..self.file.len()].copy_from_slice(&self.file);
        }
        out.extend_from_slice(&file);
        out.extend_from_slice(&MAGIC);
        let mut put = |code: u8, v: &[u8]| {
            if v.is_empty() {
                out.extend_from_slice(&[code, 0]);
            }
            for chunk in v.chunks(255) {
                out.push(code);
                out.push(chunk.len() as u8);
                out.extend_from_slice(chunk);
            }
        };
        for (code, v) in self.options.iter() {
            put(code, v);
        }
        if long_file && !self.options.has(opt::BOOTFILE) {
            put(opt::BOOTFILE, &self.file);
        }
        out.push(opt::END);
        // BOOTP relays and old clients expect at least 300 bytes.
        if out.len() < 300 {
            out.resize(300, 0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Packet {
        let mut p = Packet::parse(
            &[0u8; 240]
                .iter()
                .enumerate()
                .map(|(i, &b)| match i {
                    236 => 99,
                    237 => 130,
                    238 => 83,
                    239 => 99,
                    _ => b,
                })
                .collect::<Vec<u8>>(),
        )
        .unwrap();
        p.op = BOOTREQUEST;
        p.htype = 1;
        p.hlen = 6;
        p.xid = 0xdeadbeef;
        p.chaddr[..6].copy_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
        p
    }

    #[test]
    fn round_trip_and_split_options() {
        let mut p = request();
        p.options.set(opt::MSG_TYPE, [1]);
        p.options.set(opt::CLIENT_ARCH, [0, 7, 0, 0]);
        p.options.set(opt::IPXE, vec![0xaa; 300]);
        p.file = b"ipxe/snponly.efi".to_vec();
        let bytes = p.encode();
        let q = Packet::parse(&bytes).unwrap();
        assert_eq!(q, p);
        assert_eq!(q.msg_type(), Some(MessageType::Discover));
        assert_eq!(q.options.get(opt::IPXE).unwrap().len(), 300);
        // dhcproto, an independent codec, reads what we wrote.
        use dhcproto::{Decodable, Decoder};
        let m = dhcproto::v4::Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(m.xid(), 0xdeadbeef);
        // (dhcproto keeps one NUL of the padding.)
        assert_eq!(
            m.fname_str().unwrap().unwrap().trim_end_matches('\0'),
            "ipxe/snponly.efi"
        );
    }

    #[test]
    fn overload_and_errors() {
        let mut b = request().encode();
        // Put option 53 in the file field via overload.
        b[108..111].copy_from_slice(&[53, 1, 3]);
        b[111] = 255;
        b[240..244].copy_from_slice(&[52, 1, 1, 255]);
        let p = Packet::parse(&b).unwrap();
        assert_eq!(p.msg_type(), Some(MessageType::Request));
        assert_eq!(Packet::parse(&b[..100]), Err(PacketError::TooShort(100)));
        let mut t = b.clone();
        t.truncate(244);
        t[240..244].copy_from_slice(&[12, 9, b'a', b'b']);
        assert_eq!(
            Packet::parse(&t),
            Err(PacketError::TruncatedOption { code: 12, len: 9 })
        );
        t[236] = 0;
        assert!(matches!(Packet::parse(&t), Err(PacketError::BadCookie(_))));
    }

    #[test]
    fn long_file_goes_to_option_67() {
        let mut p = request();
        p.file = vec![b'x'; 200];
        let q = Packet::parse(&p.encode()).unwrap();
        assert!(q.file.is_empty());
        assert_eq!(q.options.get(opt::BOOTFILE).unwrap().len(), 200);
    }
}
