//! `GET /metrics`: the cluster in Prometheus' text exposition format, no I/O.
//! Names follow Prometheus' conventions: the `omcluster_` prefix, base
//! units in the name (`_bytes`, `_ratio`), `_total` for counters; one
//! `node` label per node, so one scrape job covers the cluster.

use std::collections::BTreeMap;
use std::fmt::Write;

use agent_control::model::ClusterStatus;

use crate::board::{self, Marker, MarkerKind};

/// What the serving agent counted since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Moves seen, by outcome (`moved`, `failed`).
    pub migrations: BTreeMap<&'static str, u64>,
    /// Membership changes seen, by kind (`join`, `suspect`, `down`, `up`).
    pub membership: BTreeMap<&'static str, u64>,
    /// Knob changes seen.
    pub knob_changes: u64,
}

impl Counters {
    /// Counts what `markers` say happened.
    pub fn count(&mut self, markers: &[Marker]) {
        for m in markers {
            match m.kind {
                MarkerKind::Migration => *self.migrations.entry("moved").or_default() += 1,
                MarkerKind::MoveFailed => *self.migrations.entry("failed").or_default() += 1,
                MarkerKind::Join => *self.membership.entry("join").or_default() += 1,
                MarkerKind::Up => *self.membership.entry("up").or_default() += 1,
                MarkerKind::Suspect => *self.membership.entry("suspect").or_default() += 1,
                MarkerKind::Down => *self.membership.entry("down").or_default() += 1,
                MarkerKind::Knob => self.knob_changes += 1,
            }
        }
    }
}

/// A label value, escaped as the format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn line(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let value = if value.is_finite() { value } else { 0.0 };
        if labels.is_empty() {
            let _ = writeln!(self.out, "{name} {value}");
        } else {
            let _ = writeln!(self.out, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

/// The exposition of `status` and `counters`.
pub fn render(
    status: &ClusterStatus,
    counters: &Counters,
    machines: Option<&[crate::boot::Machine]>,
    history_bytes: Option<usize>,
) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let cluster = status.cluster.as_str();

    f.head(
        "omcluster_node_up",
        "gauge",
        "Whether the node is alive (1) or suspected or down (0).",
    );
    for n in &status.nodes {
        let up = if n.state == "alive" { 1.0 } else { 0.0 };
        f.line(
            "omcluster_node_up",
            &[("cluster", cluster), ("node", &n.name)],
            up,
        );
    }
    type Gauge = (
        &'static str,
        &'static str,
        fn(&agent_control::model::LoadVector) -> f64,
    );
    let gauges: [Gauge; 9] = [
        ("omcluster_node_cpus", "Online CPUs.", |l| f64::from(l.cpus)),
        (
            "omcluster_node_speed_ratio",
            "Relative speed of one CPU (1 is the reference machine).",
            |l| f64::from(l.speed),
        ),
        (
            "omcluster_node_load_cpus",
            "CPUs wanted: cluster jobs and everything else runnable.",
            |l| f64::from(l.demand),
        ),
        ("omcluster_node_load1", "1-minute load average.", |l| {
            f64::from(l.loadavg)
        }),
        ("omcluster_node_memory_total_bytes", "Memory in all.", |l| {
            l.mem_total_kib as f64 * 1024.0
        }),
        (
            "omcluster_node_memory_available_bytes",
            "Memory available (MemAvailable).",
            |l| l.mem_free_kib as f64 * 1024.0,
        ),
        (
            "omcluster_node_jobs",
            "Cluster jobs running on the node.",
            |l| f64::from(l.jobs),
        ),
        (
            "omcluster_node_guest_jobs",
            "Cluster jobs running on the node whose home is another node.",
            |l| f64::from(l.guests),
        ),
        (
            "omcluster_node_cpu_quota_ratio",
            "Share of the node's CPUs cluster jobs may use.",
            |l| f64::from(l.cpu_quota) / 100.0,
        ),
    ];
    for (name, help, get) in gauges {
        f.head(name, "gauge", help);
        for n in &status.nodes {
            if let Some(l) = &n.load {
                f.line(name, &[("cluster", cluster), ("node", &n.name)], get(l));
            }
        }
    }
    f.head(
        "omcluster_node_knob",
        "gauge",
        "Whether an admin knob (block, stay, lstay, quiet) is on (1) or off (0).",
    );
    for n in &status.nodes {
        if let Some(l) = &n.load {
            let k = l.knobs;
            for (knob, on) in [
                ("block", k.block),
                ("stay", k.stay),
                ("lstay", k.lstay),
                ("quiet", k.quiet),
            ] {
                f.line(
                    "omcluster_node_knob",
                    &[("cluster", cluster), ("node", &n.name), ("knob", knob)],
                    if on { 1.0 } else { 0.0 },
                );
            }
        }
    }
    f.head(
        "omcluster_balance_efficiency_ratio",
        "gauge",
        "Mean over highest speed-normalised load of the live nodes (1 is an even spread).",
    );
    if let Some(e) = board::efficiency_ratio(status) {
        f.line(
            "omcluster_balance_efficiency_ratio",
            &[("cluster", cluster)],
            e,
        );
    }
    if let Some(machines) = machines {
        f.head(
            "omcluster_boot_machines",
            "gauge",
            "Machines the boot server saw, by the last boot stage each reached (agent: up).",
        );
        for (stage, n) in crate::boot::stage_counts(machines) {
            f.line(
                "omcluster_boot_machines",
                &[("cluster", cluster), ("stage", stage)],
                n as f64,
            );
        }
        f.head(
            "omcluster_admission_waiting_machines",
            "gauge",
            "Machines waiting for an admin to admit or reject them.",
        );
        f.line(
            "omcluster_admission_waiting_machines",
            &[("cluster", cluster)],
            machines.iter().filter(|m| m.waiting).count() as f64,
        );
    }
    if let Some(bytes) = history_bytes {
        f.head(
            "omcluster_web_history_bytes",
            "gauge",
            "Memory the web view's history takes in the serving agent (its ceiling: omcluster_web_history_ceiling_bytes).",
        );
        f.line(
            "omcluster_web_history_bytes",
            &[("cluster", cluster)],
            bytes as f64,
        );
        f.head(
            "omcluster_web_history_ceiling_bytes",
            "gauge",
            "The most the web view's history may take.",
        );
        f.line(
            "omcluster_web_history_ceiling_bytes",
            &[("cluster", cluster)],
            crate::history::CEILING_BYTES as f64,
        );
    }
    f.head(
        "omcluster_migrations_total",
        "counter",
        "Job moves seen by the serving agent, by outcome (failed: asked for here and refused).",
    );
    for outcome in ["moved", "failed"] {
        let v = counters.migrations.get(outcome).copied().unwrap_or(0);
        f.line(
            "omcluster_migrations_total",
            &[("cluster", cluster), ("outcome", outcome)],
            v as f64,
        );
    }
    f.head(
        "omcluster_membership_changes_total",
        "counter",
        "Membership changes seen by the serving agent, by kind.",
    );
    for change in ["join", "suspect", "down", "up"] {
        let v = counters.membership.get(change).copied().unwrap_or(0);
        f.line(
            "omcluster_membership_changes_total",
            &[("cluster", cluster), ("change", change)],
            v as f64,
        );
    }
    f.head(
        "omcluster_knob_changes_total",
        "counter",
        "Knob changes seen by the serving agent.",
    );
    f.line(
        "omcluster_knob_changes_total",
        &[("cluster", cluster)],
        counters.knob_changes as f64,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_control::model::{LoadVector, NodeStatus};

    #[test]
    fn exposition() {
        let mut l = LoadVector {
            cpus: 2,
            speed: 1.5,
            demand: 1.0,
            loadavg: 0.5,
            mem_total_kib: 1024,
            mem_free_kib: 512,
            jobs: 1,
            guests: 1,
            cpu_quota: 50,
            ..Default::default()
        };
        l.knobs.block = true;
        let status = ClusterStatus {
            cluster: "lab".into(),
            node: "head".into(),
            nodes: vec![
                NodeStatus {
                    name: "head".into(),
                    number: 1,
                    addr: "10.0.0.1:7946".into(),
                    state: "alive".into(),
                    local: true,
                    load: Some(l),
                    load_age_ms: Some(0),
                },
                NodeStatus {
                    name: "n\"2".into(),
                    number: 2,
                    addr: "10.0.0.2:7946".into(),
                    state: "down".into(),
                    local: false,
                    load: None,
                    load_age_ms: None,
                },
            ],
        };
        let mut c = Counters::default();
        c.count(&[Marker {
            at_ms: 0,
            kind: MarkerKind::Migration,
            node: "head".into(),
            job: Some("j".into()),
            from: Some("n2".into()),
            text: String::new(),
        }]);
        expect_test::expect![[r#"
            # HELP omcluster_node_up Whether the node is alive (1) or suspected or down (0).
            # TYPE omcluster_node_up gauge
            omcluster_node_up{cluster="lab",node="head"} 1
            omcluster_node_up{cluster="lab",node="n\"2"} 0
            # HELP omcluster_node_cpus Online CPUs.
            # TYPE omcluster_node_cpus gauge
            omcluster_node_cpus{cluster="lab",node="head"} 2
            # HELP omcluster_node_speed_ratio Relative speed of one CPU (1 is the reference machine).
            # TYPE omcluster_node_speed_ratio gauge
            omcluster_node_speed_ratio{cluster="lab",node="head"} 1.5
            # HELP omcluster_node_load_cpus CPUs wanted: cluster jobs and everything else runnable.
            # TYPE omcluster_node_load_cpus gauge
            omcluster_node_load_cpus{cluster="lab",node="head"} 1
            # HELP omcluster_node_load1 1-minute load average.
            # TYPE omcluster_node_load1 gauge
            omcluster_node_load1{cluster="lab",node="head"} 0.5
            # HELP omcluster_node_memory_total_bytes Memory in all.
            # TYPE omcluster_node_memory_total_bytes gauge
            omcluster_node_memory_total_bytes{cluster="lab",node="head"} 1048576
            # HELP omcluster_node_memory_available_bytes Memory available (MemAvailable).
            # TYPE omcluster_node_memory_available_bytes gauge
            omcluster_node_memory_available_bytes{cluster="lab",node="head"} 524288
            # HELP omcluster_node_jobs Cluster jobs running on the node.
            # TYPE omcluster_node_jobs gauge
            omcluster_node_jobs{cluster="lab",node="head"} 1
            # HELP omcluster_node_guest_jobs Cluster jobs running on the node whose home is another node.
            # TYPE omcluster_node_guest_jobs gauge
            omcluster_node_guest_jobs{cluster="lab",node="head"} 1
            # HELP omcluster_node_cpu_quota_ratio Share of the node's CPUs cluster jobs may use.
            # TYPE omcluster_node_cpu_quota_ratio gauge
            omcluster_node_cpu_quota_ratio{cluster="lab",node="head"} 0.5
            # HELP omcluster_node_knob Whether an admin knob (block, stay, lstay, quiet) is on (1) or off (0).
            # TYPE omcluster_node_knob gauge
            omcluster_node_knob{cluster="lab",node="head",knob="block"} 1
            omcluster_node_knob{cluster="lab",node="head",knob="stay"} 0
            omcluster_node_knob{cluster="lab",node="head",knob="lstay"} 0
            omcluster_node_knob{cluster="lab",node="head",knob="quiet"} 0
            # HELP omcluster_balance_efficiency_ratio Mean over highest speed-normalised load of the live nodes (1 is an even spread).
            # TYPE omcluster_balance_efficiency_ratio gauge
            omcluster_balance_efficiency_ratio{cluster="lab"} 1
            # HELP omcluster_migrations_total Job moves seen by the serving agent, by outcome (failed: asked for here and refused).
            # TYPE omcluster_migrations_total counter
            omcluster_migrations_total{cluster="lab",outcome="moved"} 1
            omcluster_migrations_total{cluster="lab",outcome="failed"} 0
            # HELP omcluster_membership_changes_total Membership changes seen by the serving agent, by kind.
            # TYPE omcluster_membership_changes_total counter
            omcluster_membership_changes_total{cluster="lab",change="join"} 0
            omcluster_membership_changes_total{cluster="lab",change="suspect"} 0
            omcluster_membership_changes_total{cluster="lab",change="down"} 0
            omcluster_membership_changes_total{cluster="lab",change="up"} 0
            # HELP omcluster_knob_changes_total Knob changes seen by the serving agent.
            # TYPE omcluster_knob_changes_total counter
            omcluster_knob_changes_total{cluster="lab"} 0
        "#]]
        .assert_eq(&render(&status, &c, None, None));
    }

    #[test]
    fn boot_stages_are_counted_when_the_boot_server_answered() {
        let status = ClusterStatus {
            cluster: "lab".into(),
            node: "head".into(),
            nodes: vec![],
        };
        let m = crate::boot::Machine {
            mac: "52:54:00:00:00:01".into(),
            name: None,
            address: None,
            firmware: None,
            stage: "tftp".into(),
            stage_since: 1,
            last_seen: 1,
            admission: None,
            waiting: true,
        };
        let text = render(&status, &Counters::default(), Some(&[m]), Some(1234));
        assert!(text.contains("omcluster_boot_machines{cluster=\"lab\",stage=\"tftp\"} 1\n"));
        assert!(text.contains("omcluster_boot_machines{cluster=\"lab\",stage=\"agent\"} 0\n"));
        assert!(text.contains("omcluster_admission_waiting_machines{cluster=\"lab\"} 1\n"));
        assert!(text.contains("omcluster_web_history_bytes{cluster=\"lab\"} 1234\n"));
    }
}
