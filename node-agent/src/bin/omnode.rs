//! `omnode`: the node's init (`omnode init`, or `/init` as PID 1), the
//! cluster agent (`omnode agent`) and the key generator (`omnode keygen`).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;

use agent_control::client::DEFAULT_SOCKET;
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use keystore::KeyFile;
use node_agent::agent::{Agent, AgentConfig};
use node_agent::discovery::DEFAULT_PORT;
use node_agent::key::ClusterKey;
use node_init as init;

#[derive(Parser)]
#[command(
    name = "omnode",
    version,
    about = "omcluster node: init, cluster agent, key generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run as PID 1 of a netbooted node.
    Init(init::InitArgs),
    /// Run the cluster agent.
    Agent(Box<AgentArgs>),
    /// Make a new cluster key file (mode 0600).
    Keygen {
        /// Where to write the key (must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Ask PID 1 to power the machine off.
    Poweroff,
    /// Ask PID 1 to reboot the machine.
    Reboot,
    /// Ask PID 1 to halt the machine (power stays on).
    Halt,
    /// Hold a cluster job: the agent runs every job under this (a PID
    /// namespace of its own, a job init at PID 1).
    #[command(hide = true)]
    JobRun(job_holder::RunArgs),
    /// Restore a moved job from its checkpoint and hold it.
    #[command(hide = true)]
    JobRestore(job_holder::RestoreArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The cluster key file (see `omnode keygen`).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The local control socket for omctl.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// This node's name (default: the hostname).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// An agent to introduce ourselves to, `HOST` or `HOST:PORT` (repeatable; multicast discovery needs none).
    #[arg(long, value_name = "ADDR")]
    seed: Vec<String>,
    /// CPU share cluster jobs may use on this node, percent of all its CPUs.
    #[arg(long, value_name = "PERCENT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
    cpu_quota: u32,
    /// The network interface to talk on (default: that of the default route, else the first non-loopback one that is up).
    #[arg(long, value_name = "IFACE")]
    interface: Option<String>,
    /// Cluster id; agents only talk within one cluster.
    #[arg(long, value_name = "ID", default_value = "default")]
    cluster: String,
    /// UDP port (membership, discovery) and TCP port (remote execution).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PORT)]
    port: u16,
    /// Where the agent records its identity.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/omnode")]
    state_dir: PathBuf,
    /// Relative CPU speed to report instead of calibrating at start.
    #[arg(long, value_name = "FACTOR")]
    speed: Option<f32>,
    /// Boot server URL to check in at once joined
    /// (`http://SERVER:PORT/api/v1/checkin`; `omnode init` passes it).
    #[arg(long, value_name = "URL")]
    checkin: Option<String>,
    /// The shared tree this node should have at /cluster (`om.share=`;
    /// `omnode init` passes it), so that a lost mount is reported.
    #[arg(long, value_name = "SOURCE")]
    share: Option<String>,
    /// Accept no guest jobs (openMosix `mosctl block`).
    #[arg(long)]
    block: bool,
    /// No job leaves this node automatically (`mosctl stay`).
    #[arg(long)]
    stay: bool,
    /// Jobs started here stay here; guests may still go (`mosctl lstay`).
    #[arg(long)]
    lstay: bool,
    /// Take no part in automatic balancing (`mosctl quiet`).
    #[arg(long)]
    quiet: bool,
    /// Run jobs of root (uid 0) here. Off by default: a workstation's owner
    /// opts in; `omnode init` turns it on for netbooted nodes and heads,
    /// which belong to the cluster.
    #[arg(long)]
    allow_root_jobs: bool,
    /// Serve the web view (openMosixView) on ADDR:PORT, e.g. `0.0.0.0:7947`
    /// (the head's agent does by default); `omctl web` prints the link.
    #[arg(long, value_name = "ADDR:PORT")]
    web: Option<SocketAddr>,
    /// Answer `GET /metrics` of the web view without a session, for a
    /// Prometheus scraper on a trusted network.
    #[arg(long, requires = "web")]
    metrics_open: bool,
}

fn resolve_seed(s: &str, port: u16) -> anyhow::Result<SocketAddr> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let with_port = if s.contains(':') {
        s.to_string()
    } else {
        format!("{s}:{port}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve seed {s}"))?
        .find(|a| a.is_ipv4())
        .with_context(|| format!("seed {s} has no IPv4 address"))
}

fn agent(args: AgentArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let key = KeyFile::new(&args.key_file).load()?;
    let name = match args.name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .context("cannot read the hostname; pass --name")?
            .to_string_lossy()
            .into_owned(),
    };
    if name.is_empty()
        || name.len() > 64
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("node name {name:?} must be 1-64 characters without spaces");
    }
    if let Some(s) = args.speed {
        if !(s.is_finite() && s > 0.0) {
            bail!("--speed {s} must be a positive number");
        }
    }
    if args.cluster.is_empty() || args.cluster.len() > 64 {
        bail!("cluster id {:?} must be 1-64 characters", args.cluster);
    }
    let seeds = args
        .seed
        .iter()
        .map(|s| resolve_seed(s, args.port))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let knobs = node_agent::balance::Knobs {
        block: args.block,
        stay: args.stay,
        lstay: args.lstay,
        quiet: args.quiet,
    };
    let cfg = AgentConfig {
        knobs,
        allow_root_jobs: args.allow_root_jobs,
        key,
        key_file: Some(args.key_file.clone()),
        cluster: args.cluster,
        name,
        socket: args.socket,
        seeds,
        cpu_quota: args.cpu_quota,
        interface: args.interface,
        port: args.port,
        state_dir: Some(args.state_dir),
        speed: args.speed,
        checkin: args.checkin,
        share: args.share,
        web: args.web,
        metrics_open: args.metrics_open,
    };
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let agent = Agent::bind(cfg).await?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        agent.run(shutdown).await?;
        anyhow::Ok(())
    })
}

fn run_init(args: init::InitArgs) -> anyhow::Result<()> {
    match init::run(args) {
        Ok(never) => match never {},
        Err(e) => Err(e.into()),
    }
}

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    // The kernel starts /init as PID 1, possibly with boot parameters it did
    // not understand as arguments: PID 1 is always init. Started as `/init`
    // without arguments by something else, too (init re-executes itself as
    // `/init agent …` for the agent, which must parse normally).
    let pid1 = std::process::id() == 1;
    let as_init = pid1 || (argv0.ends_with("/init") && std::env::args().len() <= 1);
    let result = if as_init {
        run_init(init::InitArgs::default())
    } else {
        match Cli::parse().command {
            Command::Init(a) => run_init(a),
            Command::Agent(a) => agent(*a),
            Command::Keygen { out } => KeyFile::new(&out)
                .create(&ClusterKey::generate())
                .map(|()| println!("omnode: wrote a new cluster key to {}", out.display()))
                .map_err(Into::into),
            Command::Poweroff => {
                init::request_power(init::PowerAction::PowerOff).map_err(Into::into)
            }
            Command::Reboot => init::request_power(init::PowerAction::Reboot).map_err(Into::into),
            Command::Halt => init::request_power(init::PowerAction::Halt).map_err(Into::into),
            // The job holders report through their exit code, nothing else.
            Command::JobRun(a) => return ExitCode::from(job_holder::run(a) as u8),
            Command::JobRestore(a) => return ExitCode::from(job_holder::restore(a) as u8),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omnode: {e:#}");
            ExitCode::FAILURE
        }
    }
}
