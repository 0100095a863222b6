//! Read-only TFTP server (RFC 1350, option negotiation of RFC 2347/2348/2349,
//! RFC 7440 windowsize).
//!
//! Layout:
//! - [`packet`]: wire format, pure.
//! - [`transfer`]: option negotiation and the per-transfer state machine, pure.
//! - [`path`]: confinement of requested names to the boot root.
//! - this module: the tokio shell. [`serve`] reads requests on the listening
//!   socket and runs each transfer on its own ephemeral socket (its own transfer
//!   ID, connected to the client). A semaphore caps concurrent transfers; a
//!   request over the cap gets an ERROR at once. Files are streamed through a
//!   bounded read-ahead buffer, never read whole. Write requests are refused.
//!
//! Architecture Invariant: the protocol decisions live in [`transfer`]; this shell
//! only moves bytes between the socket, the file and the state machine.

pub mod packet;
pub mod path;
pub mod transfer;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::nodes::{BootStage, NodeRegistry};
use packet::{ErrorCode, Mode, Packet};
pub use transfer::TftpLimits;
use transfer::{negotiate, Outcome, Send, Step, Transfer};

/// Bytes read from the file at once; with one window this bounds a transfer's memory.
const READ_AHEAD: usize = 256 * 1024;

/// Why the TFTP server cannot run.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// The boot root cannot be resolved.
    #[error("tftp root {path}: {source}")]
    Root {
        /// The root as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The boot root is not a directory.
    #[error("tftp root {0} is not a directory")]
    RootNotDir(PathBuf),
    /// Reading from the listening socket failed.
    #[error("tftp socket: {0}")]
    Socket(#[source] std::io::Error),
}

/// Serves files under `root` on `socket` until `shutdown` completes; transfers
/// still running then are cut off.
pub async fn serve(
    socket: UdpSocket,
    root: PathBuf,
    limits: TftpLimits,
    registry: Arc<NodeRegistry>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TftpError> {
    let root = std::fs::canonicalize(&root).map_err(|source| TftpError::Root {
        path: root.clone(),
        source,
    })?;
    if !root.is_dir() {
        return Err(TftpError::RootNotDir(root));
    }
    let local_ip = socket.local_addr().map_err(TftpError::Socket)?.ip();
    let root = Arc::new(root);
    let limits = Arc::new(limits);
    let slots = Arc::new(Semaphore::new(limits.max_transfers));
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    tokio::pin!(shutdown);
    info!(addr = %socket.local_addr().map_err(TftpError::Socket)?, root = %root.display(), "tftp listening");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = socket.recv_from(&mut buf) => {
                let (n, peer) = match r {
                    Ok(x) => x,
                    // ICMP errors from earlier replies surface here on some kernels.
                    Err(e) if is_transient(&e) => continue,
                    Err(e) => return Err(TftpError::Socket(e)),
                };
                let Some(req) = accept_request(&socket, &buf[..n], peer).await else { continue };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    warn!(client = %peer, file = %String::from_utf8_lossy(&req.filename), max = limits.max_transfers, "tftp transfer refused: too many transfers");
                    reply_error(&socket, peer, ErrorCode::NotDefined, "server busy: too many transfers, retry later").await;
                    continue;
                };
                let (root, limits, registry) = (root.clone(), limits.clone(), registry.clone());
                tasks.spawn(async move {
                    run_transfer(req, peer, local_ip, &root, &limits, &registry).await;
                    drop(permit);
                });
            }
        }
    }
    tasks.shutdown().await;
    Ok(())
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

async fn reply_error(socket: &UdpSocket, peer: SocketAddr, code: ErrorCode, msg: &str) {
    if let Err(e) = socket.send_to(&packet::encode_error(code, msg), peer).await {
        debug!(client = %peer, cause = %e, "cannot send tftp error");
    }
}

/// Parses a datagram on the listening socket; answers what is not a servable read
/// request and returns the request otherwise.
async fn accept_request(
    socket: &UdpSocket,
    buf: &[u8],
    peer: SocketAddr,
) -> Option<packet::Request> {
    let opcode = buf.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match packet::parse(buf) {
        Ok(Packet::Rrq(req)) if req.mode == Mode::Octet => Some(req),
        Ok(Packet::Rrq(req)) => {
            info!(client = %peer, file = %String::from_utf8_lossy(&req.filename), mode = %req.mode, "tftp request refused: mode");
            reply_error(
                socket,
                peer,
                ErrorCode::IllegalOperation,
                &format!("{} mode not supported, use octet", req.mode),
            )
            .await;
            None
        }
        Ok(Packet::Wrq(req)) => {
            info!(client = %peer, file = %String::from_utf8_lossy(&req.filename), "tftp write refused");
            reply_error(
                socket,
                peer,
                ErrorCode::AccessViolation,
                "server is read-only",
            )
            .await;
            None
        }
        Err(e) if matches!(opcode, Some(1 | 2)) => {
            info!(client = %peer, cause = %e, "tftp malformed request");
            reply_error(
                socket,
                peer,
                ErrorCode::IllegalOperation,
                &format!("malformed request: {e}"),
            )
            .await;
            None
        }
        // Never answer stray DATA/ACK/ERROR/OACK on the listening port: answering
        // an ERROR with an ERROR can loop between two servers.
        other => {
            debug!(client = %peer, packet = ?other.map(|_| ()), "tftp: ignoring non-request on listening port");
            None
        }
    }
}

/// The file being sent, with a bounded read-ahead buffer.
struct Source {
    file: Arc<std::fs::File>,
    chunk_off: u64,
    chunk: Vec<u8>,
}

impl Source {
    /// Makes `[off, off+len)` available in the buffer, reading if needed.
    async fn ensure(&mut self, off: u64, len: usize, size: u64) -> std::io::Result<()> {
        let have_end = self.chunk_off + self.chunk.len() as u64;
        if off >= self.chunk_off && off + len as u64 <= have_end {
            return Ok(());
        }
        let want = len.max(READ_AHEAD).min(size.saturating_sub(off) as usize);
        let file = self.file.clone();
        let mut buf = std::mem::take(&mut self.chunk);
        buf.clear();
        buf.resize(want, 0);
        let buf = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let mut got = 0;
            while got < buf.len() {
                let n = file.read_at(&mut buf[got..], off + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            Ok(buf)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.chunk_off = off;
        self.chunk = buf;
        Ok(())
    }

    /// The bytes of `[off, off+len)` that the file has (short if it shrank).
    fn slice(&self, off: u64, len: usize) -> &[u8] {
        let start = (off - self.chunk_off) as usize;
        let start = start.min(self.chunk.len());
        let end = (start + len).min(self.chunk.len());
        &self.chunk[start..end]
    }
}

async fn run_transfer(
    req: packet::Request,
    peer: SocketAddr,
    local_ip: IpAddr,
    root: &Path,
    limits: &TftpLimits,
    registry: &NodeRegistry,
) {
    let started = Instant::now();
    let name = String::from_utf8_lossy(&req.filename).into_owned();
    let sock = match UdpSocket::bind((local_ip, 0)).await {
        Ok(s) => s,
        Err(e) => {
            warn!(client = %peer, file = %name, cause = %e, "tftp: cannot bind transfer socket");
            return;
        }
    };
    if let Err(e) = sock.connect(peer).await {
        warn!(client = %peer, file = %name, cause = %e, "tftp: cannot connect transfer socket");
        return;
    }
    let (root_owned, filename) = (root.to_path_buf(), req.filename.clone());
    let opened = tokio::task::spawn_blocking(move || path::open_confined(&root_owned, &filename))
        .await
        .map_err(|e| path::PathError::Io(std::io::Error::other(e)))
        .and_then(|r| r);
    let (file, size) = match opened {
        Ok((file, _, size)) => (file, size),
        Err(e) => {
            info!(client = %peer, file = %name, cause = %e, "tftp request refused");
            let _ = sock
                .send(&packet::encode_error(e.code(), &e.to_string()))
                .await;
            return;
        }
    };
    let ip = peer.ip();
    let _ = registry_record(registry, ip).await;

    let n = negotiate(&req.options, size, limits);
    let (mut t, mut step) = Transfer::start(&n, size, limits.max_retries);
    let mut src = Source {
        file: Arc::new(file),
        chunk_off: 0,
        chunk: Vec::new(),
    };
    let mut pkt = Vec::with_capacity(4 + usize::from(n.blksize));
    let mut rbuf = vec![0u8; 65536];
    let mut deadline = tokio::time::Instant::now() + n.timeout;
    let outcome: Result<Outcome, String> = loop {
        if let Err(e) = send_step(&sock, &step, &t, &mut src, &mut pkt).await {
            if is_transient(&e) {
                break Err("client port unreachable".into());
            }
            let _ = sock
                .send(&packet::encode_error(ErrorCode::NotDefined, "read error"))
                .await;
            break Err(format!("send/read failed: {e}"));
        }
        if let Some(done) = step.done.take() {
            break Ok(done);
        }
        if step.progress {
            deadline = tokio::time::Instant::now() + n.timeout;
        }
        step = match tokio::time::timeout_at(deadline, sock.recv(&mut rbuf)).await {
            Ok(Ok(len)) => t.on_datagram(&rbuf[..len]),
            Ok(Err(e)) if is_transient(&e) => break Err("client port unreachable".into()),
            Ok(Err(e)) => break Err(format!("receive failed: {e}")),
            Err(_) => t.on_timeout(),
        };
    };
    let elapsed = started.elapsed();
    let bytes = t.acked_bytes();
    let outcome = match &outcome {
        Ok(Outcome::Complete) => "complete".to_string(),
        Ok(Outcome::ClientError { code, message }) => format!("client error {code}: {message}"),
        Ok(Outcome::TimedOut) => "timed out".to_string(),
        Err(e) => e.clone(),
    };
    info!(
        client = %peer,
        file = %name,
        bytes,
        size,
        duration_ms = elapsed.as_millis() as u64,
        blksize = n.blksize,
        window = n.windowsize,
        outcome = %outcome,
        "tftp transfer"
    );
}

async fn registry_record(registry: &NodeRegistry, ip: IpAddr) -> Option<contracts::mac::MacAddr> {
    if let Some(mac) = registry.record_ip(ip, BootStage::Tftp) {
        return Some(mac);
    }
    // The ARP lookup reads /proc; keep it off the async workers.
    let mac = tokio::task::spawn_blocking(move || crate::nodes::arp_lookup(ip))
        .await
        .ok()??;
    registry.record(
        mac,
        BootStage::Tftp,
        crate::nodes::Observation {
            address: Some(ip),
            ..Default::default()
        },
    );
    Some(mac)
}

async fn send_step(
    sock: &UdpSocket,
    step: &Step,
    t: &Transfer,
    src: &mut Source,
    pkt: &mut Vec<u8>,
) -> std::io::Result<()> {
    match &step.send {
        Send::Nothing => Ok(()),
        Send::Packet(p) => sock.send(p).await.map(|_| ()),
        Send::Blocks { first, count } => {
            let (start, _) = t.block_range(*first);
            let (last_off, last_len) = t.block_range(first + count - 1);
            let span = (last_off + last_len as u64 - start) as usize;
            src.ensure(start, span, t.size()).await?;
            // The whole window goes out in one sendmmsg(2): one syscall and one
            // wakeup per window instead of one per block.
            pkt.clear();
            let mut bounds = Vec::with_capacity(*count as usize);
            for idx in *first..first + count {
                let (off, len) = t.block_range(idx);
                let at = pkt.len();
                packet::data_header(pkt, transfer::wire_block(idx));
                pkt.extend_from_slice(src.slice(off, len));
                bounds.push((at, pkt.len() - at));
            }
            send_batch(sock, pkt, &bounds).await
        }
    }
}

/// Sends the datagrams `buf[at..at+len]` for each of `bounds` on the connected
/// socket, in order.
async fn send_batch(
    sock: &UdpSocket,
    buf: &[u8],
    bounds: &[(usize, usize)],
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < bounds.len() {
        sock.writable().await?;
        let rest = &bounds[done..];
        match sock.try_io(tokio::io::Interest::WRITABLE, || {
            sendmmsg(sock.as_raw_fd(), buf, rest)
        }) {
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn sendmmsg(
    fd: std::os::fd::RawFd,
    buf: &[u8],
    bounds: &[(usize, usize)],
) -> std::io::Result<usize> {
    let mut iov: Vec<libc::iovec> = bounds
        .iter()
        .map(|&(at, len)| libc::iovec {
            iov_base: buf[at..at + len].as_ptr() as *mut libc::c_void,
            iov_len: len,
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid "no address,
            // no control data" header, and msg_iov is set right below.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v as *mut libc::iovec;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let n = hdrs.len().min(1024) as libc::c_uint;
    // SAFETY: every header points at one iovec in `iov`, which points into
    // `buf`; all three outlive the call, and the kernel only reads them.
    let sent = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), n, 0) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(sent as usize)
}
