//! TFTP against real clients (tftp-hpa, curl, atftp) on loopback, the
//! path-escape corpus, client ERROR handling and the transfer cap.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pxe_server::nodes::NodeRegistry;
use pxe_server::tftp::{self, packet, TftpLimits};
use tokio::net::UdpSocket;

use lab::gate::tool;
use lab::pattern::write_pattern;

use crate::running::Running;

/// Over 65535 blocks at blksize 512, so block numbers roll over.
const BIG: usize = 65536 * 512 + 1234;

struct Server {
    addr: SocketAddr,
    registry: Arc<NodeRegistry>,
    running: Running<tftp::TftpError>,
}

impl Server {
    async fn start(root: &Path, limits: TftpLimits) -> Server {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let registry = Arc::new(NodeRegistry::new());
        let files = root.to_path_buf();
        let shared = registry.clone();
        let running = Running::spawn(|shutdown| tftp::serve(sock, files, limits, shared, shutdown));
        Server {
            addr,
            registry,
            running,
        }
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

struct Files {
    dir: tempfile::TempDir,
    small: Vec<u8>,
    big: Vec<u8>,
}

impl Files {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
}

fn files(big: bool) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let small = write_pattern(&root.join("ipxe/undionly.kpxe"), 70_001, 1);
    let big = if big {
        write_pattern(&root.join("big.bin"), BIG, 2)
    } else {
        Vec::new()
    };
    Files { dir, small, big }
}

async fn run(cmd: &mut tokio::process::Command) -> std::process::Output {
    let out = cmd.kill_on_drop(true).output().await.unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn assert_same(got: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(got).unwrap_or_default();
    assert_eq!(got.len(), want.len(), "{what}: length");
    assert!(got == want, "{what}: content differs");
}

#[tokio::test]
async fn tftp_hpa_fetches_byte_identical_files_with_rollover() {
    if tool("tftp").is_none() {
        return;
    }
    let f = files(true);
    let srv = Server::start(&f.root(), TftpLimits::default()).await;
    let out = f.dir.path().join("out");
    for (name, want) in [("ipxe/undionly.kpxe", &f.small), ("big.bin", &f.big)] {
        let _ = std::fs::remove_file(&out);
        let port = srv.addr.port().to_string();
        let get = format!("{name} {}", out.display());
        run(tokio::process::Command::new("tftp")
            .args(["127.0.0.1", &port, "-m", "binary", "-c", "get"])
            .args(get.split(' ')))
        .await;
        assert_same(&out, want, name);
    }
    srv.stop().await;
}

#[tokio::test]
async fn curl_fetches_byte_identical_files() {
    if tool("curl").is_none() {
        return;
    }
    let f = files(true);
    let srv = Server::start(&f.root(), TftpLimits::default()).await;
    let out = f.dir.path().join("out");
    for (name, want, blksize) in [
        ("ipxe/undionly.kpxe", &f.small, "1468"),
        ("big.bin", &f.big, "1468"),
        ("big.bin", &f.big, "512"),
    ] {
        let _ = std::fs::remove_file(&out);
        run(tokio::process::Command::new("curl")
            .args(["-sS", "--tftp-blksize", blksize, "-o"])
            .arg(&out)
            .arg(format!("tftp://{}/{name}", srv.addr)))
        .await;
        assert_same(&out, want, &format!("{name} at blksize {blksize}"));
    }
    srv.stop().await;
}

#[tokio::test]
async fn atftp_windowsize_fetches_byte_identical_files() {
    if tool("atftp").is_none() {
        return;
    }
    let f = files(true);
    let srv = Server::start(&f.root(), TftpLimits::default()).await;
    let out = f.dir.path().join("out");
    for (name, want, blksize) in [
        ("ipxe/undionly.kpxe", &f.small, "1468"),
        ("big.bin", &f.big, "1468"),
        ("big.bin", &f.big, "512"),
    ] {
        let _ = std::fs::remove_file(&out);
        run(tokio::process::Command::new("atftp")
            .args(["--option", "windowsize 16", "--option"])
            .arg(format!("blksize {blksize}"))
            .args(["-g", "-r", name, "-l"])
            .arg(&out)
            .args(["127.0.0.1", &srv.addr.port().to_string()]))
        .await;
        assert_same(
            &out,
            want,
            &format!("{name} at blksize {blksize} window 16"),
        );
    }
    srv.stop().await;
}

/// Sends one raw datagram from a fresh socket and returns the first answer.
async fn exchange(server: SocketAddr, pkt: &[u8]) -> (Vec<u8>, SocketAddr, UdpSocket) {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(pkt, server).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    // A missing answer fails the test; the bound only keeps a broken server from
    // hanging the suite.
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("no answer from the tftp server")
        .unwrap();
    buf.truncate(n);
    (buf, from, sock)
}

fn rrq(name: &[u8]) -> Vec<u8> {
    packet::encode_request(1, name, "octet", &[])
}

/// At least 100 names that try to leave the root; every one must get an ERROR.
fn escape_corpus() -> Vec<Vec<u8>> {
    let prefixes = [
        "../",
        "../../",
        "../../../../../../../../",
        "./../",
        "ipxe/../",
        "ipxe/../../",
        "/../",
        "/./../",
        "//",
        "///",
        "..\\",
        "..\\..\\",
        "\\..\\",
        "..%2f",
        "%2e%2e/",
        "%2e%2e%2f",
        "..%252f",
        "%252e%252e/",
        ".%2e/",
        "%2e./",
        "%c0%ae%c0%ae/",
        "..;/",
        "up/",
        "./up/",
        "up/./",
        "/up/",
        "ipxe/../up/",
        "up//",
    ];
    let targets = ["secret.txt", "etc/passwd", "root/../secret.txt"];
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    for p in prefixes {
        for t in targets {
            corpus.push(format!("{p}{t}").into_bytes());
        }
    }
    for s in [
        "/etc/passwd",
        "//etc/passwd",
        "\\etc\\passwd",
        "C:\\Windows\\win.ini",
        "..",
        "../",
        "/..",
        ".",
        "/",
        "./",
        "evil_link",
        "/evil_link",
        "./evil_link",
        "ipxe/evil_dir_link/passwd",
        "loop_a",
        "up",
        "ipxe",
        "ipxe/",
        "/proc/self/environ",
        "dev/zero",
        "%00",
        "..%00/secret.txt",
        "inside.txt/..",
        "inside.txt/../../secret.txt",
        "ipxe/..",
        "..\\secret.txt",
    ] {
        corpus.push(s.as_bytes().to_vec());
    }
    // NUL inside the name: the request splits there, so what follows becomes the
    // mode (or an option); either way it must not be served from outside.
    corpus.push(b"inside.txt\0../../secret.txt".to_vec());
    corpus.push(b"../secret.txt\0inside.txt".to_vec());
    // Very long names.
    corpus.push(vec![b'a'; 256]);
    corpus.push(vec![b'a'; 1100]);
    corpus.push(vec![b'a'; 60_000]);
    corpus.push("../".repeat(400).into_bytes());
    corpus.push(format!("{}secret.txt", "./".repeat(600)).into_bytes());
    corpus
}

#[tokio::test]
async fn path_escape_corpus_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("ipxe")).unwrap();
    std::fs::write(dir.path().join("secret.txt"), b"outside the root").unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), b"outside the root").unwrap();
    std::fs::write(root.join("inside.txt"), b"inside").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("evil_link")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("etc"), root.join("ipxe/evil_dir_link")).unwrap();
    std::os::unix::fs::symlink("..", root.join("up")).unwrap();
    std::os::unix::fs::symlink("loop_b", root.join("loop_a")).unwrap();
    std::os::unix::fs::symlink("loop_a", root.join("loop_b")).unwrap();
    std::os::unix::fs::symlink("inside.txt", root.join("ok_link")).unwrap();
    let srv = Server::start(&root, TftpLimits::default()).await;

    // Controls: what is inside is served, also through a symlink that stays inside.
    for ok in [
        "inside.txt",
        "/inside.txt",
        "ok_link",
        "./ipxe//../../inside.txt",
    ] {
        let (ans, _, _) = exchange(srv.addr, &rrq(ok.as_bytes())).await;
        let got = packet::parse(&ans).unwrap();
        if ok.contains("..") {
            // Refused by name even though it would resolve inside the root.
            assert!(
                matches!(got, packet::Packet::Error { code: 2, .. }),
                "{ok}: {got:?}"
            );
        } else {
            assert_eq!(
                got,
                packet::Packet::Data { block: 1, len: 6 },
                "{ok} should be served"
            );
        }
    }

    let corpus = escape_corpus();
    assert!(
        corpus.len() >= 100,
        "corpus has only {} entries",
        corpus.len()
    );
    for name in &corpus {
        let (ans, _, _) = exchange(srv.addr, &rrq(name)).await;
        let shown = String::from_utf8_lossy(&name[..name.len().min(80)]).into_owned();
        match packet::parse(&ans) {
            Ok(packet::Packet::Error { code, .. }) => {
                assert!((1..=4).contains(&code), "{shown:?}: error code {code}")
            }
            other => panic!("{shown:?} was not refused: {other:?}"),
        }
    }
    srv.stop().await;
}

/// Waits until the transfer socket at `tid` is gone: a packet to it then draws an
/// ICMP port-unreachable. Any DATA or OACK from it means the transfer went on.
async fn assert_transfer_ended(sock: &UdpSocket, tid: SocketAddr) {
    sock.connect(tid).await.unwrap();
    let mut buf = vec![0u8; 70_000];
    for _ in 0..200 {
        sock.send(&packet::encode_ack(0)).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(50), sock.recv(&mut buf)).await {
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            Ok(Ok(n)) => panic!("transfer still running: got {:?}", packet::parse(&buf[..n])),
            Ok(Err(e)) => panic!("unexpected error {e}"),
            Err(_) => {}
        }
    }
    panic!("transfer socket still open");
}

#[tokio::test]
async fn client_error_after_oack_ends_transfer_at_once() {
    let f = files(false);
    // A long timeout: if the ERROR were ignored the socket would stay open.
    let limits = TftpLimits {
        timeout: Duration::from_secs(60),
        ..TftpLimits::default()
    };
    let srv = Server::start(&f.root(), limits).await;
    let req = packet::encode_request(
        1,
        b"ipxe/undionly.kpxe",
        "octet",
        &[("tsize", "0"), ("blksize", "1432")],
    );
    let (ans, tid, sock) = exchange(srv.addr, &req).await;
    assert_eq!(
        packet::parse(&ans).unwrap(),
        packet::Packet::Oack(vec![
            ("tsize".into(), f.small.len().to_string()),
            ("blksize".into(), "1432".into())
        ])
    );
    assert_ne!(tid, srv.addr, "transfer must run on its own port");
    sock.send_to(
        &packet::encode_error(packet::ErrorCode::OptionRefused, "tsize probe"),
        tid,
    )
    .await
    .unwrap();
    assert_transfer_ended(&sock, tid).await;
    srv.stop().await;
}

#[tokio::test]
async fn transfer_cap_answers_excess_requests_with_error() {
    let f = files(false);
    let limits = TftpLimits {
        max_transfers: 2,
        timeout: Duration::from_secs(60),
        ..TftpLimits::default()
    };
    let srv = Server::start(&f.root(), limits).await;
    let req = packet::encode_request(1, b"ipxe/undionly.kpxe", "octet", &[("tsize", "0")]);
    // Two transfers parked in the OACK phase hold both slots.
    let (a, tid_a, sock_a) = exchange(srv.addr, &req).await;
    let (b, _, _sock_b) = exchange(srv.addr, &req).await;
    assert!(matches!(
        packet::parse(&a).unwrap(),
        packet::Packet::Oack(_)
    ));
    assert!(matches!(
        packet::parse(&b).unwrap(),
        packet::Packet::Oack(_)
    ));
    let (c, from, _) = exchange(srv.addr, &req).await;
    match packet::parse(&c).unwrap() {
        packet::Packet::Error { code: 0, message } => {
            assert!(message.contains("busy"), "{message}")
        }
        other => panic!("third transfer not refused: {other:?}"),
    }
    assert_eq!(from, srv.addr);
    // Ending one frees a slot.
    sock_a
        .send_to(
            &packet::encode_error(packet::ErrorCode::OptionRefused, "probe"),
            tid_a,
        )
        .await
        .unwrap();
    assert_transfer_ended(&sock_a, tid_a).await;
    let (d, _, _) = exchange(srv.addr, &req).await;
    assert!(
        matches!(packet::parse(&d).unwrap(), packet::Packet::Oack(_)),
        "{:?}",
        packet::parse(&d)
    );
    srv.stop().await;
}

#[tokio::test]
async fn write_requests_and_netascii_are_refused() {
    let f = files(false);
    let srv = Server::start(&f.root(), TftpLimits::default()).await;
    let (ans, _, _) = exchange(
        srv.addr,
        &packet::encode_request(2, b"new.bin", "octet", &[]),
    )
    .await;
    assert!(matches!(
        packet::parse(&ans).unwrap(),
        packet::Packet::Error { code: 2, .. }
    ));
    assert!(!f.root().join("new.bin").exists());
    let (ans, _, _) = exchange(
        srv.addr,
        &packet::encode_request(1, b"ipxe/undionly.kpxe", "netascii", &[]),
    )
    .await;
    assert!(matches!(
        packet::parse(&ans).unwrap(),
        packet::Packet::Error { code: 4, .. }
    ));
    let (ans, _, _) = exchange(srv.addr, b"\x00\x01no-terminator").await;
    assert!(matches!(
        packet::parse(&ans).unwrap(),
        packet::Packet::Error { code: 4, .. }
    ));
    srv.stop().await;
}

#[tokio::test]
async fn duplicate_ack_does_not_resend() {
    let f = files(false);
    let limits = TftpLimits {
        timeout: Duration::from_secs(60),
        ..TftpLimits::default()
    };
    let srv = Server::start(&f.root(), limits).await;
    let (ans, tid, sock) = exchange(srv.addr, &rrq(b"ipxe/undionly.kpxe")).await;
    assert_eq!(
        packet::parse(&ans).unwrap(),
        packet::Packet::Data { block: 1, len: 512 }
    );
    sock.connect(tid).await.unwrap();
    let mut buf = vec![0u8; 2048];
    sock.send(&packet::encode_ack(1)).await.unwrap();
    let n = sock.recv(&mut buf).await.unwrap();
    assert_eq!(
        packet::parse(&buf[..n]).unwrap(),
        packet::Packet::Data { block: 2, len: 512 }
    );
    // Duplicates of ACK 1 followed by ACK 2: the next packet must be block 3,
    // not a resend of block 2.
    for _ in 0..3 {
        sock.send(&packet::encode_ack(1)).await.unwrap();
    }
    sock.send(&packet::encode_ack(2)).await.unwrap();
    let n = sock.recv(&mut buf).await.unwrap();
    assert_eq!(
        packet::parse(&buf[..n]).unwrap(),
        packet::Packet::Data { block: 3, len: 512 }
    );
    sock.send(&packet::encode_error(
        packet::ErrorCode::NotDefined,
        "enough",
    ))
    .await
    .unwrap();
    assert_transfer_ended(&sock, tid).await;
    srv.stop().await;
}

#[tokio::test]
async fn transfer_records_tftp_stage_for_known_node() {
    if tool("curl").is_none() {
        return;
    }
    let f = files(false);
    let srv = Server::start(&f.root(), TftpLimits::default()).await;
    let mac: contracts::mac::MacAddr = "52:54:00:00:00:42".parse().unwrap();
    srv.registry
        .record_dhcp(mac, Some("127.0.0.1".parse().unwrap()), Some(0), None);
    let out = f.dir.path().join("out");
    run(tokio::process::Command::new("curl")
        .args(["-sS", "-o"])
        .arg(&out)
        .arg(format!("tftp://{}/ipxe/undionly.kpxe", srv.addr)))
    .await;
    assert_same(&out, &f.small, "undionly.kpxe");
    let node = srv.registry.get(mac).unwrap();
    assert_eq!(node.stage, pxe_server::nodes::BootStage::Tftp);
    srv.stop().await;
}
