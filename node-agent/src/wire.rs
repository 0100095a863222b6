//! What agents say to each other: datagrams (inside the sealing of
//! [`crate::crypto`]) and the frames of exec streams ([`PeerFrame`]), both
//! `postcard`-encoded enums; frames travel as `len u32 BE | bytes`
//! ([`agent_control::framing`]), each sealed. What `omctl` and its agent say
//! is the other protocol, [`agent_control::protocol`]. Byte payloads
//! (output, input, checkpoint pieces, SWIM packets) are encoded as bytes,
//! one copy, not as a sequence of `u8` read one at a time: the same
//! encoding on the wire, several times faster to decode.

use agent_control::framing::{self, FramingError};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::crypto::{FrameCipher, StreamError};
use crate::load::LoadVector;
use crate::membership::NodeId;

pub use agent_control::framing::MAX_FRAME;
pub use agent_control::{ClusterStatus, ExitInfo, JobInfo, MigrateDone, NodeStatus, RunRequest};

/// What one agent says to another in a datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Datagram {
    /// A foca membership payload.
    Swim(#[serde(with = "serde_bytes")] Vec<u8>),
    /// "I am here, and this is my load": multicast for discovery, unicast to
    /// members at least once a second.
    Presence {
        /// The sender.
        id: NodeId,
        /// The sender's load vector.
        load: LoadVector,
    },
}

/// Errors decoding or moving messages.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Bytes that do not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// A frame announced a length over [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The stream failed.
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A sealed frame failed authentication.
    #[error(transparent)]
    Sealing(#[from] StreamError),
}

impl From<FramingError> for WireError {
    fn from(e: FramingError) -> Self {
        match e {
            FramingError::TooLarge(n) => WireError::TooLarge(n),
            FramingError::Io(e) => WireError::Io(e),
        }
    }
}

impl Datagram {
    /// Encodes for sealing.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("datagram encoding cannot fail")
    }

    /// Decodes an opened datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// A job to run, as the home agent sends it to the target agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    /// Cluster-unique job id (home node name + counter).
    pub job: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: String,
    /// Environment (the agent adds `OM_NODE` and `OM_HOME`).
    pub env: Vec<(String, String)>,
    /// Run as this user…
    pub uid: u32,
    /// …and group.
    pub gid: u32,
    /// The node it was launched from.
    pub home: String,
    /// Never migrate it.
    pub lock: bool,
}

/// A job moving in, as its source node describes it to the target before
/// the checkpoint's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Immigrant {
    /// The job as `ps` shows it (its node and pid are the source's).
    pub info: JobInfo,
    /// Its group (`info.uid` is its user).
    pub gid: u32,
    /// The inodes of its stdin, stdout and stderr pipes in the checkpoint.
    pub pipe_inodes: [u64; 3],
    /// Stdin the job had not read yet, to write first on the target.
    #[serde(with = "serde_bytes")]
    pub stdin: Vec<u8>,
    /// Whether its stdin is closed.
    pub stdin_closed: bool,
    /// Which attempt of moving it this is (the target asks the source about
    /// it by this number if the link breaks).
    pub attempt: u64,
    /// The source agent's address, for that question.
    pub from_addr: std::net::SocketAddr,
}

/// A migration, as an agent asks the node running the job to do it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateOrder {
    /// The job.
    pub job: String,
    /// The target's name…
    pub to: String,
    /// …and agent address.
    pub to_addr: std::net::SocketAddr,
    /// Who asks (only the job's owner and root may move it).
    pub uid: u32,
}

/// A signal or nice value for a job, as an agent asks the node running it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SteerOrder {
    /// The job.
    pub job: String,
    /// What to do.
    pub order: agent_control::steer::JobOrder,
    /// Who asks (only the job's owner and root may steer it; only root may
    /// lower its nice value).
    pub uid: u32,
}

/// What one agent says to another on an exec stream (sealed, see
/// [`crate::crypto`]). The first frame of a stream is its request (`Exec`,
/// `Ps`, `MigrateJob`, `Immigrate`, `Attach`, `Outcome`, `Knob`, `NewKey`,
/// `Steer`),
/// which the exec listener dispatches; the rest belong to the exchange it
/// opened. [`crate::crypto::PEER_PROTOCOL`] goes up with every change here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PeerFrame {
    /// agent → agent: the cluster jobs running on the receiving node.
    Ps,
    /// Reply to `Ps`.
    PsReply(Vec<JobInfo>),
    /// home agent → target agent: run this job.
    Exec(ExecRequest),
    /// The job started on `node` as `pid`.
    Started {
        /// Where it runs.
        node: String,
        /// Its process id there.
        pid: u32,
        /// Its sequence number among the jobs started there (see
        /// [`LoadVector::started`]).
        seq: u64,
    },
    /// Bytes for the job's stdin.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The job's stdin is closed.
    StdinEof,
    /// Deliver this signal to the job's process group.
    Signal(i32),
    /// Bytes from the job's stdout.
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytes from the job's stderr.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The target is alive and the job is still running.
    Heartbeat,
    /// The job ended.
    Exit(ExitInfo),
    /// The job could not run or was lost; omctl exits with `code`.
    Failed {
        /// Exit status for omctl.
        code: i32,
        /// What went wrong, for a human.
        message: String,
    },
    /// agent → the agent running the job: move it.
    MigrateJob(MigrateOrder),
    /// The job moved.
    Migrated(MigrateDone),
    /// source → target: a job moving in; its checkpoint's files follow as
    /// `File` frames, then `FilesDone`.
    Immigrate(Immigrant),
    /// One piece of a checkpoint file (appended to the file of that name).
    File {
        /// File name inside the checkpoint directory.
        name: String,
        /// Bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// source → target: that was the whole checkpoint, restore it.
    FilesDone,
    /// target → source: restored, stopped, waiting for `Commit`.
    Restored {
        /// The job init's pid on the target.
        pid: u32,
    },
    /// source → target: the source's copy is gone; resume yours.
    Commit,
    /// target → source, after a broken link: what became of this attempt?
    Outcome {
        /// The job.
        job: String,
        /// The attempt.
        attempt: u64,
    },
    /// source → target: `true` if the source committed (its copy is gone).
    OutcomeReply(bool),
    /// node running the job → home: the job is frozen for a move to
    /// `node`; hold its input. Should this node die before it says how the
    /// move ended, home follows the job there.
    Migrating {
        /// The target's name.
        node: String,
        /// Its agent's address.
        addr: std::net::SocketAddr,
    },
    /// node running the job → home: the move failed; the job runs here
    /// again.
    Resumed,
    /// old target → home: the job now runs on `node`; attach there.
    Moved {
        /// Its name.
        node: String,
        /// Its agent's address.
        addr: std::net::SocketAddr,
    },
    /// home → new target: carry on the stream of this job.
    Attach {
        /// The job.
        job: String,
    },
    /// agent → agent (for `omctl knob --node`): turn a knob on the
    /// receiving node, or `expel` / `bring`. Answered with `KnobDone` or
    /// `Failed`.
    Knob {
        /// What to do.
        action: crate::balance::KnobAction,
    },
    /// What a `Knob` request did, a line each.
    KnobDone(Vec<String>),
    /// What a `NewKey` did: empty, or a warning.
    KeyDone(Vec<String>),
    /// agent → agent during a rotation: take this key; seal with it after
    /// `switch_in_ms`, refuse the old one `window_ms` after that. Answered
    /// with `KeyDone` (empty, or a warning) or `Failed`.
    NewKey {
        /// The new cluster key.
        key: KeyBytes,
        /// From receipt to the switch, ms.
        switch_in_ms: u64,
        /// From the switch to the old key's end, ms.
        window_ms: u64,
    },
    /// agent → the agent running the job: signal or renice it. Answered
    /// with `Steered` or `Failed`.
    Steer(SteerOrder),
    /// What a `Steer` did, one line.
    Steered(String),
}

/// A frame of a running job's stream, by the side that sends it: what
/// the relay on the home node ([`crate::exec::relay`]) and the job's driver
/// on the node running it read, each matching its side exhaustively.
#[derive(Debug, Clone, PartialEq)]
pub enum JobFrame {
    /// home → the node running the job.
    FromHome(HomeFrame),
    /// The node running the job → home.
    FromTarget(TargetFrame),
}

/// What home sends a running job (what the caller, `omctl run`, sends
/// its job).
#[derive(Debug, Clone, PartialEq)]
pub enum HomeFrame {
    /// Bytes for its stdin.
    Stdin(Vec<u8>),
    /// Its stdin is closed.
    StdinEof,
    /// A signal for its process group.
    Signal(i32),
}

/// What the node running a job tells home.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetFrame {
    /// It started (or, after a move, runs) on `node` as `pid`.
    Started {
        /// Where.
        node: String,
        /// Its pid there.
        pid: u32,
        /// Its sequence number among the jobs started there.
        seq: u64,
    },
    /// Bytes from its stdout.
    Stdout(Vec<u8>),
    /// Bytes from its stderr.
    Stderr(Vec<u8>),
    /// It still runs.
    Heartbeat,
    /// It ended.
    Exit(ExitInfo),
    /// It could not run or was lost.
    Failed {
        /// Exit status for omctl.
        code: i32,
        /// Why.
        message: String,
    },
    /// It is frozen for a move to `node`.
    Migrating {
        /// The move's target.
        node: String,
        /// Its agent's address.
        addr: std::net::SocketAddr,
    },
    /// The move failed; it runs here again.
    Resumed,
    /// It runs on `node` now.
    Moved {
        /// Where.
        node: String,
        /// Its agent's address.
        addr: std::net::SocketAddr,
    },
}

impl From<HomeFrame> for PeerFrame {
    fn from(f: HomeFrame) -> Self {
        match f {
            HomeFrame::Stdin(b) => PeerFrame::Stdin(b),
            HomeFrame::StdinEof => PeerFrame::StdinEof,
            HomeFrame::Signal(s) => PeerFrame::Signal(s),
        }
    }
}

impl PeerFrame {
    /// The frame as one of a running job's stream, or itself when it is
    /// not one (a request, or a frame of another exchange).
    pub fn into_job_frame(self) -> Result<JobFrame, Box<PeerFrame>> {
        use JobFrame::{FromHome, FromTarget};
        Ok(match self {
            PeerFrame::Stdin(b) => FromHome(HomeFrame::Stdin(b)),
            PeerFrame::StdinEof => FromHome(HomeFrame::StdinEof),
            PeerFrame::Signal(s) => FromHome(HomeFrame::Signal(s)),
            PeerFrame::Started { node, pid, seq } => {
                FromTarget(TargetFrame::Started { node, pid, seq })
            }
            PeerFrame::Stdout(b) => FromTarget(TargetFrame::Stdout(b)),
            PeerFrame::Stderr(b) => FromTarget(TargetFrame::Stderr(b)),
            PeerFrame::Heartbeat => FromTarget(TargetFrame::Heartbeat),
            PeerFrame::Exit(e) => FromTarget(TargetFrame::Exit(e)),
            PeerFrame::Failed { code, message } => {
                FromTarget(TargetFrame::Failed { code, message })
            }
            PeerFrame::Migrating { node, addr } => {
                FromTarget(TargetFrame::Migrating { node, addr })
            }
            PeerFrame::Resumed => FromTarget(TargetFrame::Resumed),
            PeerFrame::Moved { node, addr } => FromTarget(TargetFrame::Moved { node, addr }),
            other @ (PeerFrame::Ps
            | PeerFrame::PsReply(_)
            | PeerFrame::Exec(_)
            | PeerFrame::MigrateJob(_)
            | PeerFrame::Migrated(_)
            | PeerFrame::Immigrate(_)
            | PeerFrame::File { .. }
            | PeerFrame::FilesDone
            | PeerFrame::Restored { .. }
            | PeerFrame::Commit
            | PeerFrame::Outcome { .. }
            | PeerFrame::OutcomeReply(_)
            | PeerFrame::Attach { .. }
            | PeerFrame::Knob { .. }
            | PeerFrame::KnobDone(_)
            | PeerFrame::KeyDone(_)
            | PeerFrame::NewKey { .. }
            | PeerFrame::Steer(_)
            | PeerFrame::Steered(_)) => return Err(Box::new(other)),
        })
    }
}

/// A cluster key's bytes in a frame; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBytes(pub [u8; 32]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

impl PeerFrame {
    /// Encodes the frame body.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("frame encoding cannot fail")
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// Reads one length-prefixed chunk; `Ok(None)` on a clean end of stream.
pub async fn read_chunk<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Vec<u8>>, WireError> {
    Ok(framing::read_chunk(r).await?)
}

/// Reads a sealed frame (exec stream).
pub async fn read_sealed<R: AsyncRead + Unpin>(
    r: &mut R,
    cipher: &mut FrameCipher,
) -> Result<Option<PeerFrame>, WireError> {
    match read_chunk(r).await? {
        Some(b) => Ok(Some(PeerFrame::decode(&cipher.open(&b)?)?)),
        None => Ok(None),
    }
}

/// Writes a sealed frame (exec stream).
pub async fn write_sealed<W: AsyncWrite + Unpin>(
    w: &mut W,
    cipher: &mut FrameCipher,
    f: &PeerFrame,
) -> Result<(), WireError> {
    Ok(framing::write_chunk(w, &cipher.seal(&f.encode())).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_payloads_encode_as_a_length_and_the_bytes() {
        // What a `Vec<u8>` encoded element by element gave: agents of
        // either kind read each other's frames.
        let e = PeerFrame::Stdout(b"abc".to_vec()).encode();
        assert_eq!(&e[1..], &[3, b'a', b'b', b'c']);
        let d = Datagram::Swim(vec![9; 200]).encode();
        assert_eq!(&d[1..3], &[200, 1]);
        assert_eq!(d.len(), 3 + 200);
    }

    #[test]
    fn datagram_round_trip() {
        let d = Datagram::Swim(vec![1, 2, 3]);
        assert_eq!(Datagram::decode(&d.encode()).unwrap(), d);
        assert!(Datagram::decode(&[200, 1]).is_err());
    }

    #[tokio::test]
    async fn sealed_frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let (root, cn, sn) = ([5u8; 32], [1u8; 32], [2u8; 32]);
        let (mut send, _) =
            crate::crypto::stream_ciphers(&root, &cn, &sn, crate::crypto::Role::Client);
        let (_, mut recv) =
            crate::crypto::stream_ciphers(&root, &cn, &sn, crate::crypto::Role::Server);
        let f = PeerFrame::Stdout(b"hello".to_vec());
        write_sealed(&mut a, &mut send, &f).await.unwrap();
        drop(a);
        assert_eq!(read_sealed(&mut b, &mut recv).await.unwrap(), Some(f));
        assert_eq!(read_sealed(&mut b, &mut recv).await.unwrap(), None);
    }
}
