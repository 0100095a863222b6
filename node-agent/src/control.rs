//! The local control socket between `omctl` and its agent: a unix stream
//! socket (default [`DEFAULT_SOCKET`], mode 0666 so every local user can run
//! jobs as themselves) carrying plain length-prefixed [`Frame`]s. The agent
//! learns who is asking from the socket's peer credentials (`SO_PEERCRED`),
//! never from the request, so a caller cannot ask to run as someone else.
//!
//! A connection carries one request: `Status` → `StatusReply`, `Ps` →
//! `PsReply`, or `Run` followed by the job's stdin/signals one way and
//! `Started`, output, then `Exit` or `Failed` the other.

use std::path::Path;

use tokio::net::UnixStream;

use crate::wire::{self, Frame, WireError};

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/omnode.sock";

/// Errors talking to the local agent.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The socket could not be reached.
    #[error("cannot reach the agent at {path}: {source} (is `omnode agent` running?)")]
    Connect {
        /// Socket path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to the agent: {0}")]
    Wire(#[from] WireError),
    /// The agent closed the connection without answering.
    #[error("the agent closed the connection without answering")]
    NoAnswer,
    /// The agent answered something else than expected.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
}

/// Connects to the agent's socket.
pub async fn connect(path: &Path) -> Result<UnixStream, ControlError> {
    UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.display().to_string(),
            source,
        })
}

/// Sends one request and returns the one answer.
pub async fn request(path: &Path, req: &Frame) -> Result<Frame, ControlError> {
    let mut s = connect(path).await?;
    wire::write_frame(&mut s, req).await?;
    wire::read_frame(&mut s)
        .await?
        .ok_or(ControlError::NoAnswer)
}

/// The cluster view of the local agent.
pub async fn status(path: &Path) -> Result<wire::ClusterStatus, ControlError> {
    match request(path, &Frame::Status).await? {
        Frame::StatusReply(s) => Ok(s),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// The cluster jobs of every live node, as the local agent gathers them.
pub async fn ps_cluster(path: &Path) -> Result<Vec<wire::JobInfo>, ControlError> {
    match request(path, &Frame::PsCluster).await? {
        Frame::PsReply(s) => Ok(s),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the local agent to move a job: `Ok(Ok(done))`, or `Ok(Err((exit
/// status, why)))` when the migration was refused or failed.
pub async fn migrate(
    path: &Path,
    job: &str,
    to: &str,
) -> Result<Result<wire::MigrateDone, (i32, String)>, ControlError> {
    let req = Frame::Migrate {
        job: job.to_string(),
        to: to.to_string(),
    };
    match request(path, &req).await? {
        Frame::Migrated(d) => Ok(Ok(d)),
        Frame::Failed { code, message } => Ok(Err((code, message))),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the local agent to turn a knob or carry out `expel`/`bring`, on
/// itself or on `node`: `Ok(Ok(lines))`, or `Ok(Err((exit status, why)))`.
pub async fn knob(
    path: &Path,
    node: Option<String>,
    action: crate::balance::KnobAction,
) -> Result<Result<Vec<String>, (i32, String)>, ControlError> {
    match request(path, &Frame::Knob { node, action }).await? {
        Frame::KnobDone(lines) => Ok(Ok(lines)),
        Frame::Failed { code, message } => Ok(Err((code, message))),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the local agent for the boot server's admission list (`verdict`
/// None) or to relay a decision: `Ok(Ok(json))`, or `Ok(Err((exit status,
/// why)))`.
pub async fn admission(
    path: &Path,
    verdict: Option<(String, contracts::admit::Verdict)>,
) -> Result<Result<String, (i32, String)>, ControlError> {
    match request(path, &Frame::Admission { verdict }).await? {
        Frame::AdmissionDone(json) => Ok(Ok(json)),
        Frame::Failed { code, message } => Ok(Err((code, message))),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the local agent to make a join token: `Ok(Ok((token, head,
/// expires, uses)))`, or `Ok(Err((exit status, why)))`.
pub async fn token(
    path: &Path,
    ttl_s: u64,
    uses: u32,
) -> Result<Result<(String, String, u64, u32), (i32, String)>, ControlError> {
    match request(path, &Frame::Token { ttl_s, uses }).await? {
        Frame::TokenMade {
            token,
            head,
            expires,
            uses,
        } => Ok(Ok((token, head, expires, uses))),
        Frame::Failed { code, message } => Ok(Err((code, message))),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// Asks the local agent for its key's fingerprint (`rotate` None), or to
/// rotate the cluster key with that window: the lines to print, or (exit
/// status, why).
pub async fn key(
    path: &Path,
    rotate: Option<u64>,
) -> Result<Result<Vec<String>, (i32, String)>, ControlError> {
    match request(path, &Frame::Key { rotate }).await? {
        Frame::KeyDone(lines) => Ok(Ok(lines)),
        Frame::Failed { code, message } => Ok(Err((code, message))),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}

/// The cluster jobs the local agent knows.
pub async fn ps(path: &Path) -> Result<Vec<wire::JobInfo>, ControlError> {
    match request(path, &Frame::Ps).await? {
        Frame::PsReply(s) => Ok(s),
        other => Err(ControlError::Unexpected(format!("{other:?}"))),
    }
}
