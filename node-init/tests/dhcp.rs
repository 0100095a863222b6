//! `omnode init` against real peers: the DHCP client and interface
//! configuration in a network namespace with dnsmasq as the server.
//!
//! Needs root, iproute2 and dnsmasq (`dnsmasq-base`); runs under
//! `OM_NETNS_TESTS=1` or `CI=true`.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use node_init::dhcp_client::{LeaseEvent, Shell};
use node_init::netif;

use lab::gate::netns_tests;
use lab::netns::{dnsmasq_command, ip, ip_quiet};

const SRV: &str = "omt-init-srv";
const CLI: &str = "omt-init-cli";
const SRV_IF: &str = "omtinit0";
const CLI_IF: &str = "omtinit1";
const CLI_MAC: &str = "52:54:00:77:09:01";

/// Two namespaces joined by a veth pair, dnsmasq serving DHCP in one.
/// Removed on drop and before setup.
struct DhcpLan {
    dnsmasq: Option<Child>,
    _dir: tempfile::TempDir,
    log: std::path::PathBuf,
}

fn cleanup() {
    ip_quiet(&["netns", "del", SRV]);
    ip_quiet(&["netns", "del", CLI]);
}

impl DhcpLan {
    fn new() -> Self {
        cleanup();
        ip(&["netns", "add", SRV]);
        ip(&["netns", "add", CLI]);
        ip(&[
            "link", "add", SRV_IF, "netns", SRV, "type", "veth", "peer", "name", CLI_IF, "netns",
            CLI, "address", CLI_MAC,
        ]);
        ip(&["-n", SRV, "link", "set", "lo", "up"]);
        ip(&["-n", SRV, "addr", "add", "10.77.9.1/24", "dev", SRV_IF]);
        ip(&["-n", SRV, "link", "set", SRV_IF, "up"]);
        ip(&["-n", CLI, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("dnsmasq.log");
        let dnsmasq = dnsmasq_command(SRV, SRV_IF)
            .arg("--dhcp-range=10.77.9.50,10.77.9.60,255.255.255.0,2m")
            .arg("--dhcp-option=option:router,10.77.9.1")
            .arg("--dhcp-option=option:dns-server,10.77.9.1,10.77.9.2")
            .arg("--dhcp-option=option:domain-name,omt.test")
            // T1 of 4 s, so the test sees a unicast renewal.
            .arg("--dhcp-option=option:T1,4")
            .arg("--dhcp-option=option:T2,100")
            .arg(format!("--dhcp-host={CLI_MAC},10.77.9.55,n-omt-1"))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .args(["--pid-file", "--log-dhcp"])
            .stderr(Stdio::null())
            .arg(format!("--log-facility={}", log.display()))
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start dnsmasq (package dnsmasq-base): {e}"));
        DhcpLan {
            dnsmasq: Some(dnsmasq),
            _dir: dir,
            log,
        }
    }
}

impl DhcpLan {
    /// Stops dnsmasq with SIGTERM (so it flushes its log) and returns the log.
    fn stop(&mut self) -> String {
        if let Some(mut c) = self.dnsmasq.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = c.wait();
        }
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for DhcpLan {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup();
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = File::open(format!("/var/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

fn cmd_output(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dhcp_client_gets_a_lease_configures_the_interface_and_renews() {
    if !netns_tests() {
        return;
    }
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        panic!("this test needs dnsmasq (Debian package dnsmasq-base)");
    }
    let mut lan = DhcpLan::new();
    let events = in_netns(CLI, || {
        netif::set_up(CLI_IF).unwrap();
        let mut shell = Shell::new(CLI_IF).unwrap();
        let mut events = Vec::new();
        // A guard so a broken exchange fails instead of hanging; no timing is asserted.
        let give_up = Instant::now() + Duration::from_secs(120);
        let result = shell.run(|ev| {
            if let LeaseEvent::Bound(lease) = ev {
                netif::apply_lease(CLI_IF, lease, true).unwrap();
            }
            events.push(ev.clone());
            let renewed = events.iter().any(|e| matches!(e, LeaseEvent::Renewed(_)));
            if renewed || Instant::now() > give_up {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        result.unwrap();
        events
    });
    let log = lan.stop();
    let bound = events
        .iter()
        .find_map(|e| match e {
            LeaseEvent::Bound(l) => Some(l.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no lease; events {events:?}\ndnsmasq log:\n{log}"));
    assert_eq!(bound.address.to_string(), "10.77.9.55");
    assert_eq!(bound.prefix_len(), 24);
    assert_eq!(
        bound.routers,
        vec!["10.77.9.1".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert_eq!(bound.dns.len(), 2);
    assert_eq!(bound.domain.as_deref(), Some("omt.test"));
    assert_eq!(bound.hostname.as_deref(), Some("n-omt-1"));
    assert_eq!(bound.server.to_string(), "10.77.9.1");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, LeaseEvent::Renewed(l) if l.address == bound.address)),
        "no renewal; events {events:?}\ndnsmasq log:\n{log}"
    );

    let addrs = cmd_output(&["ip", "-n", CLI, "-4", "addr", "show", "dev", CLI_IF]);
    assert!(
        addrs.contains("inet 10.77.9.55/24 brd 10.77.9.255"),
        "{addrs}"
    );
    let routes = cmd_output(&["ip", "-n", CLI, "-4", "route", "show", "default"]);
    assert!(
        routes.contains(&format!("default via 10.77.9.1 dev {CLI_IF}")),
        "{routes}"
    );
    // The server saw the whole exchange, including the unicast renewal.
    assert!(
        log.contains("DHCPACK(omtinit0) 10.77.9.55 52:54:00:77:09:01 n-omt-1"),
        "{log}"
    );
    assert!(
        log.matches("DHCPREQUEST(omtinit0) 10.77.9.55").count() >= 2,
        "{log}"
    );
}
