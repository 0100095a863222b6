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
//!   (`omctl run` on the control socket) and the target; ask a target for its
//!   job list.
//!
//! Every task a connection starts (frame readers, output pumps, the stdin
//! writer) lives in a `JoinSet` owned by that connection, so it ends with it.

mod home;
mod stream;
mod target;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cgroup::JobCgroup;
use crate::wire::JobInfo;

pub use home::{relay, remote_jobs, RelayEnd};
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

/// What a target agent needs to run jobs.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// This node's name (`OM_NODE`).
    pub node: String,
    /// Root key of exec streams.
    pub stream_key: [u8; 32],
    /// The job cgroup, if CPU capping is on.
    pub cgroup: Option<JobCgroup>,
    /// Jobs running here.
    pub running: Jobs,
    /// Jobs ever started here (incremented after a job enters `running`).
    pub started: Arc<AtomicU64>,
}

/// (jobs running, jobs ever started) with the guarantee that every job
/// counted in the second number and still running is counted in the first.
pub fn job_counts(running: &Jobs, started: &AtomicU64) -> (u32, u64) {
    let s = started.load(Ordering::SeqCst);
    let n = running.lock().expect("jobs lock").len() as u32;
    (n, s)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
