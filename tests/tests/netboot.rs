//! The appliance end to end: the default image is built, `omboot serve
//! --mode dhcp` serves it on a virtual LAN, and three qemu machines netboot
//! through the three firmware paths (SeaBIOS + iPXE ROM, OVMF + iPXE EFI ROM,
//! OVMF's own PXE chainloading `snponly.efi`). Each must print the init's
//! joined line; the head's agent must list all four nodes; `omctl run` from
//! the head places the awk loop from the openMosix documentation on the nodes;
//! a machine that is powered off is declared dead by the head.

use std::fs::{self, File};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use pxe_server::lab::{self, Firmware, NodeSpec, QemuNode, VirtualLan};
use serde_json::Value;

use crate::util;

const CLUSTER: &str = "e2e";
/// How long a machine may take to netboot and join under TCG on a busy
/// 2-core machine. Generous on purpose: this bounds a hang, it is not a speed
/// check (speed lives in `bench/`).
const JOIN_TIMEOUT: Duration = Duration::from_secs(420);

/// Kills a background process (and waits for it) when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_logged(mut command: Command, log: &Path) -> Result<Background> {
    let out = File::create(log)?;
    let err = out.try_clone()?;
    let child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    Ok(Background(child))
}

fn omctl(bin: &Path, socket: &Path, args: &[&str]) -> Result<Output> {
    Command::new(bin.join("omctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .current_dir("/")
        .output()
        .context("running omctl")
}

fn status_json(bin: &Path, socket: &Path) -> Result<Value> {
    let output = omctl(bin, socket, &["status", "--json"])?;
    ensure!(
        output.status.success(),
        "omctl status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn nodes_in_state(status: &Value, state: &str) -> Vec<String> {
    status["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter(|n| n["state"] == state)
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the head's view until `check` holds, or fails naming what it saw.
fn wait_for_view(
    bin: &Path,
    socket: &Path,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Result<(Value, Duration)> {
    let start = Instant::now();
    loop {
        let seen = status_json(bin, socket);
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

struct Cluster {
    bin: PathBuf,
    work: PathBuf,
    head_socket: PathBuf,
    nodes: Vec<QemuNode>,
    _agent: Background,
    _server: Background,
    lan: VirtualLan,
}

fn start_cluster(name: &str, firmwares: &[Firmware]) -> Result<Cluster> {
    lab::check_prerequisites(firmwares)?;
    let bin = util::static_binaries()?;
    let image = util::default_image(&bin)?;
    let work = util::workspace().join("target/e2e").join(name);
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;

    let mut lan = VirtualLan::create(name, Ipv4Addr::new(10, 77, 0, 1), 24)?;
    let key = work.join("cluster.key");
    let keygen = Command::new(bin.join("omnode"))
        .args(["keygen", "--out"])
        .arg(&key)
        .status()?;
    ensure!(keygen.success(), "omnode keygen failed");

    let mut server = lan.command(bin.join("omboot"));
    server
        .args(["serve", "--interface", "br0", "--mode", "dhcp"])
        .args(["--pool", "10.77.0.100-10.77.0.200", "--http-port", "80"])
        .args(["--cluster", CLUSTER])
        .arg("--images")
        .arg(&image)
        .arg("--state")
        .arg(work.join("omboot-state"))
        .arg("--key-file")
        .arg(&key);
    let server = spawn_logged(server, &work.join("omboot.log"))?;

    let head_socket = work.join("head.sock");
    let mut agent = lan.command(bin.join("omnode"));
    agent
        .args([
            "agent",
            "--name",
            "head",
            "--cluster",
            CLUSTER,
            "--interface",
            "br0",
        ])
        .arg("--key-file")
        .arg(&key)
        .arg("--socket")
        .arg(&head_socket)
        .arg("--state-dir")
        .arg(work.join("head-state"));
    let agent = spawn_logged(agent, &work.join("head-agent.log"))?;

    let mut nodes = Vec::new();
    for (index, firmware) in firmwares.iter().enumerate() {
        let spec = NodeSpec {
            name: format!("vm{}", index + 1),
            firmware: *firmware,
            mac: lab::lab_mac(index as u8 + 1),
            memory_mib: 768,
            work_dir: work.clone(),
            extra_args: Vec::new(),
        };
        nodes.push(QemuNode::boot(&mut lan, spec)?);
    }
    Ok(Cluster {
        bin,
        work,
        head_socket,
        nodes,
        _agent: agent,
        _server: server,
        lan,
    })
}

#[test]
fn qemu_three_firmwares_netboot_join_and_share_the_awk_batch() -> Result<()> {
    if !util::qemu_tests_enabled("qemu_three_firmwares_netboot_join_and_share_the_awk_batch") {
        return Ok(());
    }
    let firmwares = [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe];
    let mut cluster = start_cluster("om-e2e", &firmwares)?;

    let mut joined = Vec::new();
    for node in &mut cluster.nodes {
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

    let (view, _) = wait_for_view(
        &cluster.bin,
        &cluster.head_socket,
        "the head and three nodes alive",
        Duration::from_secs(60),
        |v| nodes_in_state(v, "alive").len() >= 4,
    )?;
    let alive = nodes_in_state(&view, "alive");
    ensure!(
        alive.iter().any(|n| n == "head"),
        "head missing from {alive:?}"
    );

    // The awk loop of the openMosix documentation, shrunk tenfold per loop so
    // that it finishes in reasonable time under TCG emulation.
    let batch = 6;
    let mut jobs = Vec::new();
    for _ in 0..batch {
        let child = Command::new(cluster.bin.join("omctl"))
            .arg("--socket")
            .arg(&cluster.head_socket)
            .args(["run", "--", "sh", "-c"])
            .arg("awk 'BEGIN {for(i=0;i<1000;i++)for(j=0;j<1000;j++);}'; echo \"ran on $OM_NODE from $OM_HOME\"")
            .current_dir("/")
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
    let victim_before: Vec<String> = nodes_in_state(&view, "alive");
    cluster.nodes.last_mut().unwrap().power_off();
    let (after, took) = wait_for_view(
        &cluster.bin,
        &cluster.head_socket,
        "a powered-off node declared down",
        Duration::from_secs(60),
        |v| nodes_in_state(v, "alive").len() == victim_before.len() - 1,
    )?;
    eprintln!(
        "powered-off node noticed after {:.1} s; alive now: {:?}",
        took.as_secs_f64(),
        nodes_in_state(&after, "alive")
    );
    eprintln!(
        "logs in {} (namespace {})",
        cluster.work.display(),
        cluster.lan.name()
    );
    Ok(())
}
