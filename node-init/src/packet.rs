//! IPv4/UDP framing and the `AF_PACKET` socket the DHCP client uses before
//! its interface has an address.
//!
//! [`ipv4_udp`] and [`parse_ipv4_udp`] are pure. [`PacketSocket`] is a
//! `SOCK_DGRAM` packet socket: the kernel adds and strips the Ethernet
//! header, we write and read the IP packet.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

const ETH_P_IP: u16 = 0x0800;

fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet (TTL 64, no options, DF clear) carrying one UDP datagram.
pub fn ipv4_udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // version 4, IHL 5; TOS low delay
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum placeholder
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(&p[..20], 0);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    // The UDP checksum covers a pseudo-header of addresses, protocol, length.
    let mut pseudo = 0u32;
    for half in src.octets().chunks(2).chain(dst.octets().chunks(2)) {
        pseudo += u32::from(u16::from_be_bytes([half[0], half[1]]));
    }
    pseudo += 17 + udp_len as u32;
    let mut udp_sum = checksum(&p[20..], pseudo);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// Where the UDP payload sits in a received IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Offset of the payload in the packet.
    pub offset: usize,
    /// Length of the payload.
    pub len: usize,
}

/// Finds the UDP payload of an IPv4 packet addressed to `dport`; `None` for
/// anything else (other protocols, fragments, truncated packets). Checksums
/// are not verified: with checksum offload (veth, virtio) a packet socket
/// sees packets whose UDP checksum the hardware never filled in.
pub fn parse_ipv4_udp(p: &[u8], dport: u16) -> Option<UdpView> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
    let frag = u16::from_be_bytes([p[6], p[7]]);
    if ihl < 20 || total < ihl + 8 || total > p.len() || p[9] != 17 || frag & 0x3fff != 0 {
        return None;
    }
    let udp = &p[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != dport {
        return None;
    }
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > udp.len() {
        return None;
    }
    Some(UdpView {
        src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
        dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        offset: ihl + 8,
        len: udp_len - 8,
    })
}

/// A cooked (`SOCK_DGRAM`) packet socket for IPv4 on one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: u32,
}

impl PacketSocket {
    /// Opens and binds the socket to interface `ifindex`.
    pub fn open(ifindex: u32) -> std::io::Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked and owned below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_IP.to_be()),
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr_ll(ifindex, [0; 8], 0);
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Sends an IP packet to the Ethernet broadcast address.
    pub fn send_broadcast(&self, ip_packet: &[u8]) -> std::io::Result<()> {
        let addr = sockaddr_ll(self.ifindex, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0], 6);
        // SAFETY: buffer and address are valid for the lengths passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ip_packet.as_ptr().cast(),
                ip_packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one incoming IP packet (our own outgoing ones are skipped),
    /// waiting at most `wait`; `None` on timeout.
    pub fn recv(&self, buf: &mut [u8], wait: Duration) -> std::io::Result<Option<usize>> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
            if rc < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if rc == 0 {
                continue;
            }
            let mut from: libc::sockaddr_ll = sockaddr_ll(0, [0; 8], 0);
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address storage are valid for their lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) {
                    continue;
                }
                return Err(e);
            }
            if from.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }
}

fn sockaddr_ll(ifindex: u32, addr: [u8; 8], halen: u8) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_IP.to_be(),
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: halen,
        sll_addr: addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_round_trips_and_checksums_verify() {
        let p = ipv4_udp(
            Ipv4Addr::UNSPECIFIED,
            68,
            Ipv4Addr::BROADCAST,
            67,
            b"hello dhcp",
        );
        assert_eq!(p.len(), 20 + 8 + 10);
        // A correct header sums to zero (i.e. its checksum is 0 once included).
        assert_eq!(checksum(&p[..20], 0), 0);
        let mut pseudo = 0u32;
        pseudo += 0xffff + 0xffff + 17 + 18;
        assert_eq!(checksum(&p[20..], pseudo), 0);
        let v = parse_ipv4_udp(&p, 67).unwrap();
        assert_eq!(&p[v.offset..v.offset + v.len], b"hello dhcp");
        assert_eq!(v.sport, 68);
        assert_eq!(v.dst, Ipv4Addr::BROADCAST);
        assert!(parse_ipv4_udp(&p, 68).is_none(), "wrong port");
        assert!(parse_ipv4_udp(&p[..30], 67).is_none(), "truncated");
        let mut tcp = p.clone();
        tcp[9] = 6;
        assert!(parse_ipv4_udp(&tcp, 67).is_none(), "not udp");
        let mut frag = p.clone();
        frag[7] = 1;
        assert!(parse_ipv4_udp(&frag, 67).is_none(), "fragment");
    }
}
