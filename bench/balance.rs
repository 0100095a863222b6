//! Balancing benchmark: twelve equal CPU-bound jobs all started on one of
//! four netbooted nodes, three ways in one run:
//! - **migration**: started with `omctl run --node A` and left to the
//!   balancers (every knob off); also counted: the moves, and the time until
//!   every node runs at least one of the jobs;
//! - **placement alone**: the same, with `stay` on A, so they all stay there
//!   (what `--node A` or an unlucky placement gives without migration);
//! - **ideal**: total work over total capacity, measured as three jobs started on
//!   each node with `stay` everywhere (twelve equal jobs on four equal nodes
//!   cannot do better; measuring it keeps the emulator's contention, four
//!   TCG machines on this host's cores, in both figures).
//!
//! Each job is the awk loop, sized by a calibration run to about
//! `OM_BENCH_JOB_S` seconds alone on A (default 20). The table gives each
//! makespan and the ratio the README quotes, migration against ideal, goal
//! ≤ 1.25×. Run with `bench/balance.sh`; `OM_BENCH_ROUNDS` sets the rounds
//! (default 1; medians over rounds).

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::{ClusterLab, Firmware, LabConfig, LabMode};
use serde_json::Value;

/// `omctl knob --node NODE WORD` from the head, as root.
fn knob(lab: &ClusterLab, node: &str, word: &str) -> Result<()> {
    let o = lab.omctl().args(["knob", "--node", node, word]).output()?;
    ensure!(
        o.status.success(),
        "omctl knob --node {node} {word}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// `omctl run --node NODE -- awk …` from the head, `rounds` loop rounds.
fn awk(lab: &ClusterLab, node: &str, rounds: u64) -> Result<Child> {
    Ok(lab
        .omctl()
        .args(["run", "--node", node, "--", "awk"])
        .arg(format!(
            "BEGIN{{for(i=0;i<{rounds};i++)s+=i; print \"bench\", i}}"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Waits for a job and checks its output.
fn finish(child: Child, rounds: u64) -> Result<()> {
    let o = child.wait_with_output()?;
    let out = String::from_utf8_lossy(&o.stdout);
    ensure!(
        o.status.success() && out.trim() == format!("bench {rounds}"),
        "a job ended {} with {out:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(())
}

/// Seconds one job of `rounds` rounds takes on `node`, start to end.
fn alone(lab: &ClusterLab, node: &str, rounds: u64) -> Result<f64> {
    let t = Instant::now();
    finish(awk(lab, node, rounds)?, rounds)?;
    Ok(t.elapsed().as_secs_f64())
}

/// One batch: `nodes[k]` starts job k. Returns (makespan, moves, seconds
/// until every node of `all` ran one of them, if that happened).
fn batch(
    lab: &ClusterLab,
    nodes: &[&str],
    all: &[String],
    rounds: u64,
) -> Result<(f64, u64, Option<f64>)> {
    let t = Instant::now();
    let mut jobs: Vec<Child> = nodes
        .iter()
        .map(|n| awk(lab, n, rounds))
        .collect::<Result<_>>()?;
    let mut moves: BTreeMap<String, u64> = BTreeMap::new();
    let mut busy: Option<f64> = None;
    while jobs.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
        let o = lab.omctl().args(["ps", "--all", "--json"]).output()?;
        let listed: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        let mut on = BTreeSet::new();
        for j in listed.iter().filter(|j| {
            j["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains("bench")))
            })
        }) {
            if let (Some(id), Some(node)) = (j["job"].as_str(), j["node"].as_str()) {
                on.insert(node.to_string());
                let m = moves.entry(id.to_string()).or_default();
                *m = (*m).max(j["moves"].as_u64().unwrap_or(0));
            }
        }
        if busy.is_none() && all.iter().all(|n| on.contains(n)) {
            busy = Some(t.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let makespan = t.elapsed().as_secs_f64();
    for c in jobs {
        finish(c, rounds)?;
    }
    Ok((makespan, moves.values().sum(), busy))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    ensure!(
        lab::gate::qemu_tests(),
        "the balancing benchmark boots qemu machines: run it as root with OM_QEMU_TESTS=1 (bench/balance.sh sets it)"
    );
    let rounds_n = lab::gate::bench_rounds(1).map_err(anyhow::Error::msg)?;
    let job_s: f64 = std::env::var("OM_BENCH_JOB_S")
        .unwrap_or_else(|_| "20".into())
        .parse()
        .context("OM_BENCH_JOB_S: seconds")?;
    let bin_dir = lab::build::static_binaries()?;
    let image_dir = lab::build::default_image(&bin_dir)?;
    let work_dir = lab::build::workspace().join("target/bench/balance");
    let _ = std::fs::remove_dir_all(&work_dir);
    eprintln!("balance bench: booting four nodes");
    let mut lab = ClusterLab::start(LabConfig {
        name: "om-bbal".into(),
        bin_dir,
        image_dir,
        work_dir,
        firmwares: vec![Firmware::BiosIpxe; 4],
        cluster: "bench".into(),
        memory_mib: 512,
        mode: LabMode::Dhcp,
        share: false,
        serial_input: false,
        capture: false,
    })?;
    for node in &mut lab.nodes {
        node.wait_for("joined cluster", Duration::from_secs(600))?;
    }
    let names: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();
    lab.wait_for_criu(&names, Duration::from_secs(120))?;
    let a = names[0].as_str();

    // The awk rate on A, from two sizes (start-up cost cancels out).
    let (small, big) = (200_000u64, 1_200_000u64);
    let (ts, tb) = (alone(&lab, a, small)?, alone(&lab, a, big)?);
    let rate = (big - small) as f64 / (tb - ts).max(0.1);
    let rounds = (rate * job_s) as u64;
    let one = alone(&lab, a, rounds)?;
    eprintln!("balance bench: {rounds} rounds per job, {one:.1} s alone on {a}");

    let (mut mig, mut solo, mut ideal, mut moves, mut busy) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds_n {
        let on_a = vec![a; 12];
        for n in &names {
            knob(&lab, n, "nostay")?;
        }
        let (m, mv, b) = batch(&lab, &on_a, &names, rounds)?;
        eprintln!("round {round}: migration {m:.1} s, {mv} moves, every node busy after {b:?} s");
        knob(&lab, a, "stay")?;
        let (s, _, _) = batch(&lab, &on_a, &names, rounds)?;
        eprintln!("round {round}: all on {a} {s:.1} s");
        for n in &names {
            knob(&lab, n, "stay")?;
        }
        let even: Vec<&str> = (0..12).map(|k| names[k % names.len()].as_str()).collect();
        let (i, _, _) = batch(&lab, &even, &names, rounds)?;
        eprintln!("round {round}: even spread {i:.1} s");
        mig.push(m);
        solo.push(s);
        ideal.push(i);
        moves.push(mv as f64);
        busy.push(b.unwrap_or(f64::NAN));
    }
    let (m, s, i) = (median(mig), median(solo), median(ideal));
    println!(
        "{:>12} {:>12} {:>12} {:>10} {:>10} {:>8} {:>12}",
        "migration s", "alone on A s", "ideal s", "mig/ideal", "alone/mig", "moves", "all busy s"
    );
    println!(
        "{:>12.1} {:>12.1} {:>12.1} {:>9.2}x {:>9.2}x {:>8.0} {:>12.1}",
        m,
        s,
        i,
        m / i,
        s / m,
        median(moves),
        median(busy)
    );
    println!(
        "goal: migration at most 1.25x ideal: {}",
        if m / i <= 1.25 { "met" } else { "missed" }
    );
    Ok(())
}
