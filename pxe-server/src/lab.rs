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
use std::net::Ipv4Addr;
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

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
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
        command
            .arg("-serial")
            .arg(format!("file:{}", log.display()));
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
        Ok(QemuNode { spec, child, log })
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
