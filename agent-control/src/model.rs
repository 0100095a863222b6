//! What an agent reports and what `omctl` asks of it: the load vector each
//! node gossips, the cluster and job views `status` and `ps` show, a job to
//! run and how it ended, a finished migration, and the exit statuses
//! `omctl` gives besides a job's own. The agents gossip some of these to
//! each other too (the load vector, job lists), so they are the cluster's
//! data model as much as the control protocol's.

use serde::{Deserialize, Serialize};

use crate::cpu::Features;
use crate::knobs::Knobs;
use contracts::share::MOUNT_POINT;

/// The job could not be started (cwd missing on the target, command not found).
pub const EXIT_CANNOT_RUN: i32 = 127;
/// The job could not be started for lack of permission.
pub const EXIT_NO_PERMISSION: i32 = 126;
/// The node running the job died or stopped answering.
pub const EXIT_NODE_LOST: i32 = 255;
/// The local agent refused or could not handle the request.
pub const EXIT_NO_AGENT: i32 = 254;

/// What one node tells the others about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadVector {
    /// Online CPUs.
    pub cpus: u32,
    /// Relative speed of one CPU (1.0 = the reference machine).
    pub speed: f32,
    /// Run-queue load: the 1-minute load average.
    pub loadavg: f32,
    /// Runnable tasks right now (fourth field of `/proc/loadavg`).
    pub runnable: u32,
    /// Memory total in KiB.
    pub mem_total_kib: u64,
    /// Memory available in KiB (`MemAvailable`).
    pub mem_free_kib: u64,
    /// Cluster jobs running on this node.
    pub jobs: u32,
    /// Cluster jobs ever started on this node. A launcher compares it with
    /// the sequence number its job got at start to know whether this vector
    /// already counts that job (see the agent's placement).
    pub started: u64,
    /// The CPU share cluster jobs may use on this node, percent of all its CPUs.
    pub cpu_quota: u32,
    /// The shared tree at `/cluster` here, when one is expected or mounted.
    #[serde(default)]
    pub share: Option<ShareView>,
    /// Whether this node can take moved jobs: CRIU works with its kernel.
    #[serde(default)]
    pub criu: bool,
    /// CPUs wanted here over the last seconds: cluster jobs and everything
    /// else runnable (see the agent's balancing policy).
    #[serde(default)]
    pub demand: f32,
    /// The admin knobs (`block`, `stay`, `lstay`, `quiet`).
    #[serde(default)]
    pub knobs: Knobs,
    /// Cluster jobs running here whose home is another node.
    #[serde(default)]
    pub guests: u32,
    /// Jobs that moved in during the last minute.
    #[serde(default)]
    pub moved_in: u32,
    /// Jobs that moved out during the last minute.
    #[serde(default)]
    pub moved_out: u32,
    /// Whether root's jobs may run here (`--allow-root-jobs`).
    #[serde(default)]
    pub root_jobs: bool,
    /// The instruction-set features of this node's CPU a moved job may rely
    /// on (see [`crate::cpu`]).
    #[serde(default)]
    pub cpu_features: Features,
}

impl LoadVector {
    /// CPUs' worth of capacity left to cluster jobs by the quota.
    pub fn capacity(&self) -> f64 {
        f64::from(self.cpus.max(1)) * f64::from(self.cpu_quota.clamp(1, 100)) / 100.0
    }
}

/// The tree on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareView {
    /// What the node was told to mount (`om.share=`), if anything.
    pub expected: Option<String>,
    /// What is mounted at `/cluster` (source and type), if anything.
    pub mounted: Option<String>,
    /// Whether the last `statvfs` came back in time (the agent's probe decides).
    pub responding: bool,
    /// Size in KiB (0 when unknown).
    pub size_kib: u64,
    /// Free space in KiB for unprivileged users (0 when unknown).
    pub free_kib: u64,
}

impl ShareView {
    /// What is wrong with the tree here, for `omctl status`; `None` when
    /// nothing is.
    pub fn problem(&self) -> Option<String> {
        match (&self.expected, &self.mounted) {
            (Some(e), None) => Some(format!("{MOUNT_POINT} is not mounted (expected {e})")),
            (_, Some(m)) if !self.responding => {
                Some(format!("{MOUNT_POINT} ({m}) is not responding"))
            }
            _ => None,
        }
    }
}

/// A job to run, as `omctl run` sends it to its local agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Run on this node (name, number or address) instead of placing.
    pub node: Option<String>,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The caller's working directory.
    pub cwd: String,
    /// The caller's environment.
    pub env: Vec<(String, String)>,
    /// Never migrate this job (`omctl run --lock`, openMosix `mosrun -L`).
    pub lock: bool,
}

/// A migration that worked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateDone {
    /// The job.
    pub job: String,
    /// Where it ran.
    pub from: String,
    /// Where it runs now.
    pub to: String,
    /// Its pid there.
    pub pid: u32,
    /// Checkpoint size in bytes.
    pub bytes: u64,
    /// Stopped to running again, ms.
    pub freeze_ms: u64,
    /// The whole migration, ms.
    pub total_ms: u64,
}

impl std::fmt::Display for MigrateDone {
    /// One line: what `omctl migrate` prints, and what `expel` and `bring`
    /// report of each move.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "job {} moved from {} to {} (pid {}): {:.1} MiB in {:.2} s, frozen {:.2} s",
            self.job,
            self.from,
            self.to,
            self.pid,
            self.bytes as f64 / (1024.0 * 1024.0),
            self.total_ms as f64 / 1000.0,
            self.freeze_ms as f64 / 1000.0
        )
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitInfo {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitInfo {
    /// The shell convention: the code, or 128 + signal.
    pub fn as_status(self) -> i32 {
        match self {
            ExitInfo::Code(c) => c,
            ExitInfo::Signal(s) => 128 + s,
        }
    }
}

/// A node as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Name.
    pub name: String,
    /// openMosix-style node number (from the address).
    pub number: u32,
    /// Agent address.
    pub addr: String,
    /// `alive`, `suspect` or `down`.
    pub state: String,
    /// Whether this is the node answering.
    pub local: bool,
    /// Latest load vector, if one arrived.
    pub load: Option<LoadVector>,
    /// Age of that load vector in ms.
    pub load_age_ms: Option<u64>,
}

/// The cluster as one agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Cluster id.
    pub cluster: String,
    /// The answering node's name.
    pub node: String,
    /// Every node known, the answering one included.
    pub nodes: Vec<NodeStatus>,
}

/// A cluster job as `ps` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Job id.
    pub job: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// User it runs as.
    pub uid: u32,
    /// Node it runs on.
    pub node: String,
    /// Node it was launched from.
    pub home: String,
    /// Process id on `node`, once started.
    pub pid: Option<u32>,
    /// Start, ms since the Unix epoch.
    pub started_ms: u64,
    /// How many times it moved.
    pub moves: u32,
    /// Why it cannot move, if it cannot.
    pub cantmove: Option<String>,
    /// When it started or arrived on `node`, ms since the Unix epoch.
    #[serde(default)]
    pub since_ms: u64,
    /// What it used lately, as the node running it measured (`None` until
    /// measured).
    #[serde(default)]
    pub usage: Option<JobUsage>,
}

/// What a running job uses, measured each second by the node running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobUsage {
    /// CPU over the last second, percent of one CPU (200 for two busy
    /// threads).
    pub cpu_pct: u32,
    /// Resident memory of all its processes, bytes.
    pub rss_bytes: u64,
    /// `running`, `sleeping`, `disk` (uninterruptible), `stopped`, or
    /// `zombie`: its busiest process's.
    pub state: RunState,
    /// The nice value of its first process.
    pub nice: i32,
}

/// A job's scheduling state, from its processes' `/proc/PID/stat`;
/// ordered busiest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// A process runs or waits for a CPU.
    Running,
    /// A process waits for the disk or the kernel.
    Disk,
    /// Every process sleeps.
    Sleeping,
    /// Every process is stopped (SIGSTOP).
    Stopped,
    /// Every process has ended, not yet reaped.
    Zombie,
}

impl RunState {
    /// The job's state from its processes' state letters: the busiest
    /// wins (`R`, then `D`, then sleeping; stopped or zombie only if all
    /// are).
    pub fn of(letters: impl IntoIterator<Item = char>) -> Option<Self> {
        let mut best: Option<RunState> = None;
        for c in letters {
            let s = match c {
                'R' => RunState::Running,
                'D' => RunState::Disk,
                'T' | 't' => RunState::Stopped,
                'Z' | 'X' => RunState::Zombie,
                _ => RunState::Sleeping,
            };
            best = Some(match best {
                None => s,
                Some(b) => b.min(s),
            });
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_as_busy_as_its_busiest_process() {
        assert_eq!(RunState::of("SRS".chars()), Some(RunState::Running));
        assert_eq!(RunState::of("SD".chars()), Some(RunState::Disk));
        assert_eq!(RunState::of("SI".chars()), Some(RunState::Sleeping));
        assert_eq!(RunState::of("TT".chars()), Some(RunState::Stopped));
        assert_eq!(RunState::of("TS".chars()), Some(RunState::Sleeping));
        assert_eq!(RunState::of("Z".chars()), Some(RunState::Zombie));
        assert_eq!(RunState::of("".chars()), None);
    }

    #[test]
    fn problems_name_what_is_missing() {
        let mut v = ShareView {
            expected: Some("nfs://10.77.0.1/cluster".into()),
            mounted: None,
            responding: true,
            size_kib: 0,
            free_kib: 0,
        };
        assert_eq!(
            v.problem().unwrap(),
            "/cluster is not mounted (expected nfs://10.77.0.1/cluster)"
        );
        v.mounted = Some("10.77.0.1:/cluster (nfs4)".into());
        assert_eq!(v.problem(), None);
        v.responding = false;
        assert_eq!(
            v.problem().unwrap(),
            "/cluster (10.77.0.1:/cluster (nfs4)) is not responding"
        );
    }

    #[test]
    fn exit_status_convention() {
        assert_eq!(ExitInfo::Code(3).as_status(), 3);
        assert_eq!(ExitInfo::Signal(15).as_status(), 143);
    }
}
