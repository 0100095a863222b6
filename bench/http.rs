//! HTTP benchmark: 50 concurrent curl clients fetching a 32 MiB initrd from our
//! HTTP server, beside busybox httpd serving the same directory, in one run.
//! Prints wall time and aggregate throughput, median of `OM_BENCH_ROUNDS`
//! (default 3) alternating rounds. Run: `bench/http.sh` or
//! `cargo bench -p omcluster-bench --bench http`.
//!
//! Our server runs as a child of this binary (`--serve-http DIR [ADDR]`) so its
//! RSS is its own; that mode also serves an image directory by hand.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use omcluster_bench::{median, pattern, rss_kib, Proc};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const SIZE: usize = 32 << 20;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-http") {
        let addr = args.get(i + 2).map_or("127.0.0.1:0", String::as_str);
        serve(Path::new(&args[i + 1]), addr);
        return;
    }
    if let Err(e) = run() {
        eprintln!("http bench: {e:#}");
        std::process::exit(1);
    }
}

/// Child mode: our HTTP server on `addr` (default `127.0.0.1:0`), port on stdout.
fn serve(root: &Path, addr: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        let state_dir = tempfile::tempdir().unwrap();
        let state = pxe_server::http::HttpState {
            image: Arc::new(pxe_server::image::ImageDir::open(root).unwrap()),
            registry: Arc::new(pxe_server::nodes::NodeRegistry::new()),
            leases: Arc::new(Vec::<pxe_server::nodes::LeaseView>::new()),
            cluster_id: "bench".into(),
            keys: std::sync::Arc::new(keystore::KeyStore::new(
                contracts::key::ClusterKey::generate(),
                None,
            )),
            admission: Arc::new(
                pxe_server::admission::Store::open(
                    state_dir.path(),
                    pxe_server::admission::Policy::Manual,
                )
                .unwrap(),
            ),
            share: None,
        };
        pxe_server::http::serve(listener, state, std::future::pending())
            .await
            .unwrap();
    });
}

/// 50 clients at once; returns wall seconds. Every download must be complete.
fn round(port: u16) -> anyhow::Result<f64> {
    let url = format!("http://127.0.0.1:{port}/initrd.img");
    let start = Instant::now();
    let kids: Vec<Child> = (0..CLIENTS)
        .map(|_| {
            Command::new("curl")
                .args(["-sS", "-o", "/dev/null", "-w", "%{size_download}", &url])
                .stdout(Stdio::piped())
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    for k in kids {
        let o = k.wait_with_output()?;
        let got: usize = String::from_utf8_lossy(&o.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        anyhow::ensure!(
            o.status.success() && got == SIZE,
            "a client got {got} of {SIZE} bytes"
        );
    }
    Ok(start.elapsed().as_secs_f64())
}

fn run() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("OM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let dir = tempfile::Builder::new()
        .prefix("omt-http-bench")
        .tempdir()?;
    let root = dir.path();
    std::fs::write(root.join("initrd.img"), pattern(SIZE))?;
    std::fs::write(root.join("vmlinuz"), pattern(1 << 20))?;
    std::fs::create_dir_all(root.join("ipxe"))?;
    std::fs::write(root.join("ipxe/undionly.kpxe"), b"x")?;
    std::fs::write(root.join("ipxe/snponly.efi"), b"x")?;
    std::fs::write(root.join("manifest.json"), br#"{"kernel_cmdline":""}"#)?;

    let mut ours = Command::new(std::env::current_exe()?)
        .arg("--serve-http")
        .arg(root)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(ours.stdout.take().unwrap()).read_line(&mut line)?;
    let pid = ours.id();
    let _ours = Proc(ours);
    let port: u16 = line.trim().parse()?;

    let bb_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let busybox = Command::new("busybox")
        .args(["httpd", "-f", "-p", &format!("127.0.0.1:{bb_port}"), "-h"])
        .arg(root)
        .spawn()
        .ok()
        .map(Proc);
    std::thread::sleep(Duration::from_millis(300));

    let mut ours_t = Vec::new();
    let mut bb_t = Vec::new();
    for _ in 0..rounds {
        ours_t.push(round(port)?);
        if busybox.is_some() {
            bb_t.push(round(bb_port)?);
        }
    }
    let total_mib = (CLIENTS * SIZE) as f64 / (1 << 20) as f64;
    let o = median(&mut ours_t);
    println!("\nHTTP, {CLIENTS} concurrent curl clients x 32 MiB initrd on loopback, median of {rounds} rounds\n");
    println!("| server | seconds | MiB/s total |");
    println!("|---|---|---|");
    println!("| omboot | {o:.2} | {:.0} |", total_mib / o);
    if !bb_t.is_empty() {
        let b = median(&mut bb_t);
        println!("| busybox httpd | {b:.2} | {:.0} |", total_mib / b);
        println!("\nomboot / busybox throughput: {:.1}x", b / o);
    }
    println!("omboot RSS high-water mark: {} KiB", rss_kib(pid, "VmHWM:"));
    Ok(())
}
