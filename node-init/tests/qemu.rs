//! `omnode init` booting for real: a Debian kernel under qemu (TCG) with a
//! test initramfs (a static `omnode` as /init, busybox, the e1000 module and
//! a hand-written modules.dep/modules.alias), its NIC on a tap in a network
//! namespace bridge where dnsmasq serves DHCP. The assertions read the
//! serial console and drive the root shell through it.
//!
//! Needs root, qemu-system-x86, dnsmasq-base, busybox-static, cpio, gzip,
//! iproute2 and apt (to download the kernel package into
//! `$XDG_CACHE_HOME/omcluster-test`, default `~/.cache/omcluster-test`).
//! Runs under `OM_QEMU_TESTS=1` or `CI=true`. A prebuilt static omnode can be
//! given with `OM_STATIC_OMNODE=PATH`; otherwise the test builds one.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lab::gate::Need;
use lab::netns::{dnsmasq_command, remove_namespace};
use lab::process::must_run;

const NS: &str = "omt-init-q";
const BR: &str = "omtinitbr";
const TAP: &str = "omtinitq0";
const VM_MAC: &str = "52:54:00:77:10:01";
/// Generous limits so a broken boot fails instead of hanging; no speed is
/// asserted.
const GUARD: Duration = Duration::from_secs(240);
/// The kernel command line every test starts from: serial console, only
/// kernel errors on it, reboot on panic (qemu then exits under -no-reboot),
/// and no IO-APIC timer probe, which TCG on a loaded host can fail.
const BASE_APPEND: &str = "console=ttyS0 loglevel=3 panic=-1 no_timer_check";

fn qemu_tests() -> bool {
    lab::gate::qemu_tests()
        && lab::gate::require(&[
            Need::Root,
            Need::Tool("qemu-system-x86_64", "qemu-system-x86"),
            Need::Tool("dnsmasq", "dnsmasq-base"),
            Need::Tool("ip", "iproute2"),
            Need::Tool("cpio", "cpio"),
            Need::Tool("gzip", "gzip"),
            Need::Tool("apt-get", "apt"),
            Need::Tool("dpkg-deb", "dpkg"),
            Need::File("/bin/busybox", "busybox-static"),
        ])
}

/// The test's scratch space next to the test binary (`target/…/omt-init`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/tests-HASH
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// A statically linked omnode ([`lab::build::static_omnode`]: the same
/// build the image and the end-to-end tests use, so it is built once).
fn static_omnode() -> PathBuf {
    lab::build::static_omnode().unwrap_or_else(|e| panic!("{e}"))
}

/// The Debian kernel: (vmlinuz, the extracted `lib/modules/<release>`
/// holding [`MODULES`], kernel release).
fn debian_kernel() -> (PathBuf, PathBuf, String) {
    let names: Vec<&str> = MODULES
        .iter()
        .map(|(rel, _)| {
            let file = rel.rsplit('/').next().unwrap();
            file.strip_suffix(".ko").unwrap()
        })
        .collect();
    let kernel = lab::kernel::debian_kernel(&names).unwrap_or_else(|e| panic!("{e}"));
    for (rel, _) in MODULES {
        assert!(
            kernel.modules.join(rel).exists(),
            "kernel package {} lacks {rel}",
            kernel.package
        );
    }
    (kernel.vmlinuz, kernel.modules, kernel.release)
}

/// The modules the test images carry, with their dependencies as Debian's
/// 6.1 kernel declares them (`depends=` in each .ko): e1000 for the NIC,
/// virtio-pci and virtio-blk for the head's boot medium, isofs to mount it.
const MODULES: &[(&str, &[&str])] = &[
    ("kernel/drivers/net/ethernet/intel/e1000/e1000.ko", &[]),
    ("kernel/drivers/virtio/virtio_ring.ko", &[]),
    (
        "kernel/drivers/virtio/virtio.ko",
        &["kernel/drivers/virtio/virtio_ring.ko"],
    ),
    ("kernel/drivers/virtio/virtio_pci_modern_dev.ko", &[]),
    ("kernel/drivers/virtio/virtio_pci_legacy_dev.ko", &[]),
    (
        "kernel/drivers/virtio/virtio_pci.ko",
        &[
            "kernel/drivers/virtio/virtio_ring.ko",
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
            "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
            "kernel/drivers/virtio/virtio.ko",
        ],
    ),
    (
        "kernel/drivers/block/virtio_blk.ko",
        &[
            "kernel/drivers/virtio/virtio.ko",
            "kernel/drivers/virtio/virtio_ring.ko",
        ],
    ),
    ("kernel/drivers/cdrom/cdrom.ko", &[]),
    (
        "kernel/fs/isofs/isofs.ko",
        &["kernel/drivers/cdrom/cdrom.ko"],
    ),
];

/// Packs the test initramfs and returns its path: e1000 only, or (`head`)
/// also the modules for a virtio disk holding the boot medium.
fn initramfs(work: &Path, omnode: &Path, modroot: &Path, kver: &str, head: bool) -> PathBuf {
    let root = work.join("root");
    let _ = std::fs::remove_dir_all(&root);
    for d in ["bin", "etc", "root", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(omnode, root.join("bin/omnode")).unwrap();
    std::os::unix::fs::symlink("bin/omnode", root.join("init")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "ls", "cat", "echo", "ip", "hostname", "mount", "ps", "kill", "grep", "sleep",
        "uname", "awk",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let moddir = root.join(format!("lib/modules/{kver}"));
    let mut dep = String::new();
    for (rel, deps) in MODULES {
        if !head && !rel.ends_with("/e1000.ko") {
            continue;
        }
        std::fs::create_dir_all(moddir.join(rel).parent().unwrap()).unwrap();
        std::fs::copy(modroot.join(rel), moddir.join(rel)).unwrap();
        dep.push_str(&format!("{rel}: {}\n", deps.join(" ")));
    }
    std::fs::write(moddir.join("modules.dep"), dep).unwrap();
    // Also entries for modules that are not present (virtio_net, e1000e):
    // they must not match this machine's devices.
    let mut alias = String::from(
        "# hand-written for the init qemu test\n\
         alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_net\n\
         alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
         alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e\n",
    );
    if head {
        alias.push_str(
            "alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
             alias virtio:d00000002v* virtio_blk\n\
             alias fs-iso9660 isofs\n",
        );
    }
    std::fs::write(moddir.join("modules.alias"), alias).unwrap();
    let out = work.join("initrd.gz");
    must_run(Command::new("sh").args([
        "-c",
        &format!(
            "cd '{}' && find . | sort | cpio -o -H newc -R 0:0 --quiet | gzip -1 > '{}'",
            root.display(),
            out.display()
        ),
    ]));
    out
}

/// The namespace with a bridge, the VM's tap and dnsmasq. Removed on drop
/// and before setup.
struct Lan {
    dnsmasq: Option<Child>,
}

fn cleanup() {
    remove_namespace(NS);
}

impl Lan {
    fn new(work: &Path) -> Self {
        cleanup();
        let sh = |c: &str| {
            must_run(Command::new("ip").args(["netns", "exec", NS, "sh", "-c", c]));
        };
        must_run(Command::new("ip").args(["netns", "add", NS]));
        sh(&format!(
            "ip link set lo up && ip link add {BR} type bridge && ip addr add 10.77.10.1/24 dev {BR} && ip link set {BR} up \
             && ip tuntap add {TAP} mode tap && ip link set {TAP} master {BR} && ip link set {TAP} up"
        ));
        let dnsmasq = dnsmasq_command(NS, BR)
            .arg("--dhcp-range=10.77.10.50,10.77.10.60,255.255.255.0,2m")
            .arg("--dhcp-option=option:router,10.77.10.1")
            .arg("--dhcp-option=option:dns-server,10.77.10.1")
            .arg(format!("--dhcp-host={VM_MAC},10.77.10.55,qnode-1"))
            .arg(format!(
                "--dhcp-leasefile={}",
                work.join("leases").display()
            ))
            .arg("--pid-file")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq");
        Lan {
            dnsmasq: Some(dnsmasq),
        }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup();
    }
}

/// The VM's network.
enum Net {
    /// An e1000 on the tap in the test namespace (dnsmasq there).
    Tap,
    /// An e1000 with this MAC on an isolated qemu hub.
    Isolated(&'static str),
    /// No network device.
    None,
}

/// The VM: its serial console as a growing text, and its input.
struct Vm {
    child: Child,
    stdin: ChildStdin,
    console: Arc<(Mutex<String>, Condvar)>,
}

impl Vm {
    /// Boots with the given network and extra qemu arguments.
    fn start(vmlinuz: &Path, initrd: &Path, append: &str, net: Net, extra: &[&str]) -> Self {
        let mut cmd = match net {
            Net::Tap => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", NS, "qemu-system-x86_64"])
                    .args([
                        "-netdev",
                        &format!("tap,id=n0,ifname={TAP},script=no,downscript=no"),
                    ])
                    .args(["-device", &format!("e1000,netdev=n0,mac={VM_MAC},romfile=")]);
                c
            }
            Net::Isolated(mac) => {
                // A hub port with nothing else on the hub: a NIC that
                // reaches nobody.
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-netdev", "hubport,id=n0,hubid=0"])
                    .args(["-device", &format!("e1000,netdev=n0,mac={mac},romfile=")]);
                c
            }
            Net::None => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-nic", "none"]);
                c
            }
        };
        cmd.args(extra);
        let mut child = cmd
            .args([
                "-accel", "tcg", "-m", "512", "-display", "none", "-monitor", "none",
            ])
            .args(["-serial", "stdio", "-no-reboot"])
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", append])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let console = Arc::new((Mutex::new(String::new()), Condvar::new()));
        let c2 = console.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let (text, cv) = &*c2;
                text.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]).replace('\r', ""));
                cv.notify_all();
            }
        });
        Vm {
            child,
            stdin,
            console,
        }
    }

    fn text(&self) -> String {
        self.console.0.lock().unwrap().clone()
    }

    /// Waits until the console shows `needle` after byte `from`; returns the
    /// position after it. Panics with the whole console on the guard.
    fn wait_for(&self, needle: &str, from: usize) -> usize {
        let (text, cv) = &*self.console;
        let deadline = Instant::now() + GUARD;
        let mut t = text.lock().unwrap();
        loop {
            if let Some(i) = t.get(from..).and_then(|s| s.find(needle)) {
                return from + i + needle.len();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "console never showed {needle:?}; console so far:\n{}",
                *t
            );
            t = cv.wait_timeout(t, left).unwrap().0;
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        self.stdin.flush().unwrap();
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn init_boots_loads_e1000_gets_dhcp_and_keeps_a_shell() {
    if !qemu_tests() {
        return;
    }
    let work = target_dir().join("omt-init-qemu");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let omnode = static_omnode();
    let (vmlinuz, modroot, kver) = debian_kernel();
    let initrd = initramfs(&work, &omnode, &modroot, &kver, false);
    let _lan = Lan::new(&work);
    let key = "5a".repeat(32);
    let mut vm = Vm::start(
        &vmlinuz,
        &initrd,
        &format!("{BASE_APPEND} om.role=node om.cluster=qtest om.server=10.77.10.1 om.key={key} om.system=nfs://10.77.10.1/images"),
        Net::Tap,
        &[],
    );

    let mut at = vm.wait_for(
        &format!(
            "omnode: init {} starting on Linux {kver}",
            env!("CARGO_PKG_VERSION")
        ),
        0,
    );
    at = vm.wait_for(
        "omnode: mounted /proc /sys /dev /dev/pts /dev/shm /run /tmp /sys/fs/cgroup",
        at,
    );
    vm.wait_for("omnode: role node, cluster qtest, server 10.77.10.1", at);
    vm.wait_for("omnode: root shell on /dev/ttyS0", at);
    at = vm.wait_for("omnode: loaded modules: e1000", at);
    at = vm.wait_for("omnode: eth0 (52:54:00:77:10:01) up, asking DHCP", at);
    at = vm.wait_for(
        "omnode: eth0: DHCP lease 10.77.10.55/24 from 10.77.10.1, router 10.77.10.1, dns 10.77.10.1, 120s",
        at,
    );
    at = vm.wait_for("omnode: hostname qnode-1", at);
    at = vm.wait_for("omnode: cluster key written to /run/omcluster.key", at);
    // The system layer cannot be had (this initramfs has neither squashfs
    // nor an NFS client, and the LAN no server): the console names it and
    // why, once, and after a minute of trying the machine carries on from
    // its initramfs.
    let layer = "nfs://10.77.10.1/images/system.squashfs";
    let why = "loading squashfs: cannot load the squashfs file system: module squashfs is not in modules.dep";
    at = vm.wait_for(&format!("omnode: mounting the system layer {layer}"), at);
    at = vm.wait_for(
        &format!("omnode: system layer {layer}: {why}; retrying every 3s for 60s"),
        at,
    );
    at = vm.wait_for(
        &format!("omnode: cannot mount the system layer {layer}: {why}"),
        at,
    );
    at = vm.wait_for(
        "; staying on the initramfs (its shell and agent run, the layer's programs do not)",
        at,
    );
    at = vm.wait_for(
        "omnode: starting agent: /bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name qnode-1 --cluster qtest --interface eth0 --seed 10.77.10.1 --checkin http://10.77.10.1:80/api/v1/checkin",
        at,
    );

    // The shell on the serial console works, and sees what init set up.
    // (The echoed command lines never contain the expected output.)
    vm.send("echo \"omt-host=$(hostname) sum=$((6*7))\"");
    at = vm.wait_for("omt-host=qnode-1 sum=42", at);
    vm.send("ip -4 addr show dev eth0; ip route; grep -c ' cgroup2 ' /proc/mounts; cat /run/omcluster.key /etc/resolv.conf; echo omt-done-$((2+3))");
    let end = vm.wait_for("omt-done-5", at);
    let out = vm.text()[at..end].to_string();
    assert!(out.contains("inet 10.77.10.55/24"), "{out}");
    assert!(out.contains("default via 10.77.10.1 dev eth0"), "{out}");
    assert!(out.contains(&format!("\n{key}\n")), "{out}");
    assert!(out.contains("\nnameserver 10.77.10.1\n"), "{out}");
    assert!(out.contains("\n1\n"), "cgroup2 not mounted once: {out}");
    at = end;

    // The agent is supervised: when it dies, init restarts it. (PID 1 runs
    // the same binary, so pick the agent by its arguments.)
    vm.send("kill $(ps -o pid,args | awk '$2 ~ /omnode$/ && $3 == \"agent\" {print $1}'); echo omt-killed-$((3*3))");
    at = vm.wait_for("omt-killed-9", at);
    at = vm.wait_for("omnode: agent ", at);
    at = vm.wait_for("; restarting in 1s", at);

    // A shell that exits is replaced.
    vm.send("exit");
    at = vm.wait_for(
        "omnode: shell on /dev/ttyS0 exited with status 0; restarting in 1s",
        at,
    );
    vm.send("echo \"omt-again=$((1+1))\"");
    at = vm.wait_for("omt-again=2", at);

    // Clean power off through PID 1; qemu exits when the machine is off.
    vm.send("omnode poweroff");
    vm.wait_for("omnode: power off: stopping all processes", at);
    vm.wait_for("omnode: power off now", at);
    vm.wait_exit();
}

impl Vm {
    /// Waits for qemu to exit (the guest powered off, or rebooted under
    /// -no-reboot) and checks it exited cleanly.
    fn wait_exit(mut self) {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut child = std::mem::replace(&mut self.child, Command::new("true").spawn().unwrap());
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = rx
            .recv_timeout(GUARD)
            .unwrap_or_else(|_| panic!("qemu did not exit; console:\n{}", self.text()))
            .unwrap();
        assert!(status.success(), "qemu exited with {status}");
        eprintln!("console:\n{}", self.text());
    }
}

#[test]
fn init_without_a_nic_says_so_keeps_the_shell_and_reboots() {
    if !qemu_tests() {
        return;
    }
    let work = target_dir().join("omt-init-qemu-nonic");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let omnode = static_omnode();
    let (vmlinuz, modroot, kver) = debian_kernel();
    let initrd = initramfs(&work, &omnode, &modroot, &kver, false);
    let mut vm = Vm::start(
        &vmlinuz,
        &initrd,
        &format!("{BASE_APPEND} om.colour=blue om.role=boss"),
        Net::None,
        &[],
    );
    let mut at = vm.wait_for("omnode: mounted /proc /sys /dev", 0);
    at = vm.wait_for(
        "omnode: kernel command line: unknown parameter om.colour",
        at,
    );
    at = vm.wait_for(
        "omnode: kernel command line: om.role=\"boss\" is not valid: expected node or head",
        at,
    );
    at = vm.wait_for("omnode: role node, cluster (none), server (none)", at);
    at = vm.wait_for("omnode: no modules to load for this machine's devices", at);
    at = vm.wait_for(
        "omnode: no wired network interface found (no driver for the NIC?); retrying every 5s",
        at,
    );
    // PID 1 is still there and the shell works.
    vm.send("echo \"omt-alive=$((2*21)) $(cat /proc/1/comm)\"");
    // The kernel named PID 1 after /init, the symlink it ran.
    at = vm.wait_for("omt-alive=42 init", at);
    vm.send("omnode reboot");
    vm.wait_for("omnode: reboot: stopping all processes", at);
    vm.wait_for("omnode: reboot now", at);
    vm.wait_exit();
}

#[test]
fn init_as_head_mounts_its_boot_medium_and_supervises_omboot() {
    if !qemu_tests() {
        return;
    }
    if !lab::gate::require(&[Need::Tool("xorriso", "xorriso")]) {
        return;
    }
    let work = target_dir().join("omt-init-qemu-head");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("medium")).unwrap();
    std::fs::write(work.join("medium/hello.txt"), "omt-medium-ok\n").unwrap();
    let iso = work.join("medium.iso");
    must_run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-V", "OMTEST", "-o"])
            .arg(&iso)
            .arg(work.join("medium")),
    );
    let omnode = static_omnode();
    let (vmlinuz, modroot, kver) = debian_kernel();
    let initrd = initramfs(&work, &omnode, &modroot, &kver, true);
    let key = "c3".repeat(32);
    let drive = format!("file={},if=virtio,format=raw,readonly=on", iso.display());
    let mut vm = Vm::start(
        &vmlinuz,
        &initrd,
        &format!("{BASE_APPEND} om.role=head om.cluster=qhead om.ip=10.77.11.1/24 om.key={key}"),
        Net::Isolated("52:54:00:77:11:01"),
        &["-drive", &drive],
    );
    let mut at = vm.wait_for("omnode: role head, cluster qhead, server (none)", 0);
    at = vm.wait_for(
        "omnode: eth0 (52:54:00:77:11:01) static address 10.77.11.1/24",
        at,
    );
    // No DHCP name: the host name comes from the MAC.
    vm.wait_for("omnode: hostname head-525400771101", at);
    // virtio-pci by PCI modalias, then virtio-blk by the virtio device it
    // revealed, then isofs to mount the medium.
    at = vm.wait_for(
        "omnode: boot medium /dev/vda mounted on /run/omcluster/media",
        0,
    );
    // No disk labelled OMCLUSTER: the shared tree goes on tmpfs.
    at = vm.wait_for(
        "omnode: shared tree /cluster on tmpfs (lost at power-off; a partition made with mkfs.ext4 -L OMCLUSTER keeps it)",
        at,
    );
    // A static address: DHCP mode, the other half of the /24 as the pool.
    let serve = "/bin/omboot serve --interface eth0 --mode dhcp --pool 10.77.11.128-10.77.11.254 --images /run/omcluster/media --state /run/omboot --http-port 80 --cluster qhead --key-file /run/omcluster.key --share /cluster";
    at = vm.wait_for(&format!("omnode: starting {serve}"), at);
    at = vm.wait_for("omnode: omboot logs to /run/omboot.log", at);
    // This image has no omboot: init says so and keeps retrying.
    at = vm.wait_for(
        &format!("omnode: cannot start omboot ({serve}): No such file or directory (os error 2); retrying in"),
        at,
    );
    vm.send("cat /run/omcluster/media/hello.txt; grep -o -e '^virtio_blk ' -e '^isofs ' -e '^e1000 ' /proc/modules; echo omt-end-$((4+4))");
    let end = vm.wait_for("omt-end-8", at);
    let out = vm.text()[at..end].to_string();
    assert!(out.contains("\nomt-medium-ok\n"), "{out}");
    for m in ["virtio_blk", "isofs", "e1000"] {
        assert!(
            out.contains(&format!("\n{m} \n")),
            "module {m} not loaded: {out}"
        );
    }
    vm.send("omnode poweroff");
    vm.wait_for("omnode: power off now", end);
    vm.wait_exit();
}

#[test]
fn init_as_head_with_an_uplink_serves_on_the_nic_no_dhcp_server_answers() {
    if !qemu_tests() {
        return;
    }
    // eth0: an uplink whose DHCP server (qemu's own, isolated from the host
    // with restrict=on) answers at once. eth1: the cluster's switch, where
    // nobody answers. The head must serve on eth1 although eth0 has an
    // address 14 s sooner, and its agent must talk on eth1 too.
    let work = target_dir().join("omt-init-qemu-head-uplink");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    let omnode = static_omnode();
    let (vmlinuz, modroot, kver) = debian_kernel();
    let initrd = initramfs(&work, &omnode, &modroot, &kver, true);
    let mut vm = Vm::start(
        &vmlinuz,
        &initrd,
        &format!("{BASE_APPEND} om.role=head om.cluster=qup"),
        Net::None,
        &[
            "-netdev",
            "user,id=up,restrict=on",
            "-device",
            "e1000,netdev=up,mac=52:54:00:77:12:01,romfile=",
            "-netdev",
            "hubport,id=cl,hubid=0",
            "-device",
            "e1000,netdev=cl,mac=52:54:00:77:12:02,romfile=",
        ],
    );
    let mut at = vm.wait_for("omnode: role head, cluster qup, server (none)", 0);
    at = vm.wait_for("omnode: eth0: DHCP lease 10.0.2.15/24 from 10.0.2.2", at);
    at = vm.wait_for(
        "omnode: eth1: no DHCP server answered 3 tries; this is a boot network of our own: taking 10.77.0.1/24",
        at,
    );
    at = vm.wait_for("omnode: hostname head-525400771202", at);
    at = vm.wait_for("omnode: new cluster key written to /run/omcluster.key", at);
    // No boot medium, so no system layer from it: the agent starts from
    // the initramfs after a while (said before or after the key).
    at = at.max(vm.wait_for(
        "omnode: no boot medium in 30s: the agent starts from the initramfs; still looking",
        0,
    ));
    at = vm.wait_for(
        "omnode: starting agent: /bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name head-525400771202 --cluster qup --interface eth1 --web 0.0.0.0:7947 --checkin http://10.77.0.1:80/api/v1/checkin",
        at,
    );
    // No boot medium in this machine: init keeps looking for it and starts
    // no omboot. The uplink keeps its lease.
    vm.send("ip -4 -o addr show eth0; ip -4 -o addr show eth1; echo omt-end-$((5+5))");
    let end = vm.wait_for("omt-end-10", at);
    let out = vm.text()[at..end].to_string();
    let console = vm.text();
    assert!(out.contains("inet 10.0.2.15/24"), "{console}");
    assert!(out.contains("inet 10.77.0.1/24"), "{console}");
    assert!(!console.contains("starting /bin/omboot"), "{console}");
    vm.send("omnode poweroff");
    vm.wait_for("omnode: power off now", end);
    vm.wait_exit();
}

#[test]
fn static_check_tells_static_from_dynamic_binaries() {
    // Debian's shell is dynamically linked; busybox-static is not. (Not the
    // test binary itself: CI builds it static, with the image's binaries.)
    let sh = std::fs::read("/bin/sh").unwrap();
    assert!(lab::build::has_interpreter(&sh));
    if let Ok(bb) = std::fs::read("/bin/busybox") {
        assert!(!lab::build::has_interpreter(&bb));
    }
}
