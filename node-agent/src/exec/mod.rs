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
//! This module holds a job's own life; which stream carries what is decided
//! by the agent's exec listener, the one place that reads a stream's first
//! frame (`agent::exec_listener`). Both sides speak the sealed stream of
//! [`crate::stream`]; what a job's life changes (its entry in the jobs
//! here, its driver, a parked restore, the ledger of attempts) goes through
//! the node's state ([`crate::state::State`]). Laid out as a tree:
//! - `target`: the job on the node running it: start it, pump its stdio
//!   and signals until it exits; and below it `target::migrate`: moving a
//!   running job between nodes (CRIU), source and target sides, and the
//!   rules that keep exactly one copy (a restored job is driven by
//!   `target` again).
//! - `home`: the home side: send the request and relay between the caller
//!   (`omctl run` on the control socket) and the target, following the job
//!   when it moves; ask a target for its job list; order a migration.
//!
//! Every task a connection starts (frame readers, output pumps, the stdin
//! writer) lives in a `JoinSet` owned by that connection, so it ends with it.

mod home;
pub(crate) mod target;

use std::net::SocketAddr;
use std::time::Duration;

use crate::cgroup::JobCgroup;
use crate::state::State;

pub use crate::stream::{accept, connect, SecureStream};
pub use home::{
    hand_key, order_migration, relay, remote_jobs, remote_knob, steer_job, RelayEnd, RelayEvent,
};
pub use target::migrate::SPOOL;

pub use agent_control::{EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_AGENT, EXIT_NO_PERMISSION};
/// How often a target tells the home node the job is still running.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which the home node gives up on a target.
pub const SILENCE_LIMIT: Duration = Duration::from_secs(5);

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
    /// The node's state: its jobs, their drivers, the moves, the knobs.
    pub state: State,
    /// The program that holds jobs (`omnode`, [`crate::job::holder_exe`]).
    pub holder: std::path::PathBuf,
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
    /// A context over `state`, with no admin task yet.
    pub fn new(
        node: String,
        addr: SocketAddr,
        keys: crate::keys::Keys,
        cgroup: Option<JobCgroup>,
        state: State,
    ) -> Self {
        ExecContext {
            node,
            addr,
            keys,
            cgroup,
            state,
            holder: crate::job::holder_exe(),
            admin: None,
            allow_root_jobs: true,
        }
    }

    /// Why this node refuses a job whose home is `home`, if it does:
    /// with `block` on, it takes none but its own.
    pub fn refuses_guest(&self, home: &str) -> Option<String> {
        (self.state.knobs().block && home != self.node)
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
        match self.state.criu() {
            None => Some("still checking whether CRIU works here".into()),
            Some(Ok(())) => None,
            Some(Err(e)) => Some(e),
        }
    }
}
