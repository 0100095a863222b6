//! A workstation joins with a token, in network namespaces (no qemu): the
//! head's namespace runs `omboot serve` (the key it makes in its state
//! directory) and its agent; a second namespace on the same LAN is the
//! workstation. `omctl token create` on the head prints the join command;
//! `omctl join` on the workstation writes the key (0600) and the agent's
//! settings; the agent started with those settings joins the head. The same
//! token again, an expired one and a forged one are refused with one clear
//! line each; the workstation runs a user's job but refuses root's, since
//! it was not given `--allow-root-jobs`. Then the head rotates the key
//! (`omctl key rotate`): `omboot`, the head's agent and the workstation
//! take it, and a machine joining afterwards gets it.

use std::net::Ipv4Addr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::netns::netns_command;
use lab::process::Background;
use lab::VirtualLan;

const HEAD: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
const WORKSTATION: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 20);

fn output(mut command: Command) -> Result<Output> {
    Ok(command.stdin(Stdio::null()).output()?)
}

/// The token at the end of `omctl token create`'s join line.
fn token_of(line: &str) -> Result<String> {
    Ok(line
        .split_whitespace()
        .last()
        .context("no token")?
        .to_string())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[test]
fn a_workstation_joins_with_a_token_and_a_spent_expired_or_forged_one_is_refused() -> Result<()> {
    if !lab::gate::netns_tests() {
        return Ok(());
    }
    let bin = lab::build::static_binaries()?;
    let image = lab::build::default_image(&bin)?;
    let work = lab::build::workspace().join("target/e2e/om-join");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let lan = VirtualLan::create("om-join", HEAD, 24)?;
    let _ws = lan.plug("om-join-ws", ("ws0", "eth0"), WORKSTATION)?;

    let state = work.join("omboot-state");
    let mut omboot = lan.command(bin.join("omboot"));
    omboot
        .args([
            "serve",
            "--mode",
            "proxy",
            "--interface",
            "br0",
            "--http-port",
            "80",
        ])
        .args(["--cluster", "joinlab", "--images"])
        .arg(&image)
        .arg("--state")
        .arg(&state);
    let mut omboot = Background::spawn(omboot, &work.join("omboot.log"))?;
    let key_file = state.join("cluster.key");
    lab::cluster::wait_for_key(&key_file, &mut omboot)?;
    // omboot says where the key is just after writing it: give the line a
    // moment to reach the log.
    let said = format!("omboot: cluster key in {}", key_file.display());
    let start = Instant::now();
    let log = loop {
        let log = std::fs::read_to_string(work.join("omboot.log"))?;
        if log.contains('\n') || start.elapsed() > Duration::from_secs(10) {
            break log;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    ensure!(
        log.starts_with(&said),
        "omboot's first line does not say where the key is: {log}"
    );

    let head_socket = work.join("head.sock");
    let mut agent = lan.command(bin.join("omnode"));
    agent
        .args([
            "agent",
            "--allow-root-jobs",
            "--name",
            "head",
            "--interface",
            "br0",
        ])
        .args(["--cluster", "joinlab", "--key-file"])
        .arg(&key_file)
        .arg("--socket")
        .arg(&head_socket)
        .arg("--state-dir")
        .arg(work.join("head-state"))
        .args(["--checkin", &format!("http://{HEAD}:80/api/v1/checkin")]);
    let _agent = Background::spawn(agent, &work.join("head-agent.log"))?;
    let omctl_head = |args: &[&str]| {
        let mut c = lan.command(bin.join("omctl"));
        c.arg("--socket")
            .arg(&head_socket)
            .args(args)
            .current_dir("/");
        output(c)
    };
    let token_create = |args: &[&str]| -> Result<String> {
        let start = Instant::now();
        loop {
            let mut full = vec!["token", "create"];
            full.extend_from_slice(args);
            let o = omctl_head(&full)?;
            if o.status.success() {
                return Ok(text(&o.stdout));
            }
            // The head's agent may still be starting.
            ensure!(
                start.elapsed() < Duration::from_secs(30),
                "omctl token create: {}",
                text(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let line = token_create(&["--ttl", "1h"])?;
    eprintln!("head: {line}");
    let parts: Vec<&str> = line.split_whitespace().collect();
    ensure!(
        parts.len() == 4 && parts[..3] == ["omctl", "join", &format!("http://{HEAD}:80")],
        "unexpected join line: {line}"
    );
    let token = parts[3].to_string();

    let ws_dir = work.join("ws");
    let join = |token: &str, name: &str| {
        let mut c = netns_command("om-join-ws", bin.join("omctl"));
        c.args(["join", &format!("http://{HEAD}:80"), token, "--no-service"])
            .args(["--name", name, "--key-file"])
            .arg(ws_dir.join(format!("{name}.key")))
            .arg("--env-file")
            .arg(ws_dir.join(format!("{name}.env")));
        output(c)
    };
    let o = join(&token, "ws1")?;
    ensure!(o.status.success(), "omctl join: {}", text(&o.stderr));
    eprintln!("workstation: {}", text(&o.stdout));
    let head_key = std::fs::read_to_string(&key_file)?;
    let ws_key_path = ws_dir.join("ws1.key");
    ensure!(
        std::fs::read_to_string(&ws_key_path)? == head_key,
        "the workstation's key is not the cluster's"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ws_key_path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "the key file has mode {mode:o}");

    // Refusals, one line each, and the token is not spent by a forgery.
    let refused = |o: &Output, what: &str, wanted: &str| -> Result<()> {
        let err = text(&o.stderr);
        ensure!(!o.status.success(), "{what} was accepted");
        ensure!(
            err.lines().count() == 1 && err.contains(wanted),
            "{what}: {err}"
        );
        eprintln!("{what}: {err}");
        Ok(())
    };
    refused(&join(&token, "ws2")?, "the same token again", "is used up")?;
    let other = token_of(&token_create(&["--ttl", "1h"])?)?;
    let forged = format!("{}{}", &other[..other.len() - 4], "0000");
    refused(
        &join(&forged, "ws3")?,
        "a forged token",
        "the proof does not match",
    )?;
    let o = join(&other, "ws4")?;
    ensure!(
        o.status.success(),
        "the real token after a forgery: {}",
        text(&o.stderr)
    );
    let short = token_of(&token_create(&["--ttl", "1s"])?)?;
    std::thread::sleep(Duration::from_secs(2));
    refused(&join(&short, "ws5")?, "an expired token", "expired")?;
    refused(
        &join("om1.zz", "ws6")?,
        "a malformed token",
        "is not a join token",
    )?;

    // The agent with the settings join wrote joins the head.
    let settings = std::fs::read_to_string(ws_dir.join("ws1.env"))?;
    let args: Vec<String> = settings
        .lines()
        .find_map(|l| l.strip_prefix("OM_AGENT_ARGS="))
        .context("no OM_AGENT_ARGS in the settings")?
        .split_whitespace()
        .map(String::from)
        .collect();
    let ws_socket = ws_dir.join("ws1.sock");
    let mut ws_agent = netns_command("om-join-ws", bin.join("omnode"));
    ws_agent
        .arg("agent")
        .args(&args)
        .arg("--socket")
        .arg(&ws_socket)
        .arg("--state-dir")
        .arg(ws_dir.join("state"));
    let _ws_agent = Background::spawn(ws_agent, &work.join("ws-agent.log"))?;
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(work.join("ws-agent.log")).unwrap_or_default();
        if log.contains("joined cluster joinlab (2 nodes)") {
            break;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the workstation's agent did not join: {log}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The head sees it; root's job is refused there, a user's runs.
    let start = Instant::now();
    // omctl reaches the agent over its unix socket: no namespace needed.
    let run = |uid: u32| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string()])
            .arg("--clear-groups")
            .arg(bin.join("omctl"))
            .arg("--socket")
            .arg(&head_socket)
            .args(["run", "--node", "ws1", "--", "sh", "-c", "echo $OM_NODE"])
            .current_dir("/");
        output(c)
    };
    let user = loop {
        let o = run(65534)?;
        if o.status.success() || start.elapsed() > Duration::from_secs(30) {
            break o;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    ensure!(
        text(&user.stdout) == "ws1",
        "a user's job on the workstation: {} {}",
        text(&user.stdout),
        text(&user.stderr)
    );
    let root = run(0)?;
    ensure!(
        root.status.code() == Some(126),
        "root's job ran: {}",
        text(&root.stdout)
    );
    ensure!(
        text(&root.stderr).contains("node ws1 does not run root's jobs"),
        "{}",
        text(&root.stderr)
    );
    let listed = omctl_head(&["nodes"])?;
    ensure!(
        text(&listed.stdout).contains("token "),
        "the head does not list the joined machine: {}",
        text(&listed.stdout)
    );

    // The head rotates the key: omboot, the head's agent and the
    // workstation all take it, and a token made afterwards gives it out.
    let o = omctl_head(&["key", "rotate", "--window", "5s"])?;
    let said = text(&o.stdout);
    eprintln!("head: {said}");
    ensure!(o.status.success(), "omctl key rotate: {}", text(&o.stderr));
    ensure!(
        said.contains(": 2 of 2 nodes took it;")
            && said.contains(&format!("boot server http://{HEAD}:80 took the new key")),
        "the rotation did not reach everyone: {said}"
    );
    let new_key = std::fs::read_to_string(&key_file)?;
    ensure!(
        new_key != head_key,
        "omboot's key file still holds the old key"
    );
    ensure!(
        std::fs::read_to_string(&ws_key_path)? == new_key,
        "the workstation's key file is not the new key"
    );
    // After the switch (15 s) and the window (5 s), the workstation is still
    // a member and runs jobs under the new key.
    std::thread::sleep(Duration::from_secs(21));
    let o = run(65534)?;
    ensure!(
        text(&o.stdout) == "ws1",
        "after the rotation the workstation's job: {} {}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let fresh = token_of(&token_create(&["--ttl", "1h"])?)?;
    let o = join(&fresh, "ws7")?;
    ensure!(
        o.status.success(),
        "a join after the rotation: {}",
        text(&o.stderr)
    );
    ensure!(
        std::fs::read_to_string(ws_dir.join("ws7.key"))? == new_key,
        "a machine joining after the rotation got another key"
    );
    Ok(())
}
