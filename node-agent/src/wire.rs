//! Message encoding. Datagrams between agents (inside the sealing of
//! [`crate::crypto`]) and the frames of the control socket and exec streams
//! are `postcard`-encoded enums; frames travel as `len u32 BE | bytes`, sealed
//! per frame on TCP and plain on the local unix socket. Byte payloads
//! (output, input, checkpoint pieces, SWIM packets) are encoded as bytes,
//! one copy, not as a sequence of `u8` read one at a time: the same
//! encoding on the wire, several times faster to decode.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::crypto::{FrameCipher, StreamError};
use crate::load::LoadVector;
use crate::membership::NodeId;

/// Largest frame accepted on a stream.
pub const MAX_FRAME: usize = 1 << 20;

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
}

/// Messages on the control socket and exec streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// omctl → agent: the cluster view, please.
    Status,
    /// Reply to `Status`.
    StatusReply(ClusterStatus),
    /// omctl → agent: cluster jobs started here or running here.
    Ps,
    /// Reply to `Ps`.
    PsReply(Vec<JobInfo>),
    /// omctl → agent: run a job.
    Run(RunRequest),
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
    /// omctl → agent: the cluster jobs of every live node (answered with
    /// `PsReply`; agents ask each other with `Ps` over exec streams).
    PsCluster,
    /// omctl → agent: move a job (by id, or by pid as `ps` shows it) to a
    /// node, `home` or `best`. Answered with `Migrated` or `Failed`.
    Migrate {
        /// Job id or pid.
        job: String,
        /// Node name, number or address, `home` or `best`.
        to: String,
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
    /// omctl → agent (for itself or, with `node`, for another node), and
    /// agent → agent: turn a knob, or `expel` / `bring`. Answered with
    /// `KnobDone` or `Failed`.
    Knob {
        /// The node to act on (`None`: the one receiving this).
        node: Option<String>,
        /// What to do.
        action: crate::balance::KnobAction,
    },
    /// What a `Knob` request did, a line each.
    KnobDone(Vec<String>),
    /// omctl → agent: the boot server's admission list (`verdict: None`),
    /// or an admin's decision on a machine, relayed to `omboot` signed with
    /// the cluster key. Answered with `AdmissionDone` or `Failed`.
    Admission {
        /// The machine (MAC or name) and the decision, if deciding.
        verdict: Option<(String, contracts::admit::Verdict)>,
    },
    /// `omboot`'s JSON answer: an `AdmissionList` or the decided `Machine`.
    AdmissionDone(String),
    /// omctl → agent: make a join token for workstations (`omctl token
    /// create`), registered with the boot server. Answered with
    /// `TokenMade` or `Failed`.
    Token {
        /// Seconds it stays valid.
        ttl_s: u64,
        /// How many machines may join with it.
        uses: u32,
    },
    /// The token (its secret included: this frame only crosses the local
    /// control socket), the boot server to join at, and what the head
    /// registered.
    TokenMade {
        /// `om1.ID.SECRET`.
        token: String,
        /// `http://HEAD:PORT`.
        head: String,
        /// Unix seconds it expires at.
        expires: u64,
        /// Joins it allows.
        uses: u32,
    },
    /// omctl → agent: the key in use (`rotate: None`), or move the whole
    /// cluster to a new key (`omctl key rotate`, root only), the old key
    /// accepted for `window_ms` after the switch. Answered with `KeyDone`
    /// or `Failed`.
    Key {
        /// `Some(window_ms)` to rotate.
        rotate: Option<u64>,
    },
    /// What `Key` found or did, a line each.
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
}

/// A cluster key's bytes in a frame; never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBytes(pub [u8; 32]);

impl std::fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBytes(..)")
    }
}

impl Frame {
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
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME + 64 {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one length-prefixed chunk.
pub async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> Result<(), WireError> {
    let mut buf = Vec::with_capacity(4 + bytes.len());
    buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    buf.extend_from_slice(bytes);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Reads a plain frame (control socket).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, WireError> {
    match read_chunk(r).await? {
        Some(b) => Ok(Some(Frame::decode(&b)?)),
        None => Ok(None),
    }
}

/// Writes a plain frame (control socket).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), WireError> {
    write_chunk(w, &f.encode()).await
}

/// Reads a sealed frame (exec stream).
pub async fn read_sealed<R: AsyncRead + Unpin>(
    r: &mut R,
    cipher: &mut FrameCipher,
) -> Result<Option<Frame>, WireError> {
    match read_chunk(r).await? {
        Some(b) => Ok(Some(Frame::decode(&cipher.open(&b)?)?)),
        None => Ok(None),
    }
}

/// Writes a sealed frame (exec stream).
pub async fn write_sealed<W: AsyncWrite + Unpin>(
    w: &mut W,
    cipher: &mut FrameCipher,
    f: &Frame,
) -> Result<(), WireError> {
    write_chunk(w, &cipher.seal(&f.encode())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_payloads_encode_as_a_length_and_the_bytes() {
        // What a `Vec<u8>` encoded element by element gave: agents of
        // either kind read each other's frames.
        let e = Frame::Stdout(b"abc".to_vec()).encode();
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
    async fn frames_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let f = Frame::Stdout(b"hello".to_vec());
        write_frame(&mut a, &f).await.unwrap();
        drop(a);
        assert_eq!(read_frame(&mut b).await.unwrap(), Some(f));
        assert_eq!(read_frame(&mut b).await.unwrap(), None);
    }

    #[test]
    fn exit_status_convention() {
        assert_eq!(ExitInfo::Code(3).as_status(), 3);
        assert_eq!(ExitInfo::Signal(15).as_status(), 143);
    }
}
