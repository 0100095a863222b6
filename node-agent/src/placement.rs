//! Where a job should run. Pure: a snapshot of candidates in, an index out.
//!
//! The score of a node is the expected time to finish one unit of work if the
//! job were started there now: each of the `n` cluster jobs (counting the new
//! one, and jobs just placed there that the node's gossip does not show yet)
//! gets `min(1, capacity / n, cpus / (n + background))` of a CPU, where
//! `capacity` is the CPU quota in CPUs and `background` the node's other
//! runnable work; time = 1 / (speed × share). Nodes short of memory are only
//! used when every node is.
//!
//! Power of k choices: the local node plus `k` random others are scored, not
//! every node, so that several launchers acting on the same (slightly stale)
//! picture do not all pick the single best node.
//!
//! The agent hands over what it knows ([`Known`]: each node's identity,
//! liveness, last load vector and the jobs it placed there); [`named`] finds
//! a node the caller asked for, [`candidates`] turns the live nodes into
//! [`Candidate`]s and [`choose`] picks one.

use rand10::seq::index::sample;
use rand10::Rng;

use crate::load::LoadVector;
use crate::membership::{node_number, NodeId};

/// Below this much free memory a node is avoided.
pub const MIN_FREE_KIB: u64 = 64 * 1024;
/// Random candidates besides the local node.
pub const DEFAULT_CHOICES: usize = 3;

/// A node as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Node name.
    pub name: String,
    /// CPUs.
    pub cpus: u32,
    /// Relative CPU speed.
    pub speed: f32,
    /// CPU quota for cluster jobs, percent of all CPUs.
    pub cpu_quota: u32,
    /// Cluster jobs running there, plus jobs just placed there.
    pub jobs: u32,
    /// Runnable tasks that are not cluster jobs.
    pub background: f32,
    /// Free memory in KiB.
    pub mem_free_kib: u64,
    /// Whether it can take moved jobs (CRIU works there).
    pub migratable: bool,
    /// Its CPU's features (see [`crate::cpu`]).
    pub cpu_features: crate::cpu::Features,
}

/// A job this agent placed on a node and has not seen end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The job id.
    pub job: String,
    /// The node's start sequence number for it (see
    /// [`LoadVector::started`]), once the node said it started.
    pub seq: Option<u64>,
}

/// A node as the agent knows it when a job is placed.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// Its identity.
    pub id: &'a NodeId,
    /// Declared dead by membership.
    pub down: bool,
    /// The last load vector heard from a node of this name, with the
    /// identity that sent it (an earlier incarnation's does not count).
    pub heard: Option<(&'a NodeId, &'a LoadVector)>,
    /// Jobs this agent placed there that have not ended.
    pub placed: &'a [Placed],
}

/// The live node `want` names: by name, node number, `IP:PORT` or IP.
pub fn named<'a>(known: &[Known<'a>], want: &str) -> Option<&'a NodeId> {
    known.iter().filter(|k| !k.down).map(|k| k.id).find(|id| {
        id.name == want
            || node_number(&id.addr).to_string() == want
            || id.addr.to_string() == want
            || id.addr.ip().to_string() == want
    })
}

/// The live nodes placement may choose from, with the identities they
/// stand for and the index of the local node (the first one named `me`).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// One per live node whose load is known.
    pub candidates: Vec<Candidate>,
    /// The identity of each candidate, same order.
    pub ids: Vec<NodeId>,
    /// Which candidate is the local node.
    pub local: Option<usize>,
}

/// Turns what the agent knows into candidates: every node not declared down
/// whose current load is known, that takes guests (not `block`, unless
/// it is `me`) and, for a job of root (`root`), root's jobs (`local` for the
/// node named `me`, the vector
/// it last sent for the others), with the jobs placed there that its vector
/// does not count yet added to its jobs.
pub fn candidates(me: &str, local: &LoadVector, known: &[Known], root: bool) -> Candidates {
    let mut out = Candidates::default();
    for k in known.iter().filter(|k| !k.down) {
        let load = if k.id.name == me {
            Some(local)
        } else {
            k.heard
                .filter(|(from, _)| from.started_ms == k.id.started_ms)
                .map(|(_, l)| l)
        };
        let Some(load) = load else { continue };
        // A node that takes no guests is no one's choice but its own.
        if load.knobs.block && k.id.name != me {
            continue;
        }
        if root && !load.root_jobs {
            continue;
        }
        let pending = k
            .placed
            .iter()
            // Placed here but not yet counted by the load vector: not
            // started yet, or started after the vector was made.
            .filter(|x| x.seq.is_none_or(|q| q > load.started))
            .count() as u32;
        // The 1-minute average is steadier than the instantaneous count.
        let background = (load.loadavg - load.jobs as f32).max(0.0);
        out.candidates.push(Candidate {
            name: k.id.name.clone(),
            cpus: load.cpus,
            speed: load.speed,
            cpu_quota: load.cpu_quota,
            jobs: load.jobs + pending,
            background,
            mem_free_kib: load.mem_free_kib,
            migratable: load.criu,
            cpu_features: load.cpu_features,
        });
        out.ids.push(k.id.clone());
    }
    out.local = out.ids.iter().position(|id| id.name == me);
    out
}

/// Expected time to finish a unit of work started now on `c` (lower is better).
pub fn expected_finish(c: &Candidate) -> f64 {
    let cpus = f64::from(c.cpus.max(1));
    let capacity = cpus * f64::from(c.cpu_quota.clamp(1, 100)) / 100.0;
    let n = f64::from(c.jobs) + 1.0;
    let share = (capacity / n)
        .min(cpus / (n + f64::from(c.background.max(0.0))))
        .min(1.0);
    1.0 / (f64::from(c.speed).max(1e-6) * share)
}

/// Picks among `candidates` (non-empty): `local` (if any) plus up to `k`
/// random others; returns the index of the best.
pub fn choose(
    candidates: &[Candidate],
    local: Option<usize>,
    k: usize,
    rng: &mut impl Rng,
) -> usize {
    assert!(
        !candidates.is_empty(),
        "placement needs at least one candidate"
    );
    let any_roomy = candidates.iter().any(|c| c.mem_free_kib >= MIN_FREE_KIB);
    let eligible: Vec<usize> = (0..candidates.len())
        .filter(|&i| !any_roomy || candidates[i].mem_free_kib >= MIN_FREE_KIB)
        .collect();
    let others: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| Some(i) != local)
        .collect();
    let mut picked: Vec<usize> = sample(rng, others.len(), k.min(others.len()))
        .into_iter()
        .map(|j| others[j])
        .collect();
    if let Some(l) = local.filter(|l| eligible.contains(l)) {
        picked.push(l);
    }
    // The local node goes last so that on a tie a remote idle node is not
    // preferred over running here (no network round trip), unless it is better.
    let mut best = picked[0];
    for &i in &picked[1..] {
        let (a, b) = (
            expected_finish(&candidates[i]),
            expected_finish(&candidates[best]),
        );
        if a < b || (a == b && Some(i) == local) {
            best = i;
        }
    }
    best
}

/// The node other than `current` where a job moved now would finish first
/// (`omctl migrate JOB best`), among those that can take moved jobs and
/// have every CPU feature `current` has.
pub fn best_elsewhere(c: &Candidates, current: &str) -> Option<NodeId> {
    let from = c
        .ids
        .iter()
        .position(|id| id.name == current)
        .map(|i| c.candidates[i].cpu_features)
        .unwrap_or_default();
    (0..c.candidates.len())
        .filter(|&i| {
            c.ids[i].name != current
                && c.candidates[i].migratable
                && from.fits(c.candidates[i].cpu_features)
        })
        .min_by(|&a, &b| {
            expected_finish(&c.candidates[a]).total_cmp(&expected_finish(&c.candidates[b]))
        })
        .map(|i| c.ids[i].clone())
}

/// Round-robin, for comparison in the benchmark.
pub fn round_robin(n: usize, counter: &mut usize) -> usize {
    let i = *counter % n;
    *counter += 1;
    i
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand10::rngs::StdRng;
    use rand10::SeedableRng;

    fn node(name: &str, cpus: u32, speed: f32, quota: u32, jobs: u32) -> Candidate {
        Candidate {
            name: name.into(),
            cpus,
            speed,
            cpu_quota: quota,
            jobs,
            background: 0.0,
            mem_free_kib: 1 << 20,
            migratable: true,
            cpu_features: Default::default(),
        }
    }

    #[test]
    fn idle_fast_node_wins() {
        let nodes = vec![node("slow", 1, 1.0, 100, 0), node("fast", 1, 2.0, 100, 0)];
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(choose(&nodes, Some(0), 3, &mut rng), 1);
    }

    #[test]
    fn quota_and_jobs_count() {
        // A busy 4-CPU node still beats a 1-CPU node capped to 10 %.
        let nodes = vec![node("capped", 1, 1.0, 10, 0), node("big", 4, 1.0, 100, 3)];
        let mut rng = StdRng::seed_from_u64(2);
        assert_eq!(choose(&nodes, Some(0), 3, &mut rng), 1);
        assert!(expected_finish(&nodes[0]) > expected_finish(&nodes[1]));
    }

    #[test]
    fn burst_with_optimistic_increment_spreads_evenly() {
        let mut nodes: Vec<Candidate> = (0..4)
            .map(|i| node(&format!("n{i}"), 1, 1.0, 100, 0))
            .collect();
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..8 {
            let i = choose(&nodes, Some(0), 3, &mut rng);
            nodes[i].jobs += 1;
        }
        assert!(nodes.iter().all(|n| n.jobs == 2), "{nodes:?}");
    }

    #[test]
    fn low_memory_avoided_unless_all_low() {
        let mut nodes = vec![node("full", 8, 4.0, 100, 0), node("roomy", 1, 1.0, 100, 0)];
        nodes[0].mem_free_kib = 1024;
        let mut rng = StdRng::seed_from_u64(4);
        assert_eq!(choose(&nodes, None, 3, &mut rng), 1);
        nodes[1].mem_free_kib = 1024;
        assert_eq!(choose(&nodes, None, 3, &mut rng), 0);
    }

    fn id(name: &str, last: u8, started_ms: u64) -> NodeId {
        NodeId {
            name: name.into(),
            addr: std::net::SocketAddr::from(([10, 0, 1, last], 7946)),
            started_ms,
            bump: 0,
        }
    }

    fn vector(jobs: u32, started: u64, loadavg: f32) -> LoadVector {
        LoadVector {
            cpus: 2,
            speed: 1.0,
            loadavg,
            runnable: 0,
            mem_total_kib: 1 << 21,
            mem_free_kib: 1 << 20,
            jobs,
            started,
            cpu_quota: 100,
            share: None,
            criu: false,
            ..Default::default()
        }
    }

    fn placed(job: &str, seq: Option<u64>) -> Placed {
        Placed {
            job: job.into(),
            seq,
        }
    }

    #[test]
    fn candidates_are_live_nodes_with_a_current_load() {
        let (me, up, down, silent, reborn) = (
            id("me", 1, 1),
            id("up", 2, 1),
            id("down", 3, 1),
            id("silent", 4, 1),
            id("reborn", 5, 2),
        );
        let (old_reborn, local, heard) = (id("reborn", 5, 1), vector(1, 7, 1.0), vector(0, 3, 2.5));
        let mine = [placed("me-1", Some(7)), placed("me-2", None)];
        let there = [placed("me-3", Some(3)), placed("me-4", Some(4))];
        let known = [
            Known {
                id: &me,
                down: false,
                heard: None,
                placed: &mine,
            },
            Known {
                id: &up,
                down: false,
                heard: Some((&up, &heard)),
                placed: &there,
            },
            Known {
                id: &down,
                down: true,
                heard: Some((&down, &heard)),
                placed: &[],
            },
            Known {
                id: &silent,
                down: false,
                heard: None,
                placed: &[],
            },
            Known {
                id: &reborn,
                down: false,
                heard: Some((&old_reborn, &heard)),
                placed: &[],
            },
        ];
        let c = candidates("me", &local, &known, false);
        assert_eq!(c.ids, vec![me.clone(), up.clone()]);
        assert_eq!(c.local, Some(0));
        // Ours: 1 running + `me-2` not started yet (`me-1` is counted).
        assert_eq!((c.candidates[0].jobs, c.candidates[0].background), (2, 0.0));
        // Theirs: 0 running + `me-4`, started after the vector was made.
        assert_eq!((c.candidates[1].jobs, c.candidates[1].background), (1, 2.5));

        assert_eq!(named(&known, "up"), Some(&up));
        assert_eq!(named(&known, "258"), Some(&up), "by node number");
        assert_eq!(named(&known, "10.0.1.2"), Some(&up));
        assert_eq!(named(&known, "10.0.1.2:7946"), Some(&up));
        assert_eq!(named(&known, "down"), None, "a dead node is not named");
    }

    #[test]
    fn a_blocked_node_is_a_candidate_only_for_itself() {
        let (me, other) = (id("me", 1, 1), id("other", 2, 1));
        let mut blocked = vector(0, 0, 0.0);
        blocked.knobs.block = true;
        let known = [
            Known {
                id: &me,
                down: false,
                heard: None,
                placed: &[],
            },
            Known {
                id: &other,
                down: false,
                heard: Some((&other, &blocked)),
                placed: &[],
            },
        ];
        assert_eq!(
            candidates("me", &blocked, &known, false).ids,
            vec![me.clone()]
        );
    }

    #[test]
    fn best_elsewhere_skips_a_cpu_without_the_jobs_features() {
        use crate::cpu::Features;
        let (rich, poor) = (Features(0b111), Features(0b001));
        let mut a = node("a", 1, 1.0, 100, 3);
        a.cpu_features = rich;
        // b is the fastest and idle, but lacks features a has.
        let mut b = node("b", 4, 2.0, 100, 0);
        b.cpu_features = poor;
        let mut c = node("c", 1, 1.0, 100, 1);
        c.cpu_features = rich;
        let cands = Candidates {
            candidates: vec![a, b, c],
            ids: vec![id("a", 1, 1), id("b", 2, 1), id("c", 3, 1)],
            local: Some(0),
        };
        assert_eq!(best_elsewhere(&cands, "a").unwrap().name, "c");
        // From a poorer CPU, anywhere with at least its features.
        assert_eq!(best_elsewhere(&cands, "b").unwrap().name, "c");
    }

    #[test]
    fn local_wins_ties() {
        let nodes = vec![node("a", 1, 1.0, 100, 0), node("b", 1, 1.0, 100, 0)];
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..10 {
            assert_eq!(choose(&nodes, Some(1), 3, &mut rng), 1);
        }
    }
}
