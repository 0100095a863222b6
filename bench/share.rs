//! Shared-tree benchmark: what a netbooted node gets from `/cluster`,
//! side by side with the kernel's own NFS server and with the raw TCP path
//! under both, in one run.
//!
//! One head machine boots the ISO (SeaBIOS, CD, the `head` entry) and
//! serves, on the same virtual LAN and from the same kind of storage
//! (tmpfs):
//! - **omcluster**: `/cluster`, nfs-ganesha as `omboot serve --share` runs
//!   it (NFSv4.2, port 2049);
//! - **kernel nfsd**: Debian 6.1's in-kernel NFS server on port 2050,
//!   exporting a tmpfs with the same options (`rw`, `no_root_squash`). The
//!   image has no nfs-utils, so the export is written into the kernel's
//!   caches (`/proc/net/rpc/*/channel`) the way `rpc.mountd` would;
//! - **raw TCP**: `iperf3` moving the same 256 MiB each way (the bench
//!   image adds the `iperf3` package).
//!
//! One netbooted node mounts both with the same kernel options (the ones
//! `omnode init` uses: NFSv4.2) and runs, per round: sequential write of 256 MiB
//! (`dd conv=fsync`), sequential read after dropping its caches, then
//! creating, stat-ing (after dropping caches) and deleting 2,000 small
//! files. Timings come from the node's `/proc/uptime`. The table gives
//! medians over the rounds, and the ratios the README quotes: sequential
//! against raw TCP (goal: at least 80 %), small files against the kernel
//! server (goal: within 1.5× its time).
//!
//! Last, `strace -c` follows nfs-ganesha on the head while the node creates
//! and deletes 300 files, and the table's footer gives the system calls it
//! makes per NFS request (its replies are counted by `sendmsg`) and the
//! commonest ones: what each request costs a user-space server, which the
//! kernel's server does not pay (the bench image adds `strace`).
//!
//! Both machines are TCG-emulated, so absolute figures are the emulator's;
//! the ratios are the point. Needs root, qemu and the images' Debian
//! packages (`scripts/install-packages`); run with `bench/share.sh`.
//! `OM_BENCH_ROUNDS` sets the rounds (default 3).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lab::qemu::{medium_args, Medium};
use lab::{Firmware, NodeSpec, QemuNode, VirtualLan};

/// The head's address on the empty LAN (its fallback).
const HEAD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The kernel server's port (nfs-ganesha has 2049).
const PEER_PORT: u16 = 2050;
/// Where the node mounts the kernel server's export.
const PEER_MOUNT: &str = "/mnt/peer";
/// The sunrpc auth domain the hand-written export belongs to.
const PEER_DOMAIN: &str = "ombench";
/// Sequential file size, MiB.
const SEQ_MIB: u32 = 256;
/// Small files per round.
const FILES: u32 = 2000;
/// Small files created and deleted under strace.
const SYSCALL_FILES: u32 = 300;

fn main() -> Result<()> {
    ensure!(
        lab::gate::qemu_tests(),
        "the shared-tree benchmark boots qemu machines: run it as root with OM_QEMU_TESTS=1 (bench/share.sh sets it)"
    );
    lab::check_prerequisites(&[Firmware::BiosIpxe])?;
    let rounds = lab::gate::bench_rounds(3).map_err(anyhow::Error::msg)?;
    let bin = lab::build::static_binaries()?;
    let work = lab::build::workspace().join("target/bench/share");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    eprintln!("share bench: building the image (the node image plus the nfsd module)");
    let image = omcluster_bench::image::with_iperf3(&bin, &work, &["strace"], &["nfsd"])?;

    let mut lan = VirtualLan::create("om-bsh", Ipv4Addr::new(10, 77, 0, 2), 24)?;
    eprintln!("share bench: booting the head from the ISO");
    let mut head = QemuNode::boot(
        &mut lan,
        NodeSpec {
            name: "head".into(),
            firmware: Firmware::BiosIpxe,
            mac: lab::lab_mac(0x60),
            memory_mib: 2048,
            work_dir: work.clone(),
            extra_args: medium_args(Medium::Cd, &image.join("node.iso")),
            serial_input: true,
        },
    )?;
    head.wait_for("boot:", Duration::from_secs(240))
        .context("the ISO's boot menu")?;
    head.type_on_serial("head\r")?;
    head.wait_for(
        "omnode: starting /bin/omboot serve",
        Duration::from_secs(400),
    )
    .context("the head starting omboot")?;
    head.wait_for("shared tree /cluster on tmpfs", Duration::from_secs(5))
        .context("the head's /cluster on tmpfs")?;

    eprintln!("share bench: starting the kernel's nfsd on the head (port {PEER_PORT})");
    // The marker is computed by the shell so the typed line never matches.
    let threads = head
        .shell(
            &format!("{}; cat /proc/fs/nfsd/threads", nfsd_setup()),
            Duration::from_secs(60),
        )
        .context("starting the kernel nfsd")?;
    ensure!(threads == "8", "the kernel nfsd did not start: {threads}");
    // The raw TCP peer.
    head.type_on_serial("iperf3 -s -D > /dev/null\r")?;

    eprintln!("share bench: netbooting a node from the head");
    let mut node = QemuNode::boot(
        &mut lan,
        NodeSpec {
            name: "node".into(),
            firmware: Firmware::BiosIpxe,
            mac: lab::lab_mac(0x61),
            memory_mib: 1024,
            work_dir: work.clone(),
            extra_args: Vec::new(),
            serial_input: true,
        },
    )?;
    let mounted = node
        .wait_for("mounted /cluster from", Duration::from_secs(420))
        .context("the node mounting /cluster")?;
    eprintln!("node: {mounted}");
    let lease = node
        .wait_for("DHCP lease", Duration::from_secs(5))
        .context("the node's address")?;
    let address =
        lab::qemu::leased_address(&lease).with_context(|| format!("no address in {lease:?}"))?;

    // The export, for this node, in the kernel's caches.
    head.shell(&peer_export(address), Duration::from_secs(30))
        .context("writing the kernel nfsd's export")?;
    // Let the kernel server's grace period (10 s) end before mounting.
    std::thread::sleep(Duration::from_secs(11));
    let peer = contracts::share::NfsShare {
        server: HEAD,
        port: Some(PEER_PORT),
        export: "/".into(),
        version: contracts::share::NfsVersion::V4,
    };
    let args = peer.mount(address);
    let fs = node
        .shell(
            &format!(
                "mkdir -p {PEER_MOUNT} && mount -t {} -o {} {} {PEER_MOUNT} 2>&1; stat -f -c %T {PEER_MOUNT}",
                args.fstype, args.options, args.source
            ),
            Duration::from_secs(90),
        )
        .context("mounting the kernel nfsd's export on the node")?;
    ensure!(fs == "nfs", "the peer mount failed: {fs}");
    let mounts = node
        .shell(
            &format!("grep -E ' (/cluster|{PEER_MOUNT}) ' /proc/mounts | tr '\\n' '~'"),
            Duration::from_secs(30),
        )
        .context("reading the node's mounts")?;
    for line in mounts.split('~').filter(|l| !l.is_empty()) {
        eprintln!("node: {line}");
    }

    node.type_on_serial(&script())?;
    let mut results: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for round in 1..=rounds {
        // Alternate who goes first, so neither always gets a cold start.
        let order: [(&str, &str); 3] = if round % 2 == 1 {
            [
                ("omcluster", "/cluster"),
                ("nfsd", PEER_MOUNT),
                ("tcp", "-"),
            ]
        } else {
            [
                ("nfsd", PEER_MOUNT),
                ("omcluster", "/cluster"),
                ("tcp", "-"),
            ]
        };
        for (who, dir) in order {
            eprintln!("share bench: round {round}/{rounds}: {who}");
            let done = format!("done-{who}-{round}");
            let cmd = if who == "tcp" {
                format!("ombench_tcp {HEAD} {round}")
            } else {
                format!("ombench_fs {dir} {who} {round}")
            };
            node.type_on_serial(&format!("{cmd}; echo \"done-{who}-$((0+{round}))\"\r"))?;
            node.wait_for(&done, Duration::from_secs(1800))
                .with_context(|| format!("round {round} on {who}"))?;
        }
    }
    for line in node.console().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let ["RESULT", who, op, _round, start, end] = f[..] {
            let (Ok(s), Ok(e)) = (start.parse::<f64>(), end.parse::<f64>()) else {
                continue;
            };
            let who: &'static str = match who {
                "omcluster" => "omcluster",
                "nfsd" => "nfsd",
                "tcp" => "tcp",
                _ => continue,
            };
            let op: &'static str = match op {
                "write" => "write",
                "read" => "read",
                "create" => "create",
                "stat" => "stat",
                "delete" => "delete",
                _ => continue,
            };
            results.entry((who, op)).or_default().push(e - s);
        }
    }
    print_table(&results, rounds)?;
    let (per_request, top) = server_syscalls(&mut head, &mut node)?;
    println!(
        "nfs-ganesha made {per_request:.1} system calls per NFS request over 300 creates and deletes \
         (strace -c; the kernel server makes none): {top}"
    );
    Ok(())
}

/// `strace -c` on the head's nfs-ganesha while `node` creates and deletes
/// [`SYSCALL_FILES`] files in `/cluster`: system calls per request (its
/// `sendmsg` calls, one per reply) and the five commonest, `name×count`.
fn server_syscalls(head: &mut QemuNode, node: &mut QemuNode) -> Result<(f64, String)> {
    let started = head
        .shell(
            "rm -f /tmp/om-sys.txt; strace -c -f -p $(cat /run/omboot/share/ganesha.pid) \
             -o /tmp/om-sys.txt > /dev/null 2>&1 & echo $! > /tmp/om-strace.pid; sleep 3; \
             kill -0 $(cat /tmp/om-strace.pid) && echo tracing",
            Duration::from_secs(60),
        )
        .context("starting strace on nfs-ganesha")?;
    ensure!(started == "tracing", "strace did not start: {started}");
    node.shell(
        &format!(
            "d=/cluster/ombench-sys; mkdir -p $d; i=0; \
             while [ $i -lt {SYSCALL_FILES} ]; do : > $d/f$i; i=$((i+1)); done; rm -rf $d; echo ok"
        ),
        Duration::from_secs(1800),
    )
    .context("the node's creates and deletes under strace")?;
    let table = head
        .shell(
            "kill -INT $(cat /tmp/om-strace.pid); sleep 3; tr '\\n' '~' < /tmp/om-sys.txt",
            Duration::from_secs(60),
        )
        .context("reading strace's table")?;
    // Rows: % time, seconds, usecs/call, calls, [errors,] syscall.
    let mut calls: Vec<(String, u64)> = table
        .split('~')
        .filter_map(|row| {
            let f: Vec<&str> = row.split_whitespace().collect();
            let name = f.last()?;
            let n = f.get(3)?.parse().ok()?;
            (f.len() >= 5 && *name != "total").then(|| (name.to_string(), n))
        })
        .collect();
    let total: u64 = calls.iter().map(|(_, n)| n).sum();
    let replies = calls
        .iter()
        .find(|(name, _)| name == "sendmsg")
        .map(|(_, n)| *n)
        .filter(|n| *n > 0)
        .with_context(|| format!("no sendmsg in strace's table: {table}"))?;
    calls.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let top: Vec<String> = calls
        .iter()
        .take(5)
        .map(|(name, n)| format!("{name}×{n}"))
        .collect();
    Ok((total as f64 / replies as f64, top.join(", ")))
}

/// Shell line for the head: the kernel NFS server, NFSv4 only, on TCP port
/// [`PEER_PORT`], eight threads, its export a fresh tmpfs.
fn nfsd_setup() -> String {
    [
        "modprobe nfsd",
        "mkdir -p /srv/peer",
        "mount -t tmpfs -o mode=1777 peer /srv/peer",
        "mount -t nfsd nfsd /proc/fs/nfsd",
        "echo 10 > /proc/fs/nfsd/nfsv4leasetime",
        "echo 10 > /proc/fs/nfsd/nfsv4gracetime",
        "echo '-3 +4 +4.1 +4.2' > /proc/fs/nfsd/versions",
        &format!("echo 'tcp {PEER_PORT}' > /proc/fs/nfsd/portlist"),
        "echo 8 > /proc/fs/nfsd/threads",
    ]
    .join("; ")
}

/// Shell line for the head: `/srv/peer` exported to `client` read-write,
/// without root squashing, as the NFSv4 root (fsid 0), written into the
/// caches `rpc.mountd` fills: the client's domain, the file-handle key and
/// the export. Flags: insecure ports (0x2), no subtree check (0x400), fsid
/// given (0x2000).
fn peer_export(client: Ipv4Addr) -> String {
    let forever = i32::MAX;
    let flags = 0x2 | 0x400 | 0x2000;
    [
        format!("echo 'nfsd {client} {forever} {PEER_DOMAIN}' > /proc/net/rpc/auth.unix.ip/channel"),
        format!("echo '{PEER_DOMAIN} 1 \\x00000000 {forever} /srv/peer' > /proc/net/rpc/nfsd.fh/channel"),
        format!("echo '{PEER_DOMAIN} /srv/peer {forever} {flags} 65534 65534 0' > /proc/net/rpc/nfsd.export/channel"),
    ]
    .join("; ")
}

/// The node's benchmark functions, typed into its shell once. Each timed
/// step prints `RESULT WHO OP ROUND START END` (seconds of uptime).
fn script() -> String {
    format!(
        r#"t() {{ read u _ < /proc/uptime; echo $u; }}
ombench_fs() {{ d=$1/ombench; rm -rf $d; mkdir -p $d; sync
s=$(t); dd if=/dev/zero of=$d/big bs=1M count={SEQ_MIB} conv=fsync 2>/dev/null; e=$(t); echo "RESULT $2 write $3 $s $e"
echo 3 > /proc/sys/vm/drop_caches
s=$(t); dd if=$d/big of=/dev/null bs=1M 2>/dev/null; e=$(t); echo "RESULT $2 read $3 $s $e"
rm -f $d/big
s=$(t); i=0; while [ $i -lt {FILES} ]; do : > $d/f$i; i=$((i+1)); done; e=$(t); echo "RESULT $2 create $3 $s $e"
echo 3 > /proc/sys/vm/drop_caches
s=$(t); stat -c %s $d/f* > /dev/null; e=$(t); echo "RESULT $2 stat $3 $s $e"
s=$(t); rm -f $d/f*; e=$(t); echo "RESULT $2 delete $3 $s $e"
rmdir $d; }}
ombench_tcp() {{ s=$(t); iperf3 -c $1 -n {SEQ_MIB}M > /dev/null; e=$(t); echo "RESULT tcp write $2 $s $e"
s=$(t); iperf3 -c $1 -n {SEQ_MIB}M -R > /dev/null; e=$(t); echo "RESULT tcp read $2 $s $e"; }}
"#
    )
    .replace('\n', "\r")
}

/// The median of `v` (sorted in place; the mean of the middle two for an
/// even count).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Prints the table: MB/s for the sequential steps, seconds for the small
/// files, and the ratios the goals are about.
fn print_table(results: &BTreeMap<(&str, &str), Vec<f64>>, rounds: usize) -> Result<()> {
    let get = |who: &str, op: &str| -> Result<f64> {
        let mut v = results
            .get(&(who, op))
            .cloned()
            .filter(|v| v.len() == rounds)
            .with_context(|| format!("missing results for {who} {op}"))?;
        Ok(median(&mut v))
    };
    let mib = SEQ_MIB as f64;
    println!();
    println!("shared tree, one netbooted node, median of {rounds} rounds (TCG-emulated machines)");
    println!(
        "{:<34} {:>12} {:>12} {:>12} {:>10}",
        "workload", "omcluster", "kernel nfsd", "raw TCP", "ratio"
    );
    for (op, what) in [
        ("write", "sequential write 256 MiB"),
        ("read", "sequential read 256 MiB"),
    ] {
        let (ours, peer, tcp) = (get("omcluster", op)?, get("nfsd", op)?, get("tcp", op)?);
        println!(
            "{:<34} {:>7.1} MB/s {:>7.1} MB/s {:>7.1} MB/s {:>9.0}%",
            what,
            mib / ours,
            mib / peer,
            mib / tcp,
            100.0 * tcp / ours
        );
    }
    for (op, what) in [
        ("create", "create 2,000 files"),
        ("stat", "stat 2,000 files"),
        ("delete", "delete 2,000 files"),
    ] {
        let (ours, peer) = (get("omcluster", op)?, get("nfsd", op)?);
        println!(
            "{:<34} {:>10.2} s {:>10.2} s {:>12} {:>9.2}x",
            what,
            ours,
            peer,
            "",
            ours / peer
        );
    }
    println!("ratio: sequential = share of raw TCP (goal >= 80%); small files = omcluster time / kernel nfsd time (goal <= 1.5x)");
    if results.is_empty() {
        bail!("no results");
    }
    Ok(())
}
