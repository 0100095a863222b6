//! Bringing up the network at boot, in the background: kernel modules for
//! the machine's devices, every wired NIC up, a DHCP client per NIC (or the
//! static `om.ip=`), and the results sent to PID 1's loop as [`NetEvent`]s.
//! A head without `om.ip=` probes DHCP on every NIC and, through
//! [`head::Election`], serves on the first linked one no DHCP server answers
//! (it takes [`head::FALLBACK_ADDRESS`]), else on the first leased one.
//!
//! `plan` (pure, tested) says how each NIC gets its address and whether
//! PID 1 hears of it; `bring_up` finds the NICs and starts a thread per NIC
//! (`run_interface`), whose DHCP events `DhcpNic` turns into interface
//! configuration, console lines and election reports.
//!
//! Nothing here can stop the boot: a missing driver, no NIC or no DHCP
//! answer is printed and retried while the shell stays usable.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::address::{IfAddress, Lease};
use crate::cmdline::{Role, Settings, StaticIp};
use crate::dhcp_client::{hostname_from_mac, LeaseEvent, Notice, Shell};
use crate::{head, kmod, netif, reaper};

/// What the network thread tells PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// The first interface has an address: the node has a name and can
    /// start the agent.
    Up {
        /// The interface and its address.
        address: IfAddress,
        /// The host name now set.
        hostname: String,
    },
}

/// How an interface gets its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addressing {
    /// DHCP, retried for ever.
    Dhcp,
    /// This static address.
    Static(StaticIp),
    /// The head's probe: DHCP, reported to the [`head::Election`]; after
    /// [`head::DHCP_PROBE_TRIES`] unanswered DISCOVERs on a linked NIC, the
    /// one elected takes [`head::FALLBACK_ADDRESS`].
    HeadProbe,
}

/// Which of an interface's addresses PID 1 hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Announce {
    /// Its first address, if no other interface was announced before.
    IfFirst,
    /// None (a head's NIC other than the one it serves on).
    Never,
    /// The one [`head::Election`] picks.
    Elected,
}

/// How the settings bring up an interface (`first`: the first one found).
fn plan(settings: &Settings, first: bool) -> (Addressing, Announce) {
    match (settings.role, settings.static_ip) {
        (Role::Node, Some(ip)) if first => (Addressing::Static(ip), Announce::IfFirst),
        (Role::Node, _) => (Addressing::Dhcp, Announce::IfFirst),
        (Role::Head, _) if head::probes_dhcp(settings) => {
            (Addressing::HeadProbe, Announce::Elected)
        }
        (Role::Head, ip) if first => (
            Addressing::Static(ip.unwrap_or(head::FALLBACK_ADDRESS)),
            Announce::IfFirst,
        ),
        (Role::Head, _) => (Addressing::Dhcp, Announce::Never),
    }
}

/// Starts the network thread.
pub fn start(settings: Settings, events: Sender<NetEvent>) {
    let spawned = std::thread::Builder::new()
        .name("net".into())
        .spawn(move || bring_up(settings, events));
    if let Err(e) = spawned {
        say!("cannot start the network thread: {e}; no network this boot");
    }
}

fn load_modules(extra: &[String], tried: &mut BTreeSet<String>, first: bool) {
    let Some(dir) = kmod::modules_dir() else {
        say!("cannot read the kernel release; not loading modules");
        return;
    };
    match kmod::load_for_machine(&dir, Path::new("/sys"), extra, tried) {
        Ok(report) => {
            if !report.loaded.is_empty() {
                say!("loaded modules: {}", report.loaded.join(" "));
            } else if first {
                say!("no modules to load for this machine's devices");
            }
            for e in report.failed {
                say!("{e}");
            }
        }
        Err(e) if first => say!("not loading modules: {e}"),
        Err(_) => {}
    }
}

/// What the per-interface threads share.
#[derive(Clone)]
struct Shared {
    role: Role,
    /// Taken by the interface that holds the default route: a static
    /// address with a gateway, else the first DHCP lease (which also writes
    /// `/etc/resolv.conf`).
    primary: Arc<AtomicBool>,
    /// Set once PID 1 has heard of an address (one [`NetEvent::Up`]).
    announced: Arc<AtomicBool>,
    /// The head's choice of NIC ([`Addressing::HeadProbe`]).
    election: Arc<Mutex<head::Election<Configured>>>,
    events: Sender<NetEvent>,
}

impl Shared {
    fn elect<R>(&self, f: impl FnOnce(&mut head::Election<Configured>) -> R) -> R {
        // A poisoned lock only means another NIC's thread panicked; the
        // election's state is still consistent.
        let mut election = self.election.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut election)
    }
}

fn bring_up(settings: Settings, events: Sender<NetEvent>) {
    let mut tried = BTreeSet::new();
    let shared = Shared {
        role: settings.role,
        primary: Arc::new(AtomicBool::new(false)),
        announced: Arc::new(AtomicBool::new(false)),
        election: Arc::new(Mutex::new(head::Election::default())),
        events,
    };
    let mut handled: BTreeSet<String> = BTreeSet::new();
    let mut first = true;
    let mut last_complaint: Option<Instant> = None;
    loop {
        // Loading a bus driver can reveal more devices: a second pass
        // picks up their modules.
        load_modules(&settings.modules, &mut tried, first);
        load_modules(&settings.modules, &mut tried, false);
        first = false;
        let nics = netif::wired_interfaces(Path::new("/sys/class/net"));
        if nics.is_empty()
            && handled.is_empty()
            && last_complaint.is_none_or(|t| t.elapsed() >= Duration::from_secs(60))
        {
            say!("no wired network interface found (no driver for the NIC?); retrying every 5s");
            last_complaint = Some(Instant::now());
        }
        for nic in nics {
            if !handled.insert(nic.clone()) {
                continue;
            }
            let (addressing, announce) = plan(&settings, handled.len() == 1);
            if addressing == Addressing::HeadProbe {
                // Before any thread runs, so no NIC's lease settles the
                // election while another NIC found in this scan is unknown.
                shared.elect(|e| e.join(&nic));
            }
            let shared = shared.clone();
            let name = format!("dhcp-{nic}");
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn(move || run_interface(&nic, addressing, announce, &shared));
            if let Err(e) = spawned {
                say!("cannot start a thread for the interface: {e}");
            }
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// An interface's address as PID 1 hears of it.
#[derive(Debug, Clone)]
struct Configured {
    address: IfAddress,
    /// The host name the DHCP server gave, if any.
    dhcp_hostname: Option<String>,
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Node => "node",
        Role::Head => "head",
    }
}

/// Sets the host name and tells PID 1 (once: later calls do nothing).
fn announce(c: Configured, shared: &Shared) {
    if shared.announced.swap(true, Ordering::SeqCst) {
        return;
    }
    let Configured {
        address,
        dhcp_hostname,
    } = c;
    let role = shared.role;
    let hostname = match (dhcp_hostname, netif::mac_address(&address.iface)) {
        (Some(n), _) => n,
        (None, Ok(mac)) => hostname_from_mac(role_word(role), mac),
        (None, Err(_)) => role_word(role).to_string(),
    };
    match netif::set_hostname(&hostname) {
        Ok(()) => say!("hostname {hostname}"),
        Err(e) => say!("{e}"),
    }
    let _ = shared.events.send(NetEvent::Up { address, hostname });
    reaper::wake();
}

/// Gives `iface` the static address `ip` and announces it (if no other
/// interface was).
fn apply_static(iface: &str, mac: &str, ip: StaticIp, shared: &Shared) {
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(ip.prefix)).unwrap_or(0));
    if ip.gateway.is_some() {
        // This NIC holds the default route: a DHCP lease on another one
        // must not add a second.
        shared.primary.store(true, Ordering::SeqCst);
    }
    let res = netif::set_address(iface, ip.address, mask, None).and_then(|()| match ip.gateway {
        Some(gw) => netif::add_default_route(iface, gw),
        None => Ok(()),
    });
    match res {
        Ok(()) => {
            say!(
                "{iface} ({mac}) static address {}/{}",
                ip.address,
                ip.prefix
            );
            announce(
                Configured {
                    address: IfAddress {
                        iface: iface.to_string(),
                        address: ip.address,
                        prefix: ip.prefix,
                        gateway: ip.gateway,
                        from_dhcp: false,
                    },
                    dhcp_hostname: None,
                },
                shared,
            );
        }
        Err(e) => say!("{e}"),
    }
}

/// An interface's thread: link up, then its static address or a DHCP
/// client for ever.
fn run_interface(iface: &str, addressing: Addressing, policy: Announce, shared: &Shared) {
    let mac = netif::mac_address(iface)
        .map(|mac| mac.to_string())
        .unwrap_or_else(|e| e.to_string());
    if let Err(e) = netif::set_up(iface) {
        say!("{e}");
    }
    // Give the link a moment to negotiate so the first DISCOVER is not lost.
    let t0 = Instant::now();
    while !netif::has_carrier(iface) && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !netif::has_carrier(iface) {
        say!("{iface} ({mac}) has no link (cable?); trying anyway");
    }
    if let Addressing::Static(ip) = addressing {
        apply_static(iface, &mac, ip, shared);
        return;
    }
    say!("{iface} ({mac}) up, asking DHCP");
    let mut nic = DhcpNic {
        iface,
        policy,
        probing: addressing == Addressing::HeadProbe,
        shared,
        is_primary: false,
        probe_reported: false,
    };
    loop {
        let mut shell = match Shell::new(iface) {
            Ok(s) => s,
            Err(e) => {
                if nic.probing {
                    nic.withdraw();
                }
                say!("{e}; retrying in 5s");
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        let result = shell.run(|event| nic.on_lease_event(event));
        if result.is_ok() && nic.probing {
            // Only the election's fallback breaks the client's loop.
            apply_static(iface, &mac, head::FALLBACK_ADDRESS, shared);
            return;
        }
        if let Err(e) = result {
            say!("{iface}: DHCP client failed: {e}; retrying in 5s");
            std::thread::sleep(Duration::from_secs(5));
        }
    }
}

/// One interface's DHCP client as the network thread sees it: what it does
/// with the client's [`LeaseEvent`]s.
struct DhcpNic<'a> {
    iface: &'a str,
    policy: Announce,
    /// The head's probe ([`Addressing::HeadProbe`]).
    probing: bool,
    shared: &'a Shared,
    /// Whether this NIC holds the default route and writes resolv.conf.
    is_primary: bool,
    /// Set once this NIC has told the election no DHCP server answered.
    probe_reported: bool,
}

impl DhcpNic<'_> {
    /// Handles one event; breaks the client's loop only when the election
    /// makes this NIC take [`head::FALLBACK_ADDRESS`].
    fn on_lease_event(&mut self, event: &LeaseEvent) -> ControlFlow<()> {
        let iface = self.iface;
        match event {
            LeaseEvent::Bound(lease) => self.on_bound(lease),
            LeaseEvent::Renewed(lease) => {
                tracing::info!(iface, address = %lease.address, "dhcp lease renewed");
            }
            LeaseEvent::Lost(lease) => {
                say!("{iface}: DHCP lease {} lost; asking again", lease.address);
                if let Err(e) = netif::clear_address(iface) {
                    say!("{e}");
                }
            }
            LeaseEvent::Notice(Notice::NoOffer { attempts }) => return self.on_no_offer(*attempts),
            LeaseEvent::Notice(Notice::Nak { server }) => {
                say!("{iface}: DHCP server {server} refused the request; starting over")
            }
            LeaseEvent::Notice(Notice::RequestTimedOut { address }) => {
                say!("{iface}: no DHCP answer to the request for {address}; starting over")
            }
        }
        ControlFlow::Continue(())
    }

    /// A new lease: configure the interface (and, on the primary NIC, the
    /// default route and resolv.conf), then announce it as the policy says.
    fn on_bound(&mut self, lease: &Lease) {
        let iface = self.iface;
        let shared = self.shared;
        if !self.is_primary {
            self.is_primary = !shared.primary.swap(true, Ordering::SeqCst);
        }
        match netif::apply_lease(iface, lease, self.is_primary) {
            Ok(()) => say!("{}", lease_line(iface, lease)),
            Err(e) => say!("{e}"),
        }
        if self.is_primary {
            if let Err(e) = netif::write_resolv_conf(&lease.dns, lease.domain.as_deref()) {
                say!("{e}");
            }
        }
        let configured = Configured {
            address: IfAddress::from_lease(iface, lease),
            dhcp_hostname: lease.hostname.clone(),
        };
        match self.policy {
            Announce::IfFirst => announce(configured, shared),
            Announce::Never => {}
            Announce::Elected => {
                if let Some(chosen) = shared.elect(|el| el.leased(iface, configured)) {
                    announce(chosen, shared);
                }
            }
        }
    }

    /// DISCOVERs went unanswered. On the head's probe, after
    /// [`head::DHCP_PROBE_TRIES`], this NIC reports to the election once:
    /// no link withdraws it; the NIC elected breaks the client's loop to
    /// take [`head::FALLBACK_ADDRESS`].
    fn on_no_offer(&mut self, attempts: u32) -> ControlFlow<()> {
        let iface = self.iface;
        if self.probing && !self.probe_reported && attempts >= head::DHCP_PROBE_TRIES {
            if !netif::has_carrier(iface) {
                // Not a network at all: no reason to serve here or to keep
                // the other NICs waiting.
                self.withdraw();
            } else if self.shared.elect(|el| el.no_server(iface)) {
                self.probe_reported = true;
                let ip = head::FALLBACK_ADDRESS;
                say!(
                    "{iface}: no DHCP server answered {attempts} tries; this is a boot network of our own: taking {}/{}",
                    ip.address,
                    ip.prefix
                );
                return ControlFlow::Break(());
            } else {
                self.probe_reported = true;
                say!("{iface}: no DHCP server answered {attempts} tries; the cluster is served on another NIC; still trying");
                return ControlFlow::Continue(());
            }
        }
        say!("{iface}: no DHCP answer after {attempts} tries; still trying");
        ControlFlow::Continue(())
    }

    /// Takes this NIC out of the head's election, announcing the NIC that
    /// settles it if it does.
    fn withdraw(&self) {
        if let Some(chosen) = self.shared.elect(|el| el.withdraw(self.iface)) {
            announce(chosen, self.shared);
        }
    }
}

/// The console line for a new lease on `iface`.
fn lease_line(iface: &str, lease: &Lease) -> String {
    let router = lease
        .routers
        .first()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "none".into());
    let dns = if lease.dns.is_empty() {
        "none".to_string()
    } else {
        lease
            .dns
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{iface}: DHCP lease {}/{} from {}, router {router}, dns {dns}, {}s",
        lease.address,
        lease.prefix_len(),
        lease.server,
        lease.lease_time.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(line: &str, want_first: (Addressing, Announce), want_other: (Addressing, Announce)) {
        let (settings, problems) = crate::cmdline::parse(line);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(plan(&settings, true), want_first, "{line}: first NIC");
        assert_eq!(plan(&settings, false), want_other, "{line}: other NICs");
    }

    #[test]
    fn plans_for_nodes_and_heads() {
        use Addressing::*;
        use Announce::*;
        let ip = StaticIp {
            address: Ipv4Addr::new(10, 9, 0, 1),
            prefix: 16,
            gateway: None,
        };
        check("om.role=node", (Dhcp, IfFirst), (Dhcp, IfFirst));
        check("om.ip=10.9.0.1/16", (Static(ip), IfFirst), (Dhcp, IfFirst));
        check("om.role=head", (HeadProbe, Elected), (HeadProbe, Elected));
        check(
            "om.role=head om.pxe=proxy",
            (HeadProbe, Elected),
            (HeadProbe, Elected),
        );
        check(
            "om.role=head om.ip=10.9.0.1/16",
            (Static(ip), IfFirst),
            (Dhcp, Never),
        );
        check(
            "om.role=head om.pxe=dhcp",
            (Static(head::FALLBACK_ADDRESS), IfFirst),
            (Dhcp, Never),
        );
    }

    #[test]
    fn lease_lines() {
        let mut lease = Lease {
            address: Ipv4Addr::new(10, 77, 10, 55),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            broadcast: None,
            routers: vec![Ipv4Addr::new(10, 77, 10, 1)],
            dns: vec![Ipv4Addr::new(10, 77, 10, 1)],
            domain: None,
            hostname: None,
            server: Ipv4Addr::new(10, 77, 10, 1),
            lease_time: Duration::from_secs(120),
            renew_after: Duration::from_secs(60),
            rebind_after: Duration::from_secs(105),
        };
        assert_eq!(
            lease_line("eth0", &lease),
            "eth0: DHCP lease 10.77.10.55/24 from 10.77.10.1, router 10.77.10.1, dns 10.77.10.1, 120s"
        );
        lease.routers.clear();
        lease.dns = vec![Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3)];
        assert_eq!(
            lease_line("eth1", &lease),
            "eth1: DHCP lease 10.77.10.55/24 from 10.77.10.1, router none, dns 10.0.0.2,10.0.0.3, 120s"
        );
    }
}
