//! Zero-configuration discovery: the agent's one UDP socket, bound to the
//! agent port on all addresses and joined to the multicast group
//! [`GROUP`] on the chosen interface (TTL 1: the local link only). Presence
//! datagrams sent to the group let agents on one LAN find each other with no
//! seed list; the same socket carries the unicast membership traffic.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use socket2::{Domain, Protocol, Socket, Type};

/// The discovery multicast group (organisation-local scope); the head's
/// announcement uses it too, on a port of its own.
pub const GROUP: Ipv4Addr = contracts::announce::GROUP;
/// The default agent port (UDP for membership, TCP for exec).
pub const DEFAULT_PORT: u16 = 7946;

/// Errors choosing an interface or opening the socket.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The named interface does not exist or has no IPv4 address.
    #[error("interface {0} does not exist or has no IPv4 address")]
    NoSuchInterface(String),
    /// Listing interfaces failed.
    #[error("cannot list network interfaces: {0}")]
    List(nix::Error),
    /// Creating, configuring or binding the socket failed.
    #[error("cannot open the agent socket on port {port} ({what}): {source}")]
    Socket {
        /// Port.
        port: u16,
        /// The step that failed.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

/// The interface the agent talks on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name.
    pub name: String,
    /// Its IPv4 address (advertised as the node's address).
    pub addr: Ipv4Addr,
}

/// The interface of the IPv4 default route in `/proc/net/route` text.
pub fn default_route_interface(route: &str) -> Option<String> {
    route.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask …; RTF_UP = 1.
        let up = f
            .get(3)
            .and_then(|x| u32::from_str_radix(x, 16).ok())
            .is_some_and(|fl| fl & 1 == 1);
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" && up).then(|| f[0].to_string())
    })
}

/// The named interface; else the one holding the default route (on a
/// netbooted node, the NIC it booted and got DHCP on); else the first one
/// that is up, not loopback, and has an IPv4 address; loopback if there is
/// no other.
pub fn pick_interface(name: Option<&str>) -> Result<Interface, DiscoveryError> {
    let mut candidates = Vec::new();
    for ifa in getifaddrs().map_err(DiscoveryError::List)? {
        let Some(addr) = ifa
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        candidates.push((ifa.interface_name.clone(), addr, ifa.flags));
    }
    if let Some(want) = name {
        return candidates
            .into_iter()
            .find(|(n, _, _)| n == want)
            .map(|(name, addr, _)| Interface { name, addr })
            .ok_or_else(|| DiscoveryError::NoSuchInterface(want.to_string()));
    }
    let up = |f: &InterfaceFlags| f.contains(InterfaceFlags::IFF_UP);
    let routed = std::fs::read_to_string("/proc/net/route")
        .ok()
        .and_then(|r| default_route_interface(&r));
    candidates
        .iter()
        .find(|(n, _, f)| up(f) && Some(n) == routed.as_ref())
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, _, f)| up(f) && !f.contains(InterfaceFlags::IFF_LOOPBACK))
        })
        .or_else(|| candidates.iter().find(|(_, _, f)| up(f)))
        .map(|(name, addr, _)| Interface {
            name: name.clone(),
            addr: *addr,
        })
        .ok_or_else(|| DiscoveryError::NoSuchInterface("(any)".into()))
}

/// Opens the agent's UDP socket: bound to `0.0.0.0:port`, member of
/// [`GROUP`] on `iface`, sending multicast out of `iface` with TTL 1.
pub fn open_socket(port: u16, iface: &Interface) -> Result<std::net::UdpSocket, DiscoveryError> {
    let err = |what| move |source| DiscoveryError::Socket { port, what, source };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(err("socket"))?;
    s.set_reuse_address(true).map_err(err("SO_REUSEADDR"))?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())
        .map_err(err("bind"))?;
    s.join_multicast_v4(&GROUP, &iface.addr)
        .map_err(err("IP_ADD_MEMBERSHIP"))?;
    s.set_multicast_if_v4(&iface.addr)
        .map_err(err("IP_MULTICAST_IF"))?;
    s.set_multicast_ttl_v4(1).map_err(err("IP_MULTICAST_TTL"))?;
    s.set_multicast_loop_v4(true)
        .map_err(err("IP_MULTICAST_LOOP"))?;
    s.set_nonblocking(true).map_err(err("O_NONBLOCK"))?;
    Ok(s.into())
}

/// The group address for `port`.
pub fn group_addr(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(GROUP, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interface_is_named() {
        let e = pick_interface(Some("omt-no-such0")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "interface omt-no-such0 does not exist or has no IPv4 address"
        );
    }

    #[test]
    fn default_route() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth1\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
";
        assert_eq!(default_route_interface(table), Some("eth0".into()));
        assert_eq!(default_route_interface("Iface\tDestination\n"), None);
    }

    #[test]
    fn loopback_can_be_picked() {
        let i = pick_interface(Some("lo")).unwrap();
        assert_eq!(i.addr, Ipv4Addr::LOCALHOST);
    }
}
