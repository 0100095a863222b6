//! Registry of the nodes the boot server has seen and the boot stage each reached.
//!
//! Every part of `omboot serve` reports here: DHCP knows a node's MAC, address,
//! architecture and hostname; TFTP and HTTP see only the client's IP and record
//! their stage through the IP→MAC index (falling back to the kernel's ARP table,
//! see [`arp_lookup`]); the node agent checks in over HTTP. The HTTP API serves a
//! [`NodeRegistry::snapshot`]. The lease store of the DHCP part implements
//! [`LeaseSource`] so the API can list leases without knowing how they are stored.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

use contracts::clock::unix_seconds;
use contracts::mac::MacAddr;
use serde::{Deserialize, Serialize};

pub use contracts::boot::{BootStage, NodeRecord};

/// The readable name of an RFC 4578 client architecture code.
pub fn arch_name(code: u16) -> &'static str {
    match code {
        0 => "bios",
        6 => "uefi-ia32",
        7 => "uefi-x64",
        9 => "uefi-x64",
        10 => "uefi-arm32",
        11 => "uefi-arm64",
        16 => "uefi-x64-http",
        19 => "uefi-arm64-http",
        _ => "other",
    }
}

/// What one observation tells the registry; fields left `None` keep their old value.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    /// The node's address, if this observation saw it.
    pub address: Option<IpAddr>,
    /// RFC 4578 architecture code, if seen.
    pub architecture: Option<u16>,
    /// Hostname, if seen.
    pub hostname: Option<String>,
}

#[derive(Default)]
struct Inner {
    by_mac: BTreeMap<MacAddr, NodeRecord>,
    by_ip: HashMap<IpAddr, MacAddr>,
}

/// Thread-safe registry of nodes, keyed by MAC, with an IP→MAC index.
#[derive(Default)]
pub struct NodeRegistry {
    inner: Mutex<Inner>,
}

impl NodeRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that `mac` reached `stage`, merging in what `obs` saw.
    pub fn record(&self, mac: MacAddr, stage: BootStage, obs: Observation) {
        let booted = matches!(
            stage,
            BootStage::Script | BootStage::Kernel | BootStage::Initrd
        );
        self.note(mac, Some(stage), booted, obs);
    }

    /// Records that this head leased `address` to `mac`, a machine that
    /// did not netboot (booted from the ISO or a USB stick): it counts as
    /// booting from this head (`booted_at`, which `admission` trusts the
    /// way it trusts a boot-file fetch), without changing its stage.
    pub fn record_lease(&self, mac: MacAddr, address: IpAddr) {
        let obs = Observation {
            address: Some(address),
            ..Default::default()
        };
        self.note(mac, None, true, obs);
    }

    /// Merges what was seen of `mac` now: its new `stage` (kept if `None`;
    /// a new machine starts at DHCP), whether that was a boot from this
    /// head, and `obs`.
    fn note(&self, mac: MacAddr, stage: Option<BootStage>, booted: bool, obs: Observation) {
        let now = unix_seconds();
        let mut inner = self.lock();
        let inner = &mut *inner;
        let rec = inner
            .by_mac
            .entry(mac)
            .or_insert_with(|| NodeRecord::first(mac, stage.unwrap_or(BootStage::Dhcp), now));
        rec.last_seen = now;
        if let Some(stage) = stage {
            if rec.stage != stage {
                rec.stage = stage;
                rec.stage_since = now;
            }
        }
        if booted {
            rec.booted_at = Some(now);
        }
        if let Some(ip) = obs.address {
            if let Some(old) = rec.address {
                if old != ip && inner.by_ip.get(&old) == Some(&mac) {
                    inner.by_ip.remove(&old);
                }
            }
            rec.address = Some(ip);
            inner.by_ip.insert(ip, mac);
        }
        if let Some(a) = obs.architecture {
            rec.architecture = Some(a);
            rec.architecture_name = Some(arch_name(a).to_string());
        }
        if let Some(h) = obs.hostname {
            rec.hostname = Some(h);
        }
    }

    /// Records a DHCP exchange with `mac`.
    pub fn record_dhcp(
        &self,
        mac: MacAddr,
        address: Option<IpAddr>,
        architecture: Option<u16>,
        hostname: Option<String>,
    ) {
        self.record(
            mac,
            BootStage::Dhcp,
            Observation {
                address,
                architecture,
                hostname,
            },
        );
    }

    /// Records `stage` for the node at `ip`; returns its MAC, or `None` when no
    /// node is known at that address (nothing is recorded then).
    pub fn record_ip(&self, ip: IpAddr, stage: BootStage) -> Option<MacAddr> {
        let mac = self.mac_for_ip(ip)?;
        self.record(
            mac,
            stage,
            Observation {
                address: Some(ip),
                ..Default::default()
            },
        );
        Some(mac)
    }

    /// Records `stage` for `ip`, learning the MAC from the kernel's ARP table when
    /// the registry has not seen that address yet. Returns the MAC if one was found.
    pub fn record_ip_or_arp(&self, ip: IpAddr, stage: BootStage) -> Option<MacAddr> {
        if let Some(mac) = self.record_ip(ip, stage) {
            return Some(mac);
        }
        let mac = arp_lookup(ip)?;
        self.record(
            mac,
            stage,
            Observation {
                address: Some(ip),
                ..Default::default()
            },
        );
        Some(mac)
    }

    /// The MAC last seen at `ip`.
    pub fn mac_for_ip(&self, ip: IpAddr) -> Option<MacAddr> {
        self.lock().by_ip.get(&ip).copied()
    }

    /// The record of one node.
    pub fn get(&self, mac: MacAddr) -> Option<NodeRecord> {
        self.lock().by_mac.get(&mac).cloned()
    }

    /// All nodes, ordered by MAC.
    pub fn snapshot(&self) -> Vec<NodeRecord> {
        self.lock().by_mac.values().cloned().collect()
    }
}

/// Looks `ip` up in the kernel's ARP table (`/proc/net/arp`); `None` when the
/// table is unreadable or has no complete entry for it.
pub fn arp_lookup(ip: IpAddr) -> Option<MacAddr> {
    let IpAddr::V4(v4) = ip else { return None };
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp_table(&table, v4)
}

/// Finds `ip` in the text of `/proc/net/arp`. Incomplete entries (flags 0x0) and
/// all-zero MACs are skipped.
pub fn parse_arp_table(table: &str, ip: std::net::Ipv4Addr) -> Option<MacAddr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[0].parse::<std::net::Ipv4Addr>().ok()? != ip || f[2] == "0x0" {
            return None;
        }
        let mac: MacAddr = f[3].parse().ok()?;
        (mac.0 != [0; 6]).then_some(mac)
    })
}

/// One lease as the HTTP API shows it.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct LeaseView {
    /// The client's MAC.
    pub mac: MacAddr,
    /// The leased address.
    pub ip: std::net::Ipv4Addr,
    /// Hostname the client sent or a reservation named.
    pub hostname: Option<String>,
    /// The lease state as the lease store names it, lowercase (`bound`, `offered`, …).
    pub state: String,
    /// Unix seconds when the lease expires.
    pub expires: u64,
}

/// Where the HTTP API gets the lease table; the DHCP lease store implements it.
pub trait LeaseSource: Send + Sync {
    /// The current leases.
    fn leases(&self) -> Vec<LeaseView>;
}

/// A fixed list of leases: what a server without a DHCP part (proxy mode) serves.
impl LeaseSource for Vec<LeaseView> {
    fn leases(&self) -> Vec<LeaseView> {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn mac_roundtrip_and_errors() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5254:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn ip_index_follows_address_changes() {
        let r = NodeRegistry::new();
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 6));
        assert_eq!(r.record_ip(a, BootStage::Tftp), None);
        r.record_dhcp(mac, Some(a), Some(7), Some("n1".into()));
        assert_eq!(r.record_ip(a, BootStage::Tftp), Some(mac));
        let rec = r.get(mac).unwrap();
        assert_eq!(rec.stage, BootStage::Tftp);
        assert_eq!(rec.architecture_name.as_deref(), Some("uefi-x64"));
        assert_eq!(rec.hostname.as_deref(), Some("n1"));
        r.record_dhcp(mac, Some(b), None, None);
        assert_eq!(r.mac_for_ip(a), None);
        assert_eq!(r.mac_for_ip(b), Some(mac));
        assert_eq!(r.get(mac).unwrap().architecture, Some(7));
    }

    #[test]
    fn a_lease_to_a_machine_booted_from_a_medium_counts_as_a_boot_here() {
        let r = NodeRegistry::new();
        let mac = MacAddr([2, 0, 0, 0, 0, 2]);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        r.record_lease(mac, a);
        let rec = r.get(mac).unwrap();
        assert_eq!(rec.stage, BootStage::Dhcp);
        assert!(rec.booted_at.is_some());
        assert_eq!(r.mac_for_ip(a), Some(mac));
        // A netbooted node's later lease keeps the stage it reached.
        r.record_ip(a, BootStage::Initrd);
        r.record_lease(mac, a);
        assert_eq!(r.get(mac).unwrap().stage, BootStage::Initrd);
    }

    #[test]
    fn arp_table_parsing() {
        let t = "IP address       HW type     Flags       HW address            Mask     Device\n\
                 10.0.0.7         0x1         0x2         52:54:00:12:34:56     *        br0\n\
                 10.0.0.8         0x1         0x0         00:00:00:00:00:00     *        br0\n";
        assert_eq!(
            parse_arp_table(t, Ipv4Addr::new(10, 0, 0, 7)),
            Some(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
        assert_eq!(parse_arp_table(t, Ipv4Addr::new(10, 0, 0, 8)), None);
        assert_eq!(parse_arp_table(t, Ipv4Addr::new(10, 0, 0, 9)), None);
    }
}
