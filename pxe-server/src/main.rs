//! `omboot`: thin command-line shell over the `pxe_server` library.
//!
//! `omboot serve` runs the boot server, `omboot explain` shows what the boot
//! decision table gives a client, `omboot leases` prints the lease store.
//! Exit codes: 0 fine, 1 runtime failure, 2 configuration or usage error.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use contracts::mac::MacAddr;
use pxe_server::boot::{self, Available, ClientInfo, HttpBase};
use pxe_server::config::{
    LogFormat, Mode, Overrides, Pool, ServeConfig, WireConfig, DEFAULT_STATE_DIR,
};
use pxe_server::leases::{self, LeaseState};

#[derive(Parser)]
#[command(
    name = "omboot",
    version,
    about = "The head node's boot server: DHCP, ProxyDHCP, TFTP, HTTP"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve DHCP (or ProxyDHCP), TFTP and HTTP boot.
    Serve(ServeArgs),
    /// Show which boot rule fires for a client and what it gets.
    Explain(ExplainArgs),
    /// Print the lease table from the state directory.
    Leases(LeasesArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// TOML config file (see configs/omboot.toml); flags win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Interface to serve on (repeatable).
    #[arg(long = "interface", value_name = "IFACE")]
    interfaces: Vec<String>,
    /// dhcp (authoritative server) or proxy (ProxyDHCP beside another server).
    #[arg(long, value_parser = parse_mode)]
    mode: Option<Mode>,
    /// Address pool START-END (dhcp mode, repeatable).
    #[arg(long = "pool", value_name = "START-END", value_parser = parse_pool)]
    pools: Vec<Pool>,
    /// Image directory written by `ombuild image --out DIR`.
    #[arg(long)]
    images: Option<PathBuf>,
    /// State directory (lease database).
    #[arg(long)]
    state: Option<PathBuf>,
    /// HTTP port [default: 80].
    #[arg(long)]
    http_port: Option<u16>,
    /// TFTP port [default: 69].
    #[arg(long)]
    tftp_port: Option<u16>,
    /// DHCP server port [default: 67].
    #[arg(long)]
    dhcp_port: Option<u16>,
    /// Cluster id given to nodes.
    #[arg(long)]
    cluster: Option<String>,
    /// File with the cluster key (64 hex digits) [default: STATE/cluster.key,
    /// made on first start].
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Who gets the cluster key: auto (machines that just booted from this
    /// head; others wait for `omctl admit`) or manual (every new machine
    /// waits) [default: auto in dhcp mode, manual in proxy mode].
    #[arg(long, value_name = "auto|manual")]
    admit: Option<pxe_server::admission::Policy>,
    /// Log format: text or json.
    #[arg(long, value_parser = parse_log_format)]
    log_format: Option<LogFormat>,
    /// The shared tree every machine sees at /cluster: a directory to serve
    /// (with nfs-ganesha), or nfs://SERVER/EXPORT for the nodes to mount.
    #[arg(long, value_name = "DIR|nfs://SERVER/EXPORT")]
    share: Option<String>,
}

#[derive(Args)]
struct ExplainArgs {
    /// The client's MAC address.
    mac: String,
    /// Client architecture (option 93), repeatable in the client's order
    /// (0 BIOS, 7/9 UEFI x64, 11 arm64, 16 UEFI HTTP); none means BIOS PXE.
    #[arg(long = "arch", value_name = "N")]
    arches: Vec<u16>,
    /// The client is already iPXE (option 175 / user class iPXE).
    #[arg(long)]
    ipxe: bool,
    /// Config file, for reservations and the images directory.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image directory (which boot files exist); default: the config's, else assume all.
    #[arg(long)]
    images: Option<PathBuf>,
    /// The server address the client would see [default: SERVER].
    #[arg(long)]
    server: Option<Ipv4Addr>,
    /// HTTP port [default: the config's, else 80].
    #[arg(long)]
    http_port: Option<u16>,
}

#[derive(Args)]
struct LeasesArgs {
    /// State directory.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    s.parse()
        .map_err(|e: pxe_server::config::ConfigError| e.to_string())
}
fn parse_pool(s: &str) -> Result<Pool, String> {
    s.parse()
        .map_err(|e: pxe_server::config::ConfigError| e.to_string())
}
fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
        .map_err(|e: pxe_server::config::ConfigError| e.to_string())
}

/// An error with its exit code.
struct Failure {
    code: u8,
    err: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 1,
            err: e.into(),
        }
    }
}

fn usage(err: impl Into<anyhow::Error>) -> Failure {
    Failure {
        code: 2,
        err: err.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Serve(a) => serve(a),
        Cmd::Explain(a) => explain(a),
        Cmd::Leases(a) => print_leases(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("omboot: {:#}", f.err);
            ExitCode::from(f.code)
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

fn serve(a: ServeArgs) -> Result<(), Failure> {
    let flags = Overrides {
        interfaces: a.interfaces,
        mode: a.mode,
        pools: a.pools,
        images: a.images,
        state: a.state,
        http_port: a.http_port,
        tftp_port: a.tftp_port,
        dhcp_port: a.dhcp_port,
        cluster: a.cluster,
        key_file: a.key_file,
        admit: a.admit,
        log_format: a.log_format,
        share: a.share,
    };
    let mut config = ServeConfig::load(a.config.as_deref(), flags).map_err(usage)?;
    match &config.key_file {
        Some(path) => eprintln!("omboot: cluster key from {}", path.display()),
        None => {
            let (key, path, made) = pxe_server::config::state_key(&config.state)?;
            let how = if made {
                "made now"
            } else {
                "kept from an earlier start"
            };
            eprintln!(
                "omboot: cluster key in {} ({how}); give it to the head's own agent with --key-file",
                path.display()
            );
            config.key = Some(key);
            config.key_file = Some(path);
        }
    }
    eprintln!("omboot: admission {}", config.admit);
    init_tracing(config.log_format);
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(async {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        };
        pxe_server::serve::run(config, shutdown).await
    })?;
    Ok(())
}

fn explain(a: ExplainArgs) -> Result<(), Failure> {
    let mac: MacAddr = a.mac.parse().map_err(usage)?;
    let wire = match &a.config {
        Some(p) => WireConfig::load(p).map_err(usage)?,
        None => WireConfig::default(),
    };
    let images = a.images.or(wire.images.clone());
    let available = match &images {
        Some(dir) => Available::scan(dir),
        None => Available::ALL,
    };
    let info = ClientInfo {
        arches: a.arches.clone(),
        pxe_client: true,
        http_client: a.arches.first() == Some(&16),
        ipxe: a.ipxe,
    };
    let http = HttpBase {
        host: a
            .server
            .map(|s| s.to_string())
            .unwrap_or_else(|| "SERVER".into()),
        port: a.http_port.or(wire.http_port).unwrap_or(80),
    };
    let d = boot::decide(&info, available, &http);
    println!("client   {mac}");
    let arches: Vec<String> = a
        .arches
        .iter()
        .map(|&c| boot::Arch::from_code(c).to_string())
        .collect();
    println!(
        "sends    option 93 [{}]{}",
        arches.join(", "),
        if a.ipxe {
            ", iPXE (option 175, user class iPXE)"
        } else {
            ", PXEClient"
        }
    );
    match &images {
        Some(dir) => println!("images   {}", dir.display()),
        None => println!("images   (none given: every boot file assumed present)"),
    }
    println!("rule     {}", d.rule.name());
    match &d.boot {
        boot::Boot::Tftp(f) => println!("gets     next-server {}, filename {f} (TFTP)", http.host),
        boot::Boot::Url(u) => println!("gets     filename {u} (HTTP)"),
        boot::Boot::Nothing(why) => println!("gets     nothing: {why}"),
        boot::Boot::None => println!("gets     no boot options"),
    }
    let reservation = wire
        .reservations
        .iter()
        .find(|r| r.mac.parse::<MacAddr>().ok() == Some(mac));
    match reservation {
        Some(r) => println!(
            "address  reserved {}{}",
            r.address,
            r.hostname
                .as_ref()
                .map(|h| format!(" (hostname {h})"))
                .unwrap_or_default()
        ),
        None => println!("address  from the pool (no reservation)"),
    }
    Ok(())
}

fn print_leases(a: LeasesArgs) -> Result<(), Failure> {
    if !a.state.is_dir() {
        return Err(usage(anyhow::anyhow!(
            "state directory {} does not exist",
            a.state.display()
        )));
    }
    let (table, skipped) = leases::read_table(&a.state)?;
    for s in skipped {
        eprintln!("omboot: warning: skipping lease log {s}");
    }
    let recs = table.records();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&recs)?);
        return Ok(());
    }
    let now = contracts::clock::unix_seconds();
    println!(
        "{:<16} {:<17} {:<9} {:<14} HOSTNAME",
        "ADDRESS", "MAC", "STATE", "EXPIRES"
    );
    for r in recs {
        let state = match r.state {
            LeaseState::Active if r.expires <= now => "expired",
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Declined => "declined",
        };
        let exp = if r.expires > now {
            format!("in {}s", r.expires - now)
        } else {
            "-".into()
        };
        println!(
            "{:<16} {:<17} {:<9} {:<14} {}",
            r.ip,
            r.mac,
            state,
            exp,
            r.hostname.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}
