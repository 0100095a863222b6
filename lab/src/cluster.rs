//! A whole virtual cluster: the LAN, `omboot serve` and the head's agent in
//! its namespace, and qemu machines netbooting from it; what `omlab demo`
//! shows a person and what the end-to-end tests boot.
//!
//! Layout: [`ClusterLab::start`] builds a [`VirtualLan`], starts `omboot
//! serve` (DHCP, or ProxyDHCP beside a [`LanRouter`]'s dnsmasq; it makes the
//! cluster key in its state directory and admits the machines by its
//! default policy for the mode) and the head's `omnode agent` with that key
//! as [`Background`] processes, optionally tcpdump on the LAN, and powers
//! on one [`QemuNode`] per firmware. Everything is torn down in
//! `Drop`: machines first, then the processes, the namespace last.
//!
//! This module runs `ip`, `curl`, `dnsmasq` and qemu; it is an I/O shell only
//! and holds no protocol logic.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{io_err, LabError};
use crate::netns::{dnsmasq_command, NamespaceGuard, VirtualLan};
use crate::process::{which, Background};
use crate::qemu::{check_prerequisites, lab_mac, Firmware, NodeSpec, QemuNode};

/// What a [`ClusterLab`] is made of.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The namespace name (also the prefix of the work directory).
    pub name: String,
    /// Where `omboot`, `omnode` and `omctl` are.
    pub bin_dir: PathBuf,
    /// The image directory to serve.
    pub image_dir: PathBuf,
    /// Logs, keys, state and the machines' consoles go here.
    pub work_dir: PathBuf,
    /// One machine per entry, booting through that firmware path.
    pub firmwares: Vec<Firmware>,
    /// The cluster id.
    pub cluster: String,
    /// Memory per machine in MiB.
    pub memory_mib: u32,
    /// Whether `omboot` is the LAN's DHCP server or a ProxyDHCP beside
    /// another one.
    pub mode: LabMode,
    /// Whether the head serves a shared tree (`omboot serve --share
    /// WORK/share`) that the machines mount at `/cluster`.
    pub share: bool,
    /// Whether the machines' serial consoles take typed commands
    /// ([`QemuNode::shell`]).
    pub serial_input: bool,
    /// Whether tcpdump records everything on the LAN, from before the
    /// first machine powers on, to `work/lan.pcap` ([`ClusterLab::capture`]).
    pub capture: bool,
}

/// How addresses are handed out on the lab's LAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabMode {
    /// `omboot serve --mode dhcp` is the only DHCP server (a dedicated boot
    /// network).
    Dhcp,
    /// An existing LAN: a "router" namespace on the bridge runs dnsmasq as the
    /// LAN's DHCP server (addresses only, no PXE options) and `omboot serve
    /// --mode proxy` adds the boot information.
    Proxy,
}

/// The LAN router's address in [`LabMode::Proxy`].
pub const LAB_ROUTER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 254);
/// The addresses the LAN router's dnsmasq hands out in [`LabMode::Proxy`].
pub const LAB_ROUTER_POOL: (&str, &str) = ("10.77.0.50", "10.77.0.99");

/// The head's address on every lab LAN.
pub const LAB_HEAD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The address pool the lab's `omboot` hands out.
pub const LAB_POOL: &str = "10.77.0.100-10.77.0.200";

/// A whole virtual cluster: the LAN, `omboot serve` and the head's agent in
/// the namespace, and qemu machines netbooting from it.
#[derive(Debug)]
pub struct ClusterLab {
    config: LabConfig,
    head_socket: PathBuf,
    key_file: PathBuf,
    share_dir: Option<PathBuf>,
    // Field order is drop order: machines first, then the processes, and the
    // namespace last.
    /// The netbooting machines, in the order of `config.firmwares`.
    pub nodes: Vec<QemuNode>,
    capture: Option<Background>,
    agent: Background,
    server: Background,
    _router: Option<LanRouter>,
    lan: VirtualLan,
}

/// The existing LAN's own DHCP server, in a namespace of its own joined to
/// the lab's bridge by a veth pair (a home router, as far as the machines
/// can tell).
#[derive(Debug)]
pub struct LanRouter {
    // Field order is drop order: dnsmasq first, then its namespace.
    _dnsmasq: Background,
    _namespace: NamespaceGuard,
}

impl LanRouter {
    /// Starts dnsmasq at [`LAB_ROUTER`] handing out [`LAB_ROUTER_POOL`] on
    /// `lan`, logging to `work/dnsmasq.log` and leasing to
    /// `work/dnsmasq.leases`. Stopped (and its namespace removed) on drop.
    pub fn start(lan: &VirtualLan, work: &Path) -> Result<Self, LabError> {
        if which("dnsmasq").is_none() {
            return Err(LabError::MissingProgram {
                program: "dnsmasq".into(),
                hint: "apt-get install dnsmasq-base".into(),
            });
        }
        let ns = format!("{}-rtr", lan.name());
        let namespace = lan.plug(&ns, ("rtr0", "rtr1"), LAB_ROUTER)?;
        let mut dnsmasq = dnsmasq_command(&ns, "rtr1");
        dnsmasq
            .arg("--log-dhcp")
            .arg(format!(
                "--dhcp-range={},{},255.255.255.0,1h",
                LAB_ROUTER_POOL.0, LAB_ROUTER_POOL.1
            ))
            .arg(format!("--dhcp-option=option:router,{LAB_ROUTER}"))
            .arg(format!(
                "--dhcp-leasefile={}",
                work.join("dnsmasq.leases").display()
            ))
            .arg("--user=root");
        Ok(LanRouter {
            _dnsmasq: Background::spawn(dnsmasq, &work.join("dnsmasq.log"))?,
            _namespace: namespace,
        })
    }
}

impl ClusterLab {
    /// Creates the LAN, starts `omboot serve` and the head's agent with the
    /// key `omboot` made, and powers on the machines.
    pub fn start(config: LabConfig) -> Result<Self, LabError> {
        check_prerequisites(&config.firmwares)?;
        for program in ["omboot", "omnode", "omctl"] {
            let path = config.bin_dir.join(program);
            if !path.is_file() {
                return Err(LabError::MissingFile {
                    path,
                    hint: "build the workspace's binaries first (scripts/static-build)".into(),
                });
            }
        }
        let work = &config.work_dir;
        let _ = fs::remove_dir_all(work);
        fs::create_dir_all(work).map_err(io_err(format!("creating {}", work.display())))?;
        let mut lan = VirtualLan::create(&config.name, LAB_HEAD, 24)?;

        let router = match config.mode {
            LabMode::Dhcp => None,
            LabMode::Proxy => Some(LanRouter::start(&lan, work)?),
        };
        let share_dir = if config.share {
            Some(make_share_dir(work)?)
        } else {
            None
        };
        let mut server = lan.command(config.bin_dir.join("omboot"));
        server.args(["serve", "--interface", "br0", "--http-port", "80"]);
        if let Some(dir) = &share_dir {
            server.arg("--share").arg(dir);
        }
        match config.mode {
            LabMode::Dhcp => server.args(["--mode", "dhcp", "--pool", LAB_POOL]),
            LabMode::Proxy => server.args(["--mode", "proxy"]),
        };
        server
            .args(["--cluster", &config.cluster])
            .arg("--images")
            .arg(&config.image_dir)
            .arg("--state")
            .arg(work.join("omboot-state"));
        let mut server = Background::spawn(server, &work.join("omboot.log"))?;
        // Without --key-file, omboot makes the key in its state directory.
        let key_file = work.join("omboot-state/cluster.key");
        wait_for_key(&key_file, &mut server)?;

        let head_socket = work.join("head.sock");
        let mut agent = lan.command(config.bin_dir.join("omnode"));
        agent
            .args(["agent", "--name", "head", "--interface", "br0"])
            .arg("--allow-root-jobs")
            .args(["--cluster", &config.cluster])
            .arg("--web")
            .arg(format!("{LAB_HEAD}:{}", contracts::http::WEB_VIEW_PORT))
            .arg("--key-file")
            .arg(&key_file)
            .arg("--socket")
            .arg(&head_socket)
            .arg("--state-dir")
            .arg(work.join("head-state"))
            .arg("--checkin")
            .arg(format!(
                "http://{LAB_HEAD}:80{}",
                contracts::http::CHECKIN_PATH
            ));
        // The head's jobs see the tree at /cluster like every node's.
        let agent = match &share_dir {
            Some(dir) => in_tree(dir, "/", &agent),
            None => agent,
        };
        let agent = Background::spawn(agent, &work.join("head-agent.log"))?;

        let capture = if config.capture {
            Some(start_capture(
                &lan,
                &work.join("lan.pcap"),
                &work.join("tcpdump.log"),
            )?)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for (index, firmware) in config.firmwares.iter().enumerate() {
            let spec = NodeSpec {
                name: format!("vm{}", index + 1),
                firmware: *firmware,
                mac: lab_mac(index as u8 + 1),
                memory_mib: config.memory_mib,
                work_dir: work.clone(),
                extra_args: Vec::new(),
                serial_input: config.serial_input,
            };
            nodes.push(QemuNode::boot(&mut lan, spec)?);
        }
        Ok(ClusterLab {
            config,
            head_socket,
            key_file,
            share_dir,
            nodes,
            capture,
            agent,
            server,
            _router: router,
            lan,
        })
    }

    /// The lab's settings.
    pub fn config(&self) -> &LabConfig {
        &self.config
    }

    /// The head agent's control socket.
    pub fn head_socket(&self) -> &Path {
        &self.head_socket
    }

    /// The cluster key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// Reboots machine `index`: pulls its plug and powers the same machine
    /// (firmware, MAC) on again, netbooting afresh. Its console log gets a
    /// new name (`NAME-r.serial.log`), so the old boot's stays readable.
    pub fn reboot(&mut self, index: usize) -> Result<(), LabError> {
        let node = &mut self.nodes[index];
        node.power_off();
        let mut spec = node.spec().clone();
        spec.name = format!("{}-r", spec.name);
        self.nodes[index] = QemuNode::boot(&mut self.lan, spec)?;
        Ok(())
    }

    /// Replaces machine `index` with another machine (MAC `mac`, the same
    /// firmware) that boots from `iso` as `medium` instead of the network:
    /// the ISO's default entry, a compute node that must find the head by
    /// itself. Its console log is `NAME.serial.log` for the `name` given.
    pub fn replace_with_medium(
        &mut self,
        index: usize,
        name: &str,
        mac: contracts::mac::MacAddr,
        iso: &Path,
        medium: crate::qemu::Medium,
    ) -> Result<(), LabError> {
        self.nodes[index].power_off();
        let mut spec = self.nodes[index].spec().clone();
        spec.name = name.to_string();
        spec.mac = mac;
        spec.extra_args = crate::qemu::medium_args(medium, iso);
        self.nodes[index] = QemuNode::boot(&mut self.lan, spec)?;
        Ok(())
    }

    /// Stops the LAN capture (so its file is complete) and returns its
    /// path; `None` without [`LabConfig::capture`].
    pub fn capture(&mut self) -> Option<PathBuf> {
        let capture = self.capture.take()?;
        capture.interrupt();
        Some(self.config.work_dir.join("lan.pcap"))
    }

    /// The directory of the lab's logs, consoles and state.
    pub fn work_dir(&self) -> &Path {
        &self.config.work_dir
    }

    /// The namespace everything runs in.
    pub fn lan(&self) -> &VirtualLan {
        &self.lan
    }

    /// Fails if `omboot` or the head's agent has died.
    pub fn check_services(&mut self) -> Result<(), LabError> {
        self.server.check_running("omboot serve")?;
        self.agent.check_running("omnode agent (head)")
    }

    /// An `omctl` command talking to the head's agent, run from `/`.
    pub fn omctl(&self) -> Command {
        let mut command = Command::new(self.config.bin_dir.join("omctl"));
        command
            .arg("--socket")
            .arg(&self.head_socket)
            .current_dir("/");
        command
    }

    /// The directory the head serves as the shared tree, when it serves one.
    pub fn share_dir(&self) -> Option<&Path> {
        self.share_dir.as_deref()
    }

    /// An `omctl` command talking to the head's agent, run from `cwd` in
    /// the shared tree (a path under `/cluster`, as the head sees it in a
    /// private mount namespace). Without a shared tree, run from `/`.
    pub fn omctl_in(&self, cwd: &str) -> Command {
        match &self.share_dir {
            Some(dir) => in_tree(dir, cwd, &self.omctl()),
            None => self.omctl(),
        }
    }

    /// The memory in use on `node` and its total, in bytes: `MemTotal -
    /// MemAvailable` and `MemTotal` of its `/proc/meminfo`, read through
    /// `omctl run` from the shared tree (page cache the kernel can drop
    /// does not count as in use).
    pub fn memory_in_use(&self, node: &str) -> Result<(u64, u64), LabError> {
        let command = format!("omctl run --node {node} -- cat /proc/meminfo");
        let output = self
            .omctl_in(contracts::share::MOUNT_POINT)
            .args(["run", "--node", node, "--", "cat", "/proc/meminfo"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err(format!("running {command}")))?;
        let text = String::from_utf8_lossy(&output.stdout);
        match (
            meminfo_kib(&text, "MemTotal"),
            meminfo_kib(&text, "MemAvailable"),
        ) {
            (Some(total), Some(available)) if output.status.success() => {
                Ok(((total - available.min(total)) * 1024, total * 1024))
            }
            _ => Err(LabError::Command {
                command,
                stderr: format!("{}{text}", String::from_utf8_lossy(&output.stderr).trim()),
            }),
        }
    }

    /// The head's view of the cluster (`omctl status --json`).
    pub fn status(&self) -> Result<serde_json::Value, LabError> {
        let output = self
            .omctl()
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .map_err(io_err("running omctl status"))?;
        if !output.status.success() {
            return Err(LabError::Command {
                command: "omctl status --json".into(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            });
        }
        serde_json::from_slice(&output.stdout).map_err(|e| LabError::Command {
            command: "omctl status --json".into(),
            stderr: format!("unreadable output: {e}"),
        })
    }

    /// Waits until every node in `names` reports in its load vector that
    /// CRIU works there (its agent's probe at start), so jobs can move.
    pub fn wait_for_criu(&self, names: &[String], timeout: Duration) -> Result<(), LabError> {
        let start = std::time::Instant::now();
        loop {
            let seen = self.status();
            if let Ok(s) = &seen {
                let ready = s["nodes"].as_array().is_some_and(|ns| {
                    names.iter().all(|n| {
                        ns.iter()
                            .any(|x| x["name"] == n.as_str() && x["load"]["criu"] == true)
                    })
                });
                if ready {
                    return Ok(());
                }
            }
            if start.elapsed() > timeout {
                return Err(LabError::NeverSeen {
                    wanted: format!("working CRIU on {}", names.join(", ")),
                    secs: timeout.as_secs(),
                    seen: format!("{seen:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The names of the nodes the head sees in `state` (`alive`, `suspect`, `down`).
    pub fn nodes_in_state(status: &serde_json::Value, state: &str) -> Vec<String> {
        status["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n["state"] == state)
                    .filter_map(|n| n["name"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The boot stages `omboot` recorded (`GET /api/v1/nodes`).
    pub fn boot_stages(&self) -> Result<serde_json::Value, LabError> {
        boot_stages(&self.lan, LAB_HEAD)
    }
}

/// Waits (10 s at most) until `omboot` has written the cluster key to
/// `path`, or fails if it stopped.
pub fn wait_for_key(path: &Path, server: &mut Background) -> Result<(), LabError> {
    let start = std::time::Instant::now();
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if contracts::key::ClusterKey::parse(&text).is_ok() {
            return Ok(());
        }
        server.check_running("omboot serve")?;
        if start.elapsed() > Duration::from_secs(10) {
            return Err(LabError::NeverSeen {
                wanted: format!("the cluster key omboot makes in {}", path.display()),
                secs: 10,
                seen: text,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// tcpdump on the LAN's bridge writing every frame to `pcap`, started and
/// listening before this returns.
fn start_capture(lan: &VirtualLan, pcap: &Path, log: &Path) -> Result<Background, LabError> {
    if which("tcpdump").is_none() {
        return Err(LabError::MissingProgram {
            program: "tcpdump".into(),
            hint: "apt-get install tcpdump".into(),
        });
    }
    let mut tcpdump = lan.command("tcpdump");
    tcpdump
        .args(["-i", "br0", "-n", "-U", "-s", "0", "-w"])
        .arg(pcap);
    let mut capture = Background::spawn(tcpdump, log)?;
    let start = std::time::Instant::now();
    while !fs::read_to_string(log)
        .unwrap_or_default()
        .contains("listening on")
    {
        capture.check_running("tcpdump")?;
        if start.elapsed() > Duration::from_secs(10) {
            return Err(LabError::NeverSeen {
                wanted: "tcpdump listening on the LAN".into(),
                secs: 10,
                seen: fs::read_to_string(log).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(capture)
}

/// Creates `work/share`, the lab head's tree (mode 1777: any user makes
/// a directory of their own there, as in `/tmp`), and the empty mount
/// point `/cluster` on the host, which the lab binds the tree on only in
/// private mount namespaces ([`in_tree`]).
fn make_share_dir(work: &Path) -> Result<PathBuf, LabError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join("share");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777))
        .map_err(io_err(format!("setting the mode of {}", dir.display())))?;
    let point = Path::new(contracts::share::MOUNT_POINT);
    fs::create_dir_all(point).map_err(io_err(format!("creating {}", point.display())))?;
    Ok(dir)
}

/// `inner` run in a private mount namespace where `share` is bound on
/// `/cluster`, from the directory `cwd`: how the lab's head (a network
/// namespace on the host, whose kernel has no NFS client) sees the tree
/// at the path every node sees it at.
pub fn in_tree(share: &Path, cwd: &str, inner: &Command) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(format!(
            "mount --bind \"$1\" {} && cd \"$2\" && shift 2 && exec \"$@\"",
            contracts::share::MOUNT_POINT
        ))
        .arg("sh")
        .arg(share)
        .arg(cwd)
        .arg(inner.get_program())
        .args(inner.get_args());
    for (key, value) in inner.get_envs() {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    command
}

/// A `/proc/meminfo` field in KiB (`MemTotal`, `MemAvailable`…).
pub fn meminfo_kib(meminfo: &str, field: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The boot stages the `omboot` at `server` recorded (`GET /api/v1/nodes`),
/// fetched with curl from inside the LAN's namespace.
pub fn boot_stages(lan: &VirtualLan, server: Ipv4Addr) -> Result<serde_json::Value, LabError> {
    let output = lan
        .command("curl")
        .args(["-sf", "--max-time", "5"])
        .arg(format!("http://{server}/api/v1/nodes"))
        .output()
        .map_err(io_err("running curl"))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command: format!("curl http://{server}/api/v1/nodes"),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    serde_json::from_slice(&output.stdout).map_err(|e| LabError::Command {
        command: format!("curl http://{server}/api/v1/nodes"),
        stderr: format!("unreadable output: {e}"),
    })
}

/// How many machines in `stages` (from [`boot_stages`]) are at `stage`
/// (`dhcp`, `tftp`, `http`, `agent`…).
pub fn machines_at_stage(stages: &serde_json::Value, stage: &str) -> usize {
    stages
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["stage"] == stage)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_fields_are_read_in_kib() {
        let text = "MemTotal:         983264 kB\nMemFree:          512000 kB\nMemAvailable:     720128 kB\n";
        assert_eq!(meminfo_kib(text, "MemTotal"), Some(983_264));
        assert_eq!(meminfo_kib(text, "MemAvailable"), Some(720_128));
        assert_eq!(meminfo_kib(text, "Mem"), None);
        assert_eq!(meminfo_kib(text, "Shmem"), None);
    }
}
