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

use rand10::seq::index::sample;
use rand10::Rng;

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

    #[test]
    fn local_wins_ties() {
        let nodes = vec![node("a", 1, 1.0, 100, 0), node("b", 1, 1.0, 100, 0)];
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..10 {
            assert_eq!(choose(&nodes, Some(1), 3, &mut rng), 1);
        }
    }
}
