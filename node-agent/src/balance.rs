//! Automatic rebalancing, pure: what this node sees in, at most one move
//! out. The agent's balancer (`agent::balancer`) samples the jobs and the
//! cluster every second, asks [`decide`], carries out the move it returns
//! with the migration machinery, and asks again only once that move is over
//! (one decision at a time per node).
//!
//! The model, after openMosix/MOSIX and Kerrighed:
//! - **Demand.** A job's demand is the CPUs it wants: the time its threads
//!   ran or waited to run, per second of wall time (`/proc/…/schedstat`), so
//!   a CPU-bound job wants 1 however crowded its node is; a sleeping one
//!   wants ~0 and is never worth moving. A node's demand is its jobs' plus
//!   everything else runnable there.
//! - **Speed-normalised load.** `L = demand / (capacity × speed)`, with
//!   capacity the CPUs cluster jobs may use (the quota) and speed the
//!   calibrated yardstick.
//! - **Hysteresis** (Kerrighed's MOSIX balancer): a job of load `l` moves
//!   from `s` to `t` only if `L_t + 1.3 × l < L_s`, so two equally loaded
//!   nodes never trade jobs.
//! - **Gain beats cost.** The work a job has left is taken to be the work it
//!   has done here (a job that ran long will run long: openMosix's rule of
//!   thumb); it moves only if finishing that work on `t`, after the move's
//!   cost (resident memory over the measured transfer rate, plus the fixed
//!   cost of a freeze), is sooner than finishing it here, by at least a
//!   quarter ([`Params::min_gain`]).
//! - **Minimum stay.** A job that arrived or started less than
//!   [`Params::min_stay`] ago does not move by itself.
//! - **Few random candidates.** Among the targets that pass, one of the
//!   best [`Params::choices`] is picked at random, so that several busy nodes
//!   acting on the same picture do not all pick the same idle one.
//! - **Memory ushering.** A node whose free memory falls under
//!   [`Params::usher_below`] of its total moves its largest movable job to
//!   the node with the most room, whatever the CPU loads say, before the
//!   kernel's OOM killer would have to act.
//!
//! The admin knobs ([`Knobs`], openMosix's names) take effect here for the
//! automatic moves; `expel` and `bring` are orders, carried out by the agent.

use rand10::{Rng, RngExt};

pub use agent_control::knobs::{KnobAction, Knobs, KNOB_WORDS};

/// The policy's constants.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// The hysteresis factor on the job's own load (Kerrighed: 1.3).
    pub hysteresis: f64,
    /// A job that started or arrived less than this many seconds ago does
    /// not move by itself.
    pub min_stay: f64,
    /// Checkpoint transfer rate, bytes per second (measured by the moves
    /// so far).
    pub rate: f64,
    /// A move's cost besides the transfer, seconds (freeze, dump, restore).
    pub overhead: f64,
    /// Targets drawn from at random among the best.
    pub choices: usize,
    /// Free memory, as a fraction of the total, below which jobs are ushered away.
    pub usher_below: f64,
    /// A job below this demand (CPUs) is not moved for CPU.
    pub min_demand: f64,
    /// The least a move must gain, as a fraction of the time the job would
    /// take here: moves for a few percent (a job whose own I/O keeps its node
    /// busy, which would follow it) are not worth the freeze.
    pub min_gain: f64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            hysteresis: 1.3,
            min_stay: 10.0,
            rate: 8e6,
            overhead: 1.5,
            choices: 2,
            usher_below: 0.10,
            min_demand: 0.3,
            min_gain: 0.25,
        }
    }
}

/// A node as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Its name.
    pub name: String,
    /// CPUs cluster jobs may use there.
    pub capacity: f64,
    /// Relative speed of one CPU.
    pub speed: f64,
    /// CPUs wanted there now (cluster jobs and the rest).
    pub demand: f64,
    /// Free memory, KiB.
    pub mem_free_kib: u64,
    /// Total memory, KiB.
    pub mem_total_kib: u64,
    /// Whether it takes guests from the balancer: CRIU works there and it
    /// is neither `block` nor `quiet`.
    pub accepts: bool,
    /// Whether root's jobs may run there.
    pub root_jobs: bool,
}

impl Node {
    /// Speed-normalised load.
    pub fn load(&self) -> f64 {
        self.demand / (self.capacity.max(0.01) * self.speed.max(1e-6))
    }

    /// How fast one CPU's worth of a job runs here, with `demand` wanted in all.
    fn rate(&self, demand: f64) -> f64 {
        self.speed.max(1e-6) * (self.capacity.max(0.01) / demand.max(1e-6)).min(1.0)
    }
}

/// A job running on this node, as the balancer sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its id.
    pub job: String,
    /// Whether its home is this node.
    pub local: bool,
    /// CPUs it wants.
    pub demand: f64,
    /// CPU seconds it has used on this node.
    pub cpu_s: f64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Seconds since it started or arrived here.
    pub here_s: f64,
    /// Whether it can move at all (not locked, nothing that pins it, CRIU works here).
    pub movable: bool,
    /// Whether it is root's (it goes only where root's jobs may run).
    pub root: bool,
}

impl Node {
    /// Whether `job` may move here.
    fn takes(&self, job: &Job) -> bool {
        self.accepts && (self.root_jobs || !job.root)
    }
}

/// Why a move was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The job finishes sooner there.
    Load,
    /// This node is short of memory.
    Memory,
}

/// One move: `job` to the node `to`.
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    /// The job.
    pub job: String,
    /// Its target.
    pub to: String,
    /// Why.
    pub reason: Reason,
    /// Seconds it is expected to finish sooner (for the log).
    pub gain_s: f64,
}

/// Whether the balancer may move `job` by itself under `knobs`.
fn may_leave(job: &Job, knobs: &Knobs, p: &Params) -> bool {
    job.movable && job.here_s >= p.min_stay && !knobs.stay && !(knobs.lstay && job.local)
}

/// The one move this node should make now, if any.
pub fn decide(
    me: &Node,
    others: &[Node],
    jobs: &[Job],
    knobs: &Knobs,
    p: &Params,
    rng: &mut impl Rng,
) -> Option<Move> {
    if knobs.quiet {
        return None;
    }
    let leaving: Vec<&Job> = jobs.iter().filter(|j| may_leave(j, knobs, p)).collect();
    if leaving.is_empty() {
        return None;
    }
    let targets: Vec<&Node> = others.iter().filter(|n| n.accepts).collect();
    if let Some(m) = usher(me, &targets, &leaving, p) {
        return Some(m);
    }
    // (gain, job, the targets that pass with their gains, best first)
    type Fits<'a> = Vec<(f64, &'a Node)>;
    let mut best: Option<(f64, &Job, Fits)> = None;
    for job in leaving.iter().filter(|j| j.demand >= p.min_demand) {
        let cost = p.overhead + job.rss as f64 / p.rate.max(1.0);
        // The work left, in reference CPU seconds.
        let work = job.cpu_s * me.speed;
        let here = work / me.rate(me.demand.max(job.demand));
        let mut fits: Vec<(f64, &Node)> = targets
            .iter()
            .copied()
            .filter(|t| t.takes(job))
            .filter(|t| {
                let l_job = job.demand / (t.capacity.max(0.01) * t.speed.max(1e-6));
                t.load() + p.hysteresis * l_job < me.load()
            })
            .map(|t| (here - (cost + work / t.rate(t.demand + job.demand)), t))
            .filter(|(gain, _)| *gain > 0.0 && *gain >= p.min_gain * here)
            .collect();
        if fits.is_empty() {
            continue;
        }
        fits.sort_by(|a, b| b.0.total_cmp(&a.0));
        if best.as_ref().is_none_or(|(g, _, _)| fits[0].0 > *g) {
            best = Some((fits[0].0, job, fits));
        }
    }
    let (_, job, mut fits) = best?;
    fits.truncate(p.choices.max(1));
    let (gain, to) = fits[rng.random_range(0..fits.len())];
    Some(Move {
        job: job.job.clone(),
        to: to.name.clone(),
        reason: Reason::Load,
        gain_s: gain,
    })
}

/// The largest job that may leave, to the node with the most room for it,
/// when this node is short of memory.
fn usher(me: &Node, targets: &[&Node], leaving: &[&Job], p: &Params) -> Option<Move> {
    if me.mem_total_kib == 0 || (me.mem_free_kib as f64) >= p.usher_below * me.mem_total_kib as f64
    {
        return None;
    }
    let job = leaving.iter().max_by_key(|j| j.rss)?;
    let need = job.rss / 1024;
    let to = targets
        .iter()
        .filter(|t| t.takes(job))
        .filter(|t| {
            // Room for the job, and still above the threshold afterwards.
            t.mem_free_kib.saturating_sub(need) as f64 >= p.usher_below * t.mem_total_kib as f64
        })
        .max_by_key(|t| t.mem_free_kib)?;
    Some(Move {
        job: job.job.clone(),
        to: to.name.clone(),
        reason: Reason::Memory,
        gain_s: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::rngs::StdRng;
    use rand10::SeedableRng;

    fn node(name: &str, demand: f64) -> Node {
        Node {
            name: name.into(),
            capacity: 1.0,
            speed: 1.0,
            demand,
            mem_free_kib: 512 << 10,
            mem_total_kib: 1 << 20,
            accepts: true,
            root_jobs: true,
        }
    }

    fn job(name: &str, demand: f64, cpu_s: f64) -> Job {
        Job {
            job: name.into(),
            local: true,
            demand,
            cpu_s,
            rss: 2 << 20,
            here_s: 60.0,
            movable: true,
            root: false,
        }
    }

    fn decide_one(me: &Node, others: &[Node], jobs: &[Job], knobs: &Knobs) -> Option<Move> {
        decide(
            me,
            others,
            jobs,
            knobs,
            &Params::default(),
            &mut StdRng::seed_from_u64(7),
        )
    }

    #[test]
    fn a_crowded_node_sends_a_job_to_an_idle_one() {
        let jobs: Vec<Job> = (0..6).map(|i| job(&format!("j{i}"), 1.0, 5.0)).collect();
        let m = decide_one(&node("a", 6.0), &[node("b", 0.0)], &jobs, &Knobs::default())
            .expect("a move");
        assert_eq!((m.to.as_str(), m.reason), ("b", Reason::Load));
        assert!(m.gain_s > 0.0);
    }

    #[test]
    fn equal_loads_never_trade_jobs() {
        let jobs = [job("j", 1.0, 500.0)];
        assert_eq!(
            decide_one(&node("a", 1.0), &[node("b", 1.0)], &jobs, &Knobs::default()),
            None
        );
        // 2 against 1 is not worth it either (1 + 1.3 > 2)…
        let two = [job("j1", 1.0, 500.0), job("j2", 1.0, 500.0)];
        assert_eq!(
            decide_one(&node("a", 2.0), &[node("b", 1.0)], &two, &Knobs::default()),
            None
        );
        // …but 2 against 0 is.
        assert!(decide_one(&node("a", 2.0), &[node("b", 0.0)], &two, &Knobs::default()).is_some());
    }

    #[test]
    fn spreading_six_jobs_over_three_nodes_ends_even() {
        let mut loads = [6.0, 0.0, 0.0];
        let names = ["a", "b", "c"];
        let mut rng = StdRng::seed_from_u64(1);
        let mut moves = 0;
        // Each node decides in turn until nobody moves anything.
        loop {
            let mut moved = false;
            for i in 0..3 {
                let jobs: Vec<Job> = (0..loads[i] as usize)
                    .map(|k| job(&format!("{}{k}", names[i]), 1.0, 50.0))
                    .collect();
                let others: Vec<Node> = (0..3)
                    .filter(|&k| k != i)
                    .map(|k| node(names[k], loads[k]))
                    .collect();
                let p = Params::default();
                if let Some(m) = decide(
                    &node(names[i], loads[i]),
                    &others,
                    &jobs,
                    &Knobs::default(),
                    &p,
                    &mut rng,
                ) {
                    let t = names.iter().position(|n| *n == m.to).unwrap();
                    loads[i] -= 1.0;
                    loads[t] += 1.0;
                    moves += 1;
                    moved = true;
                }
            }
            if !moved {
                break;
            }
            assert!(moves < 20, "no end to the moves: {loads:?}");
        }
        assert_eq!(loads, [2.0, 2.0, 2.0]);
        // Four moves are the fewest; a random pick may cost one or two more.
        assert!((4..=6).contains(&moves), "{moves} moves");
    }

    #[test]
    fn young_idle_or_pinned_jobs_stay() {
        let others = [node("b", 0.0)];
        let me = node("a", 3.0);
        let mut young = job("young", 1.0, 5.0);
        young.here_s = 2.0;
        let mut idle = job("idle", 0.01, 5.0);
        idle.here_s = 600.0;
        let mut locked = job("locked", 1.0, 5.0);
        locked.movable = false;
        let fresh = job("fresh", 1.0, 0.1);
        let jobs = [young, idle, locked, fresh];
        assert_eq!(
            decide_one(&me, &others, &jobs, &Knobs::default()),
            None,
            "a job that just came, one that sleeps, a locked one and one whose work is shorter than a move"
        );
    }

    #[test]
    fn knobs_keep_jobs_and_refuse_guests() {
        let jobs = [job("j1", 1.0, 50.0), job("j2", 1.0, 50.0)];
        let me = node("a", 2.0);
        let idle = [node("b", 0.0)];
        for k in [
            Knobs {
                stay: true,
                ..Knobs::default()
            },
            Knobs {
                lstay: true,
                ..Knobs::default()
            },
            Knobs {
                quiet: true,
                ..Knobs::default()
            },
        ] {
            assert_eq!(decide_one(&me, &idle, &jobs, &k), None, "{k:?}");
        }
        // lstay lets guests go.
        let mut guests = jobs.clone();
        guests[1].local = false;
        let lstay = Knobs {
            lstay: true,
            ..Knobs::default()
        };
        assert_eq!(
            decide_one(&me, &idle, &guests, &lstay).map(|m| m.job),
            Some("j2".into())
        );
        // A target that does not accept guests is never chosen.
        let mut blocked = idle.clone();
        blocked[0].accepts = false;
        assert_eq!(decide_one(&me, &blocked, &jobs, &Knobs::default()), None);
        // Root's job goes only where root's jobs run; another's still goes.
        let mut no_root = idle.clone();
        no_root[0].root_jobs = false;
        let roots: Vec<Job> = jobs
            .iter()
            .cloned()
            .map(|j| Job { root: true, ..j })
            .collect();
        assert_eq!(decide_one(&me, &no_root, &roots, &Knobs::default()), None);
        assert!(decide_one(&me, &no_root, &jobs, &Knobs::default()).is_some());
    }

    #[test]
    fn a_small_gain_is_not_worth_a_move() {
        // A job whose node is a little busier than one CPU (its own I/O in
        // the kernel, say) would finish only a few percent sooner elsewhere.
        let jobs = [job("tar", 0.6, 20.0)];
        assert_eq!(
            decide_one(&node("a", 1.3), &[node("b", 0.1)], &jobs, &Knobs::default()),
            None
        );
    }

    #[test]
    fn a_faster_node_takes_work_at_equal_count() {
        // One job each, but b is three times as fast: the job there finishes
        // sooner even after the move.
        let mut fast = node("b", 0.0);
        fast.speed = 3.0;
        let jobs = [job("j", 1.0, 100.0)];
        let m = decide_one(&node("a", 1.0), &[fast], &jobs, &Knobs::default());
        assert_eq!(m.map(|m| m.to), Some("b".into()));
    }

    #[test]
    fn short_of_memory_ushers_the_largest_job_to_the_roomiest_node() {
        let mut me = node("a", 1.0);
        me.mem_free_kib = 50 << 10;
        let mut big = job("big", 0.0, 0.0);
        big.rss = 300 << 20;
        let small = job("small", 0.0, 0.0);
        let mut tight = node("b", 0.0);
        tight.mem_free_kib = 200 << 10;
        let roomy = node("c", 3.0);
        let m = decide_one(&me, &[tight, roomy], &[small, big], &Knobs::default()).unwrap();
        assert_eq!(
            (m.job.as_str(), m.to.as_str(), m.reason),
            ("big", "c", Reason::Memory)
        );
    }
}
