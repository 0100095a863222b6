//! The web view on the netbooted machines of the `netboot` test (called
//! from it, after the migration checks, while automatic balancing is off):
//! in headless Chromium on the lab's LAN, a job's dot dragged onto another
//! node in the migration monitor moves the job (checked with `omctl ps`),
//! and the history lists the move; the nodes view lists the boot server's
//! machines. At the end of the test, through the API: the machines and
//! their boot stages, and a node powered off from the view.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::browser::{js, until};
use lab::ClusterLab;
use serde_json::Value;

/// Drags a job's dot from `from` onto `to` in the migration monitor, in a
/// browser on the lab's LAN, and checks the move with `omctl ps`.
pub fn check_drag_migration(lab: &ClusterLab, from: &str, to: &str) -> Result<()> {
    if !lab::gate::require(&lab::browser::NEEDS) {
        return Ok(());
    }
    let job = crate::balance::cpu_job(lab, from, "drag-me", 4_000_000_000)?;
    let id = crate::migrate::find_job(lab, "drag-me")?["job"]
        .as_str()
        .context("a job id")?
        .to_string();
    let out = lab.omctl().arg("web").output()?;
    ensure!(
        out.status.success(),
        "omctl web on the head: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout)?.trim().to_string();
    let log = lab.work_dir().join("chromedriver.log");
    let ns = lab.lan().name().to_string();
    let shots = lab::browser::screenshot_dir(env!("CARGO_TARGET_TMPDIR"))?;
    let (from_s, to_s, id_s) = (from.to_string(), to.to_string(), id.clone());
    let drag = lab::browser::in_netns(&ns.clone(), move |rt| -> Result<Duration> {
        let driver = lab::browser::Driver::start(&ns, 9515, &log)?;
        rt.block_on(async {
            let c = driver.session(1280, 800, false).await?;
            c.goto(&url).await?;
            until(&c, "the nodes", Duration::from_secs(30), "return document.querySelectorAll('#nodes tbody tr').length === 4").await?;
            // The boot server's machines: the head and three nodes, all up.
            until(&c, "the machines at the boot server", Duration::from_secs(30),
                "return [...document.querySelectorAll('#machines tbody tr')].filter(r => r.textContent.includes('agent (up)')).length >= 4").await?;
            let png = c.screenshot().await?;
            std::fs::write(shots.join("nodes-lab-1280x800.png"), png)?;
            js(&c, "document.querySelector('nav [data-view=monitor]').click(); return true").await?;
            let dot = format!("#monitor [data-job=\"{id_s}\"]");
            until(&c, "the job's dot", Duration::from_secs(20), &format!("return !!document.querySelector({dot:?})")).await?;
            let target = format!("#monitor .node[data-node=\"{to_s}\"] circle");
            let t0 = Instant::now();
            lab::browser::drag(&c, &dot, &target).await?;
            // The page says what the move did, and the dot sits at the target.
            until(&c, "the move's line", Duration::from_secs(90),
                &format!("return document.querySelector('#notice').textContent.includes('moved from {from_s} to {to_s}')")).await?;
            let moved = t0.elapsed();
            // The next job table puts the dot beside its new node.
            until(&c, "the dot at its new node", Duration::from_secs(20), &format!(
                "const d = document.querySelector({dot:?})?.getBoundingClientRect(); \
                 const t = document.querySelector({target:?}).getBoundingClientRect(); \
                 return !!d && Math.hypot(d.x + d.width / 2 - t.x - t.width / 2, d.y + d.height / 2 - t.y - t.height / 2) < 90")).await?;
            let png = c.screenshot().await?;
            std::fs::write(shots.join("monitor-lab-1280x800.png"), png)?;
            js(&c, "document.querySelector('nav [data-view=history]').click(); return true").await?;
            until(&c, "the move in the history", Duration::from_secs(20),
                &format!("return [...document.querySelectorAll('#markers li')].some(l => l.textContent.includes('job {id_s} moved from {from_s} to {to_s}'))")).await?;
            let png = c.screenshot().await?;
            std::fs::write(shots.join("history-lab-1280x800.png"), png)?;
            c.close().await?;
            Ok(moved)
        })
    })??;
    let now = crate::migrate::find_job(lab, "drag-me")?;
    ensure!(
        now["node"] == to,
        "after the drag, omctl ps shows {now}, not node {to}"
    );
    eprintln!(
        "job {id} dragged from {from} to {to}: moved, the page said so after {:.1} s",
        drag.as_secs_f64()
    );
    drop(job);
    Ok(())
}

/// The head's web view through its API, from the lab's LAN: the boot
/// server lists every lab machine at stage `agent` (and `/metrics` counts
/// them), and `poweroff` on node `i` sends its guests away and halts the
/// machine (its qemu exits).
pub fn check_power_off(lab: &mut ClusterLab, i: usize) -> Result<()> {
    let out = lab.omctl().arg("web").output()?;
    ensure!(
        out.status.success(),
        "omctl web: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout)?.trim().to_string();
    let (base, token) = url.split_once("/#login=").context("a login link")?;
    let curl = |args: &[&str]| -> Result<String> {
        let o = lab
            .lan()
            .command("curl")
            .args(["-s", "--max-time", "120"])
            .args(args)
            .output()?;
        ensure!(
            o.status.success(),
            "curl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(String::from_utf8_lossy(&o.stdout).to_string())
    };
    let json = "Content-Type: application/json";
    let login = curl(&[
        "-i",
        "-X",
        "POST",
        "-H",
        json,
        "-d",
        &format!("{{\"token\":\"{token}\"}}"),
        &format!("{base}/api/login"),
    ])?;
    let session = login
        .lines()
        .find_map(|l| {
            l.strip_prefix("set-cookie: ")
                .or_else(|| l.strip_prefix("Set-Cookie: "))
        })
        .and_then(|c| c.split(';').next())
        .with_context(|| format!("no session cookie in {login}"))?
        .to_string();
    let get = |path: &str| {
        curl(&[
            "-H",
            &format!("Cookie: {session}"),
            &format!("{base}{path}"),
        ])
    };
    let machines: Value = serde_json::from_str(&get("/api/machines")?)?;
    for node in &lab.nodes {
        let mac = node.spec().mac_text();
        let m = machines["machines"]
            .as_array()
            .and_then(|ms| {
                ms.iter().find(|m| {
                    m["mac"]
                        .as_str()
                        .is_some_and(|x| x.eq_ignore_ascii_case(&mac))
                })
            })
            .with_context(|| {
                format!("{} ({mac}) not among the machines: {machines}", node.name())
            })?;
        ensure!(
            m["stage"] == "agent",
            "{} at stage {}, not agent: {m}",
            node.name(),
            m["stage"]
        );
    }
    let metrics = get("/metrics")?;
    ensure!(
        metrics
            .lines()
            .any(|l| l.starts_with("omcluster_boot_machines{")
                && l.contains("stage=\"agent\"")
                && !l.ends_with(" 0")),
        "no machine at stage agent in /metrics"
    );
    let name = lab.nodes[i].node_name();
    let said = curl(&[
        "-H",
        &format!("Cookie: {session}"),
        "-H",
        json,
        "-d",
        r#"{"word":"poweroff"}"#,
        &format!("{base}/api/nodes/{name}/knob"),
    ])?;
    ensure!(said.contains("powering off"), "poweroff on {name}: {said}");
    let t0 = Instant::now();
    while !lab.nodes[i].has_stopped() {
        ensure!(
            t0.elapsed() < Duration::from_secs(120),
            "{name} still runs 120 s after poweroff; its console ends: {}",
            lab.nodes[i]
                .console()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join(" | ")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let console = lab.nodes[i].console();
    ensure!(
        console.contains("power off now"),
        "{name} stopped without powering off: {}",
        console
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    eprintln!(
        "{name} powered off from the web view: {said}; its machine halted {:.1} s later",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
