//! `modcheck [ROOT]`: checks the workspace at ROOT (default: here) for
//! import cycles between the modules of each crate. Prints one line per
//! cycle and exits 1, or a one-line summary and exits 0; exits 2 when the
//! workspace cannot be read.

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

/// Fails on an import cycle between the modules of any crate in a
/// workspace.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The workspace (or package) directory, holding its Cargo.toml.
    #[arg(default_value = ".")]
    root: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match modcheck::check(&args.root) {
        Ok(report) => {
            print!("{report}");
            if report.cycles.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("modcheck: {e:#}");
            ExitCode::from(2)
        }
    }
}
