//! Exec end to end on loopback: a target serving, a home relaying.

use crate::crypto::{self, FrameCipher, Role};
use crate::exec::*;
use crate::wire::{self, ExecRequest, ExitInfo, HomeFrame, PeerFrame};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The keys of a test cluster, and their stream root key.
fn keys(byte: u8) -> (crate::keys::Keys, [u8; 32]) {
    let keys = crate::keys::Keys::new(crate::key::ClusterKey::from_bytes([byte; 32]), "c", None);
    let stream = keys.stream();
    (keys, stream)
}

fn node_id(name: &str, addr: SocketAddr) -> crate::membership::NodeId {
    crate::membership::NodeId {
        name: name.into(),
        addr,
        started_ms: 1,
        bump: 0,
    }
}

async fn target(keys: crate::keys::Keys) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = crate::state::State::new("c".into(), node_id("t", addr), Default::default());
    let mut ctx = ExecContext::new("t".into(), addr, keys, None, state);
    // Unit tests run in the test binary: the holder is the omnode binary
    // cargo builds beside it (target/<profile>/omnode).
    ctx.holder = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join("omnode");
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(super::exec_listener::dispatch(s, ctx.clone()));
        }
    });
    addr
}

fn request(marker: &std::path::Path) -> ExecRequest {
    ExecRequest {
        job: "h-1".into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            format!("echo ran >> {}; echo out; exit 4", marker.display()),
        ],
        cwd: "/".into(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        home: "h".into(),
        lock: false,
    }
}

async fn frames_until_end(rd: &mut TcpStream, recv: &mut FrameCipher) -> Vec<PeerFrame> {
    let mut out = Vec::new();
    while let Ok(Some(f)) = wire::read_sealed(rd, recv).await {
        let end = matches!(f, PeerFrame::Exit(_) | PeerFrame::Failed { .. });
        out.push(f);
        if end {
            break;
        }
    }
    out
}

#[tokio::test]
async fn wrong_key_and_replayed_streams_run_nothing() {
    let (keys, key) = keys(5);
    let addr = target(keys).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");

    // A real session, recording every byte the client sends.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let hello = crypto::client_hello();
    s.write_all(&hello).await.unwrap();
    let mut reply = [0u8; crypto::REPLY_LEN];
    s.read_exact(&mut reply).await.unwrap();
    let sn = crypto::parse_hello(&reply).unwrap();
    let cn: [u8; 32] = hello[4..].try_into().unwrap();
    let (mut send, mut recv) = crypto::stream_ciphers(&key, &cn, &sn, Role::Client);
    let sealed = send.seal(&PeerFrame::Exec(request(&marker)).encode());
    let mut chunk = (sealed.len() as u32).to_be_bytes().to_vec();
    chunk.extend_from_slice(&sealed);
    s.write_all(&chunk).await.unwrap();
    let frames = frames_until_end(&mut s, &mut recv).await;
    assert!(
        frames.contains(&PeerFrame::Stdout(b"out\n".to_vec())),
        "{frames:?}"
    );
    assert_eq!(frames.last(), Some(&PeerFrame::Exit(ExitInfo::Code(4))));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");

    // The same bytes again: the server's fresh nonce makes them garbage.
    let mut r = TcpStream::connect(addr).await.unwrap();
    r.write_all(&hello).await.unwrap();
    r.write_all(&chunk).await.unwrap();
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    assert_eq!(
        rest.len(),
        crypto::REPLY_LEN,
        "the server said more than its hello"
    );

    // The wrong key: the request is refused unread.
    let mut w = connect(addr, &[6u8; 32]).await.unwrap();
    wire::write_sealed(&mut w.wr, &mut w.send, &PeerFrame::Exec(request(&marker)))
        .await
        .unwrap();
    assert!(!matches!(
        wire::read_sealed(&mut w.rd, &mut w.recv).await,
        Ok(Some(_))
    ));
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ran\n",
        "a replayed or keyless request ran"
    );
}

#[tokio::test]
async fn relay_streams_stdin_and_reports_a_missing_cwd() {
    let (keys, _) = keys(7);
    let addr = target(keys.clone()).await;
    let (to_relay, caller_rx) = mpsc::channel(8);
    let (caller_tx, mut from_relay) = mpsc::channel(64);
    let mut req = request(std::path::Path::new("/dev/null"));
    req.argv = vec!["sh".into(), "-c".into(), "read a; echo \"[$a]\"".into()];
    to_relay
        .send(HomeFrame::Stdin(b"hi\n".to_vec()))
        .await
        .unwrap();
    to_relay.send(HomeFrame::StdinEof).await.unwrap();
    let end = relay(
        addr,
        "t",
        &keys,
        req,
        caller_rx,
        caller_tx,
        tokio::sync::broadcast::channel(1).1,
    )
    .await;
    assert_eq!(end, RelayEnd::Exit(ExitInfo::Code(0)));
    let out = stdout_of(&mut from_relay);
    assert_eq!(out, b"[hi]\n");
    drop(to_relay);

    let (_keep, caller_rx) = mpsc::channel(8);
    let (caller_tx, _out) = mpsc::channel(64);
    let mut req = request(std::path::Path::new("/dev/null"));
    req.cwd = "/nonexistent/omt-cwd".into();
    let end = relay(
        addr,
        "t",
        &keys,
        req,
        caller_rx,
        caller_tx,
        tokio::sync::broadcast::channel(1).1,
    )
    .await;
    assert_eq!(
        end,
        RelayEnd::Failed(
            EXIT_CANNOT_RUN,
            "working directory /nonexistent/omt-cwd does not exist on node t (start jobs from a directory under /cluster, the tree every node shares)".into()
        )
    );
}

#[tokio::test]
async fn during_a_rotation_streams_under_either_key_run_and_after_it_only_the_new() {
    let (keys, old) = keys(8);
    let addr = target(keys.clone()).await;
    let new = crate::key::ClusterKey::from_bytes([9; 32]);
    let new_stream = new.derive("c", crate::key::Purpose::Stream);
    // Switch at once; the old key is accepted for the 5 s window.
    assert!(keys.rotate(new, 0, 5_000).unwrap());
    assert_eq!(keys.stream(), new_stream);
    for root in [old, new_stream] {
        let jobs = remote_jobs(addr, &root).await;
        assert!(jobs.is_ok(), "a stream was refused in the window: {jobs:?}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    assert!(remote_jobs(addr, &new_stream).await.is_ok());
    assert!(
        remote_jobs(addr, &old).await.is_err(),
        "a stream under the retired key was served"
    );
}

/// The stdout frames the relay passed on so far, joined.
fn stdout_of(from_relay: &mut mpsc::Receiver<RelayEvent>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(f) = from_relay.try_recv() {
        if let RelayEvent::Stdout(d) = f {
            out.extend(d);
        }
    }
    out
}

/// Membership's verdicts for a relay: node `t` (at `addr`) declared dead
/// after `ms`. The task hands the sender back, so the channel stays open.
fn verdict_after(
    ms: u64,
    addr: SocketAddr,
) -> (
    tokio::sync::broadcast::Receiver<crate::membership::NodeId>,
    tokio::task::JoinHandle<tokio::sync::broadcast::Sender<crate::membership::NodeId>>,
) {
    let (down_tx, down_rx) = tokio::sync::broadcast::channel(4);
    let verdict = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        let _ = down_tx.send(crate::membership::NodeId {
            name: "t".into(),
            addr,
            started_ms: 0,
            bump: 0,
        });
        down_tx
    });
    (down_rx, verdict)
}

#[tokio::test]
async fn a_death_verdict_does_not_drop_a_job_whose_node_still_answers() {
    let (keys, _) = keys(11);
    let addr = target(keys.clone()).await;
    let (_keep, caller_rx) = mpsc::channel(8);
    let (caller_tx, mut from_relay) = mpsc::channel(64);
    let mut req = request(std::path::Path::new("/dev/null"));
    req.argv = vec![
        "sh".into(),
        "-c".into(),
        "sleep 5; echo done; exit 3".into(),
    ];
    let (down_rx, verdict) = verdict_after(500, addr);
    let end = relay(addr, "t", &keys, req, caller_rx, caller_tx, down_rx).await;
    drop(verdict.await);
    assert_eq!(end, RelayEnd::Exit(ExitInfo::Code(3)));
    let out = stdout_of(&mut from_relay);
    assert_eq!(out, b"done\n");
}

#[tokio::test]
async fn a_death_verdict_confirmed_by_silence_ends_the_job_with_the_reason() {
    // A node that took the job and then went silent (its stream open).
    let (keys, root) = keys(12);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let held = crate::exec::accept(s, &[root]).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_secs(30)).await;
        drop(held);
    });
    let (_keep, caller_rx) = mpsc::channel(8);
    let (caller_tx, _out) = mpsc::channel(64);
    let (down_rx, verdict) = verdict_after(300, addr);
    let req = request(std::path::Path::new("/dev/null"));
    let end = relay(addr, "t", &keys, req, caller_rx, caller_tx, down_rx).await;
    drop(verdict.await);
    silent.abort();
    assert_eq!(
        end,
        RelayEnd::Failed(EXIT_NODE_LOST, "node t died while running the job".into())
    );
}

#[tokio::test]
async fn agents_of_an_older_or_newer_peer_protocol_part_with_one_line_naming_both() {
    use crate::crypto::{hello_with, StreamError, PEER_PROTOCOL, REPLY_LEN};
    let (keys, key) = keys(8);
    let addr = target(keys).await;
    for other in [PEER_PROTOCOL - 1, PEER_PROTOCOL + 1] {
        // An agent of another version calls ours: ours answers with its own
        // hello, no nonce, and hangs up, so the caller can name both.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&hello_with(other, &[1; 32])).await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert_eq!(rest, hello_with(PEER_PROTOCOL, &[0; 32]).to_vec());
        assert_eq!(rest.len(), REPLY_LEN);

        // Ours calls an agent of another version.
        let other_agent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let other_addr = other_agent.local_addr().unwrap();
        let answer = tokio::spawn(async move {
            let (mut c, _) = other_agent.accept().await.unwrap();
            let mut hello = [0u8; crypto::HELLO_LEN];
            c.read_exact(&mut hello).await.unwrap();
            c.write_all(&hello_with(other, &[2; 32])).await.unwrap();
        });
        let err = connect(other_addr, &key).await.unwrap_err();
        answer.await.unwrap();
        assert!(
            matches!(
                err,
                wire::WireError::Sealing(StreamError::Version { ours, theirs })
                    if ours == PEER_PROTOCOL && theirs == other
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the other agent speaks peer protocol {other} and this one speaks {PEER_PROTOCOL}: run one omnode release on every node"
            )
        );
    }
}
