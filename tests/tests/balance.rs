//! Automatic rebalancing in the lab, on the three netbooted machines of the
//! `netboot` test (called from it, after the migration checks): six
//! CPU-bound jobs started on one node spread to every node within 30 s with
//! no job moving more than 3 times, and end with their output and status;
//! `block` keeps guests off a node and `expel` empties it within 10 s; two
//! nodes with one job each trade nothing for 60 s; the openMosix seed's
//! `test_mosix` loop, typed as written inside `omctl shell` on one node,
//! spreads over all three; `bring` brings a node's jobs home.
//!
//! The work of each job is scaled to this machine: a calibration run of
//! awk on a node says how many loop rounds a second one node does.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::ClusterLab;
use serde_json::Value;

use crate::migrate::Job;

/// Every cluster job, as `omctl ps --all --json` on the head shows them.
fn ps_all(lab: &ClusterLab) -> Result<Vec<Value>> {
    let o = lab.omctl().args(["ps", "--all", "--json"]).output()?;
    ensure!(
        o.status.success(),
        "omctl ps --all: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(serde_json::from_slice(&o.stdout)?)
}

/// Jobs whose command line contains `marker`: id → (node, moves).
fn jobs_with(jobs: &[Value], marker: &str) -> BTreeMap<String, (String, u64)> {
    jobs.iter()
        .filter(|j| {
            j["pid"].is_u64()
                && j["argv"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|x| x.as_str().is_some_and(|s| s.contains(marker)))
                })
        })
        .filter_map(|j| {
            Some((
                j["job"].as_str()?.to_string(),
                (j["node"].as_str()?.to_string(), j["moves"].as_u64()?),
            ))
        })
        .collect()
}

/// `omctl knob [--node NODE] WORD` as root on the head; its output.
pub fn knob(lab: &ClusterLab, node: &str, word: &str) -> Result<String> {
    let o = lab.omctl().args(["knob", "--node", node, word]).output()?;
    ensure!(
        o.status.success(),
        "omctl knob --node {node} {word}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    eprintln!("knob {node} {word}: {out}");
    Ok(out)
}

/// Loop rounds of awk per second on `node` (the difference of two runs, so
/// that the cost of starting a job does not count).
pub fn awk_rate(lab: &ClusterLab, node: &str) -> Result<f64> {
    let run = |n: u64| -> Result<f64> {
        let t = Instant::now();
        let job = Job::spawn(
            lab,
            node,
            &[],
            &format!("awk 'BEGIN{{for(i=0;i<{n};i++)s+=i; print i}}'"),
        )?;
        let (code, lines, err) = job.finish()?;
        ensure!(
            code == Some(0) && lines == vec![n.to_string()],
            "awk calibration: {code:?} {lines:?} {err}"
        );
        Ok(t.elapsed().as_secs_f64())
    };
    let (small, big) = (200_000, 1_200_000);
    let (a, b) = (run(small)?, run(big)?);
    let rate = (big - small) as f64 / (b - a).max(0.1);
    eprintln!("awk on {node}: {rate:.0} rounds/s ({a:.1} s, {b:.1} s)");
    Ok(rate)
}

/// A CPU-bound job of `rounds` rounds that prints `done ROUNDS` and exits 3.
pub fn cpu_job(lab: &ClusterLab, node: &str, tag: &str, rounds: u64) -> Result<Job> {
    Job::spawn(
        lab,
        node,
        &[],
        &format!("awk 'BEGIN{{for(i=0;i<{rounds};i++)s+=i; print \"done\", i}}' # {tag}\nexit 3"),
    )
}

/// Waits until `check` holds for the jobs tagged `marker`, polling `ps`;
/// every sighting goes to `seen` (job → nodes it was seen on, most moves).
fn watch(
    lab: &ClusterLab,
    marker: &str,
    limit: Duration,
    seen: &mut BTreeMap<String, (BTreeSet<String>, u64)>,
    check: impl Fn(&BTreeMap<String, (String, u64)>, &BTreeMap<String, (BTreeSet<String>, u64)>) -> bool,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    loop {
        let now = jobs_with(&ps_all(lab)?, marker);
        for (id, (node, moves)) in &now {
            let e = seen.entry(id.clone()).or_default();
            e.0.insert(node.clone());
            e.1 = e.1.max(*moves);
        }
        if check(&now, seen) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            eprintln!("{marker}: last seen {now:?}");
            return Ok(false);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Where the jobs tagged `marker` run: node → how many.
fn spread(now: &BTreeMap<String, (String, u64)>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for (node, _) in now.values() {
        *by.entry(node.clone()).or_insert(0) += 1;
    }
    by
}

/// Of three nodes, the two whose calibrated speeds (in the head's
/// `omctl status`) are closest, and the third.
fn closest_pair(lab: &ClusterLab, names: &[String]) -> Result<(String, String, String)> {
    let status = lab.status()?;
    let speed = |name: &str| -> Result<f64> {
        status["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["name"] == name))
            .and_then(|n| n["load"]["speed"].as_f64())
            .with_context(|| format!("no speed for {name} in omctl status"))
    };
    let speeds: Vec<f64> = names[..3].iter().map(|n| speed(n)).collect::<Result<_>>()?;
    let ratio = |i: usize, j: usize| speeds[i].max(speeds[j]) / speeds[i].min(speeds[j]).max(1e-6);
    let (i, j, k) = [(0, 1, 2), (0, 2, 1), (1, 2, 0)]
        .into_iter()
        .min_by(|p, q| ratio(p.0, p.1).total_cmp(&ratio(q.0, q.1)))
        .expect("three pairs");
    eprintln!(
        "pair for the ping-pong check: {} ({:.2}) and {} ({:.2}); {} ({:.2}) quiet",
        names[i], speeds[i], names[j], speeds[j], names[k], speeds[k]
    );
    Ok((names[i].clone(), names[j].clone(), names[k].clone()))
}

/// Every balancing check, on the three netbooted machines.
pub fn check_balancing(lab: &mut ClusterLab) -> Result<()> {
    let names: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();
    ensure!(names.len() >= 3, "balancing needs three nodes: {names:?}");
    let (a, b, c) = (names[0].as_str(), names[1].as_str(), names[2].as_str());
    for n in &names {
        knob(lab, n, "noquiet")?;
    }
    let rate = awk_rate(lab, a)?;

    // Six CPU-bound jobs, all started on A: within 30 s every node runs
    // some, and none has moved more than 3 times.
    let rounds = (rate * 30.0) as u64;
    let mut jobs = Vec::new();
    for k in 0..6 {
        jobs.push(cpu_job(lab, a, &format!("spread{k}"), rounds)?);
    }
    let t0 = Instant::now();
    let mut seen = BTreeMap::new();
    let all = [a, b, c];
    let spread_ok = watch(
        lab,
        "# spread",
        Duration::from_secs(30),
        &mut seen,
        |now, _| {
            let by = spread(now);
            all.iter().all(|n| by.get(*n).is_some_and(|k| *k > 0))
        },
    )?;
    ensure!(
        spread_ok,
        "six jobs started on {a} did not reach every node within 30 s: {seen:?}"
    );
    eprintln!(
        "six jobs from {a} on every node after {:.1} s: {seen:?}",
        t0.elapsed().as_secs_f64()
    );
    ensure!(
        seen.values().all(|(_, moves)| *moves <= 3),
        "a job moved more than 3 times: {seen:?}"
    );

    // block keeps guests off B; expel empties it within 10 s.
    knob(lab, b, "block")?;
    let t1 = Instant::now();
    let out = knob(lab, b, "expel")?;
    let empty = watch(
        lab,
        "# spread",
        Duration::from_secs(10),
        &mut seen,
        |now, _| now.values().all(|(n, _)| n != b),
    )?;
    ensure!(
        empty,
        "guests still on {b} 10 s after expel ({out}): {seen:?}"
    );
    eprintln!("{b} empty {:.1} s after expel", t1.elapsed().as_secs_f64());
    // While B is blocked, nothing moves there.
    let mut late = BTreeMap::new();
    let stayed_off = !watch(
        lab,
        "# spread",
        Duration::from_secs(15),
        &mut late,
        |now, _| now.values().any(|(n, _)| n == b),
    )?;
    ensure!(stayed_off, "a job moved to the blocked node {b}: {late:?}");
    knob(lab, b, "noblock")?;
    for job in jobs {
        let (code, lines, err) = job.finish()?;
        ensure!(
            code == Some(3) && lines == vec![format!("done {rounds}")],
            "a spread job ended {code:?} with {lines:?}: {err}"
        );
    }

    // No ping-pong: one job each on two nodes, equal load: nothing moves in
    // 60 s. Equal load is per unit of speed, so the pair is the two nodes
    // whose calibrated speeds are closest: under TCG, three machines booting
    // at once can calibrate 2× apart, and then one job on the slow node
    // rightly moves to the fast one. The third takes no part (`quiet`).
    let (x, y, q) = closest_pair(lab, &names)?;
    knob(lab, &q, "quiet")?;
    let long = (rate * 120.0) as u64;
    let pair = [
        cpu_job(lab, &x, "pair-x", long)?,
        cpu_job(lab, &y, "pair-y", long)?,
    ];
    let mut pp = BTreeMap::new();
    let moved = watch(
        lab,
        "# pair-",
        Duration::from_secs(60),
        &mut pp,
        |now, _| now.len() == 2 && now.values().any(|(_, m)| *m > 0),
    )?;
    ensure!(
        !moved && pp.len() == 2,
        "two nodes with one job each traded jobs: {pp:?}"
    );
    for job in pair {
        job.signal(nix::sys::signal::Signal::SIGINT)?;
        job.finish()?;
    }
    knob(lab, &q, "noquiet")?;

    // The seed's first test, typed as written, in `omctl shell` on A
    // (scaled down: each awk about 12 s alone). The shell stays until told.
    let etc = Job::spawn(lab, a, &[], "ls /etc/ | wc -l")?.finish()?.1;
    let entries: f64 = etc
        .first()
        .and_then(|l| l.trim().parse().ok())
        .context("ls /etc")?;
    let inner = ((rate * 12.0).sqrt() as u64).max(10);
    let seed = format!(
        "cat > test_mosix <<'EOF'\n\
         awk 'BEGIN {{for(i=0;i<{inner};i++)for(j=0;j<{inner};j++);}}' &\n\
         EOF\n\
         chmod +x test_mosix\n\
         for i in `ls /etc/`; do ./test_mosix; done\n"
    );
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    std::fs::write(share.join("u4242/seed.sh"), &seed)?;
    let shell = Job::spawn(
        lab,
        a,
        &[],
        "omctl shell seed.sh && echo seeded && sleep 600",
    )?;
    let marker = format!("for(i=0;i<{inner};i++)");
    let mut sown = BTreeMap::new();
    // Every node has run some of them (a node busy with moves may miss a
    // round of `ps --all`, so this counts what was ever seen).
    let spread_ok = watch(
        lab,
        &marker,
        Duration::from_secs(90),
        &mut sown,
        |_, seen| {
            all.iter()
                .all(|n| seen.values().any(|(nodes, _)| nodes.contains(*n)))
        },
    )?;
    ensure!(
        spread_ok,
        "the seed's {entries} awk processes from {a} did not spread over {all:?}: {sown:?}"
    );
    eprintln!("the seed's loop spread: {sown:?}");
    // bring, with lstay (openMosix's pair): A's own jobs come home and stay.
    knob(lab, a, "lstay")?;
    let out = knob(lab, a, "bring")?;
    let now = jobs_with(&ps_all(lab)?, &marker);
    ensure!(
        now.values().all(|(n, _)| n == a),
        "after bring ({out}), jobs of {a} still elsewhere: {now:?}"
    );
    knob(lab, a, "nolstay")?;
    // The rest runs out (the balancer spreads them again meanwhile).
    let done = watch(
        lab,
        &marker,
        Duration::from_secs(240),
        &mut sown,
        |now, _| now.is_empty(),
    )?;
    ensure!(done, "the seed's awk processes did not finish: {sown:?}");
    shell.signal(nix::sys::signal::Signal::SIGINT)?;
    let (_, lines, err) = shell.finish()?;
    ensure!(
        lines.iter().any(|l| l == "seeded"),
        "omctl shell seed.sh failed: {lines:?} {err}"
    );
    Ok(())
}

/// Starts two long CPU-bound jobs on `victim` and waits until both run
/// there; the caller powers it off.
pub fn start_guests(lab: &ClusterLab, victim: &str) -> Result<Vec<Job>> {
    let guests = vec![
        cpu_job(lab, victim, "guest-0", 1 << 40)?,
        cpu_job(lab, victim, "guest-1", 1 << 40)?,
    ];
    let mut seen = BTreeMap::new();
    let running = watch(
        lab,
        "# guest-",
        Duration::from_secs(30),
        &mut seen,
        |now, _| now.len() == 2 && now.values().all(|(n, _)| n == victim),
    )?;
    ensure!(running, "the guests did not start on {victim}: {seen:?}");
    Ok(guests)
}

/// After the power cut: each guest's `omctl run` ended with 255 and said
/// the node was lost.
pub fn check_lost_guests(guests: Vec<Job>, victim: &str) -> Result<()> {
    for g in guests {
        let (code, _, err) = g.finish()?;
        ensure!(
            code == Some(255) && err.contains(victim),
            "a job on the powered-off {victim} ended {code:?}: {err}"
        );
    }
    Ok(())
}
