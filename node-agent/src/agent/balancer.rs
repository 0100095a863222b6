//! The balancer: once a second (with a little jitter, so that agents do not
//! act in step) it measures the jobs running here and this node's demand,
//! publishes the demand for the load vector, and asks [`balance::decide`]
//! about the picture the other nodes' load vectors give. A move it gets is
//! handed to the job's driver like an `omctl migrate` order, and the next
//! decision waits until that move is over: one at a time per node.
//!
//! Measuring: a job's demand is the growth of its threads' run and wait
//! time ([`job::usage`]) between two samples, per second (its CPU, memory
//! and state go to the node's state for `ps` and the web view); the node's demand
//! is its jobs' plus whatever else kept its CPUs busy (`/proc/stat`). A move
//! the balancer made counts on its target until the target's own vector
//! has had time to show it. A job whose move failed is left alone for
//! [`RETRY_AFTER`].
//!
//! Speed: the calibration at start is slowed by whatever else the machine
//! (or, under emulation, its host) does at that moment, and three machines
//! booting together can measure themselves 5× apart. So an idle node
//! measures itself again now and then and keeps the fastest figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agent_control::model::JobUsage;
use contracts::clock::unix_millis;
use rand10::RngExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::local_load::LocalLoad;
use crate::balance::{self, Move, Params};
use crate::job::{self, usage};
use crate::membership::NodeId;
use crate::state::MigrateCmd;
use crate::wire::MigrateOrder;

/// How long a job whose move failed is not tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long a move counts on its target before its vector shows it.
const PENDING_FOR: Duration = Duration::from_secs(4);
/// A load vector older than this is not acted on.
const FRESH: Duration = Duration::from_secs(3);
/// While the agent is young, an idle node measures its speed again this
/// often (a machine booting beside others measures itself slow)…
const RECALIBRATE_EARLY: Duration = Duration::from_secs(30);
/// …for this long after the start; then this often.
const EARLY: Duration = Duration::from_secs(600);
const RECALIBRATE_LATER: Duration = Duration::from_secs(600);
/// A node wanting fewer CPUs than this, with no cluster job, is idle.
const IDLE_DEMAND: f64 = 0.3;

/// The balancer's state between rounds.
pub(super) struct Balancer {
    pub(super) load: LocalLoad,
    params: Params,
    /// Each job's counters at the previous sample.
    last: HashMap<String, (Instant, usage::Usage)>,
    /// The machine's CPU counters at the previous sample: (busy, total) jiffies.
    cpu: Option<(u64, u64)>,
    /// Moves made recently: (target, demand, until).
    pending: Vec<(String, f64, Instant)>,
    /// Jobs whose move failed, and when.
    failed: HashMap<String, Instant>,
    /// Whether to measure the speed again when idle (not with `--speed`),
    /// since when, and when it was last measured.
    recalibrate: bool,
    started: Instant,
    calibrated: Instant,
}

/// (busy, total) jiffies of the whole machine, from `/proc/stat`'s `cpu` line.
fn cpu_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

impl Balancer {
    pub(super) fn new(load: LocalLoad, recalibrate: bool) -> Self {
        Balancer {
            load,
            params: Params::default(),
            last: HashMap::new(),
            cpu: None,
            pending: Vec::new(),
            failed: HashMap::new(),
            recalibrate,
            started: Instant::now(),
            calibrated: Instant::now(),
        }
    }

    /// On an idle node, now and then, the speed measured again; a faster
    /// measurement replaces the one from the start (see
    /// [`crate::state::State::raise_speed`]).
    async fn maybe_recalibrate(&mut self, demand: f64, jobs: usize) {
        let every = if self.started.elapsed() < EARLY {
            RECALIBRATE_EARLY
        } else {
            RECALIBRATE_LATER
        };
        if !self.recalibrate
            || jobs > 0
            || demand >= IDLE_DEMAND
            || self.calibrated.elapsed() < every
        {
            return;
        }
        self.calibrated = Instant::now();
        let Ok(speed) = tokio::task::spawn_blocking(crate::load::calibrate).await else {
            return;
        };
        let before = self.load.exec.state.speed();
        if self.load.exec.state.raise_speed(speed) {
            info!(
                before,
                speed, "speed measured again while idle: faster than at start"
            );
        }
    }

    /// Measures the jobs here and the node's demand (published for the
    /// load vector); the jobs as the policy sees them.
    fn sample(&mut self) -> (f64, Vec<balance::Job>) {
        let now = Instant::now();
        let x = &self.load.exec;
        let infos = x.state.jobs();
        let criu_ok = x.cannot_restore().is_none();
        let mut jobs = Vec::new();
        let (mut demand, mut ran) = (0.0, 0.0);
        let mut seen = HashMap::new();
        // A job's processes are its cgroup's; without job cgroups, the
        // process tree below its init, /proc read once for every job.
        let cgroup = x.cgroup.as_ref();
        let table = if infos.is_empty() || cgroup.is_some() {
            job::ProcTable::default()
        } else {
            job::ProcTable::read()
        };
        for info in infos {
            let Some(init) = info.pid else { continue };
            let procs = match cgroup.and_then(|cg| cg.job_processes(&info.job)) {
                // The holder that started it shares the cgroup, not the job.
                Some(p) if p.contains(&init) => {
                    let holder = job::parent(init);
                    p.into_iter().filter(|&x| Some(x) != holder).collect()
                }
                _ if cgroup.is_some() => job::processes(init),
                _ => table.below(init),
            };
            let u = usage::of(&procs);
            if let Some((t, prev)) = self.last.get(&info.job) {
                let dt = now.duration_since(*t).as_nanos().max(1) as f64;
                let wanted = (u.run_ns + u.wait_ns).saturating_sub(prev.run_ns + prev.wait_ns);
                let d = wanted as f64 / dt;
                demand += d;
                let r = u.run_ns.saturating_sub(prev.run_ns) as f64 / dt;
                ran += r;
                if let (Some(state), Some(nice)) = (u.state, u.nice) {
                    x.state.set_usage(
                        &info.job,
                        JobUsage {
                            cpu_pct: (r * 100.0).round() as u32,
                            rss_bytes: u.rss,
                            state,
                            nice,
                        },
                    );
                }
                let failed = self
                    .failed
                    .get(&info.job)
                    .is_some_and(|t| t.elapsed() < RETRY_AFTER);
                // What pins a job is only looked for in jobs worth moving.
                let movable = criu_ok
                    && info.cantmove.is_none()
                    && !failed
                    && (d < self.params.min_demand || job::movable::check(&procs).is_ok());
                jobs.push(balance::Job {
                    job: info.job.clone(),
                    local: info.home == x.node,
                    demand: d,
                    cpu_s: u.run_ns as f64 / 1e9,
                    rss: u.rss,
                    here_s: unix_millis().saturating_sub(info.since_ms) as f64 / 1000.0,
                    movable,
                    root: info.uid == 0,
                });
            }
            seen.insert(info.job, (now, u));
        }
        self.last = seen;
        self.failed.retain(|_, t| t.elapsed() < RETRY_AFTER);
        // Whatever else keeps the CPUs busy counts too.
        if let Some(c) = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| cpu_jiffies(&s))
        {
            if let Some((busy0, total0)) = self.cpu.replace(c) {
                let total = c.1.saturating_sub(total0).max(1) as f64;
                let busy_cpus =
                    c.0.saturating_sub(busy0) as f64 / total * crate::load::cpu_count() as f64;
                demand += (busy_cpus - ran).max(0.0);
            }
        }
        x.state.set_demand(demand as f32);
        (demand, jobs)
    }

    /// This node and the others as the policy sees them, with the agent
    /// address of each other node.
    fn nodes(&mut self, demand: f64) -> (balance::Node, Vec<(balance::Node, NodeId)>) {
        let v = self.load.sample();
        let me = balance::Node {
            name: self.load.exec.node.clone(),
            capacity: v.capacity(),
            speed: f64::from(v.speed),
            demand,
            mem_free_kib: v.mem_free_kib,
            mem_total_kib: v.mem_total_kib,
            accepts: false,
            root_jobs: v.root_jobs,
        };
        self.pending.retain(|(_, _, until)| Instant::now() < *until);
        let others = self
            .load
            .exec
            .state
            .view()
            .fresh_peers(FRESH)
            .into_iter()
            .map(|(id, l)| {
                let pending: f64 = self
                    .pending
                    .iter()
                    .filter(|(n, _, _)| *n == id.name)
                    .map(|(_, d, _)| d)
                    .sum();
                let node = balance::Node {
                    name: id.name.clone(),
                    capacity: l.capacity(),
                    speed: f64::from(l.speed),
                    demand: f64::from(l.demand) + pending,
                    mem_free_kib: l.mem_free_kib,
                    mem_total_kib: l.mem_total_kib,
                    accepts: l.criu
                        && !l.knobs.block
                        && !l.knobs.quiet
                        && self.load.cpu_features.fits(l.cpu_features),
                    root_jobs: l.root_jobs,
                };
                (node, id)
            })
            .collect();
        (me, others)
    }

    /// One round: measure, decide, and carry out the move if there is one.
    async fn round(&mut self) {
        let (demand, jobs) = self.sample();
        let running = self.load.exec.state.job_counts().0 as usize;
        self.maybe_recalibrate(demand, running).await;
        let knobs = self.load.exec.state.knobs();
        let (me, others) = self.nodes(demand);
        let plain: Vec<balance::Node> = others.iter().map(|(n, _)| n.clone()).collect();
        let Some(mv) =
            balance::decide(&me, &plain, &jobs, &knobs, &self.params, &mut rand10::rng())
        else {
            return;
        };
        let Some((_, to)) = others.into_iter().find(|(n, _)| n.name == mv.to) else {
            return;
        };
        let d = jobs
            .iter()
            .find(|j| j.job == mv.job)
            .map_or(1.0, |j| j.demand);
        self.carry_out(mv, to, d).await;
    }

    /// Hands the move to the job's driver and waits for its end.
    async fn carry_out(&mut self, mv: Move, to: NodeId, demand: f64) {
        let x = &self.load.exec;
        info!(job = %mv.job, to = %to.name, reason = ?mv.reason, gain_s = format!("{:.1}", mv.gain_s), "balancing: moving a job");
        let (tx, rx) = oneshot::channel();
        let order = MigrateOrder {
            job: mv.job.clone(),
            to: to.name.clone(),
            to_addr: to.addr,
            uid: 0,
        };
        if x.state
            .order_move(&mv.job, MigrateCmd { order, reply: tx })
            .await
            .is_err()
        {
            return;
        }
        self.pending
            .push((to.name.clone(), demand, Instant::now() + PENDING_FOR));
        match rx.await {
            Ok(Ok(done)) => {
                // What a move costs, learnt from the moves so far.
                let s = (done.total_ms.max(1) as f64) / 1000.0;
                let rate = done.bytes as f64 / s;
                self.params.rate = 0.5 * self.params.rate + 0.5 * rate.max(1e5);
            }
            Ok(Err((_, why))) => {
                info!(job = %mv.job, to = %to.name, %why, "balancing: the move did not happen");
                self.pending.retain(|(n, _, _)| *n != to.name);
                self.failed.insert(mv.job, Instant::now());
            }
            Err(_) => debug!(job = %mv.job, "the job ended while moving"),
        }
    }
}

/// Runs balancing rounds until `stop`.
pub(super) async fn run(mut b: Balancer, stop: CancellationToken) {
    loop {
        let pause = Duration::from_millis(rand10::rng().random_range(800..1200));
        if stop
            .run_until_cancelled(tokio::time::sleep(pause))
            .await
            .is_none()
        {
            break;
        }
        if stop.run_until_cancelled(b.round()).await.is_none() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_line() {
        let stat = "cpu  100 5 50 800 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(cpu_jiffies(stat), Some((161, 981)));
        assert_eq!(cpu_jiffies("intr 1\n"), None);
    }
}
