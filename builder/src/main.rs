//! `ombuild`: thin command-line shell over the `builder` library.

use std::path::PathBuf;
use std::process::ExitCode;

use builder::image::{self, Options};
use clap::{Args, Parser, Subcommand};

/// Builds the omcluster live image from Debian packages.
#[derive(Parser)]
#[command(name = "ombuild", version, about)]
#[command(
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage, 3 recipe error, \
4 signature or hash mismatch, 5 network or missing from the offline cache, 6 disk full, \
7 unresolvable dependencies"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build vmlinuz, initrd.img, the iPXE boot kit, the hybrid ISO and
    /// manifest.json into an image directory.
    Image(ImageArgs),
}

#[derive(Args)]
struct ImageArgs {
    /// The recipe.
    #[arg(default_value = "images/node.toml")]
    recipe: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Debian mirror (http://…), used when the recipe names none; default:
    /// the first source for the suite in the host's apt configuration.
    #[arg(long)]
    mirror: Option<String>,
    /// Build from the cache only.
    #[arg(long)]
    offline: bool,
    /// Resolve again and rewrite the lockfile.
    #[arg(long)]
    update: bool,
    /// The node agent (omnode); default: next to ombuild.
    #[arg(long)]
    agent: Option<PathBuf>,
    /// omboot for the head role; default: next to ombuild, if there.
    #[arg(long)]
    omboot: Option<PathBuf>,
    /// omctl; default: next to ombuild, if there.
    #[arg(long)]
    omctl: Option<PathBuf>,
    /// OpenPGP keyring for InRelease.
    #[arg(long, default_value = image::DEFAULT_KEYRING)]
    keyring: PathBuf,
    /// Package cache directory; default: $XDG_CACHE_HOME/omcluster or ~/.cache/omcluster.
    #[arg(long)]
    cache: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let Command::Image(a) = cli.command;
    let mut opts = Options::new(a.recipe, a.out);
    opts.mirror = a.mirror;
    opts.offline = a.offline;
    opts.update = a.update;
    opts.agent = a.agent;
    opts.omboot = a.omboot;
    opts.omctl = a.omctl;
    opts.keyring = a.keyring;
    opts.cache = a.cache;
    match image::build(&opts) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ombuild: error: {e:#}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
