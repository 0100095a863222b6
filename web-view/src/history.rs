//! The cluster's recent past, kept in memory with a fixed ceiling, no I/O
//! (openMosixcollector and openMosixanalyzer for today).
//!
//! - **Samples.** Per node, each second: the CPUs wanted (load), the memory
//!   in use and the cluster jobs running. The last [`FINE_SAMPLES`] seconds
//!   are kept as taken; older ones as one average a minute, for
//!   [`COARSE_SAMPLES`] minutes. Both tiers share one time axis, so a chart
//!   of one metric across every node is a set of aligned columns plus their
//!   sum, the cluster total.
//! - **Where jobs ran**: each job's stays (node, from, until), so a time
//!   slider can show which jobs ran where at a moment.
//! - **Markers**: joins, deaths, knob changes, migrations.
//!
//! The ceiling: at most [`MAX_NODES`] nodes' columns (a node not seen for
//! the whole window is dropped), [`MAX_STAYS`] stays and [`MAX_MARKERS`]
//! markers, the oldest going first; [`History::approx_bytes`] tells what it
//! holds, and [`CEILING_BYTES`] bounds it.

use std::collections::{BTreeMap, HashMap, VecDeque};

use agent_control::model::{ClusterStatus, JobInfo};
use serde::Serialize;

use crate::board::Marker;

/// Seconds kept at one sample a second (1 h).
pub const FINE_SAMPLES: usize = 3600;
/// Minutes kept at one average a minute (24 h).
pub const COARSE_SAMPLES: usize = 1440;
/// Nodes with columns, at most.
pub const MAX_NODES: usize = 128;
/// Job stays kept, at most.
pub const MAX_STAYS: usize = 50_000;
/// Markers kept, at most.
pub const MAX_MARKERS: usize = 10_000;
/// Points a series has at most (a chart's width, about).
pub const MAX_POINTS: usize = 720;
/// What the history may hold at most, in bytes (its tables full, with
/// names and commands of ordinary length).
pub const CEILING_BYTES: usize = 32 << 20;

/// One node at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// CPUs wanted (the balancer's demand).
    pub load: f32,
    /// Memory in use, MiB.
    pub mem_mib: f32,
    /// Cluster jobs running there.
    pub jobs: f32,
}

/// Which of a point's figures a chart shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// CPUs wanted.
    Load,
    /// Memory in use, MiB.
    Mem,
    /// Cluster jobs.
    Jobs,
}

impl Metric {
    /// `load`, `mem` or `jobs`.
    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "load" => Some(Metric::Load),
            "mem" => Some(Metric::Mem),
            "jobs" => Some(Metric::Jobs),
            _ => None,
        }
    }

    fn of(self, p: &Point) -> f32 {
        match self {
            Metric::Load => p.load,
            Metric::Mem => p.mem_mib,
            Metric::Jobs => p.jobs,
        }
    }
}

/// One node's column: its points, and how many are there (a node absent
/// for the whole window is dropped without a scan).
#[derive(Debug, Default)]
struct Col {
    v: VecDeque<Option<Point>>,
    some: usize,
}

/// A time axis and one column per node along it.
#[derive(Debug, Default)]
struct Tier {
    cap: usize,
    t: VecDeque<u64>,
    cols: BTreeMap<String, Col>,
}

impl Tier {
    fn new(cap: usize) -> Self {
        Tier {
            cap,
            ..Default::default()
        }
    }

    fn push(&mut self, t: u64, points: &BTreeMap<String, Point>) {
        let len = self.t.len();
        for (name, p) in points {
            if !self.cols.contains_key(name) && self.cols.len() >= MAX_NODES {
                continue;
            }
            let col = self.cols.entry(name.clone()).or_insert_with(|| Col {
                v: std::iter::repeat_n(None, len).collect(),
                some: 0,
            });
            col.v.push_back(Some(*p));
            col.some += 1;
        }
        for (name, col) in self.cols.iter_mut() {
            if !points.contains_key(name) {
                col.v.push_back(None);
            }
        }
        self.t.push_back(t);
        if self.t.len() > self.cap {
            self.t.pop_front();
            for col in self.cols.values_mut() {
                if col.v.pop_front().flatten().is_some() {
                    col.some -= 1;
                }
            }
            // A node gone for the whole window has nothing left to show.
            self.cols.retain(|_, c| c.some > 0);
        }
    }
}

/// A minute being averaged.
#[derive(Debug, Default)]
struct Minute {
    start: u64,
    sums: BTreeMap<String, (Point, u32)>,
}

/// One job's stay on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stay {
    /// The job.
    pub job: String,
    /// Its command, as `ps` shows it.
    pub command: String,
    /// The node.
    pub node: String,
    /// Since, Unix ms.
    pub from_ms: u64,
    /// Until, Unix ms; `None` while it runs there.
    pub until_ms: Option<u64>,
}

/// One metric over time: the axis, each node's column and the total.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// Unix seconds.
    pub t: Vec<u64>,
    /// Node → its value at each time (`None`: no sample).
    pub nodes: BTreeMap<String, Vec<Option<f32>>>,
    /// The sum over the nodes at each time.
    pub total: Vec<f32>,
    /// Seconds between two samples (1, or 60 for the older tier).
    pub step_s: u64,
}

/// The kept past.
#[derive(Debug)]
pub struct History {
    fine: Tier,
    coarse: Tier,
    minute: Minute,
    stays: VecDeque<Stay>,
    /// Job → index into `stays` counted from `stays_popped`, of its open stay.
    open: HashMap<String, u64>,
    stays_popped: u64,
    markers: VecDeque<Marker>,
}

impl Default for History {
    fn default() -> Self {
        History {
            fine: Tier::new(FINE_SAMPLES),
            coarse: Tier::new(COARSE_SAMPLES),
            minute: Minute::default(),
            stays: VecDeque::new(),
            open: HashMap::new(),
            stays_popped: 0,
            markers: VecDeque::new(),
        }
    }
}

/// What a node's load vector says, as a point.
fn point_of(n: &agent_control::model::NodeStatus) -> Option<Point> {
    let l = n.load.as_ref()?;
    Some(Point {
        load: l.demand,
        mem_mib: l.mem_total_kib.saturating_sub(l.mem_free_kib) as f32 / 1024.0,
        jobs: l.jobs as f32,
    })
}

impl History {
    /// Records the live nodes of `status` at Unix second `t` (one call a
    /// second; a second already recorded is skipped).
    pub fn sample(&mut self, t: u64, status: &ClusterStatus) {
        if self.fine.t.back().is_some_and(|last| *last >= t) {
            return;
        }
        let points: BTreeMap<String, Point> = status
            .nodes
            .iter()
            .filter(|n| n.state != "down")
            .filter_map(|n| Some((n.name.clone(), point_of(n)?)))
            .collect();
        self.fine.push(t, &points);
        let start = t - t % 60;
        if start != self.minute.start {
            let done = std::mem::replace(
                &mut self.minute,
                Minute {
                    start,
                    sums: BTreeMap::new(),
                },
            );
            if !done.sums.is_empty() {
                let avg = done
                    .sums
                    .into_iter()
                    .map(|(name, (s, k))| {
                        let k = k as f32;
                        let p = Point {
                            load: s.load / k,
                            mem_mib: s.mem_mib / k,
                            jobs: s.jobs / k,
                        };
                        (name, p)
                    })
                    .collect();
                self.coarse.push(done.start, &avg);
            }
        }
        for (name, p) in points {
            let e = self.minute.sums.entry(name).or_insert((
                Point {
                    load: 0.0,
                    mem_mib: 0.0,
                    jobs: 0.0,
                },
                0,
            ));
            e.0.load += p.load;
            e.0.mem_mib += p.mem_mib;
            e.0.jobs += p.jobs;
            e.1 += 1;
        }
    }

    /// Records where the jobs run at Unix ms `at_ms`: stays end and begin.
    pub fn jobs(&mut self, at_ms: u64, jobs: &[JobInfo]) {
        let now: HashMap<&str, &JobInfo> = jobs.iter().map(|j| (j.job.as_str(), j)).collect();
        let popped = self.stays_popped;
        let stays = &mut self.stays;
        self.open.retain(|job, idx| {
            let Some(stay) = stays.get_mut((*idx - popped) as usize) else {
                return false;
            };
            match now.get(job.as_str()) {
                Some(j) if j.node == stay.node => true,
                _ => {
                    stay.until_ms = Some(at_ms);
                    false
                }
            }
        });
        for j in jobs {
            if self.open.contains_key(&j.job) {
                continue;
            }
            self.open
                .insert(j.job.clone(), self.stays_popped + self.stays.len() as u64);
            self.stays.push_back(Stay {
                job: j.job.clone(),
                command: j.argv.join(" "),
                node: j.node.clone(),
                from_ms: at_ms,
                until_ms: None,
            });
        }
        while self.stays.len() > MAX_STAYS {
            let gone = self.stays.pop_front().expect("not empty");
            if gone.until_ms.is_none() {
                self.open.remove(&gone.job);
            }
            self.stays_popped += 1;
        }
    }

    /// Keeps `markers`.
    pub fn mark(&mut self, markers: impl IntoIterator<Item = Marker>) {
        self.markers.extend(markers);
        while self.markers.len() > MAX_MARKERS {
            self.markers.pop_front();
        }
    }

    /// The markers from Unix ms `since_ms` on, oldest first.
    pub fn markers_since(&self, since_ms: u64) -> Vec<Marker> {
        self.markers
            .iter()
            .filter(|m| m.at_ms >= since_ms)
            .cloned()
            .collect()
    }

    /// The last `n` markers, oldest first.
    pub fn last_markers(&self, n: usize) -> Vec<Marker> {
        let skip = self.markers.len().saturating_sub(n);
        self.markers.iter().skip(skip).cloned().collect()
    }

    /// Which jobs ran where at Unix ms `at_ms`.
    pub fn stays_at(&self, at_ms: u64) -> Vec<Stay> {
        self.stays
            .iter()
            .filter(|s| s.from_ms <= at_ms && s.until_ms.is_none_or(|u| at_ms < u))
            .cloned()
            .collect()
    }

    /// `metric` between Unix seconds `since` and `until`: from the
    /// seconds kept when the window is an hour or less (or nothing older
    /// is kept), else from the minutes; at most [`MAX_POINTS`] points, a
    /// point averaging several samples when there are more.
    pub fn series(&self, metric: Metric, since: u64, until: u64) -> Series {
        let fine_from = self.fine.t.front().copied().unwrap_or(u64::MAX);
        let older = self.coarse.t.front().is_some_and(|t| *t < fine_from);
        let newest = self.fine.t.back().copied().unwrap_or(0);
        let short = until.min(newest).saturating_sub(since) <= FINE_SAMPLES as u64;
        let (tier, step_s) = if short || since >= fine_from || !older {
            (&self.fine, 1)
        } else {
            (&self.coarse, 60)
        };
        let idx: Vec<usize> = tier
            .t
            .iter()
            .enumerate()
            .filter(|(_, t)| **t >= since && **t <= until)
            .map(|(i, _)| i)
            .collect();
        // Samples per point: enough to stay within MAX_POINTS.
        let per = idx.len().div_ceil(MAX_POINTS).max(1);
        let buckets: Vec<&[usize]> = idx.chunks(per).collect();
        let t = buckets.iter().map(|b| tier.t[b[0]]).collect();
        let mut total = vec![0.0; buckets.len()];
        let mut nodes = BTreeMap::new();
        for (name, col) in &tier.cols {
            let v: Vec<Option<f32>> = buckets
                .iter()
                .map(|b| {
                    let xs: Vec<f32> = b
                        .iter()
                        .filter_map(|i| col.v[*i].map(|p| metric.of(&p)))
                        .collect();
                    (!xs.is_empty()).then(|| xs.iter().sum::<f32>() / xs.len() as f32)
                })
                .collect();
            if v.iter().all(Option::is_none) {
                continue;
            }
            for (sum, x) in total.iter_mut().zip(&v) {
                *sum += x.unwrap_or(0.0);
            }
            nodes.insert(name.clone(), v);
        }
        Series {
            t,
            nodes,
            total,
            step_s: step_s * per as u64,
        }
    }

    /// Every sample as CSV, oldest first (the minute averages older than
    /// the kept seconds, then the seconds): `time,node,load_cpus,
    /// memory_used_mib,jobs`.
    pub fn csv(&self) -> String {
        let mut out = String::from("time_unix_s,node,load_cpus,memory_used_mib,jobs\n");
        let fine_from = self.fine.t.front().copied().unwrap_or(u64::MAX);
        let mut rows = |tier: &Tier, before: u64| {
            for (i, t) in tier.t.iter().enumerate() {
                if *t >= before {
                    break;
                }
                for (name, col) in &tier.cols {
                    if let Some(p) = col.v[i] {
                        out.push_str(&format!(
                            "{t},{},{:.3},{:.1},{:.2}\n",
                            csv_field(name),
                            p.load,
                            p.mem_mib,
                            p.jobs
                        ));
                    }
                }
            }
        };
        rows(&self.coarse, fine_from);
        rows(&self.fine, u64::MAX);
        out
    }

    /// About how many bytes the history holds.
    pub fn approx_bytes(&self) -> usize {
        let tier = |t: &Tier| {
            t.t.len() * 8
                + t.cols
                    .iter()
                    .map(|(n, c)| n.len() + 48 + c.v.len() * std::mem::size_of::<Option<Point>>())
                    .sum::<usize>()
        };
        let stays: usize = self
            .stays
            .iter()
            .map(|s| std::mem::size_of::<Stay>() + s.job.len() + s.command.len() + s.node.len())
            .sum();
        let markers: usize = self
            .markers
            .iter()
            .map(|m| {
                std::mem::size_of::<Marker>()
                    + m.node.len()
                    + m.text.len()
                    + m.job.as_ref().map_or(0, String::len)
                    + m.from.as_ref().map_or(0, String::len)
            })
            .sum();
        tier(&self.fine) + tier(&self.coarse) + stays + markers + self.open.len() * 64
    }
}

/// A CSV field, quoted when it needs to be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_control::model::{LoadVector, NodeStatus};

    fn status(nodes: &[(&str, f32, u32)]) -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            node: "a".into(),
            nodes: nodes
                .iter()
                .map(|(name, demand, jobs)| NodeStatus {
                    name: name.to_string(),
                    number: 1,
                    addr: String::new(),
                    state: "alive".into(),
                    local: false,
                    load: Some(LoadVector {
                        demand: *demand,
                        jobs: *jobs,
                        mem_total_kib: 2048 * 1024,
                        mem_free_kib: 1024 * 1024,
                        ..Default::default()
                    }),
                    load_age_ms: None,
                })
                .collect(),
        }
    }

    fn job(id: &str, node: &str) -> JobInfo {
        JobInfo {
            job: id.into(),
            argv: vec!["awk".into(), "x".into()],
            uid: 0,
            node: node.into(),
            home: "a".into(),
            pid: Some(1),
            started_ms: 0,
            moves: 0,
            cantmove: None,
            since_ms: 0,
            usage: None,
        }
    }

    #[test]
    fn a_metric_across_nodes_has_aligned_columns_and_a_total() {
        let mut h = History::default();
        h.sample(100, &status(&[("a", 1.0, 1), ("b", 2.0, 2)]));
        h.sample(101, &status(&[("a", 3.0, 1)]));
        h.sample(102, &status(&[("a", 1.0, 1), ("b", 1.0, 1), ("c", 0.5, 0)]));
        let s = h.series(Metric::Load, 0, u64::MAX);
        assert_eq!(s.t, [100, 101, 102]);
        assert_eq!(s.nodes["a"], [Some(1.0), Some(3.0), Some(1.0)]);
        assert_eq!(s.nodes["b"], [Some(2.0), None, Some(1.0)]);
        assert_eq!(s.nodes["c"], [None, None, Some(0.5)]);
        assert_eq!(s.total, [3.0, 3.0, 2.5]);
        let mem = h.series(Metric::Mem, 101, 101);
        assert_eq!(mem.nodes["a"], [Some(1024.0)]);
        assert!(!mem.nodes.contains_key("b"));
    }

    #[test]
    fn old_seconds_become_minute_averages_and_the_window_is_bounded() {
        let mut h = History::default();
        let t0 = 1_000_020;
        for i in 0..(FINE_SAMPLES as u64 + 600) {
            let d = if (t0 + i) / 60 % 2 == 0 { 1.0 } else { 3.0 };
            h.sample(t0 + i, &status(&[("a", d, 1)]));
        }
        assert_eq!(h.fine.t.len(), FINE_SAMPLES);
        let old = h.series(Metric::Load, t0, u64::MAX);
        assert_eq!(old.step_s, 60);
        // Whole minutes alternate 1 and 3; the first, partial one is 1 or 3 too.
        assert!(old.nodes["a"][1..5]
            .iter()
            .all(|v| matches!(v, Some(x) if *x == 1.0 || *x == 3.0)));
        let csv = h.csv();
        assert!(csv.starts_with("time_unix_s,node,load_cpus,memory_used_mib,jobs\n"));
        let rows = csv.lines().count() - 1;
        assert_eq!(
            rows,
            old.t.iter().filter(|t| **t < h.fine.t[0]).count() + FINE_SAMPLES
        );
    }

    #[test]
    fn the_last_hour_comes_from_the_seconds_at_most_max_points_of_them() {
        let mut h = History::default();
        for i in 0..1800u64 {
            h.sample(10_000 + i, &status(&[("a", (i % 2) as f32 * 2.0, 1)]));
        }
        let s = h.series(Metric::Load, 10_000 + 1800 - 3600, u64::MAX);
        assert_eq!(s.step_s, 3);
        assert_eq!(s.t.len(), 600);
        // Three samples a point: 0, 2, 0 or 2, 0, 2.
        let third = |x: f32, k: f32| (x - k * 2.0 / 3.0).abs() < 1e-6;
        assert!(s.nodes["a"]
            .iter()
            .all(|v| v.is_some_and(|x| third(x, 1.0) || third(x, 2.0))));
    }

    #[test]
    fn stays_say_which_jobs_ran_where_at_a_moment() {
        let mut h = History::default();
        h.jobs(1000, &[job("j1", "a"), job("j2", "a")]);
        h.jobs(2000, &[job("j1", "b"), job("j2", "a")]);
        h.jobs(3000, &[job("j1", "b")]);
        let at = |t| {
            let mut v: Vec<(String, String)> =
                h.stays_at(t).into_iter().map(|s| (s.job, s.node)).collect();
            v.sort();
            v
        };
        assert_eq!(
            at(1500),
            [("j1".into(), "a".into()), ("j2".into(), "a".into())]
        );
        assert_eq!(
            at(2500),
            [("j1".into(), "b".into()), ("j2".into(), "a".into())]
        );
        assert_eq!(at(3500), [("j1".to_string(), "b".to_string())]);
        assert!(at(500).is_empty());
    }

    #[test]
    fn full_tables_stay_under_the_ceiling() {
        let mut h = History::default();
        let nodes: Vec<(String, f32, u32)> = (0..MAX_NODES + 10)
            .map(|i| (format!("node-52540000{i:04}"), 1.0, 3))
            .collect();
        let refs: Vec<(&str, f32, u32)> =
            nodes.iter().map(|(n, d, j)| (n.as_str(), *d, *j)).collect();
        let st = status(&refs);
        for t in 0..(FINE_SAMPLES as u64 + 60 * COARSE_SAMPLES as u64 / 10) {
            h.sample(t, &st);
        }
        assert_eq!(h.fine.cols.len(), MAX_NODES);
        for k in 0..(MAX_STAYS as u64 / 1000 + 2) {
            let jobs: Vec<JobInfo> = (0..1000)
                .map(|i| {
                    let mut j = job(&format!("head-{}", k * 1000 + i), "node-525400000001");
                    j.argv = vec![
                        "sh".into(),
                        "-c".into(),
                        "awk 'BEGIN{for(i=0;i<1e6;i++);}'".into(),
                    ];
                    j
                })
                .collect();
            h.jobs(k * 1000, &jobs);
        }
        assert_eq!(h.stays.len(), MAX_STAYS);
        h.mark((0..MAX_MARKERS + 5).map(|i| Marker {
            at_ms: i as u64,
            kind: crate::board::MarkerKind::Migration,
            node: "node-525400000002".into(),
            job: Some(format!("head-{i}")),
            from: Some("node-525400000001".into()),
            text: format!("job head-{i} moved from node-525400000001 to node-525400000002"),
        }));
        assert_eq!(h.markers.len(), MAX_MARKERS);
        // The coarse tier is a tenth full here; count it full.
        let coarse_full =
            h.coarse.cols.len() * COARSE_SAMPLES * std::mem::size_of::<Option<Point>>();
        let bytes = h.approx_bytes() + coarse_full;
        assert!(bytes < CEILING_BYTES, "{bytes} bytes");
    }
}
