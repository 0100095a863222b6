//! The caller's side of the control socket: connect, say hello, ask one
//! thing. `omctl` is built on it; tests and other tools can be too.
//!
//! The socket (default [`DEFAULT_SOCKET`]) is mode 0666 so every local
//! user can run jobs as themselves: the agent learns who asks from the
//! socket's peer credentials (`SO_PEERCRED`), never from the request.

use std::path::Path;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use crate::knobs::KnobAction;
use crate::model::{ClusterStatus, JobInfo, MigrateDone};
use crate::protocol::{self, ControlReply, ControlRequest, Hello, ProtocolError};

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
    /// The agent speaks another protocol.
    #[error(transparent)]
    Version(protocol::VersionMismatch),
    /// The exchange failed.
    #[error("talking to the agent: {0}")]
    Protocol(ProtocolError),
    /// The agent closed the connection without answering.
    #[error("the agent closed the connection without answering")]
    NoAnswer,
    /// The agent answered something else than expected.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
}

impl From<ProtocolError> for ControlError {
    fn from(e: ProtocolError) -> Self {
        match e {
            ProtocolError::Version(v) => ControlError::Version(v),
            e => ControlError::Protocol(e),
        }
    }
}

/// A refusal or failure the agent reported: (exit status for omctl, why).
pub type Refusal = (i32, String);

/// One greeted connection to the agent, split in its two halves.
#[derive(Debug)]
pub struct Connection {
    /// Replies come in here.
    pub rd: OwnedReadHalf,
    /// Requests go out here.
    pub wr: OwnedWriteHalf,
}

impl Connection {
    /// Connects to the agent's socket and exchanges hellos.
    pub async fn open(path: &Path) -> Result<Self, ControlError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect {
                path: path.display().to_string(),
                source,
            })?;
        let (mut rd, mut wr) = stream.into_split();
        protocol::greet(&mut rd, &mut wr, &Hello::ours()).await?;
        Ok(Connection { rd, wr })
    }

    /// Sends a request.
    pub async fn send(&mut self, req: &ControlRequest) -> Result<(), ControlError> {
        Ok(protocol::write(&mut self.wr, req).await?)
    }

    /// Reads the next reply; `None` once the agent closed the connection.
    pub async fn recv(&mut self) -> Result<Option<ControlReply>, ControlError> {
        Ok(protocol::read(&mut self.rd).await?)
    }
}

/// Sends one request and returns the one answer.
pub async fn request(path: &Path, req: &ControlRequest) -> Result<ControlReply, ControlError> {
    let mut c = Connection::open(path).await?;
    c.send(req).await?;
    c.recv().await?.ok_or(ControlError::NoAnswer)
}

fn unexpected(r: ControlReply) -> ControlError {
    ControlError::Unexpected(format!("{r:?}"))
}

/// The cluster view of the local agent.
pub async fn status(path: &Path) -> Result<ClusterStatus, ControlError> {
    match request(path, &ControlRequest::Status).await? {
        ControlReply::Status(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

/// The cluster jobs the local agent knows.
pub async fn ps(path: &Path) -> Result<Vec<JobInfo>, ControlError> {
    match request(path, &ControlRequest::Ps).await? {
        ControlReply::Ps(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

/// The cluster jobs of every live node, as the local agent gathers them.
pub async fn ps_cluster(path: &Path) -> Result<Vec<JobInfo>, ControlError> {
    match request(path, &ControlRequest::PsCluster).await? {
        ControlReply::Ps(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent to move a job: `Ok(Ok(done))`, or `Ok(Err(refusal))`
/// when the migration was refused or failed.
pub async fn migrate(
    path: &Path,
    job: &str,
    to: &str,
) -> Result<Result<MigrateDone, Refusal>, ControlError> {
    let req = ControlRequest::Migrate {
        job: job.to_string(),
        to: to.to_string(),
    };
    match request(path, &req).await? {
        ControlReply::Migrated(d) => Ok(Ok(d)),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent to signal or renice a job wherever it runs: the
/// line to print, or the refusal.
pub async fn steer(
    path: &Path,
    job: &str,
    order: crate::steer::JobOrder,
) -> Result<Result<String, Refusal>, ControlError> {
    let req = ControlRequest::Steer {
        job: job.to_string(),
        order,
    };
    match request(path, &req).await? {
        ControlReply::Steered(line) => Ok(Ok(line)),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent to turn a knob or carry out `expel`/`bring`, on
/// itself or on `node`: the lines to print, or the refusal.
pub async fn knob(
    path: &Path,
    node: Option<String>,
    action: KnobAction,
) -> Result<Result<Vec<String>, Refusal>, ControlError> {
    match request(path, &ControlRequest::Knob { node, action }).await? {
        ControlReply::KnobDone(lines) => Ok(Ok(lines)),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent for the boot server's admission list (`verdict`
/// None) or to relay a decision: `omboot`'s JSON, or the refusal.
pub async fn admission(
    path: &Path,
    verdict: Option<(String, contracts::admit::Verdict)>,
) -> Result<Result<String, Refusal>, ControlError> {
    match request(path, &ControlRequest::Admission { verdict }).await? {
        ControlReply::AdmissionDone(json) => Ok(Ok(json)),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// A join token as the agent made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenMade {
    /// `om1.ID.SECRET`.
    pub token: String,
    /// `http://HEAD:PORT`.
    pub head: String,
    /// Unix seconds it expires at.
    pub expires: u64,
    /// Joins it allows.
    pub uses: u32,
}

/// Asks the local agent to make a join token, or the refusal.
pub async fn token(
    path: &Path,
    ttl_s: u64,
    uses: u32,
) -> Result<Result<TokenMade, Refusal>, ControlError> {
    match request(path, &ControlRequest::Token { ttl_s, uses }).await? {
        ControlReply::TokenMade {
            token,
            head,
            expires,
            uses,
        } => Ok(Ok(TokenMade {
            token,
            head,
            expires,
            uses,
        })),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent for its key's fingerprint (`rotate` None), or to
/// rotate the cluster key with that window: the lines to print, or the
/// refusal.
pub async fn key(
    path: &Path,
    rotate: Option<u64>,
) -> Result<Result<Vec<String>, Refusal>, ControlError> {
    match request(path, &ControlRequest::Key { rotate }).await? {
        ControlReply::KeyDone(lines) => Ok(Ok(lines)),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}

/// Asks the local agent for a login link to its web view: the link and
/// what it allows (`read` or `steer`), or the refusal.
pub async fn web(
    path: &Path,
    read_only: bool,
) -> Result<Result<(String, String), Refusal>, ControlError> {
    match request(path, &ControlRequest::Web { read_only }).await? {
        ControlReply::WebLink { url, access } => Ok(Ok((url, access))),
        ControlReply::Failed { code, message } => Ok(Err((code, message))),
        other => Err(unexpected(other)),
    }
}
