//! HTTP: boot scripts (both stages), image files with Range requests, and the
//! JSON API, driven by curl against the server on loopback.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use expect_test::expect;
use pxe_server::http::{self, HttpState};
use pxe_server::image::ImageDir;
use pxe_server::nodes::{LeaseView, NodeRegistry};

use lab::gate::tool;
use lab::pattern::write_pattern;

use crate::running::Running;

struct Server {
    addr: SocketAddr,
    key: contracts::key::ClusterKey,
    registry: Arc<NodeRegistry>,
    running: Running<std::io::Error>,
    initrd: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(pxe_server::admission::Policy::Auto).await
    }

    async fn start_with(policy: pxe_server::admission::Policy) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("images");
        write_pattern(&root.join("vmlinuz"), 300_000, 10);
        let initrd = write_pattern(&root.join("initrd.img"), 3_000_017, 11);
        write_pattern(&root.join("ipxe/undionly.kpxe"), 70_000, 12);
        write_pattern(&root.join("ipxe/snponly.efi"), 200_000, 13);
        // A system layer: nodes are told to map it from the head's NFS server.
        write_pattern(&root.join("system.squashfs"), 40_000, 14);
        std::fs::write(
            root.join("manifest.json"),
            r#"{"kernel_cmdline":"console=ttyS0 quiet","kernel_version":"6.1.0-test","packages":[]}"#,
        )
        .unwrap();
        std::fs::write(dir.path().join("secret"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("escape")).unwrap();
        let registry = Arc::new(NodeRegistry::new());
        let key: contracts::key::ClusterKey = "ab".repeat(32).parse().unwrap();
        let leases: Vec<LeaseView> = vec![LeaseView {
            mac: "52:54:00:00:00:01".parse().unwrap(),
            ip: "10.99.0.100".parse().unwrap(),
            hostname: Some("node1".into()),
            state: "bound".into(),
            expires: 1_900_000_000,
        }];
        let state = HttpState {
            image: Arc::new(ImageDir::open(&root).unwrap()),
            registry: registry.clone(),
            leases: Arc::new(leases),
            cluster_id: "test-cluster".into(),
            keys: Arc::new(keystore::KeyStore::new(key.clone(), None)),
            admission: Arc::new(
                pxe_server::admission::Store::open(&dir.path().join("state"), policy).unwrap(),
            ),
            share: Some(pxe_server::share::ShareConfig::Serve("/srv/cluster".into())),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let running = Running::spawn(|shutdown| http::serve(listener, state, shutdown));
        Server {
            addr,
            key,
            registry,
            running,
            initrd,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.running.stop().await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Runs curl; returns (status, body, headers).
    async fn curl(&self, args: &[&str], path: &str, out: &Path) -> (u16, Vec<u8>, String) {
        let hdr = out.with_extension("hdr");
        let o = tokio::process::Command::new("curl")
            .args(["-sS", "-o"])
            .arg(out)
            .arg("-D")
            .arg(&hdr)
            .args(["-w", "%{http_code}"])
            .args(args)
            .arg(self.url(path))
            .kill_on_drop(true)
            .output()
            .await
            .unwrap();
        assert!(
            o.status.success(),
            "curl {args:?} {path}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let status = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
        let body = std::fs::read(out).unwrap_or_default();
        let headers = std::fs::read_to_string(&hdr).unwrap_or_default();
        (status, body, headers)
    }
}

fn redact(s: &str, addr: SocketAddr) -> String {
    s.replace(&addr.port().to_string(), "PORT")
}

#[tokio::test]
async fn boot_script_stages() {
    if tool("curl").is_none() {
        return;
    }
    let srv = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("body");
    let (status, body, _) = srv.curl(&[], "/boot.ipxe", &out).await;
    assert_eq!(status, 200);
    expect![[r#"
        #!ipxe
        chain http://127.0.0.1:PORT/boot.ipxe?mac=${net0/mac}&platform=${platform}&buildarch=${buildarch}
    "#]]
    .assert_eq(&redact(&String::from_utf8_lossy(&body), srv.addr));

    let (status, body, _) = srv
        .curl(
            &[],
            "/boot.ipxe?mac=52:54:00:12:34:56&platform=efi&buildarch=x86_64",
            &out,
        )
        .await;
    assert_eq!(status, 200);
    expect![[r#"
        #!ipxe
        echo omboot: booting 52:54:00:12:34:56 from http://127.0.0.1:PORT
        kernel http://127.0.0.1:PORT/vmlinuz initrd=initrd.img console=ttyS0 quiet om.server=127.0.0.1 om.http=PORT om.cluster=test-cluster om.share=nfs://127.0.0.1/cluster om.system=nfs://127.0.0.1/images
        initrd http://127.0.0.1:PORT/initrd.img
        boot
    "#]]
    .assert_eq(&redact(&String::from_utf8_lossy(&body), srv.addr));

    // The node showed up by itself, with the architecture iPXE reported.
    let node = srv
        .registry
        .get("52:54:00:12:34:56".parse().unwrap())
        .unwrap();
    assert_eq!(node.architecture, Some(7));
    assert_eq!(node.address, Some("127.0.0.1".parse().unwrap()));

    let (status, body, _) = srv.curl(&[], "/boot.ipxe?mac=not-a-mac", &out).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("invalid mac address"));
    srv.stop().await;
}

#[tokio::test]
async fn image_files_with_ranges_record_stages() {
    if tool("curl").is_none() {
        return;
    }
    let srv = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("body");
    srv.curl(
        &[],
        "/boot.ipxe?mac=52:54:00:aa:bb:cc&platform=pcbios&buildarch=i386",
        &out,
    )
    .await;

    let (status, body, _) = srv.curl(&[], "/initrd.img", &out).await;
    assert_eq!(status, 200);
    assert!(body == srv.initrd, "initrd differs");

    let (status, body, headers) = srv.curl(&["-r", "1000-1999"], "/initrd.img", &out).await;
    assert_eq!(status, 206);
    assert_eq!(body, &srv.initrd[1000..2000]);
    let total = srv.initrd.len();
    assert!(
        headers
            .to_ascii_lowercase()
            .contains(&format!("content-range: bytes 1000-1999/{total}")),
        "{headers}"
    );
    let (status, body, _) = srv.curl(&["-r", "-100"], "/initrd.img", &out).await;
    assert_eq!(status, 206);
    assert_eq!(body, &srv.initrd[total - 100..]);

    let (status, _, _) = srv.curl(&["-r", "99999999-"], "/initrd.img", &out).await;
    assert_eq!(status, 416);

    let node = srv
        .registry
        .get("52:54:00:aa:bb:cc".parse().unwrap())
        .unwrap();
    assert_eq!(serde_json::to_value(node.stage).unwrap(), "initrd");
    assert_eq!(node.architecture_name.as_deref(), Some("bios"));
    let (status, _, _) = srv.curl(&[], "/vmlinuz", &out).await;
    assert_eq!(status, 200);
    let node = srv
        .registry
        .get("52:54:00:aa:bb:cc".parse().unwrap())
        .unwrap();
    assert_eq!(serde_json::to_value(node.stage).unwrap(), "kernel");

    let (status, _, _) = srv.curl(&[], "/nothing-here", &out).await;
    assert_eq!(status, 404);
    let (status, _, _) = srv.curl(&[], "/escape", &out).await;
    assert_eq!(status, 403);
    let (status, _, _) = srv
        .curl(&["--path-as-is"], "/ipxe/../../secret", &out)
        .await;
    assert!(status == 403 || status == 404, "{status}");
    srv.stop().await;
}

#[tokio::test]
async fn api_lists_leases_nodes_and_takes_checkins() {
    if tool("curl").is_none() {
        return;
    }
    let srv = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("body");
    let (status, body, _) = srv.curl(&[], "/api/v1/leases", &out).await;
    assert_eq!(status, 200);
    expect![[r#"[{"mac":"52:54:00:00:00:01","ip":"10.99.0.100","hostname":"node1","state":"bound","expires":1900000000}]"#]]
        .assert_eq(&String::from_utf8_lossy(&body));

    let (status, body, _) = srv.curl(&[], "/api/v1/nodes", &out).await;
    assert_eq!((status, body.as_slice()), (200, b"[]".as_slice()));

    // A node that never booted through us checks in and shows up.
    let (status, _, _) = srv
        .curl(
            &[
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"mac":"02:00:00:00:00:09","name":"n9","address":"10.99.0.9"}"#,
            ],
            "/api/v1/checkin",
            &out,
        )
        .await;
    assert_eq!(status, 200);
    let (status, body, _) = srv.curl(&[], "/api/v1/nodes", &out).await;
    assert_eq!(status, 200);
    let nodes: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let n = &nodes[0];
    assert_eq!(
        (
            n["mac"].as_str(),
            n["address"].as_str(),
            n["hostname"].as_str(),
            n["stage"].as_str()
        ),
        (
            Some("02:00:00:00:00:09"),
            Some("10.99.0.9"),
            Some("n9"),
            Some("agent")
        )
    );
    let (status, _, _) = srv
        .curl(
            &[
                "-H",
                "content-type: application/json",
                "-d",
                r#"{"mac":"zz"}"#,
            ],
            "/api/v1/checkin",
            &out,
        )
        .await;
    assert!((400..500).contains(&status), "{status}");
    srv.stop().await;
}

/// The cluster key in an admission answer, opened by `machine` with `mac`.
fn opened(
    machine: &contracts::admit::MachineKey,
    mac: &str,
    answer: &contracts::admit::AdmitAnswer,
) -> Result<contracts::key::ClusterKey, contracts::admit::AdmitError> {
    let contracts::admit::AdmitAnswer::Admitted {
        cluster,
        enc,
        sealed,
    } = answer
    else {
        panic!("not admitted: {answer:?}")
    };
    machine.open(cluster, mac.parse().unwrap(), enc, sealed)
}

/// Admission over the wire: a machine that just fetched its boot script is
/// admitted under `auto` and opens the sealed key; one that did not waits;
/// the admin's list and decisions need the key's signature; an admitted
/// MAC presenting another key without booting again is refused and listed.
#[tokio::test]
async fn admission_seals_the_key_to_the_machine_and_obeys_the_admin() {
    use contracts::admit::{
        admin_tag, AdmissionList, AdmitAnswer, AdmitRequest, MachineKey, ADMISSION_PATH,
    };
    if tool("curl").is_none() {
        return;
    }
    let srv = Server::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("body");
    let ask = |mac: &str, key: &MachineKey| {
        let body = serde_json::to_string(&AdmitRequest {
            mac: mac.parse().unwrap(),
            name: Some("vm".into()),
            public: key.public(),
        })
        .unwrap();
        let out = out.clone();
        let srv = &srv;
        async move {
            let (status, body, _) = srv
                .curl(
                    &[
                        "-H",
                        "content-type: application/json",
                        "--data-binary",
                        &body,
                    ],
                    "/api/v1/admit",
                    &out,
                )
                .await;
            (
                status,
                serde_json::from_slice::<AdmitAnswer>(&body).unwrap(),
            )
        }
    };
    let signed_with = |key: &contracts::key::ClusterKey, method: &str, path: &str, body: &str| {
        let now = contracts::clock::unix_seconds();
        let tag = admin_tag(key, "test-cluster", method, path, now, body.as_bytes());
        vec![
            "-H".to_string(),
            format!("x-om-time: {now}"),
            "-H".to_string(),
            format!("x-om-auth: {tag}"),
        ]
    };

    let signed = |method: &str, body: &str| signed_with(&srv.key, method, ADMISSION_PATH, body);

    // Booted from this head moments ago: admitted, and only its key opens
    // the answer.
    srv.curl(
        &[],
        "/boot.ipxe?mac=52:54:00:00:00:01&platform=pcbios",
        &out,
    )
    .await;
    let node = MachineKey::generate();
    let (status, answer) = ask("52:54:00:00:00:01", &node).await;
    assert_eq!(status, 200, "{answer:?}");
    assert_eq!(
        opened(&node, "52:54:00:00:00:01", &answer),
        Ok(srv.key.clone())
    );
    assert!(opened(&MachineKey::generate(), "52:54:00:00:00:01", &answer).is_err());

    // Never booted here: pending.
    let stranger = MachineKey::generate();
    let (status, answer) = ask("52:54:00:00:00:02", &stranger).await;
    assert_eq!(status, 202, "{answer:?}");

    // The same MAC as the admitted one, another key, no new boot: refused.
    let (status, answer) = ask("52:54:00:00:00:01", &MachineKey::generate()).await;
    assert_eq!(status, 403, "{answer:?}");

    // The admin's side needs the signature.
    let (status, body, _) = srv.curl(&[], ADMISSION_PATH, &out).await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let args = signed("GET", "");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body, _) = srv.curl(&args, ADMISSION_PATH, &out).await;
    assert_eq!(status, 200);
    let list: AdmissionList = serde_json::from_slice(&body).unwrap();
    let standings: Vec<String> = list
        .machines
        .iter()
        .map(|m| format!("{} {:?} {}", m.mac, m.standing, m.by))
        .collect();
    expect![[r#"
        [
            "52:54:00:00:00:01 Admitted auto: booted from this head",
            "52:54:00:00:00:02 Pending asked",
        ]
    "#]]
    .assert_debug_eq(&standings);
    assert_eq!(list.refusals.len(), 1);

    let decision = r#"{"machine":"52:54:00:00:00:02","verdict":"admit"}"#;
    let mut args = signed("POST", decision);
    args.extend(["--data-binary".into(), decision.into()]);
    let forged: Vec<String> = args
        .iter()
        .map(|a| a.replace("52:54:00:00:00:02", "52:54:00:00:00:03"))
        .collect();
    let forged: Vec<&str> = forged.iter().map(String::as_str).collect();
    let (status, _, _) = srv.curl(&forged, ADMISSION_PATH, &out).await;
    assert_eq!(status, 401, "a changed body keeps no signature");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body, _) = srv.curl(&args, ADMISSION_PATH, &out).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, answer) = ask("52:54:00:00:00:02", &stranger).await;
    assert_eq!(status, 200, "{answer:?}");

    // A key rotation: the new key comes sealed under the old one, signed.
    use contracts::rotate::{seal_key, RotateRequest, ROTATE_PATH};
    let new = contracts::key::ClusterKey::generate();
    let rotate = |sealed_with: &contracts::key::ClusterKey, key: &contracts::key::ClusterKey| {
        serde_json::to_string(&RotateRequest {
            sealed: seal_key(sealed_with, "test-cluster", key),
            switch_in_ms: 0,
            window_ms: 60_000,
        })
        .unwrap()
    };
    let post = |args: Vec<String>, body: String| {
        let mut args = args;
        args.extend(["--data-binary".into(), body]);
        args
    };
    let body = rotate(&srv.key, &new);
    let (status, _, _) = srv.curl(&["--data-binary", &body], ROTATE_PATH, &out).await;
    assert_eq!(status, 401, "an unsigned rotation was taken");
    let stranger_key = contracts::key::ClusterKey::generate();
    let bad = rotate(&stranger_key, &new);
    let args = post(signed_with(&srv.key, "POST", ROTATE_PATH, &bad), bad);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body_out, _) = srv.curl(&args, ROTATE_PATH, &out).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body_out));
    let args = post(signed_with(&srv.key, "POST", ROTATE_PATH, &body), body);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body_out, _) = srv.curl(&args, ROTATE_PATH, &out).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body_out));
    assert_eq!(
        String::from_utf8_lossy(&body_out).trim(),
        new.fingerprint("test-cluster")
    );
    // In the window both keys sign; a machine admitted now gets the new key.
    for key in [&srv.key, &new] {
        let args = signed_with(key, "GET", ADMISSION_PATH, "");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (status, _, _) = srv.curl(&args, ADMISSION_PATH, &out).await;
        assert_eq!(status, 200, "a signature was refused in the window");
    }
    let (status, answer) = ask("52:54:00:00:00:02", &stranger).await;
    assert_eq!(status, 200, "{answer:?}");
    assert_eq!(
        opened(&stranger, "52:54:00:00:00:02", &answer),
        Ok(new.clone())
    );
    // A second rotation waits for the first to end.
    let third = rotate(&new, &contracts::key::ClusterKey::generate());
    let args = post(signed_with(&new, "POST", ROTATE_PATH, &third), third);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (status, body_out, _) = srv.curl(&args, ROTATE_PATH, &out).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body_out));
    srv.stop().await;
}
