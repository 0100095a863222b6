//! Multi-node tests of `omnode agent` and `omctl`: one agent per network
//! namespace on a bridge. Gated by `OM_NETNS_TESTS=1` (always on under CI).

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use node_agent::wire::ClusterStatus;

use lab::gate::Need;
use lab::process::terminate;

use crate::util::{self, bin, wait_for, Lan, Reaped};

const LIMIT: Duration = Duration::from_secs(60);

/// Agents of one cluster on one [`Lan`].
pub(crate) struct Cluster {
    pub(crate) lan: Lan,
    dir: tempfile::TempDir,
    id: String,
    key: PathBuf,
    agents: Vec<Option<Reaped>>,
    joined: Vec<Option<mpsc::Receiver<String>>>,
}

impl Cluster {
    pub(crate) fn new(tag: &str, net: u8, n: usize) -> Self {
        let lan = Lan::new(tag, net, n);
        let dir = util::shared_tempdir();
        let key = dir.path().join("cluster.key");
        let out = Command::new(bin("omnode"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            lan,
            dir,
            id: format!("test-{tag}"),
            key,
            agents: (0..n).map(|_| None).collect(),
            joined: (0..n).map(|_| None).collect(),
        }
    }

    pub(crate) fn name(i: usize) -> String {
        format!("n{i}")
    }

    pub(crate) fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}.sock"))
    }

    pub(crate) fn start_with(&mut self, i: usize, key: &std::path::Path, extra: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).unwrap();
        let mut child = util::netns_command(&self.lan.nodes[i], bin("omnode"))
            .arg("agent")
            .arg("--key-file")
            .arg(key)
            .arg("--socket")
            .arg(self.socket(i))
            .args([
                "--name",
                &Self::name(i),
                "--cluster",
                &self.id,
                "--interface",
                "eth0",
                "--speed",
                "1",
            ])
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state-n{i}")))
            .args(extra)
            .env("OM_LOG", "info,node_agent::agent=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        self.agents[i] = Some(Reaped(child));
        self.joined[i] = Some(rx);
    }

    /// Starts agent `i` as a cluster node: root's jobs run there.
    pub(crate) fn start(&mut self, i: usize, extra: &[&str]) {
        let key = self.key.clone();
        let mut args = vec!["--allow-root-jobs"];
        args.extend_from_slice(extra);
        self.start_with(i, &key, &args);
    }

    /// Starts agent `i` as a workstation: without `--allow-root-jobs`.
    pub(crate) fn start_workstation(&mut self, i: usize, extra: &[&str]) {
        let key = self.key.clone();
        self.start_with(i, &key, extra);
    }

    /// The process id of agent `i`.
    pub(crate) fn agent_pid(&self, i: usize) -> i32 {
        self.agents[i].as_ref().expect("agent running").0.id() as i32
    }

    /// The directory of the cluster's files (key, sockets, logs).
    pub(crate) fn dir_path(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub(crate) fn kill(&mut self, i: usize) {
        self.agents[i] = None;
    }

    pub(crate) fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("n{i}.log"))).unwrap_or_default()
    }

    pub(crate) fn join_line(&self, i: usize) -> String {
        self.joined[i]
            .as_ref()
            .unwrap()
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("n{i} printed no join line; log:\n{}", self.log(i)))
    }

    pub(crate) fn omctl(&self, i: usize) -> Command {
        let mut c = Command::new(bin("omctl"));
        c.arg("--socket").arg(self.socket(i));
        c
    }

    pub(crate) fn status(&self, i: usize) -> Result<ClusterStatus, String> {
        let out = self
            .omctl(i)
            .args(["status", "--json"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// Waits until agent `i` sees exactly the nodes `alive` as alive (and no other).
    pub(crate) fn wait_view(&self, i: usize, alive: &[usize], what: &str) -> ClusterStatus {
        let want: Vec<String> = alive.iter().map(|&j| Self::name(j)).collect();
        wait_for(&format!("n{i} to see {what} ({want:?})"), LIMIT, || {
            let s = self.status(i)?;
            let mut seen: Vec<String> = s
                .nodes
                .iter()
                .filter(|n| n.state == "alive")
                .map(|n| n.name.clone())
                .collect();
            seen.sort();
            let mut w = want.clone();
            w.sort();
            let loads = s
                .nodes
                .iter()
                .filter(|n| n.state == "alive")
                .all(|n| n.load.is_some());
            if seen == w && loads {
                Ok(s)
            } else {
                Err(format!("sees {seen:?}"))
            }
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGTERM first: the agents leave and remove their job cgroups.
        terminate(self.agents.iter_mut().flatten(), Duration::from_secs(3));
        if std::thread::panicking() {
            for i in 0..self.agents.len() {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!(
                    "--- n{i} log (last lines, newest first):\n{}",
                    tail.join("\n")
                );
            }
        }
    }
}

fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn eight_agents_discover_each_other_and_see_a_death_and_a_rejoin() {
    if !util::netns_tests() {
        return;
    }
    let n = 8;
    let mut c = Cluster::new("disc", 81, n);
    let t0 = Instant::now();
    for i in 0..n {
        c.start(i, &[]);
    }
    for i in 0..n {
        let line = c.join_line(i);
        let prefix = format!("omnode: node n{i} joined cluster {} (", c.id);
        assert!(
            line.starts_with(&prefix) && line.ends_with(" nodes)"),
            "join line: {line}"
        );
    }
    let all: Vec<usize> = (0..n).collect();
    for i in 0..n {
        c.wait_view(i, &all, "everyone, with load vectors");
    }
    eprintln!("8 agents saw each other {:?} after start", t0.elapsed());

    // Kill one: every other agent marks it dead.
    let victim = 5;
    c.kill(victim);
    let t1 = Instant::now();
    let rest: Vec<usize> = (0..n).filter(|&j| j != victim).collect();
    for &i in &rest {
        wait_for(&format!("n{i} to mark n5 down"), LIMIT, || {
            let s = c.status(i)?;
            let v = s
                .nodes
                .iter()
                .find(|x| x.name == "n5")
                .ok_or("n5 not listed")?;
            if v.state == "down" {
                Ok(())
            } else {
                Err(v.state.clone())
            }
        });
        c.wait_view(i, &rest, "the others alive");
    }
    eprintln!("death of n5 seen by all {:?} after the kill", t1.elapsed());

    // Restart it: everyone sees it again, it sees everyone.
    c.start(victim, &[]);
    c.join_line(victim);
    for i in 0..n {
        c.wait_view(i, &all, "n5 back");
    }
}

#[test]
fn wrong_key_forged_and_replayed_packets_change_nothing() {
    if !util::netns_tests() {
        return;
    }
    let mut c = Cluster::new("sec", 82, 4);
    for i in 0..3 {
        c.start(i, &[]);
    }
    let good = [0, 1, 2];
    for i in good {
        c.wait_view(i, &good, "the three keyed nodes");
    }
    // n3 has a different key: it hears the others but can open nothing.
    let wrong = c.dir.path().join("wrong.key");
    assert!(Command::new(bin("omnode"))
        .args(["keygen", "--out"])
        .arg(&wrong)
        .status()
        .unwrap()
        .success());
    c.start_with(3, &wrong, &[]);
    let line = c.join_line(3);
    assert!(
        line.ends_with("(1 nodes)"),
        "a keyless agent must join nobody: {line}"
    );
    std::thread::sleep(Duration::from_secs(3));
    for i in good {
        let s = c.status(i).unwrap();
        assert!(
            !s.nodes.iter().any(|x| x.name == "n3"),
            "n{i} lists the wrong-key node: {s:?}"
        );
        assert_eq!(s.nodes.iter().filter(|x| x.state == "alive").count(), 3);
    }
    let s3 = c.status(3).unwrap();
    assert_eq!(s3.nodes.len(), 1, "the wrong-key node sees others: {s3:?}");
    assert!(
        c.log(0).contains("failed authentication"),
        "n0 never logged a refused packet"
    );

    // Capture real sealed packets from the LAN, then replay them and flipped copies.
    let captured = capture(&c.lan.nodes[3], 7946, 5, &c.lan.addr(3));
    assert!(!captured.is_empty());
    let before: Vec<String> = (0..3).map(|i| c.log(i)).collect();
    let mut sent = 0;
    for p in &captured {
        for i in good {
            let to = format!("{}:7946", c.lan.addr(i));
            send_from(&c.lan.nodes[3], &to, p);
            sent += 1;
            for bit in [0usize, 100, p.len() * 8 - 1] {
                let mut q = p.clone();
                q[bit / 8] ^= 1 << (bit % 8);
                send_from(&c.lan.nodes[3], &to, &q);
            }
        }
    }
    assert!(sent > 0);
    wait_for("replays to be refused", LIMIT, || {
        let refused = (0..3)
            .map(|i| c.log(i)[before[i].len()..].matches("is a replay").count())
            .sum::<usize>();
        if refused > 0 {
            Ok(())
        } else {
            Err("no replay refused yet".into())
        }
    });
    for i in good {
        let s = c.status(i).unwrap();
        assert_eq!(s.nodes.len(), 3, "n{i}'s view changed: {s:?}");
        assert!(s.nodes.iter().all(|x| x.state == "alive"));
    }
}

#[test]
fn key_rotation_moves_eight_agents_to_a_new_key_without_a_death() {
    if !util::netns_tests() {
        return;
    }
    let n = 8;
    // Nine namespaces: the ninth comes back with the old key at the end.
    let mut c = Cluster::new("rot", 87, n + 1);
    let old = std::fs::read_to_string(&c.key).unwrap();
    let own_key = |c: &Cluster, i: usize| c.dir.path().join(format!("n{i}.key"));
    for i in 0..n {
        std::fs::copy(&c.key, own_key(&c, i)).unwrap();
        let key = own_key(&c, i);
        c.start_with(i, &key, &["--allow-root-jobs"]);
    }
    let all: Vec<usize> = (0..n).collect();
    for i in 0..n {
        c.wait_view(i, &all, "everyone");
    }
    let key_of = |c: &Cluster, i: usize| {
        let o = c.omctl(i).arg("key").output().unwrap();
        assert!(
            o.status.success(),
            "omctl key: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        stdout_of(&o)
            .split_whitespace()
            .nth(4)
            .unwrap_or_default()
            .trim_end_matches([',', ';'])
            .to_string()
    };
    let before = key_of(&c, 0);

    let t0 = Instant::now();
    let o = c
        .omctl(0)
        .args(["key", "rotate", "--window", "10s"])
        .output()
        .unwrap();
    let said = stdout_of(&o);
    eprintln!("{said}");
    assert!(
        o.status.success(),
        "omctl key rotate: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let first = said.lines().next().unwrap_or_default().to_string();
    let fingerprint = first
        .strip_prefix("new cluster key ")
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"))
        .to_string();
    assert!(first.contains(": 8 of 8 nodes took it;"), "{first}");
    assert_ne!(fingerprint, before);
    for i in 0..n {
        assert_eq!(key_of(&c, i), fingerprint, "n{i} does not hold the new key");
    }
    let again = c.omctl(3).args(["key", "rotate"]).output().unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already under way"),
        "a second rotation during the first: {}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Through the switch (15 s) and the window (10 s): everybody stays
    // alive in everybody's view.
    while t0.elapsed() < Duration::from_secs(27) {
        for i in 0..n {
            let s = c.status(i).unwrap();
            let alive = s.nodes.iter().filter(|x| x.state == "alive").count();
            assert_eq!(
                alive,
                n,
                "n{i} lost someone {:?} into the rotation: {s:?}",
                t0.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..n {
        let log = c.log(i);
        assert!(
            !log.contains("Down("),
            "n{i} declared someone dead during the rotation"
        );
        assert_eq!(
            log.matches("datagram keys changed").count(),
            3,
            "n{i} did not take, switch to and settle on the new key once each"
        );
        let file = std::fs::read_to_string(own_key(&c, i)).unwrap();
        assert_ne!(file, old, "n{i}'s key file still holds the old key");
        assert_eq!(key_of(&c, i), fingerprint);
        let o = c.omctl(i).arg("key").output().unwrap();
        assert!(
            !stdout_of(&o).contains("old key"),
            "n{i} still speaks of the old key: {}",
            stdout_of(&o)
        );
    }
    let files: Vec<String> = (0..n)
        .map(|i| std::fs::read_to_string(own_key(&c, i)).unwrap())
        .collect();
    assert!(files.iter().all(|f| *f == files[0]), "the key files differ");
    // Exec streams use the new key.
    let o = run_on(
        &c,
        0,
        &["--node", "n5", "--", "sh", "-c", "echo moved-on"],
        "",
    );
    assert_eq!(
        stdout_of(&o),
        "moved-on\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A member that was away comes back with the old key: refused.
    let refused_before = c.log(0).matches("failed authentication").count();
    let key = c.key.clone();
    c.start_with(n, &key, &[]);
    let line = c.join_line(n);
    assert!(
        line.ends_with("(1 nodes)"),
        "the old key joined someone: {line}"
    );
    wait_for("n0 to refuse the old key", LIMIT, || {
        if c.log(0).matches("failed authentication").count() > refused_before {
            Ok(())
        } else {
            Err("no refusal logged yet".into())
        }
    });
    for i in 0..n {
        let s = c.status(i).unwrap();
        assert!(
            !s.nodes.iter().any(|x| x.name == format!("n{n}")),
            "n{i} lists the old-key node: {s:?}"
        );
    }
}

/// Receives `count` datagrams sent to the discovery group, inside netns `ns`.
/// Packets from `skip` (the wrong-key agent itself) are not kept.
fn capture(ns: &str, port: u16, count: usize, skip: &str) -> Vec<Vec<u8>> {
    let ns = ns.to_string();
    let skip: std::net::IpAddr = skip.parse().unwrap();
    std::thread::spawn(move || {
        enter_netns(&ns);
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.bind(&std::net::SocketAddr::from(([0, 0, 0, 0], port)).into())
            .unwrap();
        let iface = node_agent::discovery::pick_interface(Some("eth0")).unwrap();
        s.join_multicast_v4(&node_agent::discovery::GROUP, &iface.addr)
            .unwrap();
        let s: std::net::UdpSocket = s.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < count {
            let (n, from) = s.recv_from(&mut buf).expect("captured a packet");
            if from.ip() != skip {
                out.push(buf[..n].to_vec());
            }
        }
        out
    })
    .join()
    .unwrap()
}

pub(crate) fn enter_netns(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// Sends one datagram from inside netns `ns`.
fn send_from(ns: &str, to: &str, data: &[u8]) {
    let (ns, to, data) = (ns.to_string(), to.to_string(), data.to_vec());
    std::thread::spawn(move || {
        enter_netns(&ns);
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(&data, &to).unwrap();
    })
    .join()
    .unwrap();
}

pub(crate) fn run_on(c: &Cluster, i: usize, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut cmd = c.omctl(i);
    cmd.arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut si = child.stdin.take().unwrap();
    si.write_all(stdin.as_bytes()).unwrap();
    drop(si);
    child.wait_with_output().unwrap()
}

/// `omctl SUB ARGS…` on node `i` as `uid`, with no input.
pub(crate) fn omctl_as(c: &Cluster, i: usize, sub: &str, args: &[&str], uid: u32) -> Output {
    c.omctl(i)
        .arg(sub)
        .args(args)
        .uid(uid)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn remote_run_stdio_status_signals_uid_cwd() {
    if !util::netns_tests() {
        return;
    }
    let mut c = Cluster::new("run", 83, 3);
    for i in 0..3 {
        c.start(i, &[]);
    }
    for i in 0..3 {
        c.wait_view(i, &[0, 1, 2], "all three");
        let s = c.status(i).unwrap();
        assert!(s.nodes.iter().all(|n| n.load.is_some()));
    }
    let work = util::shared_tempdir();
    let cwd = work.path().to_str().unwrap().to_string();

    // stdin in, stdout and stderr out, exit status, OM_NODE/OM_HOME, cwd.
    let script =
        "read x; echo \"got $x on $OM_NODE from $OM_HOME in $(pwd)\"; echo err >&2; exit 7";
    let o = Command::new(bin("omctl"))
        .arg("--socket")
        .arg(c.socket(0))
        .args(["run", "--node", "n2", "--", "sh", "-c", script])
        .current_dir(&cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            use std::io::Write;
            ch.stdin.take().unwrap().write_all(b"hello\n")?;
            ch.wait_with_output()
        })
        .unwrap();
    assert_eq!(stdout_of(&o), format!("got hello on n2 from n0 in {cwd}\n"));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert_eq!(o.status.code(), Some(7));

    // A large stream both ways survives.
    let big: String = (0..20000).map(|i| format!("line {i}\n")).collect();
    let o = run_on(&c, 1, &["--node", "n0", "--", "cat"], &big);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout_of(&o).len(), big.len());

    // A reader that goes away sends SIGPIPE to the job, as locally.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{} --socket {} run --node n2 -- yes | head -n 3; echo \"${{PIPESTATUS[0]}}\"",
            bin("omctl").display(),
            c.socket(0).display()
        ))
        .current_dir("/")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stdout_of(&o), "y\ny\ny\n141\n");

    // Killed by a signal → 128 + n.
    let o = run_on(
        &c,
        0,
        &["--node", "n1", "--", "sh", "-c", "kill -TERM $$"],
        "",
    );
    assert_eq!(o.status.code(), Some(128 + 15));

    // Runs as the caller: a caller running as nobody gets a job running as nobody.
    let o = Command::new(bin("omctl"))
        .arg("--socket")
        .arg(c.socket(0))
        .args(["run", "--node", "n1", "--", "sh", "-c", "id -u; id -g"])
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        stdout_of(&o),
        "65534\n65534\n",
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A cwd that does not exist on the target: a clear error and 127.
    let gone = work.path().join("only-here");
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir -p {d} && cd {d} && rmdir {d} && exec {omctl} --socket {s} run --node n2 -- true",
            d = gone.display(),
            omctl = bin("omctl").display(),
            s = c.socket(0).display()
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "stderr: {err}");
    assert!(
        err.contains(&format!(
            "working directory {} does not exist on node n2",
            gone.display()
        )),
        "{err}"
    );

    // Signal delivery: SIGINT to omctl reaches the remote process group.
    let mut child = c
        .omctl(0)
        .args([
            "run",
            "--node",
            "n1",
            "--",
            "sh",
            "-c",
            "trap 'echo caught INT; exit 3' INT; echo ready; while :; do sleep 0.1; done",
        ])
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = child.wait().unwrap();
    assert_eq!(rest, "caught INT\n");
    assert_eq!(st.code(), Some(3));

    // The classic names, through symlinks.
    for name in ["mosrun", "mosctl", "mps"] {
        std::os::unix::fs::symlink(bin("omctl"), work.path().join(name)).unwrap();
    }
    let classic = |name: &str, args: &[&str]| {
        Command::new(work.path().join(name))
            .arg("--socket")
            .arg(c.socket(1))
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = classic(
        "mosrun",
        &["--node", "n0", "--", "sh", "-c", "echo $OM_NODE"],
    );
    assert_eq!(stdout_of(&o), "n0\n");
    let o = classic("mosctl", &[]);
    assert!(
        stdout_of(&o).starts_with(&format!("cluster {}, seen from n1: 3 nodes, 3 alive", c.id)),
        "{}",
        stdout_of(&o)
    );
    let o = classic("mosctl", &["whois", "10.83.0.3"]);
    assert_eq!(stdout_of(&o), "node 3 is n2 at 10.83.0.3:7946 (alive)\n");
    let o = classic("mps", &["--json"]);
    assert_eq!(stdout_of(&o).trim(), "[]");

    // ps shows a running job with its node.
    let mut sleeper = c
        .omctl(0)
        .args(["run", "--node", "n2", "--", "sleep", "30"])
        .current_dir("/")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let ps = wait_for("the job in ps", LIMIT, || {
        let o = c
            .omctl(0)
            .args(["ps", "--json"])
            .output()
            .map_err(|e| e.to_string())?;
        let jobs: Vec<node_agent::wire::JobInfo> =
            serde_json::from_slice(&o.stdout).map_err(|e| e.to_string())?;
        jobs.into_iter()
            .find(|j| j.argv == ["sleep", "30"] && j.pid.is_some())
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!((ps.node.as_str(), ps.home.as_str()), ("n2", "n0"));

    // Bad migration requests: one line naming the problem, the job untouched.
    // (CRIU does not run on this host's kernel: moves themselves are tested
    // in qemu nodes, tests/tests/migrate.rs.)
    let migrate = |args: &[&str], uid: u32| {
        let o = omctl_as(&c, 1, "migrate", args, uid);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "{err}");
        (o.status.code(), err)
    };
    let (code, err) = migrate(&["nosuch-1", "n1"], 0);
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("no running job nosuch-1"), "{err}");
    let (code, err) = migrate(&[&ps.job, "nowhere"], 0);
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("no live node matches nowhere"), "{err}");
    let (code, err) = migrate(&[&ps.job, "n1"], 65534);
    assert_eq!(code, Some(126), "{err}");
    assert!(err.contains("only its owner or root may move it"), "{err}");
    let pid = ps.pid.unwrap().to_string();
    let (code, err) = migrate(&[&pid, "n1"], 0);
    assert_eq!(code, Some(127), "{err}");
    assert!(
        err.contains(&format!(
            "job {} cannot move: node n2 cannot checkpoint jobs",
            ps.job
        )),
        "{err}"
    );
    let o = c.omctl(0).args(["ps", "--json"]).output().unwrap();
    let jobs: Vec<node_agent::wire::JobInfo> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        jobs.iter()
            .any(|j| j.job == ps.job && j.node == "n2" && j.moves == 0),
        "{jobs:?}"
    );
    // n1 neither launched nor runs it, but sees it cluster-wide, with n2's pid.
    let o = c.omctl(1).args(["ps", "--all", "--json"]).output().unwrap();
    let jobs: Vec<node_agent::wire::JobInfo> = serde_json::from_slice(&o.stdout).unwrap();
    let seen: Vec<_> = jobs.iter().filter(|j| j.job == ps.job).collect();
    assert_eq!(seen.len(), 1, "{jobs:?}");
    assert_eq!((seen[0].node.as_str(), seen[0].pid), ("n2", ps.pid));
    let o = c.omctl(1).args(["ps"]).output().unwrap();
    assert!(
        !stdout_of(&o).contains("sleep 30"),
        "n1's own ps lists another node's job"
    );

    // Knobs: root only, one line per error, seen by the others, and
    // `block` refuses guests.
    let knob = |i: usize, args: &[&str], uid: u32| {
        let o = omctl_as(&c, i, "knob", args, uid);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        (o.status.code(), stdout_of(&o), err)
    };
    let (code, _, err) = knob(1, &["block"], 65534);
    assert_eq!((code, err.lines().count()), (Some(126), 1), "{err}");
    assert!(err.contains("takes root"), "{err}");
    let (code, _, err) = knob(1, &["fast"], 0);
    assert_eq!((code, err.lines().count()), (Some(254), 1), "{err}");
    assert!(err.contains("unknown knob fast"), "{err}");
    let (code, _, err) = knob(1, &["--node", "nowhere", "block"], 0);
    assert_eq!((code, err.lines().count()), (Some(127), 1), "{err}");
    assert!(err.contains("no live node matches nowhere"), "{err}");
    let (code, out, err) = knob(1, &["--node", "n2", "block"], 0);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "node n2: block on (knobs: block)\n");
    wait_for("n0 to see n2 blocked", LIMIT, || {
        let s = c.status(0)?;
        s.nodes
            .iter()
            .any(|n| n.name == "n2" && n.load.as_ref().is_some_and(|l| l.knobs.block))
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
    let o = run_on(&c, 0, &["--node", "n2", "--", "true"], "");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(127), "{err}");
    assert!(
        err.contains("node n2 accepts no guest jobs (block)"),
        "{err}"
    );
    let (code, _, err) = knob(2, &["noblock"], 0);
    assert_eq!(code, Some(0), "{err}");

    // omctl shell: a command it looks up runs as a job here (OM_JOB is
    // set), a builtin in the shell itself.
    let o = c
        .omctl(0)
        .args([
            "shell",
            "-c",
            "printenv OM_JOB; echo \"shell on $OM_SHELL\"",
        ])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout_of(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines.len() == 2 && lines[0].starts_with("n0-") && lines[1] == "shell on n0",
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The node running it dies: the caller gets a clear error and 255, no hang.
    c.kill(2);
    let st = sleeper.wait().unwrap();
    assert_eq!(st.code(), Some(255));
    let _ = sleeper.kill();
}

#[test]
fn awk_burst_spreads_over_capped_nodes() {
    if !util::netns_tests() {
        return;
    }
    let n = 4;
    let quota = "5";
    let mut c = Cluster::new("awk", 84, n);
    for i in 0..n {
        c.start(i, &["--cpu-quota", quota]);
    }
    let all: Vec<usize> = (0..n).collect();
    for i in 0..n {
        c.wait_view(i, &all, "all nodes");
    }
    wait_for("load vectors everywhere", LIMIT, || {
        let s = c.status(0)?;
        if s.nodes
            .iter()
            .all(|x| x.load.as_ref().is_some_and(|l| l.cpu_quota == 5))
        {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    });
    let awk = "BEGIN {for(i=0;i<10000;i++)for(j=0;j<1000;j++);}";
    // One job alone, uncapped, to know the work per job (CPU seconds).
    let cpu_before = children_cpu();
    assert!(Command::new("awk").arg(awk).status().unwrap().success());
    let work = children_cpu() - cpu_before;
    let cpus = std::thread::available_parallelism().unwrap().get() as f64;
    let capacity = n as f64 * cpus * 5.0 / 100.0;
    let jobs = 2 * n;
    let t = Instant::now();
    let children: Vec<_> = (0..jobs)
        .map(|_| {
            let ch = c
                .omctl(0)
                .args([
                    "run",
                    "--",
                    "sh",
                    "-c",
                    &format!("awk '{awk}'; echo $OM_NODE"),
                ])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(20));
            ch
        })
        .collect();
    let mut per_node = std::collections::BTreeMap::<String, usize>::new();
    for ch in children {
        let o = ch.wait_with_output().unwrap();
        assert!(o.status.success());
        *per_node
            .entry(stdout_of(&o).trim().to_string())
            .or_default() += 1;
    }
    let makespan = t.elapsed().as_secs_f64();
    let ideal = jobs as f64 * work / capacity;
    eprintln!(
        "awk burst: {jobs} jobs on {n} nodes capped at {quota}%: makespan {makespan:.2}s, ideal {ideal:.2}s, ratio {:.2}, spread {per_node:?}",
        makespan / ideal
    );
    assert_eq!(per_node.len(), n, "every node got work: {per_node:?}");
    // Each job can only get `capacity / n` of a CPU on its node, so a pile-up would show.
    assert!(
        per_node.values().all(|&k| k == 2),
        "jobs spread evenly: {per_node:?}"
    );
}

/// CPU time (user + system) of this process's reaped children, in seconds.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_CHILDREN, &mut u), 0);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

#[test]
fn mon_in_tmux_shows_every_node() {
    if !util::netns_tests() {
        return;
    }
    if !lab::gate::require(&[Need::Tool("tmux", "tmux")]) {
        return;
    }
    let n = 3;
    let mut c = Cluster::new("mon", 85, n);
    for i in 0..n {
        c.start(i, &[]);
    }
    for i in 0..n {
        c.wait_view(i, &[0, 1, 2], "all nodes");
    }
    let session = "agt-mon-test";
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", session])
        .status();
    let cmd = format!(
        "{} --socket {} mon",
        bin("omctl").display(),
        c.socket(0).display()
    );
    assert!(Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "120",
            "-y",
            "30",
            &cmd
        ])
        .status()
        .unwrap()
        .success());
    struct Kill(&'static str);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", self.0])
                .status();
        }
    }
    let _k = Kill(session);
    let screen = wait_for("mon to draw every node", LIMIT, || {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", session])
            .output()
            .map_err(|e| e.to_string())?;
        let s = stdout_of(&o);
        if (0..n).all(|i| s.contains(&format!(" n{i} "))) && s.contains("omctl mon") {
            Ok(s)
        } else {
            Err(s)
        }
    });
    assert!(screen.contains("alive"), "{screen}");
    assert!(Command::new("tmux")
        .args(["send-keys", "-t", session, "q"])
        .status()
        .unwrap()
        .success());
    wait_for("mon to quit on q", LIMIT, || {
        let st = Command::new("tmux")
            .args(["has-session", "-t", session])
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if st.success() {
            Err("still running".into())
        } else {
            Ok(())
        }
    });
}

#[test]
fn keygen_writes_a_private_hex_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    let o = Command::new(bin("omnode"))
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.len(), 65);
    assert!(text.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let o = Command::new(bin("omnode"))
        .args(["keygen", "--out"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!("omnode: cannot write key file {}", path.display())),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        text,
        "the key was overwritten"
    );
}

#[test]
fn agent_with_a_bad_key_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, "not a key\n").unwrap();
    let o = Command::new(bin("omnode"))
        .args(["agent", "--key-file"])
        .arg(&path)
        .arg("--socket")
        .arg(dir.path().join("s"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "omnode: key `not a key` is not 64 hex digits\n"
    );
    let o = Command::new(bin("omnode"))
        .args(["agent", "--key-file", "/nonexistent/k", "--cpu-quota", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "clap rejects a zero quota");
}

#[test]
fn omctl_without_an_agent_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let o = Command::new(bin("omctl"))
        .arg("--socket")
        .arg(&sock)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(254));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with(&format!(
            "omctl: cannot reach the agent at {}",
            sock.display()
        )),
        "{err}"
    );
    let o = Command::new(bin("omctl"))
        .arg("--socket")
        .arg(&sock)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(254));
}

#[test]
fn seeds_join_agents_that_multicast_cannot_reach() {
    if !util::netns_tests() {
        return;
    }
    // Different ports: each agent's multicast goes to its own port, so the
    // other never hears it; only the seed brings them together.
    let mut c = Cluster::new("seed", 86, 3);
    c.start_workstation(0, &["--port", "7101"]);
    c.start(1, &["--port", "7102", "--seed", "10.86.0.1:7101"]);
    c.start(2, &["--port", "7103"]);
    for i in [0, 1] {
        c.wait_view(i, &[0, 1], "its seed peer");
    }
    let line = c.join_line(2);
    assert!(
        line.ends_with("(1 nodes)"),
        "an agent with no seed on another port joined: {line}"
    );
    for i in [0, 1] {
        let s = c.status(i).unwrap();
        assert!(!s.nodes.iter().any(|n| n.name == "n2"), "{s:?}");
    }
    // Remote execution uses the member's own port. n0 is a workstation:
    // root's job is refused there with the reason, a user's runs.
    let on_n0 = |uid: u32| {
        c.omctl(1)
            .args(["run", "--node", "n0", "--", "sh", "-c", "echo $OM_NODE"])
            .current_dir("/")
            .uid(uid)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = on_n0(0);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(126), "{err}");
    assert!(
        err.contains("node n0 does not run root's jobs (its agent runs without --allow-root-jobs)"),
        "{err}"
    );
    let o = on_n0(65534);
    assert_eq!(
        stdout_of(&o),
        "n0\n",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = c.status(1).unwrap();
    let root_jobs: Vec<(String, bool)> = s
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.load.as_ref().is_some_and(|l| l.root_jobs)))
        .collect();
    assert_eq!(
        root_jobs,
        [("n0".into(), false), ("n1".into(), true)],
        "{s:?}"
    );
    let o = c.omctl(1).args(["top", "--once"]).output().unwrap();
    let top = stdout_of(&o);
    assert!(
        top.starts_with(&format!("omctl top: cluster {} from n1: 2 nodes", c.id)),
        "{top}"
    );
    let o = c.omctl(1).args(["whois", "n0", "--json"]).output().unwrap();
    let n: node_agent::wire::NodeStatus = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((n.addr.as_str(), n.number), ("10.86.0.1:7101", 1));

    // A clean stop (SIGTERM) leaves the cluster and removes the socket.
    let pid = nix::unistd::Pid::from_raw(c.agents[0].as_ref().unwrap().0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = c.agents[0].as_mut().unwrap().0.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(!c.socket(0).exists(), "the control socket was left behind");
    wait_for("n1 to see n0 leave", LIMIT, || {
        let s = c.status(1)?;
        let n0 = s
            .nodes
            .iter()
            .find(|x| x.name == "n0")
            .ok_or("n0 not listed")?;
        if n0.state == "down" {
            Ok(())
        } else {
            Err(n0.state.clone())
        }
    });
}
