//! The head's boot service, decided from what the network gave it: which
//! interface and mode `omboot serve` runs with, the address pool in DHCP
//! mode, and its command line.
//!
//! Pure: the caller passes the settings and the interface's address; the
//! result is an argv for [`crate::reaper::Services`] or an error naming what
//! is wrong. The ClusterKnoppix way: boot the ISO's head entry with no
//! settings at all and it works on either kind of network.
//!
//! - An existing LAN: its DHCP server answers the head, so the head serves
//!   as ProxyDHCP and never hands out an address.
//! - A dedicated boot network (a switch and the nodes): nobody answers
//!   within [`DHCP_PROBE_TRIES`] DISCOVERs (2 + 4 + 8 s), so the head takes
//!   [`FALLBACK_ADDRESS`] and is the network's DHCP server.
//!
//! With several NICs every one probes, and [`Election`] picks the one to
//! serve on: the first with a link on which no DHCP server answered (the
//! cluster's own network, beside an uplink with a router), else the first
//! by name once all have leases.
//!
//! `om.ip=` skips the probe (static address on the first NIC, DHCP mode) and
//! `om.pxe=` overrides the mode.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::address::IfAddress;
use crate::cmdline::{PxeMode, Settings, StaticIp};

/// The head's address on a boot network where no DHCP server answered.
pub const FALLBACK_ADDRESS: StaticIp = StaticIp {
    address: Ipv4Addr::new(10, 77, 0, 1),
    prefix: 24,
    gateway: None,
};

/// How many DHCP DISCOVERs the head sends before it decides the network
/// has no DHCP server and takes [`FALLBACK_ADDRESS`].
pub const DHCP_PROBE_TRIES: u32 = 3;

/// The longest prefix that still leaves room for a pool (a /28 gives 6).
const LONGEST_POOL_PREFIX: u8 = 28;

/// The mode `omboot serve` runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeMode {
    /// Authoritative DHCP for the pool.
    Dhcp,
    /// ProxyDHCP only.
    Proxy,
}

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Why the head cannot serve the netboot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The subnet is too small to split into the head's half and a pool.
    #[error("{address}/{prefix} on {iface} leaves no room for a DHCP pool: use a /{LONGEST_POOL_PREFIX} or shorter prefix in om.ip=, or om.pxe=proxy beside another DHCP server")]
    SubnetTooSmall {
        /// The interface.
        iface: String,
        /// The head's address.
        address: Ipv4Addr,
        /// Its prefix length.
        prefix: u8,
    },
}

/// How one NIC's DHCP probe went.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe<T> {
    /// Still asking.
    Pending,
    /// A DHCP server gave it an address (`T` describes it).
    Leased(T),
    /// Linked, and no DHCP server answered.
    NoServer,
}

/// Which of the head's NICs serves the cluster (auto mode, no `om.ip=`).
/// Every NIC joins before its probe starts and then reports how it went;
/// the first report that settles the question gets the answer back.
/// `T` is what the caller needs to announce a leased NIC.
#[derive(Debug, Clone)]
pub struct Election<T> {
    nics: BTreeMap<String, Probe<T>>,
    decided: bool,
}

impl<T> Default for Election<T> {
    fn default() -> Self {
        Election {
            nics: BTreeMap::new(),
            decided: false,
        }
    }
}

impl<T> Election<T> {
    /// A NIC is about to probe.
    pub fn join(&mut self, iface: &str) {
        self.nics.entry(iface.to_string()).or_insert(Probe::Pending);
    }

    /// `iface` has a link and no DHCP server answered it: true when it is
    /// the one to serve (it takes [`FALLBACK_ADDRESS`] and DHCP mode).
    pub fn no_server(&mut self, iface: &str) -> bool {
        self.nics.insert(iface.to_string(), Probe::NoServer);
        if self.decided {
            return false;
        }
        self.decided = true;
        true
    }

    /// `iface` got a lease. Returns the leased NIC to serve on (the first by
    /// name) when this was the last NIC the decision waited for.
    pub fn leased(&mut self, iface: &str, lease: T) -> Option<T> {
        if self.decided {
            return None;
        }
        self.nics.insert(iface.to_string(), Probe::Leased(lease));
        self.settle()
    }

    /// `iface` cannot take part (no link, or its socket fails): the
    /// decision no longer waits for it. Returns the NIC to serve on if that
    /// settles it.
    pub fn withdraw(&mut self, iface: &str) -> Option<T> {
        if self.decided {
            return None;
        }
        self.nics.remove(iface);
        self.settle()
    }

    fn settle(&mut self) -> Option<T> {
        if self.nics.values().any(|p| matches!(p, Probe::Pending)) {
            return None;
        }
        // Undecided means no NIC reported NoServer: all are leased.
        let first = self
            .nics
            .iter()
            .find(|(_, p)| matches!(p, Probe::Leased(_)))
            .map(|(name, _)| name.clone())?;
        self.decided = true;
        match self.nics.insert(first, Probe::Pending) {
            Some(Probe::Leased(lease)) => Some(lease),
            _ => None,
        }
    }
}

/// The mode for `pxe` on `net`; `None` when the head serves nothing.
pub fn serve_mode(pxe: PxeMode, net: &IfAddress) -> Option<ServeMode> {
    match pxe {
        PxeMode::Off => None,
        PxeMode::Dhcp => Some(ServeMode::Dhcp),
        PxeMode::Proxy => Some(ServeMode::Proxy),
        PxeMode::Auto if net.from_dhcp => Some(ServeMode::Proxy),
        PxeMode::Auto => Some(ServeMode::Dhcp),
    }
}

/// Whether the head should probe for a DHCP server before falling back to
/// [`FALLBACK_ADDRESS`]: only when it has no `om.ip=` and the mode could
/// still be proxy.
pub fn probes_dhcp(settings: &Settings) -> bool {
    settings.static_ip.is_none() && settings.pxe != PxeMode::Dhcp
}

/// The DHCP pool for a head at `address/prefix`: the half of the subnet the
/// head is not in, without the network and broadcast addresses and without
/// `gateway` (which splits the range in two when it falls inside).
pub fn pool(net: &IfAddress) -> Result<Vec<Range>, HeadError> {
    if net.prefix > LONGEST_POOL_PREFIX {
        return Err(HeadError::SubnetTooSmall {
            iface: net.iface.clone(),
            address: net.address,
            prefix: net.prefix,
        });
    }
    let size = 1u64 << (32 - u32::from(net.prefix));
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.prefix))
        .unwrap_or(0);
    let network = u64::from(u32::from(net.address) & mask);
    let broadcast = network + size - 1;
    let half = size / 2;
    let (start, end) = if u64::from(u32::from(net.address)) < network + half {
        (network + half, broadcast - 1)
    } else {
        (network + 1, network + half - 1)
    };
    let mut ranges = vec![(start, end)];
    if let Some(gw) = net.gateway.map(|g| u64::from(u32::from(g))) {
        if (start..=end).contains(&gw) {
            ranges = [(start, gw.saturating_sub(1)), (gw + 1, end)]
                .into_iter()
                .filter(|(s, e)| s <= e && *s >= start && *e <= end)
                .collect();
        }
    }
    // Every value lies inside the head's /prefix, so it fits in 32 bits.
    let addr = |v: u64| Ipv4Addr::from(v as u32);
    Ok(ranges
        .into_iter()
        .map(|(s, e)| Range {
            start: addr(s),
            end: addr(e),
        })
        .collect())
}

/// Where `omboot serve` keeps its lease log on the head (the head's state
/// lives as long as the boot).
pub const STATE_DIR: &str = "/run/omboot";

/// The `omboot serve` command line for the head: `omboot` is the binary,
/// `images` the mounted boot medium, `key_file` the cluster key handed to
/// the nodes, `share` the shared tree (a folder or an `nfs://` URL), if
/// any. `None` when `om.pxe=off`.
pub fn omboot_argv(
    omboot: &str,
    settings: &Settings,
    net: &IfAddress,
    images: &Path,
    key_file: &Path,
    share: Option<&str>,
) -> Result<Option<Vec<String>>, HeadError> {
    let Some(mode) = serve_mode(settings.pxe, net) else {
        return Ok(None);
    };
    let mut argv: Vec<String> = vec![
        omboot.into(),
        "serve".into(),
        "--interface".into(),
        net.iface.clone(),
        "--mode".into(),
        match mode {
            ServeMode::Dhcp => "dhcp",
            ServeMode::Proxy => "proxy",
        }
        .into(),
    ];
    if mode == ServeMode::Dhcp {
        for range in pool(net)? {
            argv.push("--pool".into());
            argv.push(range.to_string());
        }
    }
    argv.extend([
        "--images".into(),
        images.display().to_string(),
        "--state".into(),
        STATE_DIR.into(),
        "--http-port".into(),
        settings.http_port.to_string(),
        "--cluster".into(),
        cluster_id(settings).into(),
        "--key-file".into(),
        key_file.display().to_string(),
    ]);
    if let Some(share) = share {
        argv.extend(["--share".into(), share.into()]);
    }
    Ok(Some(argv))
}

/// The cluster id: `om.cluster=`, else `omcluster`.
pub fn cluster_id(settings: &Settings) -> &str {
    settings.cluster.as_deref().unwrap_or("omcluster")
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn net(cidr: &str, gateway: Option<&str>, from_dhcp: bool) -> IfAddress {
        let (a, p) = cidr.split_once('/').unwrap();
        IfAddress {
            iface: "eth0".into(),
            address: a.parse().unwrap(),
            prefix: p.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            from_dhcp,
        }
    }

    fn check_pool(cidr: &str, gateway: Option<&str>, expect: Expect) {
        let out = match pool(&net(cidr, gateway, false)) {
            Ok(ranges) => ranges
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(" "),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn pool_is_the_other_half_of_the_subnet() {
        check_pool("10.77.0.1/24", None, expect!["10.77.0.128-10.77.0.254"]);
        check_pool("10.77.0.200/24", None, expect!["10.77.0.1-10.77.0.127"]);
        check_pool(
            "192.168.8.1/22",
            None,
            expect!["192.168.10.0-192.168.11.254"],
        );
        check_pool("10.0.0.1/28", None, expect!["10.0.0.8-10.0.0.14"]);
        check_pool("10.0.0.1/8", None, expect!["10.128.0.0-10.255.255.254"]);
    }

    #[test]
    fn pool_leaves_out_the_gateway() {
        check_pool(
            "10.77.0.1/24",
            Some("10.77.0.254"),
            expect!["10.77.0.128-10.77.0.253"],
        );
        check_pool(
            "10.77.0.1/24",
            Some("10.77.0.200"),
            expect!["10.77.0.128-10.77.0.199 10.77.0.201-10.77.0.254"],
        );
        check_pool(
            "10.77.0.1/24",
            Some("10.77.0.128"),
            expect!["10.77.0.129-10.77.0.254"],
        );
        // A gateway in the head's own half changes nothing.
        check_pool(
            "10.77.0.1/24",
            Some("10.77.0.2"),
            expect!["10.77.0.128-10.77.0.254"],
        );
    }

    #[test]
    fn tiny_subnets_are_refused_with_the_fix() {
        check_pool(
            "10.0.0.1/29",
            None,
            expect!["error: 10.0.0.1/29 on eth0 leaves no room for a DHCP pool: use a /28 or shorter prefix in om.ip=, or om.pxe=proxy beside another DHCP server"],
        );
    }

    fn check_argv(cmdline: &str, head: IfAddress, expect: Expect) {
        check_argv_sharing(cmdline, head, None, expect)
    }

    fn check_argv_sharing(cmdline: &str, head: IfAddress, share: Option<&str>, expect: Expect) {
        let (settings, problems) = crate::cmdline::parse(cmdline);
        assert!(problems.is_empty(), "{problems:?}");
        let out = match omboot_argv(
            "/bin/omboot",
            &settings,
            &head,
            Path::new("/run/omcluster/media"),
            Path::new("/run/omcluster.key"),
            share,
        ) {
            Ok(Some(argv)) => argv.join(" "),
            Ok(None) => "no boot server".into(),
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn static_address_serves_dhcp_with_a_pool() {
        check_argv_sharing(
            "om.role=head",
            net("10.77.0.1/24", None, false),
            Some("/cluster"),
            expect!["/bin/omboot serve --interface eth0 --mode dhcp --pool 10.77.0.128-10.77.0.254 --images /run/omcluster/media --state /run/omboot --http-port 80 --cluster omcluster --key-file /run/omcluster.key --share /cluster"],
        );
    }

    #[test]
    fn address_from_a_dhcp_server_serves_proxy() {
        check_argv(
            "om.role=head om.cluster=lab om.http=8080",
            net("192.168.1.40/24", None, true),
            expect!["/bin/omboot serve --interface eth0 --mode proxy --images /run/omcluster/media --state /run/omboot --http-port 8080 --cluster lab --key-file /run/omcluster.key"],
        );
    }

    #[test]
    fn om_pxe_overrides_the_mode() {
        check_argv(
            "om.role=head om.pxe=dhcp",
            net("192.168.1.40/24", None, true),
            expect!["/bin/omboot serve --interface eth0 --mode dhcp --pool 192.168.1.128-192.168.1.254 --images /run/omcluster/media --state /run/omboot --http-port 80 --cluster omcluster --key-file /run/omcluster.key"],
        );
        check_argv(
            "om.role=head om.pxe=off",
            net("10.77.0.1/24", None, false),
            expect!["no boot server"],
        );
        check_argv(
            "om.role=head om.pxe=dhcp",
            net("10.0.0.1/30", None, false),
            expect!["error: 10.0.0.1/30 on eth0 leaves no room for a DHCP pool: use a /28 or shorter prefix in om.ip=, or om.pxe=proxy beside another DHCP server"],
        );
    }

    #[test]
    fn election_prefers_the_nic_without_a_dhcp_server() {
        // The uplink answers at once; the cluster NIC's probe ends later.
        let mut e = Election::default();
        e.join("eth0");
        e.join("eth1");
        assert_eq!(e.leased("eth0", "uplink lease"), None);
        assert!(e.no_server("eth1"));
        // Settled: a later lease or probe changes nothing.
        assert_eq!(e.leased("eth1", "late"), None);
        assert!(!e.no_server("eth0"));
    }

    #[test]
    fn election_with_leases_everywhere_serves_the_first_by_name() {
        let mut e = Election::default();
        e.join("eth1");
        e.join("eth0");
        assert_eq!(e.leased("eth1", "b"), None);
        assert_eq!(e.leased("eth0", "a"), Some("a"));
        assert_eq!(e.leased("eth0", "again"), None);
    }

    #[test]
    fn election_with_one_nic_decides_at_once() {
        let mut e = Election::default();
        e.join("eth0");
        assert_eq!(e.leased("eth0", "lan"), Some("lan"));
        let mut e: Election<&str> = Election::default();
        e.join("eth0");
        assert!(e.no_server("eth0"));
    }

    #[test]
    fn election_does_not_wait_for_a_nic_without_link() {
        let mut e = Election::default();
        e.join("eth0");
        e.join("eth1");
        assert_eq!(e.leased("eth1", "uplink"), None);
        assert_eq!(e.withdraw("eth0"), Some("uplink"));
        // A NIC withdrawn first, then everyone else leased.
        let mut e = Election::default();
        e.join("eth0");
        e.join("eth1");
        assert_eq!(e.withdraw("eth1"), None);
        assert_eq!(e.leased("eth0", "lan"), Some("lan"));
        // A withdrawn NIC whose link comes back can still serve.
        let mut e: Election<&str> = Election::default();
        e.join("eth0");
        assert_eq!(e.withdraw("eth0"), None);
        assert!(e.no_server("eth0"));
    }

    #[test]
    fn only_an_unconfigured_head_probes_for_dhcp() {
        let probes = |line: &str| probes_dhcp(&crate::cmdline::parse(line).0);
        assert!(probes("om.role=head"));
        assert!(probes("om.role=head om.pxe=proxy"));
        assert!(!probes("om.role=head om.pxe=dhcp"));
        assert!(!probes("om.role=head om.ip=10.1.0.1/16"));
    }
}
