//! A cluster of agents for a benchmark: one `omnode agent` per network
//! namespace on one bridge ([`lab::netns::BridgeLan`]), a fresh cluster
//! key, a control socket each, and the agents stopped (SIGTERM, then
//! SIGKILL) and the namespaces removed on drop. `bench/agent.rs` and
//! `bench/web.rs` use it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use agent_control::{client as control, ClusterStatus};
use lab::netns::{netns_command, BridgeLan};
use lab::process::{shared_tempdir, terminate, Reaped};

/// The agents, their LAN and their files.
pub struct Agents {
    /// One namespace per agent.
    pub lan: BridgeLan,
    /// Sockets, logs, state and the key.
    pub dir: tempfile::TempDir,
    key: PathBuf,
    omnode: PathBuf,
    /// The cluster's name (`bench-TAG`).
    pub cluster: String,
    /// The running agents, by index (`None`: not started, or killed).
    pub agents: Vec<Option<Reaped>>,
}

impl Agents {
    /// `n` namespaces on `10.NET.0.0/24` and a new cluster key made with
    /// `omnode`; no agent runs yet.
    pub fn new(omnode: &Path, tag: &str, net: u8, n: usize) -> Self {
        let lan = BridgeLan::new(tag, net, n);
        let dir = shared_tempdir();
        let key = dir.path().join("key");
        let ok = Command::new(omnode)
            .args(["keygen", "--out"])
            .arg(&key)
            .stdout(Stdio::null())
            .status()
            .expect("run omnode keygen")
            .success();
        assert!(ok, "keygen failed");
        Self {
            lan,
            dir,
            key,
            omnode: omnode.to_path_buf(),
            cluster: format!("bench-{tag}"),
            agents: (0..n).map(|_| None).collect(),
        }
    }

    /// Agent `i`'s control socket.
    pub fn socket(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{i}.sock"))
    }

    /// Starts agent `i` (named `n<i>`, speed 1, root's jobs allowed) with
    /// `extra` arguments; its log is `n<i>.log` in [`Self::dir`], at the
    /// level `OM_BENCH_LOG` gives (`warn` by default).
    pub fn start(&mut self, i: usize, extra: &[&str]) {
        let log = std::fs::File::create(self.dir.path().join(format!("n{i}.log"))).unwrap();
        let child = netns_command(&self.lan.nodes[i], &self.omnode)
            .args(["agent", "--allow-root-jobs"])
            .arg("--key-file")
            .arg(&self.key)
            .arg("--socket")
            .arg(self.socket(i))
            .args(["--name", &format!("n{i}"), "--cluster", &self.cluster])
            .args(["--interface", "eth0", "--speed", "1"])
            .arg("--state-dir")
            .arg(self.dir.path().join(format!("state{i}")))
            .args(extra)
            .env(
                "OM_LOG",
                std::env::var("OM_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start omnode agent");
        self.agents[i] = Some(Reaped(child));
    }

    /// Agent `i`'s process id, if it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.agents[i].as_ref().map(|r| r.0.id())
    }

    /// Polls agents `who` every 20 ms until `ok(i, status)` holds for all;
    /// how long that took, or `None` after `limit`.
    pub async fn until(
        &self,
        who: &[usize],
        limit: Duration,
        ok: impl Fn(usize, &ClusterStatus) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        let mut done = vec![false; self.agents.len()];
        while t.elapsed() < limit {
            let polls = who.iter().filter(|&&i| !done[i]).map(|&i| {
                let s = self.socket(i);
                async move { (i, control::status(&s).await) }
            });
            for (i, r) in futures::future::join_all(polls).await {
                if r.is_ok_and(|s| ok(i, &s)) {
                    done[i] = true;
                }
            }
            if who.iter().all(|&i| done[i]) {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        // SIGTERM first: the agents leave and remove their job cgroups.
        terminate(self.agents.iter_mut().flatten(), Duration::from_secs(3));
    }
}

/// How many nodes `s` lists alive.
pub fn alive(s: &ClusterStatus) -> usize {
    s.nodes.iter().filter(|n| n.state == "alive").count()
}
