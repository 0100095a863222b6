//! `omboot serve` in dhcp mode against real DHCP clients, each test in its own
//! pair of network namespaces joined by a veth pair:
//! busybox `udhcpc` (get, renew, release), `perfdhcp` load, and kill -9 of
//! the server during a perfdhcp run (every ACK seen on the wire survives,
//! no address is held twice).
//!
//! Needs root; runs when `OM_NETNS_TESTS=1` or `CI=true` (where a missing tool
//! or privilege fails the test instead of skipping it).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::netlan::{images_dir, netns_enabled, Lan, Server};

fn leases_json(state: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_omboot"))
        .args(["leases", "--json", "--state"])
        .arg(state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Wait until `path` holds a line containing `needle`.
fn wait_file(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.contains(needle)) {
            return l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn netns_udhcpc_gets_renews_and_releases_a_lease() {
    if !netns_enabled(&["busybox", "ip", "curl"]) {
        return;
    }
    let lan = Lan::new("u");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = images_dir(tmp.path());
    let server = Server::start(
        &lan,
        &state,
        &images,
        &[
            "--pool",
            "10.77.1.10-10.77.1.20",
            "--http-port",
            "8080",
            "--log-format",
            "json",
        ],
    );
    let events = tmp.path().join("events");
    let script = tmp.path().join("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 ip=$ip mask=$mask serverid=$serverid lease=$lease\" >> {ev}\n\
             case \"$1\" in bound|renew) ip addr flush dev $interface; ip addr add $ip/$mask dev $interface;; \
             deconfig) ip addr flush dev $interface;; esac\nexit 0\n",
            ev = events.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut client = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lan.client_ns,
            "busybox",
            "udhcpc",
            "-f",
            "-R",
        ])
        .args(["-i", &lan.client_if, "-t", "10", "-T", "1", "-s"])
        .arg(&script)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let bound = wait_file(&events, "bound ");
    assert_eq!(
        bound,
        "bound ip=10.77.1.10 mask=16 serverid=10.77.0.1 lease=3600"
    );
    // One JSON log line per exchange, with the client, address and type.
    let line = server.wait_log("REQUEST→ACK");
    let ev: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(ev["ip"], "10.77.1.10", "{line}");
    assert_eq!(ev["type"], "REQUEST→ACK", "{line}");
    assert_eq!(ev["level"], "INFO", "{line}");
    assert!(ev["mac"].as_str().is_some_and(|m| m.len() == 17), "{line}");
    let leases = leases_json(&state);
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0]["ip"], "10.77.1.10");
    assert_eq!(leases[0]["state"], "active");
    // The same lease through the HTTP API of the running server.
    let api = Command::new("ip")
        .args(["netns", "exec", &lan.server_ns, "curl", "-sf"])
        .arg("http://10.77.0.1:8080/api/v1/leases")
        .output()
        .unwrap();
    let api: serde_json::Value = serde_json::from_slice(&api.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&api.stdout)));
    assert!(api.to_string().contains("\"ip\":\"10.77.1.10\""), "{api}");

    // SIGUSR1: renew (unicast REQUEST with ciaddr, answered to the client).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let renew = wait_file(&events, "renew ");
    assert_eq!(
        renew,
        "renew ip=10.77.1.10 mask=16 serverid=10.77.0.1 lease=3600"
    );
    server.wait_log("REQUEST(renew)→ACK");

    // SIGTERM with -R: release on exit.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(client.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    client.wait().unwrap();
    server.wait_log("\"type\":\"RELEASE\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = leases_json(&state);
        if l[0]["state"] == "released" {
            break;
        }
        assert!(Instant::now() < deadline, "lease not released: {l:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// ACKs captured on the client's side of the veth: what the client saw.
struct Sniffer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(String, Ipv4Addr)>>>,
}

impl Sniffer {
    /// Capture DHCP ACKs arriving on `iface` in namespace `ns` (AF_PACKET).
    fn start(ns: &str, iface: &str) -> Sniffer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let ns = ns.to_string();
        let iface = iface.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let nsf = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            nix::sched::setns(&nsf, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // SAFETY: socket(2) takes no pointers; the result is checked below.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_DGRAM,
                    (libc::ETH_P_IP as u16).to_be() as i32,
                )
            };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: `fd` is a fresh socket we own and hand to exactly one OwnedFd.
            let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(iface).unwrap();
            // SAFETY: `cname` is a NUL-terminated string alive for the call.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
            assert!(ifindex > 0);
            // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            // SAFETY: `sll` is a valid sockaddr_ll and the length is its size.
            let rc = unsafe {
                libc::bind(
                    sock.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let rcvbuf: libc::c_int = 64 << 20;
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            // SAFETY: each option value points to a live local of the length given.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    &rcvbuf as *const _ as *const libc::c_void,
                    4,
                );
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as u32,
                );
            }
            ready_tx.send(()).unwrap();
            let mut acks = Vec::new();
            let mut buf = vec![0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                // SAFETY: `buf` is writable for `buf.len()` bytes.
                let n = unsafe {
                    libc::recv(
                        sock.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        0,
                    )
                };
                if n <= 0 {
                    continue;
                }
                if let Some(ack) = parse_ack(&buf[..n as usize]) {
                    acks.push(ack);
                }
            }
            acks
        });
        ready_rx.recv().unwrap();
        Sniffer {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(String, Ipv4Addr)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// (MAC, yiaddr) of a DHCPACK in an IPv4/UDP packet, decoded with dhcproto
/// (independent of the server's own codec).
fn parse_ack(ip: &[u8]) -> Option<(String, Ipv4Addr)> {
    use dhcproto::{Decodable, Decoder};
    if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0xf) * 4;
    let udp = ip.get(ihl..)?;
    let src_port = u16::from_be_bytes([udp[0], udp[1]]);
    if src_port != 67 {
        return None;
    }
    let m = dhcproto::v4::Message::decode(&mut Decoder::new(udp.get(8..)?)).ok()?;
    if m.opts().msg_type() != Some(dhcproto::v4::MessageType::Ack) {
        return None;
    }
    let c = m.chaddr();
    let mac = format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        c[0], c[1], c[2], c[3], c[4], c[5]
    );
    Some((mac, m.yiaddr()))
}

struct Perf {
    child: Child,
}

impl Perf {
    fn start(lan: &Lan, rate: u32, secs: u32, clients: u32) -> Perf {
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.client_ns,
                "perfdhcp",
                "-4",
                "-l",
                &lan.client_if,
            ])
            .args([
                "-r",
                &rate.to_string(),
                "-p",
                &secs.to_string(),
                "-R",
                &clients.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start perfdhcp");
        Perf { child }
    }

    fn finish(mut self) -> String {
        let out = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap())
            .wait_with_output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after `label:` in perfdhcp's section for `exchange`.
fn perf_stat(report: &str, exchange: &str, label: &str) -> u64 {
    let section = report
        .split(&format!("***Statistics for: {exchange}***"))
        .nth(1)
        .unwrap_or_else(|| panic!("no {exchange} section in:\n{report}"));
    section
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {label} in {exchange}:\n{report}"))
}

#[test]
fn netns_perfdhcp_load_gets_unique_leases() {
    if !netns_enabled(&["perfdhcp", "ip"]) {
        return;
    }
    let lan = Lan::new("p");
    lan.client_addr("10.77.255.254/16");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let _server = Server::start(
        &lan,
        &state,
        &images_dir(tmp.path()),
        &["--pool", "10.77.1.1-10.77.200.254"],
    );
    let report = Perf::start(&lan, 500, 5, 3000).finish();
    let acks = perf_stat(&report, "REQUEST-ACK", "received packets");
    assert!(acks > 0, "no ACKs:\n{report}");
    assert_eq!(
        perf_stat(&report, "DISCOVER-OFFER", "non unique addresses"),
        0,
        "{report}"
    );
    assert_eq!(
        perf_stat(&report, "REQUEST-ACK", "rejected leases"),
        0,
        "{report}"
    );
    let leases = leases_json(&state);
    assert!(!leases.is_empty());
    for l in &leases {
        let ip: Ipv4Addr = l["ip"].as_str().unwrap().parse().unwrap();
        assert!(
            (Ipv4Addr::new(10, 77, 1, 1)..=Ipv4Addr::new(10, 77, 200, 254)).contains(&ip),
            "{ip} outside the pool"
        );
        assert_eq!(l["state"], "active");
    }
    assert_unique(&leases);
}

/// No address appears twice, and no client holds two active leases.
fn assert_unique(leases: &[serde_json::Value]) -> HashMap<String, String> {
    let mut by_ip = HashMap::new();
    let mut by_mac: HashMap<String, String> = HashMap::new();
    for l in leases {
        let ip = l["ip"].as_str().unwrap().to_string();
        let mac = l["mac"].as_str().unwrap().to_string();
        assert!(
            by_ip.insert(ip.clone(), mac.clone()).is_none(),
            "{ip} twice"
        );
        if l["state"] == "active" {
            if let Some(other) = by_mac.insert(mac.clone(), ip.clone()) {
                panic!("{mac} holds {other} and {ip}");
            }
        }
    }
    by_mac
}

#[test]
fn netns_kill9_during_perfdhcp_keeps_every_acked_lease() {
    if !netns_enabled(&["perfdhcp", "ip"]) {
        return;
    }
    let lan = Lan::new("k");
    lan.client_addr("10.77.255.254/16");
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let images = images_dir(tmp.path());
    let pool = ["--pool", "10.77.1.1-10.77.200.254"];
    let mut server = Server::start(&lan, &state, &images, &pool);
    let sniffer = Sniffer::start(&lan.client_ns, &lan.client_if);
    let perf = Perf::start(&lan, 1000, 6, 20000);
    // Kill in the middle of the load: after ACKs have started flowing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server
        .lines()
        .iter()
        .filter(|l| l.contains("REQUEST→ACK"))
        .count()
        < 500
    {
        assert!(Instant::now() < deadline, "no load reached the server");
        std::thread::sleep(Duration::from_millis(10));
    }
    server.kill9();
    let report = perf.finish();
    let seen = sniffer.finish();
    assert!(!seen.is_empty(), "no ACK captured; perfdhcp:\n{report}");

    // Restart on the same state, then read the store.
    let server2 = Server::start(&lan, &state, &images, &pool);
    let leases = leases_json(&state);
    let held = assert_unique(&leases);
    eprintln!(
        "kill -9: {} ACKs seen by the client, {} leases in the store after restart",
        seen.len(),
        leases.len()
    );
    let mut last: HashMap<String, Ipv4Addr> = HashMap::new();
    for (mac, ip) in &seen {
        last.insert(mac.clone(), *ip);
    }
    for (mac, ip) in &last {
        assert_eq!(
            held.get(mac).map(String::as_str),
            Some(ip.to_string().as_str()),
            "ACK {mac} → {ip} seen by the client is not in the store ({} ACKs seen, {} leases)",
            seen.len(),
            leases.len()
        );
    }

    // A second run against the restarted server never hands out an address
    // that a first-run client still holds.
    let sniffer = Sniffer::start(&lan.client_ns, &lan.client_if);
    let report2 = Perf::start(&lan, 500, 3, 20000).finish();
    let seen2 = sniffer.finish();
    assert!(!seen2.is_empty(), "no ACK after restart:\n{report2}");
    let owner: HashMap<String, String> = held.iter().map(|(m, i)| (i.clone(), m.clone())).collect();
    for (mac, ip) in &seen2 {
        if let Some(o) = owner.get(&ip.to_string()) {
            assert_eq!(o, mac, "{ip} held by {o} was given to {mac} after restart");
        }
    }
    assert_unique(&leases_json(&state));
    drop(server2);
}
