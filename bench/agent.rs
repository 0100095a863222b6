//! Agent benchmark, one agent per network namespace on a bridge:
//!
//! - membership, for 8, 16 and 32 agents (`OM_BENCH_SIZES=8,16,32`): cold
//!   start until every agent sees every other; join of one more agent until
//!   all have it; SIGKILL of one until every other has it down;
//! - placement: the same burst of awk jobs (the openMosix test) over four
//!   nodes with different `--cpu-quota`, placed by the agent, round-robin, and
//!   all on the single fastest node; makespan against the ideal (total CPU
//!   work / total capacity).
//!
//! `OM_BENCH_SIZES` picks the membership sizes (empty: placement only).
//! Needs root and iproute2. Run: `bench/agent.sh`, which builds omnode and
//! omctl first (`cargo build --profile bench -p node-agent -p omctl --bins`) and runs
//! `cargo bench -p omcluster-bench --bench agent`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use omcluster_bench::agents::{alive, Agents};

/// The agent (omnode) and its CLI (omctl), built beside this benchmark
/// (`bench/agent.sh` builds them first); `main` looks them up before any
/// namespace is made, so a missing one ends the run at once.
static OMNODE: LazyLock<PathBuf> = LazyLock::new(|| program("omnode"));
static OMCTL: LazyLock<PathBuf> = LazyLock::new(|| program("omctl"));

fn program(name: &str) -> PathBuf {
    omcluster_bench::binaries::built_or_exit("agent", name)
}

/// The benchmark's agents: `omcluster_bench::agents::Agents` over omnode.
fn bench(tag: &str, net: u8, n: usize) -> Agents {
    Agents::new(&OMNODE, tag, net, n)
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("timeout".into(), |d| format!("{} ms", d.as_millis()))
}

async fn membership(n: usize, net: u8) {
    let limit = Duration::from_secs(60);
    let mut b = bench(&format!("b{n}"), net, n);
    let everyone: Vec<usize> = (0..n).collect();
    let rest: Vec<usize> = (1..n).collect();
    // Cold start of all but n0.
    let t = Instant::now();
    for &i in &rest {
        b.start(i, &[]);
    }
    let cold = b.until(&rest, limit, |_, s| alive(s) == n - 1).await;
    let cold = cold.map(|_| t.elapsed());
    // One more joins.
    let t = Instant::now();
    b.start(0, &[]);
    let join = b.until(&everyone, limit, |_, s| alive(s) == n).await;
    let join = join.map(|_| t.elapsed());
    // One dies.
    let victim = n - 1;
    b.agents[victim] = None;
    let t = Instant::now();
    let others: Vec<usize> = (0..n - 1).collect();
    let victim_name = format!("n{victim}");
    let death = b
        .until(&others, limit, |_, s| {
            s.nodes
                .iter()
                .any(|x| x.name == victim_name && x.state == "down")
        })
        .await;
    let death = death.map(|_| t.elapsed());
    println!(
        "membership {n:>2} agents: cold start all-see-all {:>9}   join seen by all {:>9}   death seen by all {:>9}",
        ms(cold),
        ms(join),
        ms(death)
    );
}

/// CPU seconds of this process's reaped children.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn burst(socket: &Path, awk: &str, nodes: &[Option<String>]) -> (Duration, Vec<String>) {
    let t = Instant::now();
    let children: Vec<_> = nodes
        .iter()
        .map(|node| {
            let mut c = Command::new(&*OMCTL);
            c.arg("--socket").arg(socket).arg("run");
            if let Some(n) = node {
                c.args(["--node", n]);
            }
            let ch = c
                .args(["--", "sh", "-c", &format!("awk '{awk}'; echo $OM_NODE")])
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .spawn()
                .expect("omctl run");
            std::thread::sleep(Duration::from_millis(20));
            ch
        })
        .collect();
    let mut ran = Vec::new();
    for ch in children {
        let o = ch.wait_with_output().expect("wait omctl");
        assert!(o.status.success(), "a job failed: {:?}", o.status);
        ran.push(String::from_utf8_lossy(&o.stdout).trim().to_string());
    }
    (t.elapsed(), ran)
}

fn spread(ran: &[String]) -> String {
    let mut m = std::collections::BTreeMap::<&str, usize>::new();
    for r in ran {
        *m.entry(r).or_default() += 1;
    }
    m.iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn placement() {
    // Small quotas, so that they and not the other load of a shared machine
    // set each node's capacity.
    let quotas = [1u32, 2, 3, 4];
    let n = quotas.len();
    let jobs = 12;
    let mut b = bench("bp", 99, n);
    for (i, q) in quotas.iter().enumerate() {
        b.start(i, &["--cpu-quota", &q.to_string()]);
    }
    let all: Vec<usize> = (0..n).collect();
    b.until(&all, Duration::from_secs(60), |_, s| {
        alive(s) == n && s.nodes.iter().all(|x| x.load.is_some())
    })
    .await
    .expect("placement cluster formed");
    let awk = "BEGIN {for(i=0;i<10000;i++)for(j=0;j<1000;j++);}";
    let before = children_cpu();
    assert!(Command::new("awk").arg(awk).status().unwrap().success());
    let work = children_cpu() - before;
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    let capacity: f64 = quotas.iter().map(|q| cpus * f64::from(*q) / 100.0).sum();
    let ideal = jobs as f64 * work / capacity;
    println!(
        "placement: {jobs} awk jobs of {work:.2} CPU-s on {n} nodes with quotas {quotas:?}% of {cpus} CPUs (capacity {capacity:.2} CPUs): ideal makespan {ideal:.2} s"
    );
    let socket = b.socket(0);
    let strategies: Vec<(&str, Vec<Option<String>>)> = vec![
        ("placement", vec![None; jobs]),
        (
            "round-robin",
            (0..jobs).map(|j| Some(format!("n{}", j % n))).collect(),
        ),
        (
            "one node (fastest)",
            vec![Some(format!("n{}", n - 1)); jobs],
        ),
    ];
    let mut placed = 0.0;
    for (name, nodes) in strategies {
        let (t, ran) = burst(&socket, awk, &nodes);
        let s = t.as_secs_f64();
        if name == "placement" {
            placed = s;
        }
        println!(
            "  {name:<19} makespan {s:>6.2} s   {:.2}x ideal   {:.2}x placement   spread {}",
            s / ideal,
            s / placed,
            spread(&ran)
        );
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("agent bench: needs root (network namespaces, cgroups)");
        std::process::exit(1);
    }
    LazyLock::force(&OMNODE);
    LazyLock::force(&OMCTL);
    let sizes: Vec<usize> = std::env::var("OM_BENCH_SIZES")
        .unwrap_or_else(|_| "8,16,32".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for (k, n) in sizes.iter().enumerate() {
            membership(*n, 90 + k as u8).await;
        }
        placement().await;
    });
}
