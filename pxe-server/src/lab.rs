//! A virtual LAN with qemu machines on it: what `omboot demo` shows a person
//! and what the end-to-end tests boot.
//!
//! Layout: a [`VirtualLan`] is a network namespace holding a bridge `br0`
//! with the head's address; each [`QemuNode`] gets a tap device on that bridge
//! and boots with one of three [`Firmware`] paths (SeaBIOS with the NIC's iPXE
//! ROM, OVMF with the NIC's iPXE EFI ROM, OVMF's own PXE stack). Everything is
//! torn down in `Drop`: qemu processes are killed, the namespace (and with it
//! its taps and bridge) is deleted. Creating a LAN first removes a stale
//! namespace of the same name, so a crashed earlier run does not get in the way.
//!
//! This module runs `ip` and `qemu-system-x86_64`; it is an I/O shell only and
//! holds no protocol logic.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What can go wrong while building or driving the virtual LAN.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program the lab needs is not installed.
    #[error("{program} is not installed: {hint}")]
    MissingProgram {
        /// The executable that was not found on PATH.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A file the lab needs (firmware, ROM) is missing.
    #[error("{path} is missing: {hint}")]
    MissingFile {
        /// The file that was not found.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// Network namespaces need root.
    #[error(
        "the virtual LAN needs root (network namespaces and tap devices); run as root or with sudo"
    )]
    NotRoot,
    /// A command the lab ran failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line that failed.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An I/O error on a file or process the lab manages.
    #[error("{what}: {source}")]
    Io {
        /// What the lab was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line did not appear on a machine's serial console in time.
    #[error(
        "{node}: {wanted:?} did not appear on the serial console within {secs} s (log: {log})"
    )]
    Timeout {
        /// The machine's name.
        node: String,
        /// The text that was awaited.
        wanted: String,
        /// How long the lab waited.
        secs: u64,
        /// Where the console log is.
        log: PathBuf,
    },
    /// A machine's qemu process exited while the lab waited for it.
    #[error("{node}: qemu exited ({status}) before {wanted:?} appeared (log: {log})")]
    QemuExited {
        /// The machine's name.
        node: String,
        /// How qemu exited.
        status: String,
        /// The text that was awaited.
        wanted: String,
        /// Where the console log is.
        log: PathBuf,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// The firmware path a virtual machine netboots through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS with the e1000's iPXE option ROM (DHCP option 175 from the start).
    BiosIpxe,
    /// OVMF with the e1000's iPXE EFI ROM.
    UefiIpxe,
    /// OVMF's own PXE stack on virtio-net (client arch 7): must chainload
    /// `snponly.efi` over TFTP.
    UefiPxe,
}

impl Firmware {
    /// A short label for logs and tables.
    pub fn label(self) -> &'static str {
        match self {
            Firmware::BiosIpxe => "bios+ipxe",
            Firmware::UefiIpxe => "uefi+ipxe",
            Firmware::UefiPxe => "uefi-pxe",
        }
    }
}

/// The OVMF code image shipped by Debian's `ovmf` package.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
/// The OVMF variable store template shipped by Debian's `ovmf` package.
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Checks that everything the lab needs is here, naming what is missing and
/// which Debian package provides it.
pub fn check_prerequisites(firmwares: &[Firmware]) -> Result<(), LabError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(LabError::NotRoot);
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("qemu-system-x86_64", "qemu-system-x86"),
    ] {
        if which(program).is_none() {
            return Err(LabError::MissingProgram {
                program: program.into(),
                hint: format!("apt-get install {package}"),
            });
        }
    }
    if firmwares.iter().any(|f| *f != Firmware::BiosIpxe) {
        for file in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(file).exists() {
                return Err(LabError::MissingFile {
                    path: file.into(),
                    hint: "apt-get install ovmf".into(),
                });
            }
        }
    }
    if firmwares.iter().any(|f| *f != Firmware::UefiPxe) {
        let rom = "/usr/lib/ipxe/qemu/efi-e1000.rom";
        if !Path::new(rom).exists() {
            return Err(LabError::MissingFile {
                path: rom.into(),
                hint: "apt-get install ipxe-qemu".into(),
            });
        }
    }
    Ok(())
}

/// Finds an executable on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn run<I, S>(program: &str, args: I) -> Result<String, LabError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {command}")))?;
    if !output.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

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

    fn exec_ip(&self, args: &[&str]) -> Result<String, LabError> {
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

    /// A command that runs `program` inside the namespace. It enters only
    /// the network namespace (`nsenter --net`): `ip netns exec` would also
    /// remount `/sys`, hiding the cgroup hierarchies the agent caps jobs with.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        command
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

/// How to start one qemu machine on the LAN.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The machine's name (also used for the tap device and log file).
    pub name: String,
    /// Its firmware path.
    pub firmware: Firmware,
    /// Its NIC's MAC address.
    pub mac: [u8; 6],
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Where the serial console log and the OVMF variable store go.
    pub work_dir: PathBuf,
    /// Extra qemu arguments (for example a CD-ROM for a head node).
    pub extra_args: Vec<String>,
    /// Whether the serial port takes input ([`QemuNode::type_on_serial`]):
    /// the console then runs over a socket the lab copies to the log file,
    /// instead of straight into the file, so it is logged only while this
    /// process runs.
    pub serial_input: bool,
}

impl NodeSpec {
    /// The MAC address as `52:54:00:…` text.
    pub fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

/// A running qemu machine whose serial console goes to a log file.
#[derive(Debug)]
pub struct QemuNode {
    spec: NodeSpec,
    child: Child,
    log: PathBuf,
    /// The serial port's socket, for typing (with `serial_input`).
    serial: Option<UnixStream>,
}

impl QemuNode {
    /// Boots a machine on `lan` from the network (or from whatever
    /// `spec.extra_args` adds).
    pub fn boot(lan: &mut VirtualLan, spec: NodeSpec) -> Result<Self, LabError> {
        fs::create_dir_all(&spec.work_dir)
            .map_err(io_err(format!("creating {}", spec.work_dir.display())))?;
        let tap = lan.add_tap(&tap_name(&spec.name))?;
        let log = spec.work_dir.join(format!("{}.serial.log", spec.name));
        let _ = fs::remove_file(&log);
        let mut command = lan.command("qemu-system-x86_64");
        command.args([
            "-accel",
            "tcg",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ]);
        command.args(["-m", &spec.memory_mib.to_string()]);
        let socket = spec.work_dir.join(format!("{}.serial.sock", spec.name));
        if spec.serial_input {
            let _ = fs::remove_file(&socket);
            // wait=on: the machine starts only once the lab is connected, so
            // not a byte of the console is lost.
            command.arg("-chardev").arg(format!(
                "socket,id=serial0,path={},server=on,wait=on",
                socket.display()
            ));
            command.args(["-serial", "chardev:serial0"]);
        } else {
            command
                .arg("-serial")
                .arg(format!("file:{}", log.display()));
        }
        command.args([
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        ]);
        let mac = spec.mac_text();
        match spec.firmware {
            Firmware::BiosIpxe => {
                command.args(["-device", &format!("e1000,netdev=n0,mac={mac}")]);
            }
            Firmware::UefiIpxe | Firmware::UefiPxe => {
                let vars = spec.work_dir.join(format!("{}.OVMF_VARS.fd", spec.name));
                fs::copy(OVMF_VARS, &vars).map_err(io_err(format!("copying {OVMF_VARS}")))?;
                command.args([
                    "-drive",
                    &format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                ]);
                command.args([
                    "-drive",
                    &format!("if=pflash,format=raw,file={}", vars.display()),
                ]);
                if spec.firmware == Firmware::UefiIpxe {
                    command.args(["-device", &format!("e1000,netdev=n0,mac={mac}")]);
                } else {
                    command.args([
                        "-device",
                        &format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
                    ]);
                }
            }
        }
        if spec.extra_args.is_empty() {
            command.args(["-boot", "n"]);
        }
        command.args(&spec.extra_args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let child = command
            .spawn()
            .map_err(io_err("starting qemu-system-x86_64"))?;
        let mut node = QemuNode {
            spec,
            child,
            log,
            serial: None,
        };
        if node.spec.serial_input {
            node.serial = Some(node.connect_serial(&socket)?);
        }
        Ok(node)
    }

    /// Connects to the serial socket of a just-started qemu and copies what
    /// the machine prints to the log file in a thread (which ends when qemu
    /// closes the socket). Returns the stream to type on.
    fn connect_serial(&mut self, socket: &Path) -> Result<UnixStream, LabError> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(LabError::QemuExited {
                            node: self.spec.name.clone(),
                            status: status.to_string(),
                            wanted: "the serial socket".into(),
                            log: self.log.clone(),
                        });
                    }
                    if start.elapsed() > Duration::from_secs(30) {
                        return Err(LabError::Io {
                            what: format!("connecting to {}", socket.display()),
                            source: e,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        let mut reader = stream
            .try_clone()
            .map_err(io_err("cloning the serial socket"))?;
        let mut log = fs::File::create(&self.log)
            .map_err(io_err(format!("creating {}", self.log.display())))?;
        std::thread::Builder::new()
            .name(format!("serial-{}", self.spec.name))
            .spawn(move || std::io::copy(&mut reader, &mut log))
            .map_err(io_err("starting the serial log thread"))?;
        Ok(stream)
    }

    /// Types `text` on the machine's serial port (needs `serial_input`).
    pub fn type_on_serial(&mut self, text: &str) -> Result<(), LabError> {
        let Some(serial) = self.serial.as_mut() else {
            return Err(LabError::Io {
                what: format!("typing on {}", self.spec.name),
                source: std::io::Error::other("the machine was booted without serial_input"),
            });
        };
        serial.write_all(text.as_bytes()).map_err(io_err(format!(
            "typing on {}'s serial port",
            self.spec.name
        )))
    }

    /// The machine's name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its spec.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Where its serial console is logged.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The console output so far.
    pub fn console(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Waits until `wanted` appears on the serial console, returning the line
    /// that holds it. Fails early if qemu exits.
    pub fn wait_for(&mut self, wanted: &str, timeout: Duration) -> Result<String, LabError> {
        let start = Instant::now();
        loop {
            let console = self.console();
            if let Some(line) = console.lines().find(|line| line.contains(wanted)) {
                return Ok(line.trim_end_matches('\r').to_string());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError::QemuExited {
                    node: self.spec.name.clone(),
                    status: status.to_string(),
                    wanted: wanted.to_string(),
                    log: self.log.clone(),
                });
            }
            if start.elapsed() > timeout {
                return Err(LabError::Timeout {
                    node: self.spec.name.clone(),
                    wanted: wanted.to_string(),
                    secs: timeout.as_secs(),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pulls the plug: kills qemu at once.
    pub fn power_off(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for QemuNode {
    fn drop(&mut self) {
        self.power_off();
    }
}

/// Tap device names are limited to 15 bytes.
fn tap_name(node: &str) -> String {
    let cleaned: String = node.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut name = format!("t{cleaned}");
    name.truncate(15);
    name
}

/// A locally administered MAC for machine number `index` of a lab.
pub fn lab_mac(index: u8) -> [u8; 6] {
    [0x52, 0x54, 0x00, 0x0c, 0x00, index]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tap_names_fit_the_kernel_limit() {
        assert_eq!(tap_name("node-1"), "tnode1");
        assert_eq!(tap_name("a-very-long-machine-name"), "taverylongmachi");
        assert!(tap_name("a-very-long-machine-name").len() <= 15);
    }

    #[test]
    fn macs_are_locally_administered_and_distinct() {
        let a = lab_mac(1);
        let b = lab_mac(2);
        assert_ne!(a, b);
        assert_eq!(a[0] & 0x02, 0x02);
    }
}

/// A background process that is killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    /// Starts `command` with stdout and stderr going to `log`.
    pub fn spawn(mut command: Command, log: &Path) -> Result<Self, LabError> {
        let out = fs::File::create(log).map_err(io_err(format!("creating {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io_err(format!("duplicating {}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io_err(format!(
                "starting {:?}",
                command.get_args().collect::<Vec<_>>()
            )))?;
        Ok(Background {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Fails if the process has exited, naming its log.
    pub fn check_running(&mut self, what: &str) -> Result<(), LabError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(LabError::Command {
                command: what.to_string(),
                stderr: format!("exited ({status}); last output: {}", tail(&self.log, 10)),
            }),
            _ => Ok(()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

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
    // Field order is drop order: machines first, then the processes, and the
    // namespace last.
    /// The netbooting machines, in the order of `config.firmwares`.
    pub nodes: Vec<QemuNode>,
    agent: Background,
    server: Background,
    _router: Option<LanRouter>,
    lan: VirtualLan,
}

/// Removes a namespace (and kills what runs in it) when dropped.
#[derive(Debug)]
struct NamespaceGuard(String);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        remove_namespace(&self.0);
    }
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
        remove_namespace(&ns);
        run("ip", ["netns", "add", &ns])?;
        let namespace = NamespaceGuard(ns.clone());
        lan.exec_ip(&[
            "link", "add", "rtr0", "type", "veth", "peer", "name", "rtr1",
        ])?;
        lan.exec_ip(&["link", "set", "rtr1", "netns", &ns])?;
        lan.exec_ip(&["link", "set", "rtr0", "master", "br0"])?;
        lan.exec_ip(&["link", "set", "rtr0", "up"])?;
        let cidr = format!("{LAB_ROUTER}/{}", lan.prefix_len());
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["addr", "add", &cidr, "dev", "rtr1"],
            vec!["link", "set", "rtr1", "up"],
        ] {
            let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
            full.extend(args);
            run("ip", full)?;
        }
        let mut dnsmasq = Command::new("nsenter");
        dnsmasq
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "dnsmasq", "--no-daemon", "--port=0", "--log-dhcp"])
            .args([
                "--interface=rtr1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
            ])
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
    /// Creates the LAN, a cluster key, starts `omboot serve --mode dhcp` and
    /// the head's agent, and powers on the machines.
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

        let key_file = work.join("cluster.key");
        run(
            &config.bin_dir.join("omnode").to_string_lossy(),
            ["keygen".as_ref(), "--out".as_ref(), key_file.as_os_str()],
        )?;

        let router = match config.mode {
            LabMode::Dhcp => None,
            LabMode::Proxy => Some(LanRouter::start(&lan, work)?),
        };
        let mut server = lan.command(config.bin_dir.join("omboot"));
        server.args(["serve", "--interface", "br0", "--http-port", "80"]);
        match config.mode {
            LabMode::Dhcp => server.args(["--mode", "dhcp", "--pool", LAB_POOL]),
            LabMode::Proxy => server.args(["--mode", "proxy"]),
        };
        server
            .args(["--cluster", &config.cluster])
            .arg("--images")
            .arg(&config.image_dir)
            .arg("--state")
            .arg(work.join("omboot-state"))
            .arg("--key-file")
            .arg(&key_file);
        let server = Background::spawn(server, &work.join("omboot.log"))?;

        let head_socket = work.join("head.sock");
        let mut agent = lan.command(config.bin_dir.join("omnode"));
        agent
            .args(["agent", "--name", "head", "--interface", "br0"])
            .args(["--cluster", &config.cluster])
            .arg("--key-file")
            .arg(&key_file)
            .arg("--socket")
            .arg(&head_socket)
            .arg("--state-dir")
            .arg(work.join("head-state"));
        let agent = Background::spawn(agent, &work.join("head-agent.log"))?;

        let mut nodes = Vec::new();
        for (index, firmware) in config.firmwares.iter().enumerate() {
            let spec = NodeSpec {
                name: format!("vm{}", index + 1),
                firmware: *firmware,
                mac: lab_mac(index as u8 + 1),
                memory_mib: config.memory_mib,
                work_dir: work.clone(),
                extra_args: Vec::new(),
                serial_input: false,
            };
            nodes.push(QemuNode::boot(&mut lan, spec)?);
        }
        Ok(ClusterLab {
            config,
            head_socket,
            key_file,
            nodes,
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
