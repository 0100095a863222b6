//! Network namespaces: the virtual LANs the lab and the namespace tests run
//! on, and the `ip` calls that build them.
//!
//! - [`VirtualLan`]: one namespace holding bridge `br0` with the head's
//!   address; qemu machines get tap devices on it.
//! - [`BridgeLan`]: a hub namespace with a bridge and one namespace per
//!   node, each joined to the bridge by a veth pair (the agents' tests and
//!   benchmark run one agent per node namespace).
//! - [`remove_namespace`] kills what runs in a namespace and deletes it; every
//!   LAN calls it on drop and before setup, so a crashed run does not get in
//!   the way. [`netns_command`] runs a program inside a namespace,
//!   [`dnsmasq_command`] a DHCP server there.
//! - [`ip`] and [`ip_quiet`] are the test-side `ip` calls: the first panics
//!   with `ip`'s stderr, the second ignores failure (cleanup).

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::LabError;
use crate::process::run;

/// A network namespace with a bridge: the virtual LAN the machines boot on.
#[derive(Debug)]
pub struct VirtualLan {
    name: String,
    head_address: Ipv4Addr,
    prefix_len: u8,
    taps: Vec<String>,
}

impl VirtualLan {
    /// Creates namespace `name` with bridge `br0` carrying `head_address/prefix_len`.
    /// A stale namespace of the same name (from a crashed run) is removed first.
    pub fn create(name: &str, head_address: Ipv4Addr, prefix_len: u8) -> Result<Self, LabError> {
        remove_namespace(name);
        run("ip", ["netns", "add", name])?;
        let lan = VirtualLan {
            name: name.to_string(),
            head_address,
            prefix_len,
            taps: Vec::new(),
        };
        lan.exec_ip(&["link", "set", "lo", "up"])?;
        lan.exec_ip(&["link", "add", "br0", "type", "bridge"])?;
        // No STP and no forwarding delay: a netbooting firmware gives up long
        // before a bridge port would leave the learning state.
        lan.exec_ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        let cidr = format!("{head_address}/{prefix_len}");
        lan.exec_ip(&["addr", "add", &cidr, "dev", "br0"])?;
        lan.exec_ip(&["link", "set", "br0", "up"])?;
        Ok(lan)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The head's address on the bridge.
    pub fn head_address(&self) -> Ipv4Addr {
        self.head_address
    }

    /// The prefix length of the LAN.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub(crate) fn exec_ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["netns", "exec", &self.name, "ip"];
        full.extend_from_slice(args);
        run("ip", full)
    }

    /// Adds a tap device on the bridge and returns its name.
    pub fn add_tap(&mut self, name: &str) -> Result<String, LabError> {
        self.exec_ip(&["tuntap", "add", name, "mode", "tap"])?;
        self.exec_ip(&["link", "set", name, "master", "br0"])?;
        self.exec_ip(&["link", "set", name, "up"])?;
        self.taps.push(name.to_string());
        Ok(name.to_string())
    }

    /// A namespace `ns` of its own plugged into the bridge by a veth pair
    /// (`ns_link` on the bridge, `inner` inside, holding `address` on the
    /// LAN's prefix): another machine on the LAN, as far as the others can
    /// tell. A stale one is removed first; it goes when the guard drops.
    pub fn plug(
        &self,
        ns: &str,
        (ns_link, inner): (&str, &str),
        address: Ipv4Addr,
    ) -> Result<NamespaceGuard, LabError> {
        remove_namespace(ns);
        run("ip", ["netns", "add", ns])?;
        let guard = NamespaceGuard(ns.to_string());
        self.exec_ip(&[
            "link", "add", ns_link, "type", "veth", "peer", "name", inner,
        ])?;
        self.exec_ip(&["link", "set", inner, "netns", ns])?;
        self.exec_ip(&["link", "set", ns_link, "master", "br0"])?;
        self.exec_ip(&["link", "set", ns_link, "up"])?;
        let cidr = format!("{address}/{}", self.prefix_len);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &cidr, "dev", inner],
            vec!["link", "set", inner, "up"],
        ] {
            let mut full = vec!["netns", "exec", ns, "ip"];
            full.extend(args);
            run("ip", full)?;
        }
        Ok(guard)
    }

    /// A command that runs `program` inside the namespace ([`netns_command`]).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.name, program)
    }
}

impl Drop for VirtualLan {
    fn drop(&mut self) {
        remove_namespace(&self.name);
    }
}

/// Kills every process left in namespace `name` and deletes it. Deleting the
/// namespace also deletes its bridge and tap devices.
pub fn remove_namespace(name: &str) {
    let Ok(pids) = run("ip", ["netns", "pids", name]) else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = run("ip", ["netns", "del", name]);
}

/// Removes a namespace (and kills what runs in it) when dropped.
#[derive(Debug)]
pub struct NamespaceGuard(pub String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        remove_namespace(&self.0);
    }
}

/// A command that runs `program` inside network namespace `ns`. It enters
/// only the network namespace (`nsenter --net`): `ip netns exec` would also
/// remount `/sys`, hiding the cgroup hierarchies the agent caps jobs with.
pub fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("--")
        .arg(program);
    command
}

/// dnsmasq as a DHCP server on `interface` of namespace `ns` and nothing
/// else: no config file, no DNS (port 0), neither resolv.conf nor
/// /etc/hosts, no ping before an offer, bound to that interface, in the
/// foreground. The caller adds the range, options, hosts and lease file.
pub fn dnsmasq_command(ns: &str, interface: &str) -> Command {
    let mut command = netns_command(ns, "dnsmasq");
    command
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
        ])
        .args(["--no-ping", "--port=0", "--bind-interfaces"])
        .arg(format!("--interface={interface}"));
    command
}

/// Runs `ip` with `args` and returns its stdout; panics with its stderr on
/// failure (for tests, where a failed setup step ends the test).
pub fn ip(args: &[&str]) -> String {
    run("ip", args).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`ip`] but ignores failure (cleanup).
pub fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A LAN of network namespaces: a hub namespace holding bridge `br0`, and
/// one namespace per node, each with `eth0` (a veth into the bridge) at
/// `10.<net>.0.<i+1>/24`. Namespaces are named `agt-<tag>-hub` and
/// `agt-<tag>-<i>`. Everything is removed on drop, and before setup.
#[derive(Debug)]
pub struct BridgeLan {
    /// Short name that makes this LAN's namespaces and interfaces unique.
    pub tag: String,
    /// The second octet of the LAN's addresses.
    pub net: u8,
    /// The hub namespace (holding the bridge).
    pub hub: String,
    /// The node namespaces, in order.
    pub nodes: Vec<String>,
}

impl BridgeLan {
    /// Builds the hub and `n` node namespaces (panics when `ip` fails).
    pub fn new(tag: &str, net: u8, n: usize) -> Self {
        let lan = Self {
            tag: tag.to_string(),
            net,
            hub: format!("agt-{tag}-hub"),
            nodes: (0..n).map(|i| format!("agt-{tag}-{i}")).collect(),
        };
        lan.cleanup();
        ip(&["netns", "add", &lan.hub]);
        ip(&["-n", &lan.hub, "link", "set", "lo", "up"]);
        ip(&["-n", &lan.hub, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &lan.hub, "link", "set", "br0", "up"]);
        for i in 0..n {
            lan.add_node(i);
        }
        lan
    }

    fn add_node(&self, i: usize) {
        let ns = &self.nodes[i];
        let hub_end = format!("v{}{}", self.tag, i);
        ip(&["netns", "add", ns]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&[
            "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", &hub_end, "netns",
            &self.hub,
        ]);
        ip(&["-n", &self.hub, "link", "set", &hub_end, "master", "br0"]);
        ip(&["-n", &self.hub, "link", "set", &hub_end, "up"]);
        let cidr = format!("{}/24", self.addr(i));
        ip(&["-n", ns, "addr", "add", &cidr, "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Address of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.net, i + 1)
    }

    fn cleanup(&self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            remove_namespace(ns);
        }
    }
}

impl Drop for BridgeLan {
    fn drop(&mut self) {
        self.cleanup();
    }
}
