//! The appliance end to end: the default image is built, `omboot serve
//! --mode dhcp` serves it on a virtual LAN, and three qemu machines netboot
//! through the three firmware paths (SeaBIOS + iPXE ROM, OVMF + iPXE EFI ROM,
//! OVMF's own PXE chainloading `snponly.efi`). Each must print the init's
//! joined line; the head's agent must list all four nodes; `omctl run` from
//! the head places the awk loop from the openMosix documentation on the nodes;
//! every machine mounts the shared tree at `/cluster` during boot and jobs
//! started there read and write the head's files (owners, bytes, a 2,000
//! file tree, a server restart mid-loop, fsync before a power cut); jobs
//! move between the machines (`migrate`) and balance themselves
//! (`balance`); a machine that is powered off is declared dead by the
//! head, and the jobs it hosted end with 255 at home.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::{ClusterLab, Firmware, LabConfig, LabMode};
use serde_json::Value;

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

fn start_cluster(
    name: &str,
    firmwares: &[Firmware],
    mode: LabMode,
    share: bool,
    capture: bool,
) -> Result<ClusterLab> {
    let bin_dir = lab::build::static_binaries()?;
    let image_dir = lab::build::default_image(&bin_dir)?;
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
        share,
        serial_input: false,
        capture,
    })?)
}

#[test]
fn qemu_three_firmwares_netboot_join_and_share_the_awk_batch() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    let firmwares = [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe];
    let mut lab = start_cluster("om-e2e", &firmwares, LabMode::Dhcp, true, true)?;

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
    // list shows every machine at its last stage, and the head's own agent.
    let start = Instant::now();
    loop {
        let stages = lab.boot_stages()?;
        if lab::machines_at_stage(&stages, "agent") == lab.nodes.len() + 1 {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "not every machine checked in with omboot: {stages}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    check_no_key_on_the_wire(&mut lab)?;

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
    // Each check sees only the moves it asks for: automatic balancing is
    // off (`quiet`) until the balancing checks turn it on.
    for node in &lab.nodes {
        crate::balance::knob(&lab, &node.node_name(), "quiet")?;
    }

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

    check_shared_tree(&mut lab)?;
    crate::migrate::check_migration(&mut lab)?;
    let (first, second) = (lab.nodes[0].node_name(), lab.nodes[1].node_name());
    crate::web::check_drag_migration(&lab, &first, &second)?;
    crate::balance::check_balancing(&mut lab)?;

    // Pull the plug on the last machine right after it fsync'd a file: the
    // head must have every byte, and must declare the machine dead.
    let victim = lab.nodes.last().unwrap().node_name();
    let said = run_in_tree(
        &lab,
        &victim,
        "/cluster/u4242",
        "dd if=/dev/urandom of=durable.bin bs=64k count=64 conv=fsync 2>/dev/null && sha256sum durable.bin",
    )?;
    let victim_before: Vec<String> = ClusterLab::nodes_in_state(&view, "alive");
    // Two guests run on the victim (kept there with `stay`) when it dies.
    crate::balance::knob(&lab, &victim, "stay")?;
    let guests = crate::balance::start_guests(&lab, &victim)?;
    // A job on the victim is being moved to the second machine, which has
    // restored it and waits for word of the move, when the victim dies.
    let second = lab.nodes[1].node_name();
    let orphan = crate::migrate::start_orphaned_move(&lab, &victim, &second)?;
    // A job on the first machine is being moved to the victim when it dies:
    // the plug is pulled right after the move started.
    let first = lab.nodes[0].node_name();
    let (doomed, mover) = crate::migrate::start_doomed_move(&lab, &first, &victim)?;
    lab.nodes.last_mut().unwrap().power_off();
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    let on_head = sha256(&share.join("u4242/durable.bin"))?;
    ensure!(
        said.split_whitespace().next() == Some(on_head.as_str()),
        "{victim} fsync'd durable.bin ({said}) but the head has {on_head} after the power cut"
    );
    let (after, took) = wait_for_view(
        &mut lab,
        "a powered-off node declared down",
        Duration::from_secs(60),
        |v| ClusterLab::nodes_in_state(v, "alive").len() == victim_before.len() - 1,
    )?;
    crate::migrate::check_doomed_move(&lab, &first, doomed, mover)?;
    crate::migrate::check_orphaned_move(&lab, &second, orphan)?;
    crate::balance::check_lost_guests(guests, &victim)?;
    eprintln!(
        "powered-off node noticed after {:.1} s; alive now: {:?}",
        took.as_secs_f64(),
        ClusterLab::nodes_in_state(&after, "alive")
    );
    crate::web::check_power_off(&mut lab, 0)?;
    eprintln!("logs in {}", lab.config().work_dir.display());
    Ok(())
}

/// The user the tree's jobs run as: not root, not a user of the host.
pub(crate) const USER: u32 = 4242;

/// Runs `script` with `sh -c` on `node` through `omctl run --node`, as
/// [`USER`], from `cwd` in the shared tree; its stdout, or the failure.
/// Everything on the LAN from before the first machine powered on until
/// every machine joined: the boot scripts, kernels, DHCP, admission and the
/// first sealed traffic. The cluster key is in none of it, raw or as hex.
fn check_no_key_on_the_wire(lab: &mut ClusterLab) -> Result<()> {
    let key = std::fs::read_to_string(lab.key_file())?;
    let key: contracts::key::ClusterKey = key.parse()?;
    let pcap_path = lab.capture().context("the lab ran without a capture")?;
    let pcap = std::fs::read(&pcap_path)?;
    let contains = |needle: &[u8]| pcap.windows(needle.len()).any(|w| w == needle);
    // The capture did see the boot and the admission, in the clear.
    for seen in [
        &b"om.cluster=e2e"[..],
        &b"POST /api/v1/admit"[..],
        &b"\"status\":\"admitted\""[..],
    ] {
        ensure!(
            contains(seen),
            "the capture {} ({} bytes) lacks {:?}: it did not record the boot",
            pcap_path.display(),
            pcap.len(),
            String::from_utf8_lossy(seen)
        );
    }
    let hex = key.to_hex();
    for (form, needle) in [
        ("raw", key.as_bytes().to_vec()),
        ("hex", hex.clone().into_bytes()),
        ("HEX", hex.to_uppercase().into_bytes()),
    ] {
        ensure!(
            !contains(&needle),
            "the cluster key ({form}) crossed the LAN readable: see {}",
            pcap_path.display()
        );
    }
    eprintln!(
        "capture of the boot and join: {} bytes, no trace of the cluster key",
        pcap.len()
    );
    Ok(())
}

fn run_in_tree(lab: &ClusterLab, node: &str, cwd: &str, script: &str) -> Result<String> {
    let share = lab.share_dir().context("the lab serves no shared tree")?;
    let output = lab::cluster::in_tree(share, cwd, &omctl_as_user(lab))
        .args(["run", "--node", node, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    ensure!(
        output.status.success(),
        "on {node} in {cwd}: `{script}` failed ({}): {stdout}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// The head's `omctl`, run as [`USER`] (no supplementary groups).
pub(crate) fn omctl_as_user(lab: &ClusterLab) -> Command {
    let mut omctl = Command::new("setpriv");
    omctl
        .args(["--reuid", &USER.to_string(), "--regid", &USER.to_string()])
        .arg("--clear-groups")
        .arg(lab.config().bin_dir.join("omctl"))
        .arg("--socket")
        .arg(lab.head_socket());
    omctl
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    ensure!(out.status.success(), "sha256sum {}", path.display());
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_string())
}

/// The shared tree, on the machines of a running lab: mounted during boot;
/// a job on each machine writes a file the head reads back with the job's
/// owner; one machine's file is read whole on another; a 2,000-file tree
/// unpacked on one machine checks out on another; a loop appending to a
/// file keeps going, with nothing lost, while the head's server is killed
/// and restarted.
fn check_shared_tree(lab: &mut ClusterLab) -> Result<()> {
    use std::os::unix::fs::{chown, MetadataExt};
    for node in &mut lab.nodes {
        let line = node.wait_for("mounted /cluster from", Duration::from_secs(10))?;
        eprintln!("{}: {line}", node.name());
    }
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    let home = share.join("u4242");
    std::fs::create_dir_all(&home)?;
    chown(&home, Some(USER), Some(USER))?;
    let names: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();

    for name in &names {
        let said = run_in_tree(
            lab,
            name,
            "/cluster/u4242",
            "echo \"written on $OM_NODE as $(id -u):$(id -g)\" > from-$OM_NODE.txt && cat from-$OM_NODE.txt",
        )?;
        let path = home.join(format!("from-{name}.txt"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("{name}'s file is not on the head"))?;
        let meta = std::fs::metadata(&path)?;
        ensure!(
            text == said && text == format!("written on {name} as {USER}:{USER}\n"),
            "{name} wrote {said:?}, the head reads {text:?}"
        );
        ensure!(
            (meta.uid(), meta.gid()) == (USER, USER),
            "{name}'s file is owned by {}:{} on the head",
            meta.uid(),
            meta.gid()
        );
    }

    // One machine writes, another reads it whole.
    let (a, b) = (&names[0], &names[1]);
    let wrote = run_in_tree(
        lab,
        a,
        "/cluster/u4242",
        "dd if=/dev/urandom of=cross.bin bs=64k count=80 2>/dev/null && sha256sum cross.bin",
    )?;
    let read = run_in_tree(lab, b, "/cluster/u4242", "sha256sum cross.bin")?;
    ensure!(
        wrote == read && wrote.starts_with(&sha256(&home.join("cross.bin"))?),
        "{a} wrote {wrote:?}; {b} reads {read:?}"
    );

    // A source tree of 2,000 files, unpacked on one machine, checked on another.
    let src = home.join("src");
    for i in 0..2000 {
        let dir = src.join(format!("d{:02}", i % 40));
        std::fs::create_dir_all(&dir)?;
        let body: String = (0..(i % 97 + 1)).map(|k| format!("{i} {k}\n")).collect();
        std::fs::write(dir.join(format!("f{i:04}.c")), body)?;
    }
    let tar = Command::new("tar")
        .current_dir(&home)
        .args(["cf", "src.tar", "src"])
        .status()?;
    ensure!(tar.success(), "tar on the head failed");
    let sums = Command::new("sh")
        .current_dir(&home)
        .args([
            "-c",
            "find src -type f | sort | xargs sha256sum > src.sums && rm -r src",
        ])
        .status()?;
    ensure!(sums.success(), "sha256sum on the head failed");
    let started = Instant::now();
    run_in_tree(
        lab,
        a,
        "/cluster/u4242",
        "mkdir -p unpacked && tar xf src.tar -C unpacked",
    )?;
    let untar = started.elapsed();
    let checked = run_in_tree(
        lab,
        b,
        "/cluster/u4242/unpacked",
        "sha256sum -c ../src.sums | grep -c ': OK$'",
    )?;
    eprintln!(
        "2,000 files unpacked on {a} in {:.1} s, checked on {b}: {} OK",
        untar.as_secs_f64(),
        checked.trim()
    );
    ensure!(
        checked.trim() == "2000",
        "{b} checked {checked:?} of 2000 files OK"
    );

    // The server restarts while a machine appends to a file in a loop: the
    // loop finishes, every line once and in order, no error.
    let pid_file = lab.config().work_dir.join("omboot-state/share/ganesha.pid");
    let looper = lab::cluster::in_tree(&share, "/cluster/u4242", &omctl_as_user(lab))
        .args(["run", "--node", a, "--", "sh", "-c"])
        .arg("i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo \"line $i\" >> loop.txt || exit 1; sleep 0.2; done; wc -l < loop.txt")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let lines = home.join("loop.txt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&lines)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 10
    {
        ensure!(Instant::now() < deadline, "the loop never started writing");
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = std::fs::read_to_string(&pid_file)?.trim().to_string();
    let killed = Command::new("kill").args(["-9", &pid]).status()?;
    ensure!(killed.success(), "kill -9 {pid} (nfs-ganesha) failed");
    eprintln!("nfs-ganesha (pid {pid}) killed while {a} appends to loop.txt");
    let output = looper.wait_with_output()?;
    ensure!(
        output.status.success(),
        "the loop on {a} failed across the server restart ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&lines)?;
    let expected: String = (1..=150).map(|i| format!("line {i}\n")).collect();
    ensure!(text == expected, "loop.txt after the restart:\n{text}");
    let restarted = std::fs::read_to_string(&pid_file)?.trim().to_string();
    ensure!(restarted != pid, "nfs-ganesha was not restarted");

    // omctl df lists every machine with the tree mounted.
    let df = lab.omctl().arg("df").output()?;
    let df = String::from_utf8_lossy(&df.stdout).to_string();
    eprintln!("{df}");
    for name in &names {
        ensure!(
            df.lines()
                .any(|l| l.starts_with(name.as_str()) && l.contains(" yes ")),
            "omctl df does not show {name} with the tree mounted:\n{df}"
        );
    }
    Ok(())
}

/// An existing LAN: its router's dnsmasq hands out addresses (and no boot
/// options), `omboot serve --mode proxy` only adds the boot file. All three
/// firmware paths must still netboot, with addresses from the router's
/// pool. Beside a LAN it does not own, `omboot` admits no one by itself
/// (`--admit manual` is the proxy mode's default): each machine waits as
/// pending until `omctl admit` on the head, then joins; after a reboot it
/// rejoins without a decision; a second machine presenting its MAC with
/// another key is refused and reported. A machine booted from the ISO,
/// whose command line names no head, finds it by its announcement.
#[test]
fn qemu_proxy_mode_beside_the_lans_own_dhcp_server() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    let firmwares = [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe];
    let mut lab = start_cluster("om-e2e-proxy", &firmwares, LabMode::Proxy, false, false)?;
    for node in &mut lab.nodes {
        let line = node
            .wait_for("admission pending", JOIN_TIMEOUT)
            .with_context(|| format!("{} ({})", node.name(), node.spec().firmware.label()))?;
        eprintln!("{} ({}): {line}", node.name(), node.spec().firmware.label());
        ensure!(
            !node.console().contains("joined cluster"),
            "{} joined before anyone admitted it",
            node.name()
        );
    }
    let pending = omctl_ok(&lab, &["nodes", "--pending"])?;
    eprintln!("omctl nodes --pending:\n{pending}");
    for node in &lab.nodes {
        let mac = node.spec().mac_text();
        ensure!(
            pending
                .lines()
                .any(|l| l.starts_with(&mac) && l.contains("pending")),
            "{mac} is not listed pending:\n{pending}"
        );
    }
    for node in &lab.nodes {
        let said = omctl_ok(&lab, &["admit", &node.spec().mac_text()])?;
        eprintln!("{said}");
    }
    for node in &mut lab.nodes {
        let line = node
            .wait_for("joined cluster", JOIN_TIMEOUT)
            .with_context(|| format!("{} after omctl admit", node.name()))?;
        eprintln!("{}: {line}", node.name());
    }
    check_proxy_addresses(&lab, &firmwares)?;

    // A reboot: a new machine key, admitted because the machine booted
    // from this head again; nobody is asked.
    lab.reboot(0)?;
    let node = &mut lab.nodes[0];
    let line = node
        .wait_for("joined cluster", JOIN_TIMEOUT)
        .with_context(|| format!("{} rejoining after a reboot", node.name()))?;
    eprintln!("{} after a reboot: {line}", node.name());
    ensure!(
        !node.console().contains("admission pending"),
        "the rebooted machine had to wait for a decision:\n{}",
        node.console()
    );

    // A second machine with that MAC and a key of its own, which did not
    // boot from the head: refused, and the admin sees it.
    let mac = lab.nodes[0].spec().mac_text();
    let impostor = contracts::admit::MachineKey::generate();
    let body = format!(
        r#"{{"mac":"{mac}","public":"{}"}}"#,
        impostor.public().to_hex()
    );
    let output = lab
        .lan()
        .command("curl")
        .args([
            "-s",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code}",
            "--data-binary",
            &body,
        ])
        .args(["-H", "content-type: application/json"])
        .arg(format!("http://{}/api/v1/admit", lab::LAB_HEAD))
        .output()?;
    let answer = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("a second machine as {mac}: {answer}");
    ensure!(
        answer.ends_with("403") && answer.contains("a second machine with the same MAC"),
        "the impostor was not refused: {answer}"
    );
    let listed = omctl_ok(&lab, &["nodes"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("refused {mac}"))
                && l.contains(&impostor.public().fingerprint())),
        "the refusal is not reported:\n{listed}"
    );
    let mine = lab.nodes[0].node_name();
    wait_for_view(
        &mut lab,
        "the rebooted machine alive",
        Duration::from_secs(60),
        |v| ClusterLab::nodes_in_state(v, "alive").contains(&mine),
    )?;
    check_medium_boot_finds_the_head(&mut lab)
}

/// A second machine with the third machine's MAC, booted from the ISO's
/// default entry ("compute node": nothing on its command line names a
/// head), in place of the third: it gets its address from the LAN's
/// router, hears the head's announcement and asks it; having neither the
/// admitted key nor a boot through the head, it is refused, and `omctl
/// nodes` reports it. The admin, who knows it is the same machine booted
/// from a USB stick, admits its key with `omctl admit`, and it joins with
/// the head's cluster name.
fn check_medium_boot_finds_the_head(lab: &mut ClusterLab) -> Result<()> {
    let iso = lab.config().image_dir.join("node.iso");
    ensure!(iso.is_file(), "ombuild wrote no {}", iso.display());
    let mac = lab.nodes[2].spec().mac;
    lab.replace_with_medium(2, "usb3", mac, &iso, lab::Medium::Usb)?;
    let node = &mut lab.nodes[2];
    let line = node
        .wait_for("found the head of cluster", JOIN_TIMEOUT)
        .with_context(|| format!("{} booted from the ISO", node.name()))?;
    eprintln!("{}: {line}", node.name());
    let asking = node.wait_for("for admission as", JOIN_TIMEOUT)?;
    let fingerprint = asking
        .rsplit("machine key ")
        .next()
        .map(|f| f.trim_end_matches(')').trim().to_string())
        .context("no machine key on the admission line")?;
    let line = node
        .wait_for("admission refused", JOIN_TIMEOUT)
        .with_context(|| format!("{} with an admitted MAC", node.name()))?;
    eprintln!("{}: {line}", node.name());
    ensure!(
        line.contains("a second machine with the same MAC"),
        "refused for another reason: {line}"
    );
    let listed = omctl_ok(lab, &["nodes"])?;
    ensure!(
        listed
            .lines()
            .any(|l| l.starts_with(&format!("refused {mac}")) && l.contains(&fingerprint)),
        "the second machine's refusal is not reported:\n{listed}"
    );
    let said = omctl_ok(lab, &["admit", &mac.to_string()])?;
    eprintln!("{said}");
    let node = &mut lab.nodes[2];
    let line = node
        .wait_for("joined cluster", JOIN_TIMEOUT)
        .with_context(|| format!("{} after omctl admit", node.name()))?;
    eprintln!("{}: {line}", node.name());
    let name = node.node_name();
    ensure!(
        node.console().contains(&format!("--cluster {CLUSTER} ")),
        "the ISO-booted machine did not take the head's cluster name:\n{}",
        node.console()
    );
    wait_for_view(
        lab,
        "the ISO-booted machine alive",
        Duration::from_secs(60),
        |v| ClusterLab::nodes_in_state(v, "alive").contains(&name),
    )?;
    Ok(())
}

/// `omctl ARGS` on the head, which must succeed; its output.
fn omctl_ok(lab: &ClusterLab, args: &[&str]) -> Result<String> {
    let output = lab.omctl().args(args).stdin(Stdio::null()).output()?;
    ensure!(
        output.status.success(),
        "omctl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Every address `omboot` saw is from the LAN router's pool.
fn check_proxy_addresses(lab: &ClusterLab, firmwares: &[Firmware]) -> Result<()> {
    let stages = lab.boot_stages()?;
    let addresses: Vec<String> = stages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["address"].as_str().map(String::from))
        .filter(|a| *a != lab::LAB_HEAD.to_string())
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
