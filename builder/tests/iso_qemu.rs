//! The hybrid ISO booted by real firmware under qemu (TCG): as a CD and as a
//! USB stick, with SeaBIOS and with OVMF, through ISOLINUX and systemd-boot,
//! into Debian's kernel and a busybox initramfs whose `/init` prints
//! `OMISO-BOOT-OK role=<om.role>` on the serial console and powers off.
//! On the CD boots the guest also mounts the CD with Linux's own ISO 9660
//! driver and lists it, through Rock Ridge and (`-o norock`) through Joliet,
//! which must match what was written.
//!
//! Gated by `OM_QEMU_TESTS=1` (or `CI=true`, where missing prerequisites
//! fail). Needs qemu-system-x86, ovmf, busybox-static, cpio, isolinux,
//! syslinux-common, systemd-boot-efi and apt access to download the kernel
//! package once (cached under `$XDG_CACHE_HOME/omcluster-test`, default
//! `~/.cache/omcluster-test`). `OM_ISO_BOOTS=seabios-cd,ovmf-usb` runs a
//! subset; `OM_ISO_LOGS=DIR` keeps the console logs.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::iso::{entries, host_loaders, media, write_iso};
use lab::gate::Need;
use lab::qemu::{medium_args, Medium, OVMF_CODE, OVMF_VARS};

const MARKER: &str = "OMISO-BOOT-OK";

/// Modules the guest loads, in dependency order, to mount the CD: the IDE
/// controller (libata, ata_piix), SCSI CD-ROM (sr_mod) and ISO 9660.
const CD_MODULES: [&str; 7] = [
    "scsi_common",
    "scsi_mod",
    "libata",
    "ata_piix",
    "cdrom",
    "sr_mod",
    "isofs",
];

/// Debian's current amd64 kernel image and the [`CD_MODULES`] (downloaded
/// once, then cached: [`lab::kernel::debian_kernel`]).
fn debian_kernel() -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let kernel = lab::kernel::debian_kernel(&CD_MODULES).unwrap_or_else(|e| panic!("{e}"));
    let modules = CD_MODULES
        .iter()
        .map(|m| {
            let p = kernel
                .module(m)
                .unwrap_or_else(|| panic!("{m}.ko is not in {}", kernel.package));
            (m.to_string(), std::fs::read(p).unwrap())
        })
        .collect();
    (std::fs::read(&kernel.vmlinuz).unwrap(), modules)
}

/// A newc initramfs (made by `cpio`): static busybox and an `/init` that
/// mounts the CD if there is one and lists it (`OMISO-LS <mode> <size>
/// <path>` lines: Linux's own ISO 9660 and Rock Ridge reader), prints the
/// marker with the `om.role` it was booted with, then powers off; plus
/// 30 MB of filler.
fn marker_initramfs(tmp: &Path, modules: &[(String, Vec<u8>)]) -> Vec<u8> {
    let root = tmp.join("initramfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("mods")).unwrap();
    let mut insmods = String::new();
    for (name, ko) in modules {
        std::fs::write(root.join(format!("mods/{name}.ko")), ko).unwrap();
        insmods.push_str(&format!("/bin/busybox insmod /mods/{name}.ko\n"));
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    let init = format!(
        "#!/bin/sh\n\
        /bin/busybox mkdir -p /proc /dev /mnt\n\
        /bin/busybox mount -t proc proc /proc\n\
        /bin/busybox mount -t devtmpfs dev /dev\n\
        {insmods}\
        i=0; while [ ! -b /dev/sr0 ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done\n\
        if /bin/busybox mount -t iso9660 -o ro /dev/sr0 /mnt; then\n\
          cd /mnt && /bin/busybox find . | /bin/busybox sort | while read f; do\n\
            echo \"OMISO-LS $(/bin/busybox stat -c '%A %s' \"$f\") $f\"\n\
          done\n\
          cd /\n\
          /bin/busybox umount /mnt\n\
          /bin/busybox mount -t iso9660 -o ro,norock /dev/sr0 /mnt && cd /mnt && /bin/busybox find . | /bin/busybox sort | while read f; do echo \"OMISO-JL $f\"; done\n\
          cd /\n\
        fi\n\
        for w in $(/bin/busybox cat /proc/cmdline); do\n\
          case $w in om.role=*) role=${{w#om.role=}} ;; esac\n\
        done\n\
        echo \"OMISO-BOOT-OK role=$role\"\n\
        /bin/busybox poweroff -f\n"
    );
    std::fs::write(root.join("init"), init).unwrap();
    // Filler so the ESP (kernel + initrd) passes El Torito's 32 MiB count
    // limit, as the real image's does.
    let filler: Vec<u8> = (0..30u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(root.join("filler"), filler).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("sh")
        .args(["-c", "find . | sort | cpio -o -H newc --quiet"])
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Which firmware qemu runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    SeaBios,
    Ovmf,
}

/// One boot: firmware, medium, and the keys to type at a prompt (if any).
pub struct Boot {
    /// Names the console log (`<name>.log`).
    pub name: &'static str,
    pub firmware: Firmware,
    pub medium: Medium,
    /// When this text shows on the serial console, type `keys` (the head
    /// entry: its label at ISOLINUX's `boot:` prompt, or cursor-down and
    /// Enter in systemd-boot's menu, which OVMF reads from the serial port).
    pub prompt: Option<(&'static str, &'static str)>,
    /// The boot is over once a whole console line contains this.
    pub until: &'static str,
    /// The `om.role` this boot picks (checked by this module's test).
    pub expect_role: &'static str,
}

/// qemu with the serial console on a pipe; killed on drop.
struct Qemu {
    child: Child,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots `iso` as `b` says and returns the serial console output (plus
/// qemu's stderr); other test modules use it for the real image.
pub fn boot(iso: &Path, tmp: &Path, b: &Boot) -> String {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        "tcg",
        "-m",
        "512",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
    ]);
    cmd.args(["-serial", "stdio", "-net", "none"]);
    if b.firmware == Firmware::Ovmf {
        let vars = tmp.join(format!("{}-vars.fd", b.name));
        std::fs::copy(OVMF_VARS, &vars).unwrap();
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"));
        cmd.arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    cmd.args(medium_args(b.medium, iso));
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut q = Qemu {
        child: cmd.spawn().expect("qemu-system-x86_64 starts"),
    };
    let mut stdout = q.child.stdout.take().unwrap();
    let mut stdin = q.child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    // A hang guard, not a timing assertion: TCG on a loaded 2-core machine
    // is slow, so allow plenty.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut log = String::new();
    let mut typed = b.prompt.is_none();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => log.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => break,
        }
        if let (false, Some((prompt, keys))) = (typed, b.prompt) {
            if log.contains(prompt) {
                stdin.write_all(keys.as_bytes()).unwrap();
                stdin.flush().unwrap();
                typed = true;
            }
        }
        // Stop once the marker line is complete (the VM powers off anyway).
        if log.find(b.until).is_some_and(|at| log[at..].contains('\n')) {
            break;
        }
    }
    let _ = q.child.kill();
    let mut err = String::new();
    if let Some(mut e) = q.child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    // OM_ISO_LOGS=DIR keeps each console log for a look afterwards.
    let logs = std::env::var_os("OM_ISO_LOGS").map_or_else(|| tmp.to_path_buf(), PathBuf::from);
    std::fs::write(logs.join(format!("{}.log", b.name)), &log).unwrap();
    log + &err
}

/// The six boots the ISO must survive: SeaBIOS and OVMF, CD and USB, the
/// default entry everywhere and the head entry typed on both CD boots.
pub fn all_boots(until: &'static str) -> Vec<Boot> {
    vec![
        Boot {
            name: "seabios-cd",
            firmware: Firmware::SeaBios,
            medium: Medium::Cd,
            prompt: None,
            until,
            expect_role: "node",
        },
        Boot {
            name: "seabios-cd-head",
            firmware: Firmware::SeaBios,
            medium: Medium::Cd,
            prompt: Some(("boot:", "head\r")),
            until,
            expect_role: "head",
        },
        Boot {
            name: "ovmf-cd",
            firmware: Firmware::Ovmf,
            medium: Medium::Cd,
            prompt: None,
            until,
            expect_role: "node",
        },
        Boot {
            name: "seabios-usb",
            firmware: Firmware::SeaBios,
            medium: Medium::Usb,
            prompt: None,
            until,
            expect_role: "node",
        },
        Boot {
            name: "ovmf-usb",
            firmware: Firmware::Ovmf,
            medium: Medium::Usb,
            prompt: None,
            until,
            expect_role: "node",
        },
        Boot {
            name: "ovmf-cd-head",
            firmware: Firmware::Ovmf,
            medium: Medium::Cd,
            prompt: Some(("Boot in", "\x1b[B\r")),
            until,
            expect_role: "head",
        },
    ]
}

fn prerequisites() -> bool {
    lab::gate::require(&[
        Need::Tool("qemu-system-x86_64", "qemu-system-x86"),
        Need::Tool("cpio", "cpio"),
        Need::Tool("busybox", "busybox-static"),
        Need::Tool("apt-get", "apt"),
        Need::Tool("dpkg-deb", "dpkg"),
        Need::File(OVMF_CODE, "ovmf"),
        Need::File(OVMF_VARS, "ovmf"),
    ])
}

#[test]
fn iso_boots_from_cd_and_usb_with_seabios_and_ovmf() {
    if !lab::gate::qemu_tests() {
        return;
    }
    if !prerequisites() {
        return;
    }
    let Some(loaders) = host_loaders() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (kernel, modules) = debian_kernel();
    let initrd = marker_initramfs(tmp.path(), &modules);
    let extra = vec![("manifest.json".to_string(), b"{}\n".to_vec())];
    // no_timer_check: on a loaded host TCG is too slow for the kernel's
    // IO-APIC timer probe, which then panics.
    let cmdline = "console=ttyS0 panic=-1 no_timer_check";
    let iso_path = tmp.path().join("om.iso");
    let report = write_iso(
        &media(&loaders, &kernel, &initrd, &extra, entries(cmdline)),
        &iso_path,
    );
    assert!(
        report.esp_size > 32 << 20 && report.esp_sector_count == u16::MAX,
        "the ESP must pass El Torito's 32 MiB count to test that case: {report:?}"
    );
    let boots = all_boots(MARKER);
    let only = std::env::var("OM_ISO_BOOTS").ok();
    let chosen: Vec<&Boot> = boots
        .iter()
        .filter(|b| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == b.name))
        })
        .collect();
    // Three VMs at a time: what a 2-core machine holds under TCG.
    let mut results: Vec<(String, String, &'static str)> = Vec::new();
    for batch in chosen.chunks(3) {
        results.extend(std::thread::scope(|s| {
            let handles: Vec<_> = batch
                .iter()
                .map(|b| {
                    let iso = iso_path.clone();
                    let tmp = tmp.path().to_path_buf();
                    s.spawn(move || (b.name.to_string(), boot(&iso, &tmp, b), b.expect_role))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        }));
    }
    let mut failed = Vec::new();
    for (name, log, role) in &results {
        let want = format!("{MARKER} role={role}");
        if !log.lines().any(|l| l.trim_end() == want) {
            let tail: String = log
                .chars()
                .rev()
                .take(3000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            eprintln!("---- {name}: no \"{want}\" line; console tail:\n{tail}");
            failed.push(name.clone());
        }
    }
    assert!(failed.is_empty(), "boots without the marker: {failed:?}");

    // Linux mounted the CD and saw the Rock Ridge names, modes and sizes.
    let mut want: Vec<String> = vec![
        "drwxr-xr-x 2048 .".into(),
        "drwxr-xr-x 2048 ./isolinux".into(),
    ];
    for (path, _, size) in &report.files {
        let mode = if path.starts_with("isolinux/") {
            "-r--r--r--"
        } else {
            "-rw-r--r--"
        };
        want.push(format!("{mode} {size} ./{path}"));
    }
    want.sort();
    for (name, log, _) in results.iter().filter(|(n, _, _)| n.contains("-cd")) {
        let mut seen: Vec<String> = log
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("OMISO-LS "))
            .map(str::to_string)
            .collect();
        seen.sort();
        assert_eq!(seen, want, "{name}: the guest's listing of the mounted CD");
        // Without Rock Ridge the kernel reads the Joliet tree: same names.
        let mut joliet: Vec<&str> = log
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("OMISO-JL "))
            .collect();
        joliet.sort();
        let mut names: Vec<&str> = want.iter().map(|w| w.rsplit(' ').next().unwrap()).collect();
        names.sort();
        assert_eq!(
            joliet, names,
            "{name}: the guest's Joliet listing (mount -o norock)"
        );
    }
}
