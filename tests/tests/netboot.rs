//! The appliance end to end: the default image is built, `omboot serve
//! --mode dhcp` serves it on a virtual LAN, and three qemu machines netboot
//! through the three firmware paths (SeaBIOS + iPXE ROM, OVMF + iPXE EFI ROM,
//! OVMF's own PXE chainloading `snponly.efi`). Each must print the init's
//! joined line; the head's agent must list all four nodes; `omctl run` from
//! the head places the awk loop from the openMosix documentation on the nodes;
//! a machine that is powered off is declared dead by the head.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{ClusterLab, Firmware, LabConfig, LabMode};
use serde_json::Value;

use crate::util;

const CLUSTER: &str = "e2e";
/// How long a machine may take to netboot and join under TCG on a busy
/// 2-core machine. Generous on purpose: this bounds a hang, it is not a speed
/// check (speed lives in `bench/`).
const JOIN_TIMEOUT: Duration = Duration::from_secs(420);

/// Polls the head's view until `check` holds, or fails naming what it saw.
fn wait_for_view(
    lab: &mut ClusterLab,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Result<(Value, Duration)> {
    let start = Instant::now();
    loop {
        lab.check_services()?;
        let seen = lab.status();
        if let Ok(view) = &seen {
            if check(view) {
                return Ok((view.clone(), start.elapsed()));
            }
        }
        if start.elapsed() > timeout {
            bail!("the head never saw {what}; last view: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_cluster(name: &str, firmwares: &[Firmware], mode: LabMode) -> Result<ClusterLab> {
    let bin_dir = lab::build::static_binaries()?;
    let image_dir = util::default_image(&bin_dir)?;
    let work_dir = lab::build::workspace().join("target/e2e").join(name);
    Ok(ClusterLab::start(LabConfig {
        name: name.to_string(),
        bin_dir,
        image_dir,
        work_dir,
        firmwares: firmwares.to_vec(),
        cluster: CLUSTER.to_string(),
        memory_mib: 768,
        mode,
    })?)
}

#[test]
fn qemu_three_firmwares_netboot_join_and_share_the_awk_batch() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    let firmwares = [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe];
    let mut lab = start_cluster("om-e2e", &firmwares, LabMode::Dhcp)?;

    let mut joined = Vec::new();
    for node in &mut lab.nodes {
        let line = node
            .wait_for("joined cluster", JOIN_TIMEOUT)
            .with_context(|| format!("{} ({})", node.name(), node.spec().firmware.label()))?;
        eprintln!("{} ({}): {line}", node.name(), node.spec().firmware.label());
        ensure!(
            line.contains(&format!("joined cluster {CLUSTER}")),
            "unexpected joined line: {line}"
        );
        joined.push(line);
    }

    // Each agent checks in with omboot once joined: the boot server's node
    // list shows every machine at its last stage.
    let start = Instant::now();
    loop {
        let stages = lab.boot_stages()?;
        if lab::machines_at_stage(&stages, "agent") == lab.nodes.len() {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "not every machine checked in with omboot: {stages}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    let (view, _) = wait_for_view(
        &mut lab,
        "the head and three nodes alive",
        Duration::from_secs(60),
        |v| ClusterLab::nodes_in_state(v, "alive").len() >= 4,
    )?;
    let alive = ClusterLab::nodes_in_state(&view, "alive");
    ensure!(
        alive.iter().any(|n| n == "head"),
        "head missing from {alive:?}"
    );

    // The awk loop of the openMosix documentation, shrunk tenfold per loop so
    // that it finishes in reasonable time under TCG emulation.
    let batch = 6;
    let mut jobs = Vec::new();
    for _ in 0..batch {
        let child = lab
            .omctl()
            .args(["run", "--", "sh", "-c"])
            .arg("awk 'BEGIN {for(i=0;i<1000;i++)for(j=0;j<1000;j++);}'; echo \"ran on $OM_NODE from $OM_HOME\"")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        jobs.push(child);
    }
    let mut placed = Vec::new();
    for job in jobs {
        let output = job.wait_with_output()?;
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        ensure!(
            output.status.success(),
            "omctl run failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("ran on "))
            .context("no OM_NODE line")?;
        ensure!(
            line.ends_with("from head"),
            "OM_HOME is not the head: {line}"
        );
        placed.push(
            line.trim_start_matches("ran on ")
                .split(' ')
                .next()
                .unwrap_or("")
                .to_string(),
        );
    }
    eprintln!("awk batch placed on: {placed:?}");
    ensure!(
        placed.iter().all(|n| !n.is_empty()),
        "a job did not report OM_NODE: {placed:?}"
    );
    ensure!(
        placed.iter().any(|n| n != "head"),
        "every job ran on the head; none was placed on a netbooted node: {placed:?}"
    );

    // Pull the plug on the last machine; the head must declare it dead.
    let victim_before: Vec<String> = ClusterLab::nodes_in_state(&view, "alive");
    lab.nodes.last_mut().unwrap().power_off();
    let (after, took) = wait_for_view(
        &mut lab,
        "a powered-off node declared down",
        Duration::from_secs(60),
        |v| ClusterLab::nodes_in_state(v, "alive").len() == victim_before.len() - 1,
    )?;
    eprintln!(
        "powered-off node noticed after {:.1} s; alive now: {:?}",
        took.as_secs_f64(),
        ClusterLab::nodes_in_state(&after, "alive")
    );
    eprintln!("logs in {}", lab.config().work_dir.display());
    Ok(())
}

/// An existing LAN: its router's dnsmasq hands out addresses (and no boot
/// options), `omboot serve --mode proxy` only adds the boot file. All three
/// firmware paths must still netboot and join, with addresses from the
/// router's pool.
#[test]
fn qemu_proxy_mode_beside_the_lans_own_dhcp_server() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    let firmwares = [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe];
    let mut lab = start_cluster("om-e2e-proxy", &firmwares, LabMode::Proxy)?;
    for node in &mut lab.nodes {
        let line = node
            .wait_for("joined cluster", JOIN_TIMEOUT)
            .with_context(|| format!("{} ({})", node.name(), node.spec().firmware.label()))?;
        eprintln!("{} ({}): {line}", node.name(), node.spec().firmware.label());
    }
    let stages = lab.boot_stages()?;
    let addresses: Vec<String> = stages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["address"].as_str().map(String::from))
        .collect();
    eprintln!("addresses seen by omboot: {addresses:?}");
    let (low, high) = lab::LAB_ROUTER_POOL;
    let (low, high): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (low.parse()?, high.parse()?);
    for address in &addresses {
        let ip: std::net::Ipv4Addr = address.parse()?;
        ensure!(
            low <= ip && ip <= high,
            "{ip} is not from the LAN router's pool {low}-{high}: omboot handed out an address in proxy mode"
        );
    }
    let leases = std::fs::read_to_string(lab.config().work_dir.join("dnsmasq.leases"))?;
    ensure!(
        leases.lines().count() >= firmwares.len(),
        "the LAN router leased fewer addresses than there are machines: {leases}"
    );
    Ok(())
}
