//! `omboot serve --share DIR` against a real NFSv4 client (libnfs's
//! `nfs-cp`, `nfs-cat`, `nfs-ls`; the host kernel has no NFS client, the
//! kernel clients are tested on netbooted qemu nodes): a file written by a
//! client lands in DIR whole with the client's uid and gid, a file the head
//! writes into DIR is read by the client, the server killed is restarted by
//! omboot with the data intact, and a client outside the boot network is
//! refused and the refusal logged.
//!
//! libnfs 4.0's NFSv4 client cannot encode a WRITE over about 4 KB ("ZDR
//! error: Failed to encode COMPOUND4args", whatever the server), so the
//! client writes a small file here and reads a large one; large writes are
//! the kernel client's, in the end-to-end test.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::netns::remove_namespace;

use crate::netlan::{images_dir, must, netns_enabled, Lan, Server};

const SERVER: &str = "10.77.0.1";

/// Runs a libnfs tool in `ns`; its output, or the failure with stderr.
fn nfs(ns: &str, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{args:?}: {} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn url(path: &str, extra: &str) -> String {
    format!("nfs://{SERVER}/cluster/{path}?version=4{extra}")
}

/// Retries `f` for up to a minute: after a restart the server is in its
/// grace period and refuses new opens for a while (NFS4ERR_GRACE).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// A namespace outside the boot network, routed to the server through a
/// second veth pair; removed on drop.
struct Outsider(String);

impl Outsider {
    fn new(lan: &Lan) -> Outsider {
        let ns = "omt-share-out".to_string();
        remove_namespace(&ns);
        must(&format!("ip netns add {ns}"));
        let outsider = Outsider(ns.clone());
        must(&format!(
            "ip netns exec {} ip link add omso0 type veth peer name omso1 netns {ns}",
            lan.server_ns
        ));
        must(&format!(
            "ip netns exec {} sh -c 'ip addr add 10.78.0.1/24 dev omso0; ip link set omso0 up'",
            lan.server_ns
        ));
        must(&format!(
            "ip netns exec {ns} sh -c 'ip link set lo up; ip addr add 10.78.0.2/24 dev omso1; ip link set omso1 up; ip route add default via 10.78.0.1'"
        ));
        outsider
    }
}

impl Drop for Outsider {
    fn drop(&mut self) {
        remove_namespace(&self.0);
    }
}

fn ganesha_pid(state: &Path) -> i32 {
    let text = std::fs::read_to_string(state.join("share/ganesha.pid")).unwrap_or_default();
    text.trim().parse().unwrap_or(0)
}

#[test]
fn netns_share_serves_the_tree_survives_a_server_restart_and_refuses_outsiders() {
    if !netns_enabled(&["ip", "nfs-cp", "nfs-cat", "nfs-ls", "ganesha.nfsd"]) {
        return;
    }
    let lan = Lan::new("n");
    lan.client_addr("10.77.0.20/16");
    let tmp = lab::process::shared_tempdir();
    let state = tmp.path().join("state");
    let share = tmp.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let images = images_dir(tmp.path());
    let server = Server::start(
        &lan,
        &state,
        &images,
        &[
            "--mode",
            "dhcp",
            "--pool",
            "10.77.0.100-10.77.0.200",
            "--share",
            share.to_str().unwrap(),
        ],
    );
    server.wait_log("share: serving the tree");

    // A client's file lands whole, owned by the client's uid and gid (in a
    // directory of that user's: the server checks permissions as it).
    let user_dir = share.join("u1234");
    std::fs::create_dir(&user_dir).unwrap();
    std::os::unix::fs::chown(&user_dir, Some(1234), Some(2345)).unwrap();
    let small: Vec<u8> = (0..3_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = tmp.path().join("upload.bin");
    std::fs::write(&local, &small).unwrap();
    nfs(
        &lan.client_ns,
        &[
            "nfs-cp",
            local.to_str().unwrap(),
            &url("u1234/upload.bin", "&uid=1234&gid=2345"),
        ],
    )
    .unwrap();
    let landed = user_dir.join("upload.bin");
    assert_eq!(
        std::fs::read(&landed).unwrap(),
        small,
        "bytes differ on the head"
    );
    let meta = std::fs::metadata(&landed).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345), "owner on the head");

    // What the head writes into the directory, a client reads at once,
    // byte for byte.
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(share.join("from-head.bin"), &data).unwrap();
    let read = nfs(&lan.client_ns, &["nfs-cat", &url("from-head.bin", "")]).unwrap();
    assert!(
        read == data,
        "the client read {} bytes, not the head's file",
        read.len()
    );

    // The server dies; omboot restarts it and the tree is served again.
    let before = ganesha_pid(&state);
    assert!(before > 0, "no ganesha.pid under the state directory");
    must(&format!("kill -9 {before}"));
    server.wait_log("nfs-ganesha exited; restarting it");
    server.wait_log("nfs-ganesha restarted");
    let again = eventually("reading after the restart", || {
        nfs(&lan.client_ns, &["nfs-cat", &url("from-head.bin", "")])
    });
    assert!(again == data, "content changed across the restart");

    // A machine outside the boot network is refused, and the log says so.
    let outsider = Outsider::new(&lan);
    let refused = nfs(&outsider.0, &["nfs-ls", &url("", "")]);
    assert!(
        refused.is_err(),
        "a client outside 10.77.0.0/16 listed the tree"
    );
    let log = state.join("share/ganesha.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|l| l.contains("Access not allowed") && l.contains("10.78.0.2"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the refusal of 10.78.0.2 is not in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
