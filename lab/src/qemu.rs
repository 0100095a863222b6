//! qemu machines: the three firmware paths a machine netboots through, and
//! a running machine with its serial console in a log file.
//!
//! A [`QemuNode`] sits on a tap device of a [`VirtualLan`] and boots with
//! one of the [`Firmware`] paths (SeaBIOS with the NIC's iPXE ROM, OVMF with
//! the NIC's iPXE EFI ROM, OVMF's own PXE stack), or from a boot medium
//! ([`medium_args`]). It is killed when dropped. [`check_prerequisites`] says
//! which Debian package is missing before anything starts.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use contracts::mac::MacAddr;

use crate::error::{io_err, LabError};
use crate::netns::VirtualLan;
use crate::process::which;

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

/// How to start one qemu machine on the LAN.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The machine's name (also used for the tap device and log file).
    pub name: String,
    /// Its firmware path.
    pub firmware: Firmware,
    /// Its NIC's MAC address.
    pub mac: MacAddr,
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
        self.mac.to_string()
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
    /// Commands run by [`QemuNode::shell`] so far (each gets its own
    /// marker).
    asked: u32,
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
        crate::process::prepare(&mut command)
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
            asked: 0,
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

    /// The machine's name in the lab (`vm1`: its console log, its tap).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The machine's name in the cluster (`omctl run --node`, `omctl
    /// status`): the host name a netbooted node gives itself from its MAC.
    pub fn node_name(&self) -> String {
        self.spec.mac.default_hostname("node")
    }

    /// Runs `command` in the shell on the machine's serial console and
    /// returns its output as one line (`$(…)` joins lines with spaces).
    /// The marker the output is found by is computed by the shell, so the
    /// echo of the typed line never matches it. (The space after `$(`
    /// keeps a command that starts with `(` from reading as `$((`
    /// arithmetic.) A command that leaves a process holding its stdout
    /// open never returns: send background output elsewhere.
    pub fn shell(&mut self, command: &str, timeout: Duration) -> Result<String, LabError> {
        self.asked += 1;
        let n = self.asked;
        self.type_on_serial(&format!("echo \"@om$(({n}+0))@\"$( {command})\r"))?;
        let marker = format!("@om{n}@");
        let line = self.wait_for(&marker, timeout)?;
        Ok(line
            .split_once(&marker)
            .map(|(_, out)| out.trim().to_string())
            .unwrap_or_default())
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

    /// Whether the machine has stopped by itself (powered off, or, with
    /// `-no-reboot`, rebooted): its qemu has exited.
    pub fn has_stopped(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
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

/// The address in an `omnode: IFACE: DHCP lease A.B.C.D/P from …` console
/// line (what [`QemuNode::wait_for`] returns for `"DHCP lease"`).
pub fn leased_address(line: &str) -> Option<Ipv4Addr> {
    line.split_whitespace()
        .skip_while(|w| *w != "lease")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .and_then(|a| a.parse().ok())
}

/// Tap device names are limited to 15 bytes.
fn tap_name(node: &str) -> String {
    let cleaned: String = node.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let mut name = format!("t{cleaned}");
    name.truncate(15);
    name
}

/// A locally administered MAC for machine number `index` of a lab.
pub fn lab_mac(index: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0x00, 0x0c, 0x00, index])
}

/// How a machine has a boot image attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Medium {
    /// An IDE CD-ROM drive.
    Cd,
    /// A USB stick (the ISO `dd`-ed to it) on an xHCI controller.
    Usb,
}

/// The qemu arguments that attach `iso` as `medium`, first in the boot order.
pub fn medium_args(medium: Medium, iso: &Path) -> Vec<String> {
    let file = iso.display();
    match medium {
        Medium::Cd => vec![
            "-drive".into(),
            format!("if=none,id=boot,media=cdrom,readonly=on,format=raw,file={file}"),
            "-device".into(),
            "ide-cd,drive=boot,bootindex=0".into(),
        ],
        Medium::Usb => vec![
            "-drive".into(),
            format!("if=none,id=boot,readonly=on,format=raw,file={file}"),
            "-device".into(),
            "qemu-xhci".into(),
            "-device".into(),
            "usb-storage,drive=boot,bootindex=0".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_read_from_console_lines() {
        assert_eq!(
            leased_address(
                "omnode: eth0: DHCP lease 10.77.0.128/24 from 10.77.0.1, router none, dns none, 3600s"
            ),
            Some(Ipv4Addr::new(10, 77, 0, 128))
        );
        assert_eq!(leased_address("omnode: eth0 up, asking DHCP"), None);
    }

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
        assert_eq!(a.0[0] & 0x02, 0x02);
    }
}
