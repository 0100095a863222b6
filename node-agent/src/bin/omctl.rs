//! `omctl`: the cluster tools (`status`, `mon`, `top`, `ps`, `whois`, `run`,
//! `migrate`), also reachable as `mosmon`, `mtop`, `mps`, `mosctl`, `mosrun`
//! and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use node_agent::control::{self, DEFAULT_SOCKET};
use node_agent::exec::EXIT_NO_AGENT;
use node_agent::tools;

#[derive(Parser)]
#[command(
    name = "omctl",
    version,
    about = "omcluster tools: watch and use the cluster"
)]
struct Cli {
    /// The local agent's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every node with its state and load (mosctl).
    Status {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Live full-screen view of every node's load, speed and memory (mosmon); q quits.
    Mon {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// Live view of every node's cluster jobs and where each runs (mtop); q quits.
    Top {
        /// Print one frame and exit.
        #[arg(long)]
        once: bool,
    },
    /// Cluster jobs launched from or running on this node (mps).
    Ps {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// The jobs of every node, not only this one's.
        #[arg(long)]
        all: bool,
    },
    /// Show one node, by name, node number or address.
    Whois {
        /// NODE, ADDR or NAME.
        node: String,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The shared tree at /cluster: its server, size and free space, and
    /// which nodes have it mounted.
    Df {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in the cluster (mosrun); the exit status is the job's.
    Run {
        /// Run on this node (name, number or address) instead of choosing.
        #[arg(long, value_name = "N")]
        node: Option<String>,
        /// Never move the job once started (openMosix `mosrun -L`).
        #[arg(long)]
        lock: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        argv: Vec<String>,
    },
    /// Move a running job to another node while it runs (migrate); its
    /// output, signals and exit status stay with the `omctl run` that
    /// started it.
    Migrate {
        /// The job, by id or by pid as `omctl ps` shows it.
        job: String,
        /// A node (name, number or address), `home` or `best`.
        to: String,
    },
}

async fn exec(cli: Cli) -> anyhow::Result<i32> {
    let socket = cli.socket;
    match cli.command {
        Command::Status { json } => {
            let s = control::status(&socket).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", tools::status_table(&s));
            }
        }
        Command::Ps { json, all } => {
            let jobs = if all {
                control::ps_cluster(&socket).await?
            } else {
                control::ps(&socket).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                print!("{}", tools::ps_table(&jobs));
            }
        }
        Command::Whois { node, json } => {
            let s = control::status(&socket).await?;
            let Some(n) = tools::whois(&s, &node) else {
                anyhow::bail!("no node {node} in cluster {}", s.cluster);
            };
            if json {
                println!("{}", serde_json::to_string_pretty(n)?);
            } else {
                println!(
                    "node {} is {} at {} ({})",
                    n.number, n.name, n.addr, n.state
                );
            }
        }
        Command::Mon { once } => {
            tools::live(once, |w| {
                let socket = socket.clone();
                async move { Ok(tools::mon_lines(&control::status(&socket).await?, w)) }
            })
            .await?;
        }
        Command::Top { once } => {
            tools::live(once, |_| {
                let socket = socket.clone();
                async move {
                    let s = control::status(&socket).await?;
                    let jobs = control::ps_cluster(&socket).await?;
                    Ok(tools::top_lines(&s, &jobs))
                }
            })
            .await?;
        }
        Command::Df { json } => {
            let s = control::status(&socket).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tools::df_rows(&s))?);
            } else {
                print!("{}", tools::df_table(&s));
            }
        }
        Command::Run { node, lock, argv } => return Ok(tools::run(&socket, node, lock, argv).await),
        Command::Migrate { job, to } => {
            return Ok(match control::migrate(&socket, &job, &to).await? {
                Ok(done) => {
                    println!("{}", tools::migrated_line(&done));
                    0
                }
                Err((code, message)) => {
                    eprintln!("omctl: {message}");
                    code
                }
            })
        }
    }
    Ok(0)
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(tools::classic_argv(std::env::args().collect()));
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("omctl: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_NO_AGENT as u8);
        }
    };
    let code = match rt.block_on(exec(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("omctl: {e:#}");
            EXIT_NO_AGENT
        }
    };
    // Not dropping the runtime: a blocking stdin read must not hold the exit.
    std::process::exit(code);
}
