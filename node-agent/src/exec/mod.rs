//! Remote execution. The home agent (where `omctl run` was called) connects to
//! the target agent over TCP, seals every frame (see [`crate::crypto`]), sends
//! an [`ExecRequest`](crate::wire::ExecRequest), then relays stdin and signals one way and stdout,
//! stderr, heartbeats and the exit status the other way.
//!
//! On the target the job runs as the caller's uid/gid (`setgroups`, `setgid`,
//! `setuid` between fork and exec), in the caller's cwd, in its own process
//! group (signals go to the whole group), inside the agent's job cgroup.
//!
//! Exit statuses of `omctl run` besides the job's own (code, or 128+signal):
//! [`EXIT_CANNOT_RUN`] when the job could not start (cwd missing on the target,
//! command not found), [`EXIT_NODE_LOST`] when the target died or stopped
//! answering mid-job, [`EXIT_NO_AGENT`] when the request itself failed.
//!
//! Laid out by job:
//! - `stream`: the sealed stream both sides speak (TCP, the handshake, one
//!   AEAD cipher per direction) and the frame readers that feed channels.
//! - `target`: the target side: accept a stream, start the job, pump its
//!   stdio and signals until it exits.
//! - `home`: the home side: send the request and relay between the caller
//!   (`omctl run` on the control socket) and the target, following the job
//!   when it moves; ask a target for its job list; order a migration.
//! - `migrate`: moving a running job between nodes (CRIU), source and
//!   target sides, and the rules that keep exactly one copy.
//! - `ledger`: the source's record of each attempt (pending, committed,
//!   kept), settled once, that those rules rest on.
//!
//! Every task a connection starts (frame readers, output pumps, the stdin
//! writer) lives in a `JoinSet` owned by that connection, so it ends with it.

mod home;
mod ledger;
mod migrate;
mod stream;
mod target;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::balance::Knobs;
use crate::cgroup::JobCgroup;
use crate::wire::JobInfo;

pub use home::{hand_key, order_migration, relay, remote_jobs, remote_knob, RelayEnd};
pub use ledger::{Ledger, Settled};
pub use migrate::{MigrateCmd, MigrateResult, SPOOL};
pub use stream::{accept, connect, plain_reader, SecureStream};
pub use target::serve;

/// The job could not be started (cwd missing on the target, command not found).
pub const EXIT_CANNOT_RUN: i32 = 127;
/// The job could not be started for lack of permission.
pub const EXIT_NO_PERMISSION: i32 = 126;
/// The node running the job died or stopped answering.
pub const EXIT_NODE_LOST: i32 = 255;
/// The local agent refused or could not handle the request.
pub const EXIT_NO_AGENT: i32 = 254;
/// How often a target tells the home node the job is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which the home node gives up on a target.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);

/// Jobs by id, shared with the agent's status view.
pub type Jobs = Arc<Mutex<BTreeMap<String, JobInfo>>>;

/// Whether this node can checkpoint and restore jobs: unknown until the
/// probe at start has run, then `Ok` or the reason.
pub type CriuState = Arc<Mutex<Option<Result<(), String>>>>;

/// What a target agent needs to run jobs.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// This node's name (`OM_NODE`).
    pub node: String,
    /// This agent's address (what other agents connect to).
    pub addr: SocketAddr,
    /// The cluster keys: exec streams are sealed with them.
    pub keys: crate::keys::Keys,
    /// The job cgroup, if CPU capping is on.
    pub cgroup: Option<JobCgroup>,
    /// Jobs running here.
    pub running: Jobs,
    /// Jobs ever started here (incremented after a job enters `running`).
    pub started: Arc<AtomicU64>,
    /// The driver of each job running here, for migration orders.
    pub controls: Arc<Mutex<HashMap<String, tokio::sync::mpsc::Sender<MigrateCmd>>>>,
    /// Restored jobs waiting for their home node to attach.
    pub parked: Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<SecureStream>>>>,
    /// What became of each migration attempt this node sourced.
    pub outcomes: Arc<Mutex<ledger::Ledger>>,
    /// Numbers migration attempts.
    pub attempts: Arc<AtomicU64>,
    /// Whether CRIU works here.
    pub criu: CriuState,
    /// The program that holds jobs (`omnode`, [`crate::job::holder_exe`]).
    pub holder: std::path::PathBuf,
    /// The admin knobs (`block` refuses guests here).
    pub knobs: Arc<Mutex<Knobs>>,
    /// When jobs moved in (`true`) or out, for the last minute's counts.
    pub move_log: Arc<Mutex<VecDeque<(Instant, bool)>>>,
    /// Where knob requests from other agents go (the agent's admin task).
    pub admin: Option<tokio::sync::mpsc::Sender<AdminCmd>>,
    /// Whether root's jobs may run here (`omnode agent --allow-root-jobs`).
    pub allow_root_jobs: bool,
}

/// A knob request from another agent, for the admin task, with where its
/// answer goes: what was done, a line each, or (exit status, why).
pub type AdminCmd = (
    crate::balance::KnobAction,
    tokio::sync::oneshot::Sender<Result<Vec<String>, (i32, String)>>,
);

impl ExecContext {
    /// A context with empty tables, every knob off and CRIU not probed yet.
    pub fn new(
        node: String,
        addr: SocketAddr,
        keys: crate::keys::Keys,
        cgroup: Option<JobCgroup>,
    ) -> Self {
        ExecContext {
            node,
            addr,
            keys,
            cgroup,
            running: Jobs::default(),
            started: Arc::default(),
            controls: Arc::default(),
            parked: Arc::default(),
            outcomes: Arc::default(),
            attempts: Arc::default(),
            criu: CriuState::default(),
            holder: crate::job::holder_exe(),
            knobs: Arc::default(),
            move_log: Arc::default(),
            admin: None,
            allow_root_jobs: true,
        }
    }

    /// Notes a job that moved in (`inward`) or out just now.
    pub fn note_move(&self, inward: bool) {
        let mut log = self.move_log.lock().expect("move log");
        log.push_back((Instant::now(), inward));
        while log
            .front()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_secs(60))
        {
            log.pop_front();
        }
    }

    /// Jobs that moved (in, out) during the last minute.
    pub fn moves_last_minute(&self) -> (u32, u32) {
        let log = self.move_log.lock().expect("move log");
        let recent = log
            .iter()
            .filter(|(t, _)| t.elapsed() <= Duration::from_secs(60));
        recent.fold(
            (0, 0),
            |(i, o), (_, inward)| {
                if *inward {
                    (i + 1, o)
                } else {
                    (i, o + 1)
                }
            },
        )
    }

    /// Why this node refuses a job whose home is `home`, if it does:
    /// with `block` on, it takes none but its own.
    pub fn refuses_guest(&self, home: &str) -> Option<String> {
        (self.knobs.lock().expect("knobs").block && home != self.node)
            .then(|| format!("node {} accepts no guest jobs (block)", self.node))
    }

    /// Why a job of `uid` may not run here, if it may not: root's jobs need
    /// `--allow-root-jobs`.
    pub fn refuses_uid(&self, uid: u32) -> Option<String> {
        (uid == 0 && !self.allow_root_jobs).then(|| {
            format!(
                "node {} does not run root's jobs (its agent runs without --allow-root-jobs); run it as a user, or on another node",
                self.node
            )
        })
    }

    /// Why jobs cannot be restored here, if they cannot.
    pub fn cannot_restore(&self) -> Option<String> {
        match &*self.criu.lock().expect("criu state") {
            None => Some("still checking whether CRIU works here".into()),
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e.clone()),
        }
    }
}

/// The jobs running here as `ps` shows them: a job that could move but
/// sits on a node where CRIU does not work says so.
pub fn listed(running: &Jobs, criu: &CriuState) -> Vec<JobInfo> {
    let why = match &*criu.lock().expect("criu state") {
        Some(Ok(())) => None,
        Some(Err(e)) => Some(format!("this node cannot checkpoint jobs: {e}")),
        None => Some("this node is still checking CRIU".to_string()),
    };
    running
        .lock()
        .expect("jobs lock")
        .values()
        .map(|j| {
            let mut j = j.clone();
            if j.cantmove.is_none() {
                j.cantmove.clone_from(&why);
            }
            j
        })
        .collect()
}

/// (jobs running, jobs ever started) with the guarantee that every job
/// counted in the second number and still running is counted in the first.
pub fn job_counts(running: &Jobs, started: &AtomicU64) -> (u32, u64) {
    let s = started.load(Ordering::SeqCst);
    let n = running.lock().expect("jobs lock").len() as u32;
    (n, s)
}
