//! `omctl`: the cluster tools (`status`, `mon`, `top`, `ps`, `whois`, `run`,
//! `migrate`, `knob`, `shell`, and admission: `nodes`, `admit`, `reject`,
//! `token create`, `join`),
//! also reachable as `mosmon`, `mtop`, `mps`,
//! `mosctl`, `mosrun` and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use agent_control::client::{self as control, DEFAULT_SOCKET};
use agent_control::knobs::{KnobAction, KNOB_WORDS};
use agent_control::steer::JobOrder;
use agent_control::EXIT_NO_AGENT;
use clap::{Parser, Subcommand};
use contracts::admit::Verdict;
use omctl::tools;

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
    /// Steer a node's balancing (mosctl): block|noblock (guest jobs),
    /// stay|nostay (automatic moves away), lstay|nolstay (jobs started
    /// there), quiet|noquiet (balancing at all), expel (send guests away
    /// now), bring (bring its own jobs home). Takes root.
    Knob {
        /// The node to act on (name, number or address; default this one).
        #[arg(long, value_name = "N")]
        node: Option<String>,
        /// What to do.
        #[arg(value_name = "WORD")]
        word: String,
    },
    /// A shell whose commands run as cluster jobs started on this node,
    /// which the cluster then moves where they finish first; arguments go
    /// to the shell (`omctl shell -c 'CMD'`, `omctl shell SCRIPT`).
    Shell {
        /// Arguments for the shell.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// The machines the boot server knows and where each stands with
    /// admission (admitted, pending, rejected), and the refused ones.
    /// Takes root; asks the head through this node's agent.
    Nodes {
        /// Only the machines waiting for a decision, and the refusals.
        #[arg(long)]
        pending: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Let a machine into the cluster: it gets the cluster key, sealed to
    /// its own key, the next time it asks. Takes root.
    Admit {
        /// The machine: its MAC or the name it gave.
        #[arg(value_name = "NAME|MAC")]
        machine: String,
    },
    /// Turn a machine away, now and when it asks again. Takes root.
    Reject {
        /// The machine: its MAC or the name it gave.
        #[arg(value_name = "NAME|MAC")]
        machine: String,
    },
    /// Join tokens for workstations (`omctl token create`).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The cluster key this node uses (its fingerprint), and `omctl key
    /// rotate`: move every live member to a new key.
    Key {
        #[command(subcommand)]
        action: Option<KeyAction>,
    },
    /// Print a one-time link that logs a browser into the web view the
    /// local agent serves (openMosixView: nodes, jobs, migrations, history).
    Web {
        /// A link that can look but not act (for a wall screen); without
        /// it the link can steer, which takes root.
        #[arg(long)]
        read_only: bool,
    },
    /// Join this machine to a cluster with a token from `omctl token
    /// create`: fetches the cluster key (sealed to this machine, never in
    /// the clear), writes it 0600 with the agent's settings, and starts
    /// omnode-agent.service. Run as root.
    Join {
        /// The head: http://HEAD[:PORT], as `omctl token create` prints it.
        url: String,
        /// The token.
        token: String,
        /// Join under this name [default: the hostname].
        #[arg(long)]
        name: Option<String>,
        /// Where to write the cluster key.
        #[arg(long, value_name = "FILE", default_value = omctl::join::DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// Where to write the agent's settings (OM_AGENT_ARGS=…).
        #[arg(long, value_name = "FILE", default_value = omctl::join::DEFAULT_ENV_FILE)]
        env_file: PathBuf,
        /// Write the files only; do not enable or start the service.
        #[arg(long)]
        no_service: bool,
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
    /// Send a signal to running jobs wherever they run (every process of
    /// each): STOP holds a job where it is until CONT. Its owner or root.
    Kill {
        /// The signal: a name (TERM, SIGSTOP, cont…) or a number.
        #[arg(short, long, default_value = "TERM", value_parser = parse_signal)]
        signal: JobOrder,
        /// The jobs, by id or by pid as `omctl ps` shows them.
        #[arg(required = true)]
        jobs: Vec<String>,
    },
    /// Set the nice value of running jobs (every thread of each), wherever
    /// they run; only root may lower one.
    Renice {
        /// The nice value, -20 (first) to 19 (last).
        #[arg(allow_hyphen_values = true, value_parser = parse_nice)]
        nice: JobOrder,
        /// The jobs, by id or by pid as `omctl ps` shows them.
        #[arg(required = true)]
        jobs: Vec<String>,
    },
}

fn parse_signal(s: &str) -> Result<JobOrder, String> {
    JobOrder::signal(s)
}

fn parse_nice(s: &str) -> Result<JobOrder, String> {
    let n: i32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a whole number"))?;
    JobOrder::renice(n)
}

#[derive(Subcommand)]
enum KeyAction {
    /// Make a new cluster key and move every live member and the boot
    /// server to it without dropping anyone: they seal with the new key
    /// 15 s from now and refuse the old one WINDOW after that. Members away
    /// meanwhile rejoin through admission. Takes root.
    Rotate {
        /// How long the old key is still accepted after the switch: N, Ns,
        /// Nm, Nh or Nd (5 s to 1 d).
        #[arg(long, default_value = "60s", value_parser = parse_ttl)]
        window: u64,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Make a token a workstation joins with, and print the join command.
    /// Takes root; made on this node and registered with the head.
    Create {
        /// How long it stays valid: N, Ns, Nm, Nh or Nd.
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        /// How many machines may join with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
}

/// Prints an agent's answer, a line each, or its failure; the exit status.
fn lines_or_failure(answer: Result<Vec<String>, (i32, String)>) -> i32 {
    match answer {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
            0
        }
        Err((code, message)) => {
            eprintln!("omctl: {message}");
            code
        }
    }
}

/// A duration in seconds: `90`, `90s`, `30m`, `1h`, `2d`.
fn parse_ttl(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (N, Ns, Nm, Nh or Nd)"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?} is not a duration (N, Ns, Nm, Nh or Nd)")),
    };
    Ok(n.saturating_mul(scale))
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
        Command::Knob { node, word } => {
            let Some(action) = KnobAction::parse(&word) else {
                anyhow::bail!("unknown knob {word} (one of {})", KNOB_WORDS.join(", "));
            };
            return Ok(lines_or_failure(
                control::knob(&socket, node, action).await?,
            ));
        }
        Command::Key { action } => {
            let rotate = action.map(|KeyAction::Rotate { window }| window.saturating_mul(1000));
            return Ok(lines_or_failure(control::key(&socket, rotate).await?));
        }
        Command::Web { read_only } => {
            return Ok(match control::web(&socket, read_only).await? {
                Ok((url, access)) => {
                    println!("{url}");
                    eprintln!(
                        "omctl: open the link above in a browser within 15 minutes; it works once and its session can {}",
                        if access == "steer" { "look and steer" } else { "look but not act" }
                    );
                    0
                }
                Err((code, message)) => {
                    eprintln!("omctl: {message}");
                    code
                }
            });
        }
        Command::Shell { args } => return shell(&socket, args).await,
        Command::Nodes { pending, json } => {
            let answer = match control::admission(&socket, None).await? {
                Ok(json) => json,
                Err((code, message)) => {
                    eprintln!("omctl: {message}");
                    return Ok(code);
                }
            };
            let list: contracts::admit::AdmissionList =
                serde_json::from_str(&answer).map_err(|e| {
                    anyhow::anyhow!("the boot server's admission list is malformed: {e}")
                })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                let now = contracts::clock::unix_seconds();
                print!("{}", tools::admission_table(&list, pending, now));
            }
        }
        Command::Token {
            action: TokenAction::Create { ttl, uses },
        } => {
            return Ok(match control::token(&socket, ttl, uses).await? {
                Ok(control::TokenMade {
                    token,
                    head,
                    expires,
                    uses,
                }) => {
                    println!("omctl join {head} {token}");
                    let left = expires.saturating_sub(contracts::clock::unix_seconds());
                    eprintln!(
                        "omctl: run the line above as root on the machine to join; the token lets {uses} machine{} in during the next {left} s",
                        if uses == 1 { "" } else { "s" }
                    );
                    0
                }
                Err((code, message)) => {
                    eprintln!("omctl: {message}");
                    code
                }
            });
        }
        Command::Join {
            url,
            token,
            name,
            key_file,
            env_file,
            no_service,
        } => return join(url, token, name, key_file, env_file, !no_service).await,
        Command::Admit { machine } => return decide(&socket, machine, Verdict::Admit).await,
        Command::Reject { machine } => return decide(&socket, machine, Verdict::Reject).await,
        Command::Kill {
            signal: order,
            jobs,
        }
        | Command::Renice { nice: order, jobs } => {
            let mut status = 0;
            for job in jobs {
                match control::steer(&socket, &job, order).await? {
                    Ok(line) => println!("{line}"),
                    Err((code, message)) => {
                        eprintln!("omctl: {message}");
                        status = code;
                    }
                }
            }
            return Ok(status);
        }
        Command::Migrate { job, to } => {
            return Ok(match control::migrate(&socket, &job, &to).await? {
                Ok(done) => {
                    println!("{}", done);
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

/// `omctl join`: one line saying what was written and started.
async fn join(
    url: String,
    token: String,
    name: Option<String>,
    key_file: PathBuf,
    env_file: PathBuf,
    service: bool,
) -> anyhow::Result<i32> {
    let token: contracts::admit::Token = token.parse()?;
    let (name, name_given) = match name {
        Some(n) => (n, true),
        None => (
            nix::unistd::gethostname()
                .map_err(|e| anyhow::anyhow!("cannot read the hostname ({e}); pass --name"))?
                .to_string_lossy()
                .into_owned(),
            false,
        ),
    };
    let opts = omctl::join::JoinOptions {
        name,
        name_given,
        key_file: key_file.clone(),
        env_file: env_file.clone(),
        service,
    };
    let joined = match omctl::join::join(&url, &token, &opts).await {
        Ok(j) => j,
        Err(e) => {
            eprintln!("omctl: {e}");
            return Ok(1);
        }
    };
    use omctl::join::{Service, AGENT_UNIT};
    let started = match joined.service {
        Service::Started => format!("{AGENT_UNIT} enabled and started"),
        Service::Skipped => format!(
            "start the agent with: omnode agent {}",
            joined.agent_args.join(" ")
        ),
        Service::NoSystemd => format!(
            "no systemd runs here; start the agent with: omnode agent {}",
            joined.agent_args.join(" ")
        ),
    };
    println!(
        "joined cluster {}: key in {}, agent settings in {}; {started}",
        joined.cluster,
        key_file.display(),
        env_file.display()
    );
    Ok(0)
}

/// `omctl admit` / `omctl reject`: one line saying where the machine now
/// stands.
async fn decide(
    socket: &std::path::Path,
    machine: String,
    verdict: Verdict,
) -> anyhow::Result<i32> {
    match control::admission(socket, Some((machine, verdict))).await? {
        Ok(json) => {
            let m: contracts::admit::Machine = serde_json::from_str(&json)
                .map_err(|e| anyhow::anyhow!("the boot server's answer is malformed: {e}"))?;
            let what = match verdict {
                Verdict::Admit => "admitted: it gets the cluster key when it next asks",
                Verdict::Reject => "rejected",
            };
            println!(
                "{} ({}, key {}) {what}",
                m.mac,
                m.name.as_deref().unwrap_or("no name"),
                m.public.fingerprint()
            );
            Ok(0)
        }
        Err((code, message)) => {
            eprintln!("omctl: {message}");
            Ok(code)
        }
    }
}

/// `omctl shell`: the user's shell (`$SHELL`, else `/bin/sh`) with the
/// command shims first in `PATH` (see [`omctl::shell`]).
async fn shell(socket: &std::path::Path, args: Vec<String>) -> anyhow::Result<i32> {
    let node = control::status(socket).await?.node;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
    let omctl = std::env::current_exe()?;
    // A job's environment is its caller's, from another machine: only a
    // directory that exists here will do.
    let parent = ["XDG_RUNTIME_DIR", "TMPDIR"]
        .iter()
        .filter_map(std::env::var_os)
        .map(PathBuf::from)
        .find(|d| d.is_dir())
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    let shims = omctl::shell::Shims::create(&parent, &path, &omctl, socket, &node)?;
    let sh = std::env::var("SHELL")
        .ok()
        .filter(|s| std::path::Path::new(s).is_file())
        .unwrap_or_else(|| "/bin/sh".into());
    let rc = shims.rc();
    let mut cmd = std::process::Command::new(&sh);
    cmd.env("PATH", format!("{}:{path}", shims.dir.display()))
        .env("OM_SHELL_PATH", &path)
        .env("OM_SHELL_RC", &rc)
        .env("OM_SHELL", &node);
    // The functions come first in every form (see omctl::shell).
    match args.first().map(String::as_str) {
        None => {
            eprintln!(
                "omctl shell on node {node}: {} commands start as cluster jobs here and move where they finish first; builtins and ./paths run as plain processes; exit to leave",
                shims.count
            );
            cmd.env("PS1", format!("[om {node}] \\w \\$ "));
            if sh.ends_with("bash") {
                cmd.arg("--rcfile").arg(&rc).arg("-i");
            } else {
                cmd.env("ENV", &rc).arg("-i");
            }
        }
        Some("-c") => {
            cmd.args(["-c", ". \"$OM_SHELL_RC\"; eval \"$1\"", "omctl-shell"])
                .args(&args[1..]);
        }
        Some(flag) if flag.starts_with('-') => {
            cmd.env("ENV", &rc).args(&args);
        }
        Some(script) => {
            let script = if script.contains('/') {
                script.to_string()
            } else {
                format!("./{script}")
            };
            cmd.args(["-c", ". \"$OM_SHELL_RC\"; . \"$0\""])
                .arg(script)
                .args(&args[1..]);
        }
    }
    let status = cmd
        .status()
        .map_err(|e| anyhow::anyhow!("cannot start {sh}: {e}"))?;
    use std::os::unix::process::ExitStatusExt;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
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
