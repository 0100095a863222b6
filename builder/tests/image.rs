//! Real builds from the Debian mirror (gated by `OM_NET_TESTS=1`, always on
//! under `CI=true`): as an unprivileged user, byte-reproducible, refusing a
//! tampered `.deb` and a tampered `InRelease`, and booting under qemu
//! (`OM_QEMU_TESTS=1`). They share one package cache in the cargo target
//! tmp dir, serialised by a file lock, so only the first run downloads.
//!
//! The agent is a stand-in here: the static host busybox. The boots with the
//! real `omnode` are the e2e crate's.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use lab::gate::{net_tests, qemu_tests};

use crate::util::{tool, workspace};

/// Held while a test uses the shared cache.
struct CacheLock(#[allow(dead_code)] File);

fn shared_cache() -> (PathBuf, CacheLock) {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).unwrap();
    let f = File::create(base.join("om-cache.lock")).unwrap();
    // SAFETY: flock on a file descriptor we own; blocks until we hold it.
    let rc = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock failed");
    let cache = base.join("om-cache");
    std::fs::create_dir_all(&cache).unwrap();
    (cache, CacheLock(f))
}

/// A work dir with a copy of the shipped recipe and lockfile (plus extra
/// recipe text) and of the ombuild binary, so nothing sits next to it.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new(extra_recipe: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("debian-img-")
            .tempdir()
            .unwrap();
        let ws = workspace();
        let recipe = std::fs::read_to_string(ws.join("images/node.toml")).unwrap();
        std::fs::write(
            dir.path().join("node.toml"),
            format!("{recipe}\n{extra_recipe}"),
        )
        .unwrap();
        if let Ok(lock) = std::fs::read(ws.join("images/node.lock")) {
            std::fs::write(dir.path().join("node.lock"), lock).unwrap();
        }
        std::fs::copy(env!("CARGO_BIN_EXE_ombuild"), dir.path().join("ombuild")).unwrap();
        std::fs::copy(busybox(), dir.path().join("agent")).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        Work { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Run `ombuild image` with the stand-in agent and the given cache.
    fn build(&self, out: &str, cache: &Path, extra: &[&str], as_nobody: bool) -> Output {
        let agent = self.path("agent");
        let mut args: Vec<String> = vec![
            "image".into(),
            self.path("node.toml").display().to_string(),
            "--out".into(),
            self.path(out).display().to_string(),
            "--cache".into(),
            cache.display().to_string(),
            "--agent".into(),
            agent.display().to_string(),
            "--omctl".into(),
            agent.display().to_string(),
            "--omboot".into(),
            agent.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let bin = self.path("ombuild");
        let mut cmd = if as_nobody {
            let mut c = Command::new(tool("setpriv").expect("setpriv (util-linux)"));
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        cmd.args(&args)
            .env_remove("SOURCE_DATE_EPOCH")
            .env("HOME", self.dir.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null());
        let out = cmd.output().unwrap();
        eprintln!(
            "ombuild {args:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn busybox() -> PathBuf {
    tool("busybox").expect("busybox-static")
}

fn chown_r(p: &Path, uid: u32) {
    let st = Command::new("chown")
        .args(["-R", &format!("{uid}:{uid}")])
        .arg(p)
        .status()
        .unwrap();
    assert!(st.success());
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

const OUTPUTS: &[&str] = &[
    "vmlinuz",
    "initrd.img",
    "ipxe/undionly.kpxe",
    "ipxe/snponly.efi",
    "ipxe/ipxe.efi",
    "node.iso",
    "manifest.json",
];

/// The initramfs as a list of `mode name[ -> target]` lines via GNU cpio.
fn initrd_listing(initrd: &Path) -> String {
    let data = std::fs::read(initrd).unwrap();
    let mut cpio = Vec::new();
    zstd::stream::read::Decoder::new(data.as_slice())
        .unwrap()
        .read_to_end(&mut cpio)
        .unwrap();
    let mut child = Command::new(tool("cpio").expect("cpio"))
        .args(["-t", "-v", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &cpio));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn unprivileged_build_is_complete_and_byte_reproducible() {
    if !net_tests() {
        return;
    }
    let (cache, _lock) = shared_cache();
    let w = Work::new("");
    let nobody = is_root();
    if nobody {
        chown_r(&cache, 65534);
        chown_r(w.dir.path(), 65534);
    }
    let a = w.build("a", &cache, &[], nobody);
    assert!(a.status.success(), "first build failed");
    let b = w.build("b", &cache, &[], nobody);
    assert!(b.status.success(), "second build failed");
    for f in OUTPUTS {
        let da = std::fs::read(w.path("a").join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let db = std::fs::read(w.path("b").join(f)).unwrap();
        assert!(da == db, "{f} differs between two builds");
        assert!(!da.is_empty(), "{f} is empty");
    }
    // The manifest describes the files.
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("a/manifest.json")).unwrap()).unwrap();
    let arts = m["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), OUTPUTS.len() - 1);
    for a in arts {
        let data = std::fs::read(w.path("a").join(a["path"].as_str().unwrap())).unwrap();
        assert_eq!(a["size"].as_u64().unwrap(), data.len() as u64);
        assert_eq!(
            a["sha256"].as_str().unwrap(),
            builder::fetch::sha256_hex(&data)
        );
    }
    let kver = m["kernel_version"].as_str().unwrap().to_string();
    assert!(kver.ends_with("-amd64"), "{kver}");
    // The manifest carries the recipe's command line, whatever it is.
    let recipe: toml::Value =
        toml::from_str(&std::fs::read_to_string(w.path("node.toml")).unwrap()).unwrap();
    assert_eq!(m["kernel_cmdline"].as_str(), recipe["cmdline"].as_str());
    let pkgs: Vec<&str> = m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "busybox",
        "ipxe",
        "isolinux",
        "linux-image-amd64",
        "syslinux-common",
        "systemd-boot-efi",
    ] {
        assert!(pkgs.contains(&p), "{p} not in manifest packages {pkgs:?}");
    }
    // The initramfs layout, read back by GNU cpio.
    let listing = initrd_listing(&w.path("a/initrd.img"));
    for needle in [
        " init -> bin/omnode\n",
        " bin/sh -> busybox\n",
        " sbin/modprobe -> ../bin/busybox\n",
        " bin/mosmon -> omctl\n",
        &format!(" lib/modules/{kver}/modules.dep\n"),
        &format!(" lib/modules/{kver}/kernel/drivers/net/ethernet/intel/e1000/e1000.ko\n"),
        &format!(" lib/modules/{kver}/kernel/drivers/net/virtio_net.ko\n"),
        &format!(" lib/modules/{kver}/kernel/fs/isofs/isofs.ko\n"),
        &format!(" lib/modules/{kver}/kernel/fs/overlayfs/overlay.ko\n"),
    ] {
        assert!(listing.contains(needle), "initramfs lacks {needle:?}");
    }
    assert!(!listing.contains("usr/share/doc"), "docs were unpacked");
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("root", "root"), "not owned by root: {line}");
    }
}

fn copy_cache(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn tampered_deb_in_the_cache_is_refused_offline_and_replaced_online() {
    if !net_tests() {
        return;
    }
    let (shared, _lock) = shared_cache();
    let w = Work::new("");
    // Warm the shared cache, then work on a private copy of it.
    assert!(w.build("warm", &shared, &[], false).status.success());
    let cache = w.path("cache");
    copy_cache(&shared, &cache);
    let deb = std::fs::read_dir(cache.join("debs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("busybox_")
        })
        .expect("busybox in the cache");
    let mut data = std::fs::read(&deb).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&deb, &data).unwrap();

    let out = w.build("offline", &cache, &["--offline"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("SHA256 mismatch for busybox"), "{err}");
    assert!(!w.path("offline/initrd.img").exists());

    let out = w.build("online", &cache, &[], false);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fails its SHA256 check, fetching it again")
    );
    let a = std::fs::read(w.path("warm/initrd.img")).unwrap();
    assert!(
        a == std::fs::read(w.path("online/initrd.img")).unwrap(),
        "initrd differs after refetch"
    );
}

#[test]
fn interrupted_download_resumes_with_a_range_request() {
    if !net_tests() {
        return;
    }
    let (shared, _lock) = shared_cache();
    let w = Work::new("");
    assert!(w.build("warm", &shared, &[], false).status.success());
    let cache = w.path("cache");
    copy_cache(&shared, &cache);
    let deb = std::fs::read_dir(cache.join("debs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("ipxe_")
        })
        .expect("ipxe in the cache");
    // Leave the first half as a partial download, as an interrupted run would.
    let data = std::fs::read(&deb).unwrap();
    let mut part = deb.clone().into_os_string();
    part.push(".part");
    std::fs::write(&part, &data[..data.len() / 2]).unwrap();
    std::fs::remove_file(&deb).unwrap();
    let out = w.build("resumed", &cache, &[], false);
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("resuming download"), "{log}");
    assert!(std::fs::read(&deb).unwrap() == data, "resumed file differs");
    assert!(!Path::new(&part).exists());
}

#[test]
fn tampered_inrelease_is_refused() {
    if !net_tests() {
        return;
    }
    let (shared, _lock) = shared_cache();
    let w = Work::new("");
    let cache = w.path("cache");
    copy_cache(&shared, &cache);
    // Resolving fetches and verifies InRelease and Packages; the lockfile
    // it writes must name every recipe root.
    let out = w.build("fresh", &cache, &["--update"], false);
    assert!(out.status.success());
    let lock = std::fs::read_to_string(w.path("node.lock")).unwrap();
    for p in ["busybox", "ipxe", "systemd-boot-efi"] {
        assert!(
            lock.contains(&format!("name = \"{p}\"")),
            "{p} not in the new lockfile"
        );
    }
    assert!(
        lock.contains("name = \"linux-image-6.1.0-"),
        "no real kernel package in the lockfile"
    );
    // Offline re-resolution re-verifies the cached InRelease: fine as is…
    let out = w.build("again", &cache, &["--update", "--offline"], false);
    assert!(out.status.success());
    // …and refused once one byte of the signed text changes.
    let inrelease = std::fs::read_dir(cache.join("dists"))
        .unwrap()
        .map(|e| e.unwrap().path().join("bookworm/InRelease"))
        .find(|p| p.exists())
        .expect("cached InRelease");
    let text = std::fs::read_to_string(&inrelease).unwrap();
    assert!(text.contains("Codename: bookworm"));
    std::fs::write(
        &inrelease,
        text.replacen("Codename: bookworm", "Codename: bookwork", 1),
    )
    .unwrap();
    let out = w.build("tampered", &cache, &["--update", "--offline"], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("OpenPGP signature of InRelease of bookworm does not verify"),
        "{err}"
    );
}

#[test]
fn unknown_package_is_reported() {
    if !net_tests() {
        return;
    }
    let (shared, _lock) = shared_cache();
    let w = Work::new("");
    let recipe = std::fs::read_to_string(w.path("node.toml")).unwrap();
    let list = "initramfs = [\"busybox\"";
    assert!(recipe.contains(list), "the recipe's initramfs list changed");
    std::fs::write(
        w.path("node.toml"),
        recipe.replace(list, "initramfs = [\"no-such-package-om\", \"busybox\""),
    )
    .unwrap();
    let cache = w.path("cache");
    copy_cache(&shared, &cache);
    let out = w.build("x", &cache, &[], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("package no-such-package-om does not exist in the archive index"),
        "{err}"
    );
    // The same for the system layer's packages.
    std::fs::write(
        w.path("node.toml"),
        recipe.replace(
            "[packages]\n",
            "[packages]\nsystem = [\"hello\", \"no-such-layer-package-om\"]\n",
        ),
    )
    .unwrap();
    let out = w.build("y", &cache, &[], false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("package no-such-layer-package-om does not exist in the archive index"),
        "{err}"
    );
}

/// A test init: load the NIC driver through modules.alias, show the link.
const TEST_INIT: &str = r#"
[[files]]
path = "/omtest-init"
mode = 0o755
text = """
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
for a in $(cat /sys/bus/pci/devices/*/modalias); do modprobe -q "$a"; done
grep -q '^e1000 ' /proc/modules && echo OMTEST-MODULE-LOADED
[ -e /sys/class/net/eth0 ] && echo OMTEST-ETH0-PRESENT
echo OMTEST-DONE
poweroff -f
"""
"#;

#[test]
fn qemu_boots_kernel_and_initramfs_and_loads_the_nic_driver() {
    if !net_tests() || !qemu_tests() {
        return;
    }
    let Some(qemu) = tool("qemu-system-x86_64") else {
        return;
    };
    let (shared, _lock) = shared_cache();
    let w = Work::new(TEST_INIT);
    assert!(w.build("img", &shared, &[], false).status.success());
    let serial = w.path("serial.log");
    let mut child = Command::new(qemu)
        .args([
            "-accel",
            "tcg",
            "-m",
            "768",
            "-nographic",
            "-no-reboot",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(w.path("img/vmlinuz"))
        .arg("-initrd")
        .arg(w.path("img/initrd.img"))
        .args(["-append", "console=ttyS0 rdinit=/omtest-init panic=-1"])
        // A NIC without a backend: the driver binds, no packet leaves.
        .args(["-net", "none", "-device", "e1000"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the VM to power off, within a generous bound.
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let status = match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(st) => Some(st.unwrap()),
        Err(_) => {
            // SAFETY: signalling the qemu process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            let _ = rx.recv();
            None
        }
    };
    let log = std::fs::read_to_string(&serial).unwrap_or_default();
    eprintln!("serial console:\n{log}");
    assert!(status.is_some(), "the VM did not power off");
    assert!(
        log.contains("OMTEST-MODULE-LOADED"),
        "e1000 not loaded through modules.alias"
    );
    assert!(log.contains("OMTEST-ETH0-PRESENT"), "no eth0");
    assert!(log.contains("OMTEST-DONE"));
}

/// Run the real binary (no network needed) and return (exit code, stderr).
fn run_offline_cli(w: &Work, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(w.path("ombuild"))
        .arg("image")
        .arg(w.path("node.toml"))
        .args(["--out"])
        .arg(w.path("out"))
        .args(["--cache"])
        .arg(w.path("empty-cache"))
        .args(["--agent"])
        .arg(w.path("agent"))
        .args(args)
        .env("HOME", w.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn offline_build_with_an_empty_cache_names_the_missing_package() {
    let w = Work::new("");
    let (code, err) = run_offline_cli(&w, &["--offline"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("offline build: "), "{err}");
    assert!(err.contains("is not in the cache"), "{err}");
    assert!(err.contains("run once without --offline"), "{err}");
}

#[test]
fn unreachable_mirror_is_a_network_error() {
    let w = Work::new("");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let (code, err) = run_offline_cli(&w, &["--mirror", "http://127.0.0.1:9/debian"]);
    assert_eq!(code, Some(5), "{err}");
    assert!(
        err.contains("cannot fetch http://127.0.0.1:9/debian/pool/main/"),
        "{err}"
    );
}

#[test]
fn recipe_errors_exit_with_their_code_and_line() {
    let w = Work::new("colour = \"blue\"\n");
    let (code, err) = run_offline_cli(&w, &[]);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("node.toml:"), "{err}");
    assert!(err.contains("unknown field `colour`"), "{err}");
}

#[test]
fn a_pinned_package_gone_from_the_mirror_says_to_update() {
    use std::io::Write;
    // A loopback "mirror" that has nothing: every request gets a 404.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(16) {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let _ = c.write_all(
                b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    let w = Work::new("");
    let mirror = format!("http://127.0.0.1:{port}/debian");
    let (code, err) = run_offline_cli(&w, &["--mirror", &mirror]);
    assert_eq!(code, Some(5), "{err}");
    assert!(err.contains("is gone from the mirror"), "{err}");
    assert!(err.contains("run with --update"), "{err}");
}

#[test]
fn a_system_layer_is_squashfs_listed_in_the_manifest_and_reproducible() {
    if !net_tests() {
        return;
    }
    let (shared, _lock) = shared_cache();
    let w = Work::new("");
    let recipe = std::fs::read_to_string(w.path("node.toml")).unwrap();
    assert!(recipe.contains("[packages]\n"));
    std::fs::write(
        w.path("node.toml"),
        recipe.replace(
            "[packages]\n",
            "[packages]\nsystem = [\"hello\", \"mawk\", \"uuid-runtime\", \"dbus-system-bus-common\"]\n",
        ),
    )
    .unwrap();
    let cache = w.path("cache");
    copy_cache(&shared, &cache);
    let nobody = is_root();
    if nobody {
        chown_r(w.dir.path(), 65534);
    }
    // a and b each make the layer (b without a's in the cache); c reuses
    // the cached one.
    for out in ["a", "b", "c"] {
        if out == "b" {
            std::fs::remove_dir_all(cache.join("layers")).expect("a kept its layer");
        }
        let o = w.build(out, &cache, &[], nobody);
        assert!(o.status.success(), "build {out} failed");
        let log = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            log.contains("system layer unchanged: reused from the cache"),
            out == "c",
            "build {out}: {log}"
        );
    }
    let layer = std::fs::read(w.path("a/system.squashfs")).unwrap();
    for other in ["b", "c"] {
        assert_eq!(
            layer,
            std::fs::read(w.path(&format!("{other}/system.squashfs"))).unwrap(),
            "system.squashfs differs between builds a and {other}"
        );
    }
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(w.path("a/manifest.json")).unwrap()).unwrap();
    let listed = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["path"] == "system.squashfs")
        .expect("the manifest lists system.squashfs");
    assert_eq!(listed["size"].as_u64(), Some(layer.len() as u64));
    assert!(m["packages"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "hello"));
    let unsquashfs = tool("unsquashfs").expect("squashfs-tools");
    let out = Command::new(&unsquashfs)
        .args(["-lln", "-d", ""])
        .arg(w.path("a/system.squashfs"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    let hello = listing
        .lines()
        .find(|l| l.ends_with(" /usr/bin/hello"))
        .unwrap_or_else(|| panic!("no /usr/bin/hello in\n{listing}"));
    assert!(hello.starts_with("-rwxr-xr-x 0/0 "), "{hello}");
    assert!(!listing.contains("/usr/share/doc/"), "docs were unpacked");
    // mawk's postinst made awk and nawk alternatives; its manual slaves went
    // with the manuals.
    for (link, target) in [
        ("/usr/bin/awk", "/etc/alternatives/awk"),
        ("/etc/alternatives/awk", "/usr/bin/mawk"),
        ("/usr/bin/nawk", "/etc/alternatives/nawk"),
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" {link} -> {target}"))),
            "{link} -> {target} not in\n{listing}"
        );
    }
    assert!(
        !listing.contains("awk.1.gz"),
        "a slave into the left-out manuals"
    );
    // Accounts packages make: uuid-runtime's postinst runs addgroup and
    // adduser, then gives /var/lib/libuuid to them (chown, chmod 2775);
    // dbus-system-bus-common's user comes from its adduser line or its
    // sysusers.d file. An archive's own owner stays (/var/local, staff).
    let cat = |path: &str| {
        let o = Command::new(&unsquashfs)
            .arg("-cat")
            .arg(w.path("a/system.squashfs"))
            .arg(path)
            .output()
            .unwrap();
        assert!(o.status.success(), "unsquashfs -cat {path}");
        String::from_utf8(o.stdout).unwrap()
    };
    let (passwd, group) = (cat("/etc/passwd"), cat("/etc/group"));
    let id_of = |table: &str, name: &str| -> u32 {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in\n{table}"));
        line.split(':').nth(2).unwrap().parse().unwrap()
    };
    let uuidd = (id_of(&passwd, "uuidd"), id_of(&group, "uuidd"));
    assert!((100..1000).contains(&uuidd.0), "{passwd}");
    id_of(&passwd, "messagebus");
    assert!(
        passwd.contains(":/run/uuidd:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    let libuuid = listing
        .lines()
        .find(|l| l.ends_with(" /var/lib/libuuid"))
        .unwrap_or_else(|| panic!("no /var/lib/libuuid in\n{listing}"));
    assert!(
        libuuid.starts_with(&format!("drwxrwsr-x {}/{} ", uuidd.0, uuidd.1)),
        "{libuuid}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("drwxrwsr-x 0/50 ") && l.ends_with(" /var/local")),
        "/var/local is group staff's"
    );
    // The programs run in the layer as its root (chroot: root only).
    if is_root() {
        let root = w.path("unpacked");
        let o = Command::new("unsquashfs")
            .args(["-q", "-d"])
            .arg(&root)
            .arg(w.path("a/system.squashfs"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        for (argv, want) in [
            (vec!["/usr/bin/hello"], "Hello, world!\n"),
            (vec!["/usr/bin/awk", "BEGIN { print 6 * 7 }"], "42\n"),
            // Debian's Essential set comes with any layer: a shell,
            // coreutils, and base-passwd's accounts.
            (vec!["/bin/sh", "-c", "echo $((6 * 7))"], "42\n"),
            (vec!["/usr/bin/id", "-un"], "root\n"),
            (
                vec!["/usr/bin/stat", "-c", "%U:%G", "/var/lib/libuuid"],
                "uuidd:uuidd\n",
            ),
        ] {
            let o = Command::new("chroot")
                .arg(&root)
                .args(&argv)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                want,
                "{argv:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
}
