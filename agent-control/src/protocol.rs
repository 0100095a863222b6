//! The control protocol: what `omctl` asks its agent over the local unix
//! socket ([`ControlRequest`]) and what the agent answers
//! ([`ControlReply`]), postcard bodies in length-prefixed frames
//! ([`crate::framing`]).
//!
//! A connection opens with a [`Hello`] each way, the caller's first. Its
//! layout never changes (`OMCTL`, the protocol number as `u32` BE, the
//! release), so an `omctl` of any release reads any agent's and the other
//! way round: a caller and an agent of two protocol numbers part with one
//! line naming both ([`VersionMismatch`]), never with a decode error in the
//! middle of a request. [`PROTOCOL`] goes up with every change to the two
//! enums or the types they carry.
//!
//! After the hellos, one request: `Status` → `Status`, `Ps`/`PsCluster` →
//! `Ps`, `Migrate` → `Migrated` or `Failed`, `Knob` → `KnobDone` or
//! `Failed`, `Admission` → `AdmissionDone` or `Failed`, `Token` →
//! `TokenMade` or `Failed`, `Key` → `KeyDone` or `Failed`; or `Run`,
//! followed by stdin and signals one way and `Started`, output, then `Exit`
//! or `Failed` the other.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::framing::{self, FramingError};
use crate::knobs::KnobAction;
use crate::model::{ClusterStatus, ExitInfo, JobInfo, MigrateDone, RunRequest};

/// The control protocol's number: up by one with every change to
/// [`ControlRequest`], [`ControlReply`] or what they carry.
pub const PROTOCOL: u32 = 3;

/// This build's release, as hellos carry it.
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// What a hello starts with.
const HELLO_MAGIC: &[u8; 5] = b"OMCTL";

/// Longest release string a hello carries.
const MAX_RELEASE: usize = 64;

/// omctl → agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlRequest {
    /// The cluster view, please.
    Status,
    /// The cluster jobs started here or running here.
    Ps,
    /// The cluster jobs of every live node.
    PsCluster,
    /// Run a job; stdin and signals follow.
    Run(RunRequest),
    /// Bytes for the job's stdin.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The job's stdin is closed.
    StdinEof,
    /// Deliver this signal to the job's process group.
    Signal(i32),
    /// Move a job (by id, or by pid as `ps` shows it) to a node, `home` or
    /// `best`.
    Migrate {
        /// Job id or pid.
        job: String,
        /// Node name, number or address, `home` or `best`.
        to: String,
    },
    /// Turn a knob, or `expel` / `bring`, on this node or on `node`.
    Knob {
        /// The node to act on (`None`: the one receiving this).
        node: Option<String>,
        /// What to do.
        action: KnobAction,
    },
    /// The boot server's admission list (`verdict: None`), or an admin's
    /// decision on a machine, relayed to `omboot` signed with the cluster
    /// key.
    Admission {
        /// The machine (MAC or name) and the decision, if deciding.
        verdict: Option<(String, contracts::admit::Verdict)>,
    },
    /// Make a join token for workstations (`omctl token create`),
    /// registered with the boot server.
    Token {
        /// Seconds it stays valid.
        ttl_s: u64,
        /// How many machines may join with it.
        uses: u32,
    },
    /// The key in use (`rotate: None`), or move the whole cluster to a new
    /// key (`omctl key rotate`, root only), the old key accepted for
    /// `window_ms` after the switch.
    Key {
        /// `Some(window_ms)` to rotate.
        rotate: Option<u64>,
    },
    /// Signal or renice one job wherever it runs (`omctl kill`, `omctl
    /// renice`); its owner or root.
    Steer {
        /// Job id or pid.
        job: String,
        /// What to do.
        order: crate::steer::JobOrder,
    },
    /// A one-time login link to the web view this agent serves (`omctl
    /// web`): one that can steer (root only), or only look.
    Web {
        /// Whether the session may only look.
        read_only: bool,
    },
}

/// agent → omctl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlReply {
    /// The cluster as the agent sees it.
    Status(ClusterStatus),
    /// Cluster jobs.
    Ps(Vec<JobInfo>),
    /// The job started on `node` as `pid`.
    Started {
        /// Where it runs.
        node: String,
        /// Its process id there.
        pid: u32,
    },
    /// Bytes from the job's stdout.
    Stdout(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Bytes from the job's stderr.
    Stderr(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The job ended.
    Exit(ExitInfo),
    /// The request was refused or failed, or the job could not run or was
    /// lost; omctl exits with `code`.
    Failed {
        /// Exit status for omctl.
        code: i32,
        /// What went wrong, for a human.
        message: String,
    },
    /// The job moved.
    Migrated(MigrateDone),
    /// What a `Knob` request did, a line each.
    KnobDone(Vec<String>),
    /// What a `Steer` request did, one line.
    Steered(String),
    /// `omboot`'s JSON answer: an `AdmissionList` or the decided `Machine`.
    AdmissionDone(String),
    /// The token (its secret included: this reply only crosses the local
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
    /// What `Key` found or did, a line each.
    KeyDone(Vec<String>),
    /// The web view's login link (its one-time token included: this reply
    /// only crosses the local control socket).
    WebLink {
        /// `http://HOST:PORT/#login=TOKEN`.
        url: String,
        /// `read` or `steer`.
        access: String,
    },
}

/// The first frame each way: who speaks which protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol number.
    pub protocol: u32,
    /// The release of the program saying it.
    pub release: String,
}

impl Hello {
    /// This build's hello.
    pub fn ours() -> Self {
        Hello {
            protocol: PROTOCOL,
            release: RELEASE.to_string(),
        }
    }

    /// `OMCTL | protocol u32 BE | release`: a layout that never changes.
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.release.len().min(MAX_RELEASE);
        while !self.release.is_char_boundary(end) {
            end -= 1;
        }
        let release = &self.release.as_bytes()[..end];
        let mut b = Vec::with_capacity(HELLO_MAGIC.len() + 4 + release.len());
        b.extend_from_slice(HELLO_MAGIC);
        b.extend_from_slice(&self.protocol.to_be_bytes());
        b.extend_from_slice(release);
        b
    }

    /// Reads a hello; `None` when the bytes are not one.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let rest = b.strip_prefix(HELLO_MAGIC)?;
        let (protocol, release) = rest.split_first_chunk::<4>()?;
        if release.len() > MAX_RELEASE {
            return None;
        }
        Some(Hello {
            protocol: u32::from_be_bytes(*protocol),
            release: String::from_utf8(release.to_vec()).ok()?,
        })
    }
}

/// Two ends of the control socket that speak two protocols.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "omctl {caller_release} speaks control protocol {caller} and the agent (omnode {agent_release}) speaks {agent}: use the omctl of the agent's release"
)]
pub struct VersionMismatch {
    /// The caller's protocol.
    pub caller: u32,
    /// The caller's release.
    pub caller_release: String,
    /// The agent's protocol.
    pub agent: u32,
    /// The agent's release.
    pub agent_release: String,
}

/// Whether `caller` and `agent` can talk.
pub fn check(caller: &Hello, agent: &Hello) -> Result<(), VersionMismatch> {
    if caller.protocol == agent.protocol {
        return Ok(());
    }
    Err(VersionMismatch {
        caller: caller.protocol,
        caller_release: caller.release.clone(),
        agent: agent.protocol,
        agent_release: agent.release.clone(),
    })
}

/// Errors speaking the control protocol.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// Bytes that do not decode as the expected message.
    #[error("malformed message: {0}")]
    Malformed(#[from] postcard::Error),
    /// The stream failed or carried an oversized frame.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// The first frame was not a hello: a program older than the
    /// handshake, or not `omctl` at all.
    #[error(
        "the other end did not open with a control-protocol hello (a release older than 0.1.0?)"
    )]
    NoHello,
    /// The two ends speak two protocols.
    #[error(transparent)]
    Version(#[from] VersionMismatch),
}

/// Reads one message; `Ok(None)` on a clean end of stream.
pub async fn read<T: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<T>, ProtocolError> {
    match framing::read_chunk(r).await? {
        Some(b) => Ok(Some(postcard::from_bytes(&b)?)),
        None => Ok(None),
    }
}

/// Writes one message.
pub async fn write<T: Serialize, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &T,
) -> Result<(), ProtocolError> {
    let body = postcard::to_stdvec(msg).expect("control messages always encode");
    Ok(framing::write_chunk(w, &body).await?)
}

async fn read_hello<R: AsyncRead + Unpin>(r: &mut R) -> Result<Hello, ProtocolError> {
    let chunk = framing::read_chunk(r)
        .await?
        .ok_or(ProtocolError::NoHello)?;
    Hello::decode(&chunk).ok_or(ProtocolError::NoHello)
}

/// The caller's side of the handshake: says its hello, reads the agent's,
/// and fails with [`ProtocolError::Version`] if they differ.
pub async fn greet<R, W>(rd: &mut R, wr: &mut W, ours: &Hello) -> Result<Hello, ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    framing::write_chunk(wr, &ours.encode()).await?;
    let agent = read_hello(rd).await?;
    check(ours, &agent)?;
    Ok(agent)
}

/// The agent's side: reads the caller's hello, answers with its own
/// (always, so the caller can name both versions), and fails with
/// [`ProtocolError::Version`] if they differ.
pub async fn answer<R, W>(rd: &mut R, wr: &mut W, ours: &Hello) -> Result<Hello, ProtocolError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let caller = read_hello(rd).await?;
    framing::write_chunk(wr, &ours.encode()).await?;
    check(&caller, ours)?;
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_reads_back_and_other_bytes_are_not_one() {
        let h = Hello::ours();
        assert_eq!(Hello::decode(&h.encode()), Some(h));
        assert_eq!(Hello::decode(b"OMCT"), None);
        assert_eq!(Hello::decode(b"OMCTL\0\0"), None);
        // A request frame is not a hello.
        let status = postcard::to_stdvec(&ControlRequest::Status).unwrap();
        assert_eq!(Hello::decode(&status), None);
    }

    #[test]
    fn the_hello_layout_is_fixed() {
        let h = Hello {
            protocol: 1,
            release: "0.1.0".into(),
        };
        assert_eq!(h.encode(), b"OMCTL\0\0\0\x010.1.0");
    }

    async fn handshake(
        caller: Hello,
        agent: Hello,
    ) -> (Result<Hello, ProtocolError>, Result<Hello, ProtocolError>) {
        let (mut c, mut a) = tokio::io::duplex(1024);
        let (mut crd, mut cwr) = tokio::io::split(&mut c);
        let (mut ard, mut awr) = tokio::io::split(&mut a);
        tokio::join!(
            greet(&mut crd, &mut cwr, &caller),
            answer(&mut ard, &mut awr, &agent)
        )
    }

    #[tokio::test]
    async fn an_older_and_a_newer_omctl_get_one_line_naming_both_versions() {
        let agent = Hello {
            protocol: PROTOCOL,
            release: "0.1.0".into(),
        };
        for other in [PROTOCOL - 1, PROTOCOL + 1] {
            let caller = Hello {
                protocol: other,
                release: "9.9.9".into(),
            };
            let (c, a) = handshake(caller, agent.clone()).await;
            let line = c.unwrap_err().to_string();
            assert_eq!(
                line,
                format!(
                    "omctl 9.9.9 speaks control protocol {other} and the agent (omnode 0.1.0) speaks {PROTOCOL}: use the omctl of the agent's release"
                )
            );
            assert!(!line.contains('\n'));
            assert!(matches!(a, Err(ProtocolError::Version(_))));
        }
        let (c, a) = handshake(Hello::ours(), Hello::ours()).await;
        assert_eq!(c.unwrap(), Hello::ours());
        assert_eq!(a.unwrap(), Hello::ours());
    }

    #[tokio::test]
    async fn a_request_without_a_hello_is_named_not_decoded() {
        let (mut c, mut a) = tokio::io::duplex(1024);
        write(&mut c, &ControlRequest::Status).await.unwrap();
        let (mut ard, mut awr) = tokio::io::split(&mut a);
        let r = answer(&mut ard, &mut awr, &Hello::ours()).await;
        assert!(matches!(r, Err(ProtocolError::NoHello)), "{r:?}");
    }

    #[tokio::test]
    async fn messages_round_trip() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let m = ControlReply::Stdout(b"hello".to_vec());
        write(&mut a, &m).await.unwrap();
        drop(a);
        assert_eq!(read::<ControlReply, _>(&mut b).await.unwrap(), Some(m));
        assert_eq!(read::<ControlReply, _>(&mut b).await.unwrap(), None);
    }
}
