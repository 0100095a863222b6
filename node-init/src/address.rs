//! The IPv4 addresses the boot deals in, as plain data: a DHCP [`Lease`]
//! (what the client got) and an [`IfAddress`] (what an interface was given,
//! by DHCP or statically, as PID 1 and the head's plan see it).
//!
//! They live apart from the code that makes and uses them so that the
//! modules below them ([`crate::netif`], [`crate::head`]) need not import
//! the modules above ([`crate::dhcp_client`], [`crate::network`]). No I/O.

use std::net::Ipv4Addr;
use std::time::Duration;

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

/// An interface's IPv4 address as the boot configured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddress {
    /// The interface, e.g. `eth0`.
    pub iface: String,
    /// Its address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway, if any (on a head: kept out of the pool).
    pub gateway: Option<Ipv4Addr>,
    /// Whether a DHCP server gave the address (so the LAN has one).
    pub from_dhcp: bool,
}

impl IfAddress {
    /// The address `lease` gives `iface` (its first router as the gateway).
    pub fn from_lease(iface: &str, lease: &Lease) -> Self {
        IfAddress {
            iface: iface.to_string(),
            address: lease.address,
            prefix: lease.prefix_len(),
            gateway: lease.routers.first().copied(),
            from_dhcp: true,
        }
    }
}
