//! Shared fixtures for the node-agent integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether root/netns tests are enabled (`OM_NETNS_TESTS=1` or `CI=true`).
/// Under CI a missing prerequisite fails the test instead of skipping it.
pub fn netns_tests() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let on = ci || std::env::var("OM_NETNS_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set OM_NETNS_TESTS=1 (needs root and iproute2)");
        return false;
    }
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("the `ip` command (iproute2)".to_string());
    }
    if !missing.is_empty() {
        if ci {
            panic!("netns tests need {}", missing.join(", "));
        }
        eprintln!("skipped: netns tests need {}", missing.join(", "));
        return false;
    }
    true
}

/// Runs `ip` with arguments; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
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
/// `n` node namespaces, each with `eth0` (a veth into the bridge) at
/// `10.<net>.0.<i+1>/24`. Everything is removed on drop, and before setup.
pub struct Lan {
    pub tag: String,
    pub net: u8,
    pub hub: String,
    pub nodes: Vec<String>,
}

impl Lan {
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
        ip(&[
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", self.addr(i)),
            "dev",
            "eth0",
        ]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }

    /// Address of node `i`.
    pub fn addr(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.net, i + 1)
    }

    fn cleanup(&self) {
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            // Kill anything still running inside before deleting it.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
            ip_quiet(&["netns", "del", ns]);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Polls `f` every 200 ms until it returns `Some`, or panics after `limit`
/// with `what` and the last observation (a generous bound: this is a
/// liveness check, not a timing assertion).
pub fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < limit {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}; last: {last}");
}

/// Kills and reaps a child on drop.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory that root-dropped jobs (uid nobody) can enter.
pub fn shared_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

/// Path of a built binary of this crate.
pub fn bin(name: &str) -> PathBuf {
    match name {
        "omnode" => PathBuf::from(env!("CARGO_BIN_EXE_omnode")),
        "omctl" => PathBuf::from(env!("CARGO_BIN_EXE_omctl")),
        other => panic!("no binary {other}"),
    }
}

/// True if `p` exists.
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// A command that runs `program` inside network namespace `ns`, entering
/// only the network namespace (unlike `ip netns exec`, which also remounts
/// `/sys` and so hides the host's cgroup mounts).
pub fn netns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))
        .unwrap_or_else(|e| panic!("open netns {ns}: {e}"));
    let mut c = Command::new(program);
    // SAFETY: setns(2) is async-signal-safe; the fd was opened before the fork.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}
