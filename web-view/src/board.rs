//! The picture the page shows, with no I/O: the cluster's status and jobs
//! at one moment, the balance efficiency figure, and the markers (joins,
//! deaths, knob changes, migrations) found by comparing two pictures.
//!
//! Migrations are found by comparison rather than taken from the serving
//! agent's own change stream, because most moves happen between two other
//! nodes; any agent sees them the same way.

use agent_control::model::{ClusterStatus, JobInfo, NodeStatus};
use serde::Serialize;

/// What happened, on a chart or the migration monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MarkerKind {
    /// A node appeared.
    Join,
    /// A node came back (alive after suspect or down).
    Up,
    /// A node is suspected.
    Suspect,
    /// A node was declared down.
    Down,
    /// A node's knobs changed.
    Knob,
    /// A job moved.
    Migration,
    /// A move asked for here did not happen.
    MoveFailed,
}

/// One event worth a mark on the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Marker {
    /// When, Unix ms.
    pub at_ms: u64,
    /// What.
    pub kind: MarkerKind,
    /// The node (a migration's target).
    pub node: String,
    /// The job, for a migration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// A migration's source node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// For a person.
    pub text: String,
}

/// The cluster at one moment, as the page gets it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Board {
    /// Grows with every change.
    pub seq: u64,
    /// When, Unix ms.
    pub at_ms: u64,
    /// Nodes as the serving agent sees them.
    pub status: ClusterStatus,
    /// Every cluster job.
    pub jobs: Vec<JobInfo>,
    /// Grows when the job table changes (the event stream sends the jobs
    /// only then).
    pub jobs_seq: u64,
    /// Balance efficiency, percent (see [`efficiency`]); `None` with no
    /// node to judge.
    pub efficiency: Option<f64>,
    /// The latest markers, oldest first.
    pub markers: Vec<Marker>,
    /// The machines the boot server saw, or why there are none to show.
    pub machines: Result<Vec<crate::boot::Machine>, String>,
}

/// A node's speed-normalised load: CPUs wanted over what its quota and
/// speed offer.
pub fn normalised_load(n: &NodeStatus) -> Option<f64> {
    let l = n.load.as_ref()?;
    let offer = l.capacity().max(0.01) * f64::from(l.speed).max(1e-6);
    Some(f64::from(l.demand) / offer)
}

/// Balance efficiency, percent: the mean over the highest speed-normalised
/// load of the live nodes (100 when every node carries the same share, or
/// when nothing runs; 100/N when one node of N carries it all).
pub fn efficiency(status: &ClusterStatus) -> Option<f64> {
    efficiency_ratio(status).map(|r| 100.0 * r)
}

/// [`efficiency`] as a ratio (1 for an even spread).
pub fn efficiency_ratio(status: &ClusterStatus) -> Option<f64> {
    let loads: Vec<f64> = status
        .nodes
        .iter()
        .filter(|n| n.state == "alive")
        .filter_map(normalised_load)
        .collect();
    if loads.is_empty() {
        return None;
    }
    let max = loads.iter().copied().fold(0.0, f64::max);
    if max <= 1e-3 {
        return Some(1.0);
    }
    let mean = loads.iter().sum::<f64>() / loads.len() as f64;
    Some(mean / max)
}

/// Joins, liveness changes and knob changes between two statuses.
pub fn node_markers(old: &ClusterStatus, new: &ClusterStatus, at_ms: u64) -> Vec<Marker> {
    let mut out = Vec::new();
    let mark = |kind, node: &str, text: String| Marker {
        at_ms,
        kind,
        node: node.to_string(),
        job: None,
        from: None,
        text,
    };
    for n in &new.nodes {
        let Some(o) = old.nodes.iter().find(|o| o.name == n.name) else {
            out.push(mark(
                MarkerKind::Join,
                &n.name,
                format!("{} joined", n.name),
            ));
            continue;
        };
        if o.state != n.state {
            let kind = match n.state.as_str() {
                "down" => MarkerKind::Down,
                "suspect" => MarkerKind::Suspect,
                _ => MarkerKind::Up,
            };
            out.push(mark(kind, &n.name, format!("{} is {}", n.name, n.state)));
        }
        let knobs = |s: &NodeStatus| s.load.as_ref().map(|l| l.knobs);
        if let (Some(a), Some(b)) = (knobs(o), knobs(n)) {
            if a != b {
                out.push(mark(
                    MarkerKind::Knob,
                    &n.name,
                    format!("{} knobs: {}", n.name, b.describe()),
                ));
            }
        }
    }
    out
}

/// The moves between two job tables: jobs that run on another node now.
pub fn job_markers(old: &[JobInfo], new: &[JobInfo], at_ms: u64) -> Vec<Marker> {
    new.iter()
        .filter_map(|j| {
            let o = old.iter().find(|o| o.job == j.job)?;
            (o.node != j.node).then(|| Marker {
                at_ms,
                kind: MarkerKind::Migration,
                node: j.node.clone(),
                job: Some(j.job.clone()),
                from: Some(o.node.clone()),
                text: format!("job {} moved from {} to {}", j.job, o.node, j.node),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_control::model::LoadVector;

    fn node(name: &str, state: &str, demand: f32, speed: f32) -> NodeStatus {
        NodeStatus {
            name: name.into(),
            number: 1,
            addr: "10.0.0.1:7946".into(),
            state: state.into(),
            local: false,
            load: Some(LoadVector {
                cpus: 1,
                speed,
                cpu_quota: 100,
                demand,
                ..Default::default()
            }),
            load_age_ms: Some(0),
        }
    }

    fn status(nodes: Vec<NodeStatus>) -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            node: "a".into(),
            nodes,
        }
    }

    #[test]
    fn efficiency_is_full_when_speed_normalised_loads_are_equal() {
        let even = status(vec![
            node("a", "alive", 2.0, 1.0),
            node("b", "alive", 4.0, 2.0),
        ]);
        assert_eq!(efficiency(&even), Some(100.0));
        let one = status(vec![
            node("a", "alive", 3.0, 1.0),
            node("b", "alive", 0.0, 1.0),
            node("c", "alive", 0.0, 1.0),
        ]);
        assert!((efficiency(&one).unwrap() - 100.0 / 3.0).abs() < 1e-9);
        // A dead node's last vector does not count.
        let dead = status(vec![
            node("a", "alive", 1.0, 1.0),
            node("b", "down", 0.0, 1.0),
        ]);
        assert_eq!(efficiency(&dead), Some(100.0));
        assert_eq!(
            efficiency(&status(vec![node("a", "alive", 0.0, 1.0)])),
            Some(100.0)
        );
        assert_eq!(efficiency(&status(vec![])), None);
    }

    #[test]
    fn markers_name_joins_deaths_knobs_and_moves() {
        let old = status(vec![
            node("a", "alive", 0.0, 1.0),
            node("b", "alive", 0.0, 1.0),
        ]);
        let mut blocked = node("a", "alive", 0.0, 1.0);
        if let Some(l) = blocked.load.as_mut() {
            l.knobs.block = true;
        }
        let new = status(vec![
            blocked,
            node("b", "down", 0.0, 1.0),
            node("c", "alive", 0.0, 1.0),
        ]);
        let texts: Vec<String> = node_markers(&old, &new, 5)
            .into_iter()
            .map(|m| m.text)
            .collect();
        assert_eq!(texts, ["a knobs: block", "b is down", "c joined"]);

        let job = |id: &str, node: &str| JobInfo {
            job: id.into(),
            argv: vec![],
            uid: 0,
            node: node.into(),
            home: "a".into(),
            pid: Some(1),
            started_ms: 0,
            moves: 0,
            cantmove: None,
            since_ms: 0,
            usage: None,
        };
        let moved = job_markers(
            &[job("j1", "a"), job("j2", "a")],
            &[job("j1", "b"), job("j2", "a")],
            7,
        );
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].text, "job j1 moved from a to b");
        assert_eq!(
            (moved[0].from.as_deref(), moved[0].node.as_str()),
            (Some("a"), "b")
        );
    }
}
