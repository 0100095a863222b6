//! The `omboot` command line: configuration errors (exit code 2, one line,
//! nothing started), `omboot explain`, `omboot leases`. No root needed: the
//! interface used is `lo`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};

use contracts::mac::MacAddr;
use expect_test::{expect, Expect};
use pxe_server::leases::{LeaseRecord, LeaseState, LeaseStore};

fn omboot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_omboot"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run omboot")
}

/// Run `omboot serve` with a config and flags that must be refused: exit code
/// 2, exactly one line on stderr, and the state directory never created.
fn check_refused(config: Option<&str>, flags: &[&str], expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let state = dir.path().join("state");
    let mut args: Vec<String> = vec!["serve".into()];
    if let Some(text) = config {
        let cfg = dir.path().join("omboot.toml");
        std::fs::write(&cfg, text).unwrap();
        args.push("--config".into());
        args.push(cfg.to_str().unwrap().into());
    }
    args.extend(["--state".into(), state.to_str().unwrap().into()]);
    for f in flags {
        args.push(f.replace("IMAGES", images.to_str().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = omboot(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(dir.path().to_str().unwrap(), "TMP");
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!state.exists(), "nothing may be started or created");
    expect.assert_eq(stderr.trim_end());
}

#[test]
fn config_unknown_key_names_the_line() {
    check_refused(
        Some(
            "interfaces = [\"lo\"]\n\n[[pool]]\nrange = \"127.0.0.10-127.0.0.20\"\nleasetime = 5\n",
        ),
        &["--images", "IMAGES"],
        expect![[
            r#"omboot: TMP/omboot.toml:5: unknown field `leasetime`, expected one of `range`, `subnet`, `router`"#
        ]],
    );
    check_refused(
        Some("interfaces = [\"lo\"]\nmodes = \"dhcp\"\n"),
        &["--images", "IMAGES"],
        expect!["omboot: TMP/omboot.toml:2: unknown field `modes`, expected one of `interfaces`, `mode`, `images`, `state`, `http_port`, `tftp_port`, `dhcp_port`, `cluster`, `key_file`, `admit`, `log_format`, `lease_time`, `decline_quarantine`, `router`, `dns`, `domain`, `pool`, `reservation`, `share`"],
    );
}

#[test]
fn config_overlapping_pools() {
    check_refused(
        None,
        &[
            "--interface",
            "lo",
            "--images",
            "IMAGES",
            "--pool",
            "127.0.0.10-127.0.0.20",
            "--pool",
            "127.0.0.15-127.0.0.30",
        ],
        expect![[r#"omboot: pools 127.0.0.10-127.0.0.20 and 127.0.0.15-127.0.0.30 overlap"#]],
    );
}

#[test]
fn config_pool_outside_interface_subnet() {
    check_refused(
        None,
        &[
            "--interface",
            "lo",
            "--images",
            "IMAGES",
            "--pool",
            "10.0.0.10-10.0.0.20",
        ],
        expect![[r#"omboot: pool 10.0.0.10-10.0.0.20 is outside 127.0.0.0/8 on lo"#]],
    );
}

#[test]
fn config_missing_images_dir() {
    check_refused(
        None,
        &[
            "--interface",
            "lo",
            "--images",
            "/nonexistent/omboot-images",
            "--pool",
            "127.0.0.10-127.0.0.20",
        ],
        expect![[
            r#"omboot: images directory /nonexistent/omboot-images does not exist or is not a directory"#
        ]],
    );
}

#[test]
fn config_share_must_be_a_directory_or_a_url() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let base = ["--interface", "lo", "--mode", "proxy", "--images", "IMAGES"];
    let with = |share: &str| {
        let mut flags = base.to_vec();
        flags.extend(["--share", share]);
        flags.iter().map(|f| f.to_string()).collect::<Vec<_>>()
    };
    let missing = with("/nonexistent/omboot-share");
    check_refused_images_ok(
        &missing,
        expect!["omboot: --share /nonexistent/omboot-share: no such directory"],
    );
    let file_flags = with(file.to_str().unwrap());
    check_refused_images_ok(
        &file_flags,
        expect!["omboot: --share TMPFILE: not a directory"],
    );
    check_refused_images_ok(
        &with("nfs://nas.example/x"),
        expect![[
            r#"omboot: --share: "nfs://nas.example/x" is not a share: the server must be an IPv4 address (nodes resolve no names)"#
        ]],
    );
}

/// [`check_refused`] with a complete image directory, so that the error
/// seen is the one the flags cause; `TMPFILE` stands for any file under
/// the test's own temporary directory.
fn check_refused_images_ok(flags: &[String], expect: Expect) {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    fake_image(&images);
    let mut args: Vec<String> = vec!["serve".into(), "--state".into()];
    args.push(dir.path().join("state").to_str().unwrap().into());
    for f in flags {
        args.push(f.replace("IMAGES", images.to_str().unwrap()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = omboot(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(!dir.path().join("state").exists(), "nothing may be started");
    let shown = match stderr.find("--share /tmp/") {
        Some(at) if stderr.contains("a-file") => {
            let end = stderr[at..]
                .find(':')
                .map(|e| at + e)
                .unwrap_or(stderr.len());
            format!("{}--share TMPFILE{}", &stderr[..at], &stderr[end..])
        }
        _ => stderr,
    };
    expect.assert_eq(shown.trim_end());
}

fn fake_image(d: &Path) {
    std::fs::create_dir_all(d.join("ipxe")).unwrap();
    for f in [
        "ipxe/undionly.kpxe",
        "ipxe/snponly.efi",
        "vmlinuz",
        "initrd.img",
    ] {
        std::fs::write(d.join(f), b"x").unwrap();
    }
    std::fs::write(d.join("manifest.json"), br#"{"kernel_cmdline":"quiet"}"#).unwrap();
}

#[test]
fn config_incomplete_image_dir() {
    check_refused(
        None,
        &[
            "--interface",
            "lo",
            "--images",
            "IMAGES",
            "--pool",
            "127.0.0.10-127.0.0.20",
        ],
        expect![[
            r#"omboot: images dir TMP/images is missing vmlinuz, initrd.img, ipxe/undionly.kpxe, ipxe/snponly.efi, manifest.json"#
        ]],
    );
}

#[test]
fn config_bad_flag_values() {
    check_refused(
        None,
        &[
            "--interface",
            "omt-dhcp-nonexistent0",
            "--images",
            "IMAGES",
            "--pool",
            "127.0.0.10-127.0.0.20",
        ],
        expect![[
            r#"omboot: interface omt-dhcp-nonexistent0 has no IPv4 address (or does not exist)"#
        ]],
    );
    let out = omboot(&["serve", "--mode", "relay"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid mode \"relay\": expected dhcp or proxy"),
        "{err}"
    );
}

fn explain(args: &[&str], expect: Expect) {
    let out = omboot(&[&["explain"], args].concat());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect.assert_eq(&String::from_utf8_lossy(&out.stdout));
}

#[test]
fn explain_prints_the_rule_and_what_the_node_gets() {
    explain(
        &["52:54:00:00:00:01", "--arch", "7", "--server", "10.0.0.1"],
        expect![[r#"
            client   52:54:00:00:00:01
            sends    option 93 [7 (uefi-x64)], PXEClient
            images   (none given: every boot file assumed present)
            rule     uefi-x64-snponly
            gets     next-server 10.0.0.1, filename ipxe/snponly.efi (TFTP)
            address  from the pool (no reservation)
        "#]],
    );
    explain(
        &[
            "52:54:00:00:00:02",
            "--arch",
            "0",
            "--ipxe",
            "--server",
            "10.0.0.1",
            "--http-port",
            "8080",
        ],
        expect![[r#"
            client   52:54:00:00:00:02
            sends    option 93 [0 (bios)], iPXE (option 175, user class iPXE)
            images   (none given: every boot file assumed present)
            rule     ipxe-script
            gets     filename http://10.0.0.1:8080/boot.ipxe (HTTP)
            address  from the pool (no reservation)
        "#]],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ipxe")).unwrap();
    std::fs::write(dir.path().join("ipxe/snponly.efi"), b"x").unwrap();
    let cfg = dir.path().join("omboot.toml");
    std::fs::write(
        &cfg,
        format!(
            "images = {:?}\n[[reservation]]\nmac = \"52:54:00:00:00:03\"\naddress = \"10.0.0.50\"\nhostname = \"n3\"\n",
            dir.path()
        ),
    )
    .unwrap();
    let out = omboot(&[
        "explain",
        "52:54:00:00:00:03",
        "--arch",
        "11",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout).replace(dir.path().to_str().unwrap(), "TMP");
    expect![[r#"
        client   52:54:00:00:00:03
        sends    option 93 [11 (uefi-arm64)], PXEClient
        images   TMP
        rule     no-boot-file
        gets     nothing: no boot file for uefi-arm64
        address  reserved 10.0.0.50 (hostname n3)
    "#]]
    .assert_eq(&text);
    let out = omboot(&["explain", "not-a-mac"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn leases_lists_the_store_as_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = LeaseStore::open(dir.path()).unwrap();
    let far = 4_000_000_000;
    store
        .commit(&[
            LeaseRecord {
                ip: Ipv4Addr::new(10, 0, 0, 5),
                mac: "52:54:00:00:00:05".parse::<MacAddr>().unwrap(),
                state: LeaseState::Active,
                expires: far,
                hostname: Some("n5".into()),
            },
            LeaseRecord {
                ip: Ipv4Addr::new(10, 0, 0, 6),
                mac: "52:54:00:00:00:06".parse::<MacAddr>().unwrap(),
                state: LeaseState::Released,
                expires: 1,
                hostname: None,
            },
        ])
        .unwrap();
    drop(store);
    // A torn last write is skipped with a warning, not a refusal.
    let log = dir.path().join(pxe_server::leases::LOG_FILE);
    let mut text = std::fs::read_to_string(&log).unwrap();
    text.push_str("1234abcd {\"ip\":\"10.0.0.");
    std::fs::write(&log, text).unwrap();

    let state = dir.path().to_str().unwrap();
    let out = omboot(&["leases", "--state", state]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 3, "{stdout}");
    assert!(rows[0].starts_with("ADDRESS"));
    assert!(
        rows[1].starts_with("10.0.0.5         52:54:00:00:00:05 active"),
        "{stdout}"
    );
    assert!(rows[1].ends_with(" n5"), "{stdout}");
    assert!(
        rows[2].starts_with("10.0.0.6         52:54:00:00:00:06 released"),
        "{stdout}"
    );
    expect!["omboot: warning: skipping lease log line 3: truncated record (23 bytes)"]
        .assert_eq(String::from_utf8_lossy(&out.stderr).trim_end());

    let out = omboot(&["leases", "--state", state, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    expect![[r#"[{"expires":4000000000,"hostname":"n5","ip":"10.0.0.5","mac":"52:54:00:00:00:05","state":"active"},{"expires":1,"ip":"10.0.0.6","mac":"52:54:00:00:00:06","state":"released"}]"#]]
        .assert_eq(&v.to_string());

    let out = omboot(&[
        "leases",
        "--state",
        &Path::new(state).join("missing").to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
