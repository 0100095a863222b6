//! The namespace fixtures of the `omboot serve` tests: a server namespace
//! and a client namespace joined by a veth pair ([`Lan`]), and the real
//! binary running in the server's ([`Server`]), its log collected. Both are
//! cleaned up on drop, also when a test fails, and before setup.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lab::gate::{netns_tests, tool};
use lab::netns::remove_namespace;

/// Whether the namespace tests run here with `tools`; panics under CI when
/// they cannot.
pub fn netns_enabled(tools: &[&str]) -> bool {
    netns_tests() && tools.iter().all(|t| tool(t).is_some())
}

pub fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("run sh")
}

pub fn must(cmd: &str) {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A server namespace and a client namespace joined by a veth pair:
/// server 10.77.0.1/16 on `<tag>0`, client `<tag>1` (address optional).
pub struct Lan {
    pub server_ns: String,
    pub client_ns: String,
    pub server_if: String,
    pub client_if: String,
}

impl Lan {
    pub fn new(tag: &str) -> Lan {
        let lan = Lan {
            server_ns: format!("omt-dhcp-{tag}-s"),
            client_ns: format!("omt-dhcp-{tag}-c"),
            server_if: format!("omd{tag}0"),
            client_if: format!("omd{tag}1"),
        };
        lan.cleanup();
        must(&format!("ip netns add {}", lan.server_ns));
        must(&format!("ip netns add {}", lan.client_ns));
        must(&format!(
            "ip link add {} netns {} type veth peer name {} netns {}",
            lan.server_if, lan.server_ns, lan.client_if, lan.client_ns
        ));
        must(&format!(
            "ip netns exec {} sh -c 'ip link set lo up; ip addr add 10.77.0.1/16 dev {i}; ip link set {i} up'",
            lan.server_ns,
            i = lan.server_if
        ));
        must(&format!(
            "ip netns exec {} sh -c 'ip link set lo up; ip link set {} up'",
            lan.client_ns, lan.client_if
        ));
        lan
    }

    pub fn client_addr(&self, cidr: &str) {
        must(&format!(
            "ip netns exec {} ip addr add {cidr} dev {}",
            self.client_ns, self.client_if
        ));
    }

    fn cleanup(&self) {
        for ns in [&self.server_ns, &self.client_ns] {
            remove_namespace(ns);
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `omboot serve` running in the server namespace, its stderr collected.
pub struct Server {
    /// The `ip netns exec … omboot serve` process.
    pub child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn start(lan: &Lan, state: &Path, images: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lan.server_ns,
                env!("CARGO_BIN_EXE_omboot"),
                "serve",
            ])
            .args(["--interface", &lan.server_if, "--images"])
            .arg(images)
            .arg("--state")
            .arg(state)
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start omboot");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let s = Server { child, log };
        s.wait_log("dhcp listening");
        s
    }

    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Wait until a log line contains `needle` (panics after 30 s).
    pub fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(l) = self.lines().iter().find(|l| l.contains(needle)) {
                return l.clone();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {needle:?}; log:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn images_dir(root: &Path) -> PathBuf {
    let d = root.join("images");
    std::fs::create_dir_all(d.join("ipxe")).unwrap();
    std::fs::write(d.join("ipxe/undionly.kpxe"), b"bios").unwrap();
    std::fs::write(d.join("ipxe/snponly.efi"), b"efi").unwrap();
    std::fs::write(d.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(d.join("initrd.img"), b"initrd").unwrap();
    std::fs::write(d.join("manifest.json"), br#"{"kernel_cmdline":"quiet"}"#).unwrap();
    d
}
