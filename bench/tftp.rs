//! TFTP benchmark: seconds to serve a 64 MiB file to atftp (windowsize 16,
//! blksize 1468) and to curl (lockstep, blksize 1468) from our server, tftpd-hpa
//! and dnsmasq, side by side in one run; then 100 concurrent atftp clients
//! against ours with the server's peak RSS.
//!
//! Run as root (dnsmasq's TFTP port is fixed at 69, so it runs in its own
//! network namespace `omt-tftp-bench`): `bench/tftp.sh`, or
//! `cargo bench -p omcluster-bench --bench tftp`. Set `OM_BENCH_ROUNDS` (default 3)
//! for more alternating rounds; the median is reported.
//!
//! Our server runs as a child process of this binary (`--serve-tftp DIR`) so its
//! RSS is its own.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use omcluster_bench::{median, pattern, rss_kib, Proc};
use std::time::{Duration, Instant};

const NETNS: &str = "omt-tftp-bench";
const SIZE: usize = 64 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-tftp") {
        serve(Path::new(&args[i + 1]));
        return;
    }
    if let Err(e) = run() {
        eprintln!("tftp bench: {e:#}");
        std::process::exit(1);
    }
}

/// Child mode: our TFTP server on 127.0.0.1, port printed on stdout.
fn serve(root: &Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        println!("{}", sock.local_addr().unwrap().port());
        let limits = pxe_server::tftp::TftpLimits {
            max_transfers: 512,
            ..Default::default()
        };
        pxe_server::tftp::serve(
            sock,
            root.to_path_buf(),
            limits,
            Arc::new(pxe_server::nodes::NodeRegistry::new()),
            std::future::pending(),
        )
        .await
        .unwrap();
    });
}

struct Netns;
impl Netns {
    fn create() -> anyhow::Result<Netns> {
        Netns::remove();
        sh(&["ip", "netns", "add", NETNS])?;
        sh(&[
            "ip", "netns", "exec", NETNS, "ip", "link", "set", "lo", "up",
        ])?;
        Ok(Netns)
    }
    fn remove() {
        let _ = Command::new("ip")
            .args(["netns", "del", NETNS])
            .stderr(Stdio::null())
            .status();
    }
}
impl Drop for Netns {
    fn drop(&mut self) {
        Netns::remove();
    }
}

fn sh(cmd: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(cmd[0]).args(&cmd[1..]).status()?;
    anyhow::ensure!(st.success(), "{cmd:?} failed: {st}");
    Ok(())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    AtftpWindow16,
    CurlLockstep,
}

impl Client {
    fn label(self) -> &'static str {
        match self {
            Client::AtftpWindow16 => "atftp windowsize 16, blksize 1468",
            Client::CurlLockstep => "curl lockstep, blksize 1468",
        }
    }
}

/// Where a server listens: optionally inside the namespace.
#[derive(Clone)]
struct Target {
    name: &'static str,
    port: u16,
    netns: bool,
}

fn client_cmd(t: &Target, c: Client, file: &str, out: &Path) -> Command {
    let mut cmd = if t.netns {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", NETNS]);
        c
    } else {
        Command::new("env")
    };
    match c {
        Client::AtftpWindow16 => {
            cmd.args([
                "atftp",
                "--option",
                "windowsize 16",
                "--option",
                "blksize 1468",
                "-g",
                "-r",
                file,
                "-l",
            ]);
            cmd.arg(out);
            cmd.args(["127.0.0.1", &t.port.to_string()]);
        }
        Client::CurlLockstep => {
            cmd.args(["curl", "-sS", "--tftp-blksize", "1468", "-o"]);
            cmd.arg(out);
            cmd.arg(format!("tftp://127.0.0.1:{}/{file}", t.port));
        }
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

fn fetch(t: &Target, c: Client, file: &str, out: &Path, want: &[u8]) -> anyhow::Result<f64> {
    let _ = std::fs::remove_file(out);
    let start = Instant::now();
    let o = client_cmd(t, c, file, out).output()?;
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        o.status.success(),
        "{} via {}: {}",
        t.name,
        c.label(),
        String::from_utf8_lossy(&o.stderr)
    );
    let got = std::fs::read(out)?;
    anyhow::ensure!(got == want, "{} via {}: file differs", t.name, c.label());
    Ok(secs)
}

fn run() -> anyhow::Result<()> {
    for tool in ["atftp", "curl", "in.tftpd", "dnsmasq", "ip"] {
        anyhow::ensure!(
            have(tool),
            "{tool} is not installed (packages: atftp curl tftpd-hpa dnsmasq-base iproute2)"
        );
    }
    let rounds: usize = std::env::var("OM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::Builder::new()
        .prefix("omt-tftp-bench")
        .tempdir()?;
    let root: PathBuf = dir.path().join("root");
    std::fs::create_dir_all(&root)?;
    let data = pattern(SIZE);
    std::fs::write(root.join("big.bin"), &data)?;
    let small = pattern(8 << 20);
    std::fs::write(root.join("eight.bin"), &small)?;
    // tftpd-hpa and dnsmasq drop privileges; let them read the files.
    for p in [dir.path(), &root] {
        sh(&["chmod", "755", p.to_str().unwrap()])?;
    }
    sh(&["chmod", "-R", "a+r", root.to_str().unwrap()])?;
    let out = dir.path().join("out.bin");

    // Ours.
    let exe = std::env::current_exe()?;
    let mut ours = Command::new(exe)
        .arg("--serve-tftp")
        .arg(&root)
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()?;
    let mut line = String::new();
    BufReader::new(ours.stdout.take().unwrap()).read_line(&mut line)?;
    let ours_pid = ours.id();
    let ours = Proc(ours);
    let our_port: u16 = line.trim().parse()?;

    // tftpd-hpa, lockstep only (no RFC 7440 support).
    let hpa_port = free_udp_port()?;
    let hpa = Proc(
        Command::new("in.tftpd")
            .args(["-L", "-s"])
            .arg(&root)
            .args(["-a", &format!("127.0.0.1:{hpa_port}")])
            .spawn()?,
    );

    // dnsmasq in its own namespace (port 69 is fixed).
    let ns = Netns::create()?;
    let dnsmasq = Proc(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                NETNS,
                "dnsmasq",
                "-k",
                "--port=0",
                "--enable-tftp",
                "--tftp-max=200",
            ])
            .arg(format!("--tftp-root={}", root.display()))
            .args([
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--user=root",
                "--pid-file=",
                "--conf-file=/dev/null",
            ])
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));

    let targets = [
        Target {
            name: "omboot",
            port: our_port,
            netns: false,
        },
        Target {
            name: "tftpd-hpa",
            port: hpa_port,
            netns: false,
        },
        Target {
            name: "dnsmasq",
            port: 69,
            netns: true,
        },
    ];
    let clients = [Client::AtftpWindow16, Client::CurlLockstep];
    let mut times = vec![vec![Vec::new(); targets.len()]; clients.len()];
    for _ in 0..rounds {
        for (ci, c) in clients.iter().enumerate() {
            for (ti, t) in targets.iter().enumerate() {
                times[ci][ti].push(fetch(t, *c, "big.bin", &out, &data)?);
            }
        }
    }

    println!("\nTFTP, 64 MiB file on loopback, median of {rounds} alternating rounds (seconds)\n");
    println!("| client | omboot | tftpd-hpa | dnsmasq | tftpd-hpa / omboot | dnsmasq / omboot |");
    println!("|---|---|---|---|---|---|");
    for (ci, c) in clients.iter().enumerate() {
        let m: Vec<f64> = times[ci].iter_mut().map(|v| median(v)).collect();
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.1}x | {:.1}x |",
            c.label(),
            m[0],
            m[1],
            m[2],
            m[1] / m[0],
            m[2] / m[0]
        );
    }
    let hpa_lockstep = median(&mut times[1][1]);
    let ours_window = median(&mut times[0][0]);
    println!(
        "\ngoal: omboot with windowsize 16 vs tftpd-hpa lockstep: {:.1}x (goal >= 3x)",
        hpa_lockstep / ours_window
    );

    // 100 concurrent clients against ours.
    let rss_before = rss_kib(ours_pid, "VmRSS:");
    let start = Instant::now();
    let mut kids = Vec::new();
    for i in 0..100 {
        let o = dir.path().join(format!("c{i}.bin"));
        let child = client_cmd(&targets[0], Client::AtftpWindow16, "eight.bin", &o).spawn()?;
        kids.push((child, o));
    }
    let mut peak = 0;
    let mut failed = 0;
    for (mut k, o) in kids {
        loop {
            peak = peak.max(rss_kib(ours_pid, "VmRSS:"));
            if k.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ok = k.wait()?.success() && std::fs::read(&o).map(|d| d == small).unwrap_or(false);
        failed += usize::from(!ok);
        let _ = std::fs::remove_file(&o);
    }
    let secs = start.elapsed().as_secs_f64();
    let hwm = rss_kib(ours_pid, "VmHWM:");
    println!(
        "\n100 concurrent atftp clients (windowsize 16, blksize 1468), 8 MiB each: {:.2} s, {} failed, {:.0} MiB/s total; \
         omboot RSS {} KiB idle, {} KiB peak sampled, {} KiB high-water mark",
        secs,
        failed,
        100.0 * 8.0 / secs,
        rss_before,
        peak,
        hwm
    );
    drop((ours, hpa, dnsmasq, ns));
    anyhow::ensure!(failed == 0, "{failed} concurrent clients failed");
    Ok(())
}
