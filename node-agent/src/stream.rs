//! The sealed stream between two agents (exec streams): TCP with keepalive and a bound on
//! unacknowledged data (a dead peer is noticed while writing too), a handshake
//! that exchanges fresh nonces and the peer protocol's version (two agents of
//! two versions part with one line naming both), then every frame sealed with one cipher per
//! direction (see [`crate::crypto`]). Also the readers that turn a stream of
//! frames into a channel, so that the loops of both sides select over
//! channels (cancel-safe) instead of half-read frames.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::crypto::{self, FrameCipher, Role, StreamError};
use crate::wire::{self, PeerFrame, WireError};

/// The sealed halves of an exec connection.
pub struct SecureStream {
    /// Reading half.
    pub rd: tokio::net::tcp::OwnedReadHalf,
    /// Writing half.
    pub wr: tokio::net::tcp::OwnedWriteHalf,
    /// Cipher for frames we send.
    pub send: FrameCipher,
    /// Cipher for frames we receive.
    pub recv: FrameCipher,
}

impl std::fmt::Debug for SecureStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureStream")
            .field("peer", &self.rd.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

/// How long sent bytes may stay unacknowledged before the connection is
/// given up (`TCP_USER_TIMEOUT`). Keepalive only probes an idle link: a
/// peer that dies while we write would otherwise hold the writer for the
/// kernel's full retransmission schedule (about 15 minutes), and with it a
/// job frozen for a move.
pub const UNACKED_LIMIT: Duration = Duration::from_secs(15);

fn keepalive(stream: &TcpStream) {
    let s = socket2::SockRef::from(stream);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(2))
        .with_interval(Duration::from_secs(1))
        .with_retries(3);
    let _ = s.set_tcp_keepalive(&ka);
    let _ = s.set_tcp_user_timeout(Some(UNACKED_LIMIT));
    let _ = stream.set_nodelay(true);
}

/// Connects to a target agent and performs the client side of the handshake.
pub async fn connect(addr: SocketAddr, stream_key: &[u8; 32]) -> Result<SecureStream, WireError> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    keepalive(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let hello = crypto::client_hello();
    wr.write_all(&hello).await?;
    let mut reply = [0u8; crypto::REPLY_LEN];
    tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut reply))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let sn = crypto::parse_hello(&reply)?;
    let cn: [u8; 32] = hello[4..].try_into().expect("32 bytes");
    let (send, recv) = crypto::stream_ciphers(stream_key, &cn, &sn, Role::Client);
    Ok(SecureStream { rd, wr, send, recv })
}

/// Server side of the handshake on an accepted connection, up to the
/// client's first frame (its request), which shows which of the stream
/// root keys `roots` it seals with: during a key rotation both are taken.
/// `None` when the client closed without asking anything.
pub async fn accept(
    stream: TcpStream,
    roots: &[[u8; 32]],
) -> Result<Option<(SecureStream, PeerFrame)>, WireError> {
    keepalive(&stream);
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = [0u8; crypto::HELLO_LEN];
    tokio::time::timeout(Duration::from_secs(5), rd.read_exact(&mut hello))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))??;
    let cn = match crypto::parse_hello(&hello) {
        Ok(cn) => cn,
        Err(e @ StreamError::Version { .. }) => {
            // Our hello (with no nonce: nothing follows) lets the caller
            // name both versions instead of failing to open our frames.
            let _ = wr
                .write_all(&crypto::hello_with(crypto::PEER_PROTOCOL, &[0; 32]))
                .await;
            return Err(e.into());
        }
        Err(e) => return Err(e.into()),
    };
    let sn: [u8; 32] = rand10::random();
    wr.write_all(&crypto::hello_with(crypto::PEER_PROTOCOL, &sn))
        .await?;
    let first = tokio::time::timeout(Duration::from_secs(5), wire::read_chunk(&mut rd))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 5 s")
        })??;
    let Some(first) = first else {
        return Ok(None);
    };
    let (send, recv, plain) = crypto::open_first(roots, &cn, &sn, &first)?;
    let frame = PeerFrame::decode(&plain)?;
    Ok(Some((SecureStream { rd, wr, send, recv }, frame)))
}

/// Reads sealed frames into a channel, in a task of `tasks` (so the task
/// ends when its owner drops the set). The channel closes on end of stream
/// or on the first bad frame.
pub(crate) fn sealed_reader(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut cipher: FrameCipher,
    tasks: &mut JoinSet<()>,
) -> mpsc::Receiver<Result<PeerFrame, WireError>> {
    let (tx, rx) = mpsc::channel(64);
    tasks.spawn(async move {
        loop {
            let r = wire::read_sealed(&mut rd, &mut cipher).await;
            if !forward(&tx, r).await {
                break;
            }
        }
    });
    rx
}

/// Passes one read on to the channel; false when the reader should stop (end
/// of stream, a bad frame, or nobody listening).
async fn forward(
    tx: &mpsc::Sender<Result<PeerFrame, WireError>>,
    r: Result<Option<PeerFrame>, WireError>,
) -> bool {
    let stop = !matches!(r, Ok(Some(_)));
    let item = match r {
        Ok(Some(f)) => Ok(f),
        Ok(None) => return false,
        Err(e) => Err(e),
    };
    tx.send(item).await.is_ok() && !stop
}
