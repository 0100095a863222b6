//! Live-migration benchmark: how long `omctl migrate` takes and how long it
//! keeps a job frozen, side by side with moving the same kind of job by
//! hand on the same nodes and with the link's limit, in one run.
//!
//! The lab (head in a network namespace, `omboot`, the shared tree) boots
//! two netbooted nodes (1.5 GiB each). A static C program allocates N MiB
//! (16, 64, 256), fills them with pseudo-random bytes (nothing for CRIU to
//! skip) and prints a tick every 0.2 s. Per size and round:
//! - **omcluster**: started with `omctl run --node A` from the head, moved
//!   with `omctl migrate JOB B`; `omctl migrate` reports the time frozen
//!   (job stopped to job running again) and the total;
//! - **by hand**: the same program started on A under `unshare -p -f
//!   setsid` (as the ENVIRONMENT recipe does), `criu dump` into tmpfs, the
//!   directory pulled by B with `nc | tar`, `criu restore` there; frozen the
//!   whole time, timed on the nodes' `/proc/uptime`;
//! - **link**: the same size A → B with `iperf3` (the benchmark's image is
//!   the node image plus iperf3); the link's limit for the job is its size
//!   over that throughput.
//!
//! The table gives medians and the two ratios the README quotes: total
//! against (link limit + CRIU's own dump and restore time), goal ≤ 1.3×;
//! frozen against the by-hand way, goal ≤ 0.5×. Under TCG the absolute
//! figures are the emulator's; the ratios are the point. Run with
//! `bench/migrate.sh`; `OM_BENCH_ROUNDS` sets the rounds (default 3),
//! `OM_BENCH_SIZES` the sizes in MiB (default `16,64,256`).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::chown;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lab::{ClusterLab, Firmware, LabConfig, LabMode};

/// The user the jobs run as.
const USER: u32 = 4242;
/// The jobs' directory, in the shared tree.
const CWD: &str = "/cluster/bench";

const MEM_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    size_t mib = argc > 1 ? strtoul(argv[1], 0, 10) : 16;
    size_t n = mib << 20;
    unsigned long *p = malloc(n);
    unsigned long x = 88172645463325252UL;
    for (size_t i = 0; i < n / sizeof *p; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        p[i] = x;
    }
    setvbuf(stdout, 0, _IOLBF, 0);
    printf("ready\n");
    for (unsigned long k = 0;; k++) {
        p[(k * 4096 / sizeof *p) % (n / sizeof *p)]++;
        printf("tick %lu\n", k);
        usleep(200000);
    }
}
"#;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds between two `/proc/uptime` readings a node's shell printed as
/// `label START END` lines.
fn spans(out: &str) -> BTreeMap<String, f64> {
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (a, b): (f64, f64) = (w.get(1)?.parse().ok()?, w.get(2)?.parse().ok()?);
            Some((w[0].to_string(), b - a))
        })
        .collect()
}

/// The agent address of node `name` from the head's view.
fn address(lab: &ClusterLab, name: &str) -> Result<String> {
    let s = lab.status()?;
    let addr = s["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == name))
        .and_then(|n| n["addr"].as_str())
        .with_context(|| format!("no address for {name}"))?;
    Ok(addr.split(':').next().unwrap_or(addr).to_string())
}

/// One move with omctl migrate: (frozen s, total s).
fn omcluster_move(lab: &ClusterLab, a: &str, b: &str, mib: u32) -> Result<(f64, f64)> {
    let share = lab.share_dir().context("no shared tree")?;
    let mut omctl = Command::new("setpriv");
    omctl
        .args([
            "--reuid",
            &USER.to_string(),
            "--regid",
            &USER.to_string(),
            "--clear-groups",
        ])
        .arg(lab.config().bin_dir.join("omctl"))
        .arg("--socket")
        .arg(lab.head_socket());
    let mut job = lab::cluster::in_tree(share, CWD, &omctl)
        .args(["run", "--node", a, "--", "./mem", &mib.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut out = BufReader::new(job.stdout.take().context("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    ensure!(line.trim() == "ready", "the job said {line:?}");
    let ps = lab.omctl().args(["ps", "--all", "--json"]).output()?;
    let jobs: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout)?;
    let id = jobs
        .iter()
        .find(|j| j["argv"][1] == mib.to_string().as_str() && j["node"] == a)
        .and_then(|j| j["job"].as_str())
        .context("the job is not in ps")?
        .to_string();
    let moved = lab.omctl().args(["migrate", &id, b]).output()?;
    let _ = job.kill();
    let _ = job.wait();
    ensure!(
        moved.status.success(),
        "omctl migrate failed: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    // "… MiB in T s, frozen F s"
    let text = String::from_utf8_lossy(&moved.stdout).to_string();
    let num = |after: &str| -> Option<f64> {
        text.split(after)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    let (total, frozen) = (num(" in "), num("frozen "));
    match (frozen, total) {
        (Some(f), Some(t)) => Ok((f, t)),
        _ => bail!("cannot read omctl migrate's line: {text}"),
    }
}

/// A shell command listing the pids whose command line is `./mem MIB`
/// (the image's busybox has no pgrep).
fn pids_of(mib: u32) -> String {
    format!(
        "for p in /proc/[0-9]*; do [ \"$(tr '\\0' ' ' < $p/cmdline 2>/dev/null)\" = './mem {mib} ' ] && echo ${{p#/proc/}}; done"
    )
}

/// One move by hand: (dump s, copy s, restore s).
fn by_hand(lab: &mut ClusterLab, a_ip: &str, mib: u32) -> Result<(f64, f64, f64)> {
    let t = Duration::from_secs(600);
    let up = "cut -d' ' -f1 /proc/uptime";
    lab.nodes[1].shell("rm -rf /tmp/hand; mkdir -p /tmp/hand", t)?;
    lab.nodes[0].shell(
        &format!(
            "rm -rf /tmp/hand; mkdir -p /tmp/hand; cd {CWD} && (unshare -p -f setsid ./mem {mib} </dev/null >/dev/null 2>&1 &) ; \
             while [ -z \"$({})\" ]; do sleep 0.1; done; sleep 1",
            pids_of(mib)
        ),
        t,
    )?;
    // The namespace's PID 1 is the program itself (unshare's child).
    let pid = lab.nodes[0].shell(&format!("{} | tail -n 1", pids_of(mib)), t)?;
    let pid = pid.trim();
    ensure!(!pid.is_empty(), "the by-hand job did not start");
    // Let the program fill its memory before freezing it.
    std::thread::sleep(Duration::from_secs(u64::from(mib) / 16 + 2));
    let dump = lab.nodes[0].shell(
        &format!(
            "s=$({up}); criu dump -t {pid} -D /tmp/hand -o dump.log && echo dump $s $({up}) \
             || tail -n 2 /tmp/hand/dump.log"
        ),
        t,
    )?;
    // A serves the directory, B pulls it: the copy is timed on B's clock
    // from connect to the last byte unpacked.
    lab.nodes[0].shell(
        "(tar c -C /tmp/hand . | nc -l -p 7101) >/dev/null 2>&1 &",
        t,
    )?;
    std::thread::sleep(Duration::from_millis(500));
    let copy = lab.nodes[1].shell(
        &format!("s=$({up}); nc {a_ip} 7101 | tar x -C /tmp/hand && echo copy $s $({up})"),
        t,
    )?;
    let restore = lab.nodes[1].shell(
        &format!(
            "s=$({up}); criu restore -D /tmp/hand -d -o restore.log && echo restore $s $({up}) \
             || tail -n 2 /tmp/hand/restore.log"
        ),
        t,
    )?;
    lab.nodes[1].shell(&format!("kill $({}); rm -rf /tmp/hand", pids_of(mib)), t)?;
    lab.nodes[0].shell("rm -rf /tmp/hand", t)?;
    let all = spans(&[dump.as_str(), &copy, &restore].join("\n"));
    match (all.get("dump"), all.get("copy"), all.get("restore")) {
        (Some(d), Some(c), Some(r)) => Ok((*d, *c, *r)),
        _ => bail!("by hand: dump {dump:?} copy {copy:?} restore {restore:?}"),
    }
}

/// Seconds to send `mib` MiB A → B over TCP with iperf3 (the standard
/// tool; busybox `nc`, which the by-hand copy uses, moves 4 KiB at a time
/// and measures itself more than the link). B runs the server.
fn link(lab: &mut ClusterLab, b_ip: &str, mib: u32) -> Result<f64> {
    let t = Duration::from_secs(600);
    let up = "cut -d' ' -f1 /proc/uptime";
    let out = lab.nodes[0].shell(
        &format!("s=$({up}); iperf3 -c {b_ip} -n {mib}M >/dev/null && echo link $s $({up})"),
        t,
    )?;
    spans(&out)
        .get("link")
        .copied()
        .with_context(|| format!("link (iperf3 A → B): {out:?}"))
}

fn main() -> Result<()> {
    ensure!(
        lab::gate::qemu_tests(),
        "the migration benchmark boots qemu machines: run it as root with OM_QEMU_TESTS=1 (bench/migrate.sh sets it)"
    );
    let rounds = lab::gate::bench_rounds(3).map_err(anyhow::Error::msg)?;
    let sizes: Vec<u32> = std::env::var("OM_BENCH_SIZES")
        .unwrap_or_else(|_| "16,64,256".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("OM_BENCH_SIZES: MiB, comma-separated")
        })
        .collect::<Result<_>>()?;
    let bin_dir = lab::build::static_binaries()?;
    // The lab starts from an empty work directory: the image is built
    // beside it.
    let work_dir = lab::build::workspace().join("target/bench/migrate");
    let image_work = lab::build::workspace().join("target/bench/migrate-image");
    let _ = std::fs::remove_dir_all(&work_dir);
    let _ = std::fs::remove_dir_all(&image_work);
    std::fs::create_dir_all(&image_work)?;
    eprintln!("migrate bench: building the image (the node image plus iperf3)");
    let image_dir = omcluster_bench::image::with_iperf3(&bin_dir, &image_work, &[], &[])?;
    eprintln!("migrate bench: booting two nodes");
    let mut lab = ClusterLab::start(LabConfig {
        name: "om-bmig".into(),
        bin_dir,
        image_dir,
        work_dir,
        firmwares: vec![Firmware::BiosIpxe, Firmware::BiosIpxe],
        cluster: "bench".into(),
        memory_mib: 1536,
        mode: LabMode::Dhcp,
        share: true,
        serial_input: true,
        capture: false,
    })?;
    for node in &mut lab.nodes {
        node.wait_for("joined cluster", Duration::from_secs(420))?;
    }
    let names: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();
    let (a, b) = (names[0].clone(), names[1].clone());
    lab.wait_for_criu(&names, Duration::from_secs(120))?;
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    let dir = share.join("bench");
    std::fs::create_dir_all(&dir)?;
    chown(&dir, Some(USER), Some(USER))?;
    std::fs::write(dir.join("mem.c"), MEM_C)?;
    let cc = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(dir.join("mem"))
        .arg(dir.join("mem.c"))
        .status()?;
    ensure!(cc.success(), "gcc -static failed");
    let a_ip = address(&lab, &a)?;
    let b_ip = address(&lab, &b)?;
    lab.nodes[1].shell("iperf3 -s -D >/dev/null", Duration::from_secs(30))?;

    println!(
        "{:>5}  {:>9} {:>9}  {:>9} {:>9} {:>9} {:>9}  {:>7} {:>9}  {:>11} {:>11}",
        "MiB",
        "om total",
        "om frozen",
        "dump",
        "copy",
        "restore",
        "hand",
        "link",
        "link MB/s",
        "total/limit",
        "frozen/hand"
    );
    for &mib in &sizes {
        let (mut om_t, mut om_f, mut d, mut c, mut r, mut l) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            eprintln!("migrate bench: {mib} MiB, round {}", round + 1);
            let (f, t) = omcluster_move(&lab, &a, &b, mib)?;
            om_f.push(f);
            om_t.push(t);
            let (dd, cc, rr) = by_hand(&mut lab, &a_ip, mib)?;
            d.push(dd);
            c.push(cc);
            r.push(rr);
            l.push(link(&mut lab, &b_ip, mib)?);
        }
        let (om_t, om_f, d, c, r, l) = (
            median(om_t),
            median(om_f),
            median(d),
            median(c),
            median(r),
            median(l),
        );
        let hand = d + c + r;
        println!(
            "{mib:>5}  {om_t:>8.2}s {om_f:>8.2}s  {d:>8.2}s {c:>8.2}s {r:>8.2}s {hand:>8.2}s  {l:>6.2}s {:>9.1}  {:>10.2}x {:>10.2}x",
            f64::from(mib) * 1.048_576 / l,
            om_t / (l + d + r),
            om_f / hand
        );
    }
    println!("(medians of {rounds}; goals: total/limit <= 1.3, frozen/hand <= 0.5; limit = link + dump + restore)");
    Ok(())
}
