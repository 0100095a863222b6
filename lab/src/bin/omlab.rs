//! `omlab`: thin command-line shell over the `lab` library.
//!
//! `omlab demo` boots a virtual cluster of qemu machines from `omboot` on a
//! virtual LAN and shows it sharing work (what `scripts/demo` runs).
//! Exit codes: 0 fine, 1 failure, 2 usage error (from clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use lab::cluster::LabMode;
use lab::demo;

#[derive(Parser)]
#[command(
    name = "omlab",
    version,
    about = "The virtual cluster: qemu machines netbooting from omboot on a virtual LAN"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a virtual cluster of qemu machines from omboot and watch it
    /// share work (needs root and qemu).
    Demo(DemoArgs),
    /// Forward TCP connections from the host into a network namespace
    /// (`demo --keep` starts one for the head's web view).
    #[command(hide = true)]
    Forward {
        /// The namespace.
        #[arg(long)]
        netns: String,
        /// Where to listen on the host.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Where to connect inside the namespace.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

#[derive(Args)]
struct DemoArgs {
    /// How many machines to netboot (they take the SeaBIOS+iPXE, OVMF+iPXE
    /// and OVMF PXE paths in turn).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=32))]
    nodes: u8,
    /// Leave the cluster running at the end and print how to use it.
    #[arg(long)]
    keep: bool,
    /// Tear down a cluster left running by `--keep`, then exit.
    #[arg(long)]
    stop: bool,
    /// Recipe to build when the image is missing.
    #[arg(long, default_value = "images/node.toml")]
    recipe: PathBuf,
    /// Image directory (built there when missing or built from another
    /// recipe; default out/image for images/node.toml, else out/<recipe
    /// name>, e.g. out/render for images/render.toml).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Where logs, consoles and state go.
    #[arg(long, default_value = "out/demo")]
    work: PathBuf,
    /// Inner loop count of the awk jobs (the openMosix documentation's is 10000).
    #[arg(long, default_value_t = 1500)]
    awk_loops: u32,
    /// Memory per machine in MiB.
    #[arg(long, default_value_t = 768)]
    memory: u32,
    /// dhcp: omboot is the LAN's DHCP server; proxy: a LAN router's dnsmasq
    /// hands out addresses and omboot answers as ProxyDHCP.
    #[arg(long, default_value = "dhcp", value_parser = ["dhcp", "proxy"])]
    mode: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Demo(a) => run_demo(a),
        Cmd::Forward { netns, listen, to } => {
            lab::forward::run(listen, &netns, to).map_err(anyhow::Error::from)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("omlab: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_demo(a: DemoArgs) -> anyhow::Result<()> {
    if a.stop {
        demo::stop();
        return Ok(());
    }
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let image = a
        .image
        .unwrap_or_else(|| demo::default_image_dir(&a.recipe));
    demo::run(demo::DemoOptions {
        nodes: usize::from(a.nodes),
        keep: a.keep,
        recipe: absolute(a.recipe),
        image_dir: absolute(image),
        work_dir: absolute(a.work),
        bin_dir: demo::default_bin_dir(),
        awk_loops: a.awk_loops,
        memory_mib: a.memory,
        mode: if a.mode == "proxy" {
            LabMode::Proxy
        } else {
            LabMode::Dhcp
        },
    })?;
    Ok(())
}
