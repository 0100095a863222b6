//! `omlab demo`: a virtual cluster for a person to watch.
//!
//! It builds the default image if there is none or it is older than the
//! `omnode` beside `omlab` (running `ombuild image`,
//! which shows its own progress bars), creates the virtual LAN of [`crate::cluster`],
//! starts `omboot serve` and the head's agent there, boots N qemu machines
//! through the three firmware paths in turn, prints each machine's boot stages
//! as `omboot` sees them and the joined lines from their consoles, then runs
//! the awk batch of the openMosix documentation through `omctl run`, all
//! started on the first machine, and lets the cluster spread it by
//! migration; it prints where each job started and finished and how often
//! it moved, and compares the makespan with the same batch on that machine
//! alone and placed at start without migration. Everything is torn down at the end and on Ctrl-C; `--keep` leaves
//! the cluster running and prints how to look inside and how to stop it.
//!
//! Its lines still start with `omboot demo:`, as when the demo was a
//! subcommand of `omboot`: `scripts/demo`'s output is a contract people and
//! scripts read, and it did not change when the demo moved here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::{self, ClusterLab, LabConfig, LabMode};
use crate::error::LabError;
use crate::netns::remove_namespace;
use crate::qemu::{check_prerequisites, Firmware};

/// The namespace the demo's LAN lives in.
pub const DEMO_NAMESPACE: &str = "om-demo";

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The lab could not be built or driven.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A companion program is not next to `omlab`.
    #[error("{0} not found next to omlab; build the binaries with scripts/static-build (or cargo build --release)")]
    MissingBinary(PathBuf),
    /// `ombuild image` failed.
    #[error("building the image failed: ombuild exited with {0}")]
    Build(String),
    /// A machine did not join in time.
    #[error("{node} did not join within {secs} s; its console log is {log}")]
    NoJoin {
        /// The machine.
        node: String,
        /// How long the demo waited.
        secs: u64,
        /// Its serial console log.
        log: PathBuf,
    },
    /// A job of the batch failed.
    #[error("job {index} of the batch failed ({status}): {stderr}")]
    Job {
        /// Which job.
        index: usize,
        /// How `omctl run` exited.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The user pressed Ctrl-C.
    #[error("interrupted; the virtual cluster was torn down")]
    Interrupted,
    /// An I/O error on a process the demo runs.
    #[error("{what}: {source}")]
    Io {
        /// What the demo was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The demo's settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// How many machines to netboot.
    pub nodes: usize,
    /// Leave the cluster running at the end.
    pub keep: bool,
    /// The recipe to build when the image is missing.
    pub recipe: PathBuf,
    /// The image directory (built there if missing).
    pub image_dir: PathBuf,
    /// Logs, consoles and state.
    pub work_dir: PathBuf,
    /// Where `omnode`, `omctl` and `ombuild` are.
    pub bin_dir: PathBuf,
    /// Inner loop count of the awk job (the documentation's is 10000; under
    /// TCG emulation a smaller one keeps the demo short).
    pub awk_loops: u32,
    /// Memory per machine in MiB.
    pub memory_mib: u32,
    /// `omboot` as the LAN's DHCP server, or as ProxyDHCP beside a LAN
    /// router's dnsmasq.
    pub mode: LabMode,
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupt() -> Result<(), DemoError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(DemoError::Interrupted);
    }
    Ok(())
}

fn sleep_interruptibly(duration: Duration) -> Result<(), DemoError> {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        check_interrupt()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    check_interrupt()
}

/// The firmware of machine `index`: the three paths in turn.
pub fn firmware_for(index: usize) -> Firmware {
    [Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe][index % 3]
}

/// Runs the demo.
pub fn run(options: DemoOptions) -> Result<(), DemoError> {
    // Ctrl-C sets a flag the loops below check; the lab's Drop then tears
    // everything down. SIGTERM is treated the same.
    let action = nix::sys::signal::SigAction::new(
        nix::sys::signal::SigHandler::Handler(on_interrupt),
        nix::sys::signal::SaFlags::empty(),
        nix::sys::signal::SigSet::empty(),
    );
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { nix::sys::signal::sigaction(signal, &action) };
    }
    // The machines and services answer to this process, not to the
    // terminal: a `--keep` cluster outlives the terminal it was started in.
    crate::process::own_process_groups();

    let firmwares: Vec<Firmware> = (0..options.nodes).map(firmware_for).collect();
    check_prerequisites(&firmwares)?;
    for program in ["omnode", "omctl"] {
        let path = options.bin_dir.join(program);
        if !path.is_file() {
            return Err(DemoError::MissingBinary(path));
        }
    }
    ensure_image(&options)?;
    check_interrupt()?;

    println!(
        "omboot demo: starting a virtual LAN ({DEMO_NAMESPACE}, head {}) with {} machines",
        cluster::LAB_HEAD,
        options.nodes
    );
    let mut lab = ClusterLab::start(LabConfig {
        name: DEMO_NAMESPACE.to_string(),
        bin_dir: options.bin_dir.clone(),
        image_dir: options.image_dir.clone(),
        work_dir: options.work_dir.clone(),
        firmwares,
        cluster: "demo".to_string(),
        memory_mib: options.memory_mib,
        mode: options.mode,
        share: true,
        serial_input: false,
        capture: false,
    })?;
    for node in &lab.nodes {
        println!(
            "  {} {} powered on ({}), console: {}",
            node.name(),
            node.spec().mac_text(),
            node.spec().firmware.label(),
            node.log_path().display()
        );
    }

    watch_boot(&mut lab)?;
    run_batch(&lab, &options)?;
    show_shared_tree(&lab)?;

    if options.keep {
        print_keep_instructions(&lab, &options);
        // The machines and services must outlive this process: forget the
        // lab so its Drop does not tear it down.
        std::mem::forget(lab);
        return Ok(());
    }
    println!("omboot demo: tearing the virtual cluster down");
    drop(lab);
    Ok(())
}

/// Where `omlab demo --keep` serves the head's web view on the host.
pub const WEB_ON_HOST: &str = "127.0.0.1:7947";
/// The pid of the forwarder to it, for `--stop`.
const FORWARD_PID: &str = "/run/omlab-demo-forward.pid";

/// Starts `omlab forward` from the host's [`WEB_ON_HOST`] to the head's web
/// view, detached (it outlives the demo, until `--stop`); a login link
/// through it.
fn forward_web(lab: &ClusterLab, options: &DemoOptions) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    stop_forward();
    let omlab = std::env::current_exe().map_err(|e| e.to_string())?;
    let log =
        std::fs::File::create(options.work_dir.join("forward.log")).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(omlab)
        .args([
            "forward",
            "--netns",
            DEMO_NAMESPACE,
            "--listen",
            WEB_ON_HOST,
            "--to",
        ])
        .arg(format!(
            "{}:{}",
            cluster::LAB_HEAD,
            contracts::http::WEB_VIEW_PORT
        ))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("starting omlab forward: {e}"))?;
    let _ = std::fs::write(FORWARD_PID, child.id().to_string());
    let out = lab
        .omctl()
        .arg("web")
        .output()
        .map_err(|e| format!("omctl web: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let link = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = link.split_once("/#").map_or("", |(_, p)| p);
    Ok(format!("http://{WEB_ON_HOST}/#{path}"))
}

/// Ends the web view's forwarder of an earlier `--keep` demo, if any.
fn stop_forward() {
    if let Some(pid) = std::fs::read_to_string(FORWARD_PID)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = std::fs::remove_file(FORWARD_PID);
    }
}

/// Removes a cluster left running by `omlab demo --keep`.
pub fn stop() {
    stop_forward();
    remove_namespace(DEMO_NAMESPACE);
    remove_namespace(&format!("{DEMO_NAMESPACE}-rtr"));
}

/// Where the demo keeps the image of `recipe` unless told: `out/image` for
/// the default recipe (`node.toml`), `out/<name>` for another
/// (`images/render.toml` → `out/render`).
pub fn default_image_dir(recipe: &Path) -> PathBuf {
    match recipe_name(recipe) {
        Some(name) if name != "node" => Path::new("out").join(name),
        _ => PathBuf::from("out/image"),
    }
}

/// A recipe's name as the demo knows it: its file name without `.toml`
/// (the recipes in `images/` name their images so).
fn recipe_name(recipe: &Path) -> Option<&str> {
    recipe.file_stem().and_then(|s| s.to_str())
}

/// Builds the image unless one from this recipe, newer than the demo's
/// `omnode`, is there: an image holding an older `omnode` than the head
/// runs would speak an older agent protocol.
fn ensure_image(options: &DemoOptions) -> Result<(), DemoError> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let manifest_path = options.image_dir.join("manifest.json");
    let manifest = modified(&manifest_path);
    let omnode = modified(&options.bin_dir.join("omnode"));
    let built_from = std::fs::read(&manifest_path)
        .ok()
        .and_then(|m| contracts::image::Manifest::from_json(&m).ok())
        .map(|m| m.name);
    let other_recipe = built_from.is_some_and(|n| Some(n.as_str()) != recipe_name(&options.recipe));
    let why = match (manifest, omnode) {
        (None, _) => "there is none",
        (Some(_), _) if other_recipe => "it was built from another recipe",
        (Some(m), Some(o)) if m < o => "it is older than the omnode beside omlab",
        (Some(_), _) => {
            println!(
                "omboot demo: using the image in {}",
                options.image_dir.display()
            );
            return Ok(());
        }
    };
    let ombuild = options.bin_dir.join("ombuild");
    if !ombuild.is_file() {
        return Err(DemoError::MissingBinary(ombuild));
    }
    println!(
        "omboot demo: building the image in {} from {} ({why})",
        options.image_dir.display(),
        options.recipe.display()
    );
    let status = std::process::Command::new(&ombuild)
        .arg("image")
        .arg(&options.recipe)
        .arg("--out")
        .arg(&options.image_dir)
        .status()
        .map_err(|source| DemoError::Io {
            what: format!("running {}", ombuild.display()),
            source,
        })?;
    if !status.success() {
        return Err(DemoError::Build(status.to_string()));
    }
    Ok(())
}

/// Prints each machine's boot stages as they change, then its joined line.
fn watch_boot(lab: &mut ClusterLab) -> Result<(), DemoError> {
    const JOIN_TIMEOUT: Duration = Duration::from_secs(600);
    let start = Instant::now();
    let mut last_stage: BTreeMap<String, String> = BTreeMap::new();
    let mut admitted: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    while joined.len() < lab.nodes.len() {
        check_interrupt()?;
        lab.check_services()?;
        if let Ok(stages) = lab.boot_stages() {
            for node in stages.as_array().into_iter().flatten() {
                let mac = node["mac"].as_str().unwrap_or("?").to_string();
                let stage = node["stage"]
                    .as_str()
                    .or_else(|| node["last_stage"].as_str())
                    .unwrap_or("?")
                    .to_string();
                if last_stage.get(&mac) != Some(&stage) {
                    let address = node["address"]
                        .as_str()
                        .or_else(|| node["ip"].as_str())
                        .unwrap_or("-");
                    println!(
                        "  [{:>5.1}s] {mac} {address:<15} boot stage: {stage}",
                        start.elapsed().as_secs_f64()
                    );
                    last_stage.insert(mac, stage);
                }
            }
        }
        for node in &lab.nodes {
            if joined.contains_key(node.name()) {
                continue;
            }
            let console = node.console();
            // Beside an existing LAN omboot admits nobody by itself
            // (`--admit manual`): the demo plays the admin, as a person
            // would on the head.
            if console.contains("admission pending") && admitted.insert(node.name().to_string()) {
                let mac = node.spec().mac_text();
                let said = lab
                    .omctl()
                    .args(["admit", &mac])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map(|o| {
                        let out = if o.status.success() {
                            o.stdout
                        } else {
                            o.stderr
                        };
                        String::from_utf8_lossy(&out).trim().to_string()
                    })
                    .unwrap_or_else(|e| e.to_string());
                println!(
                    "  [{:>5.1}s] {}: waits for admission; omctl admit {mac}: {said}",
                    start.elapsed().as_secs_f64(),
                    node.name()
                );
            }
            if let Some(line) = console.lines().find(|l| l.contains("joined cluster")) {
                let line = line.trim_end_matches('\r').to_string();
                println!(
                    "  [{:>5.1}s] {}: {line}",
                    start.elapsed().as_secs_f64(),
                    node.name()
                );
                joined.insert(node.name().to_string(), line);
            }
        }
        if start.elapsed() > JOIN_TIMEOUT {
            let node = lab
                .nodes
                .iter()
                .find(|n| !joined.contains_key(n.name()))
                .expect("a machine has not joined");
            return Err(DemoError::NoJoin {
                node: node.name().to_string(),
                secs: JOIN_TIMEOUT.as_secs(),
                log: node.log_path().to_path_buf(),
            });
        }
        sleep_interruptibly(Duration::from_millis(500))?;
    }
    // The head's view settles a moment after the last console line.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(status) = lab.status() {
            let alive = ClusterLab::nodes_in_state(&status, "alive");
            if alive.len() > lab.nodes.len() || Instant::now() > deadline {
                println!(
                    "omboot demo: the head sees {} nodes alive: {}",
                    alive.len(),
                    alive.join(", ")
                );
                return Ok(());
            }
        }
        sleep_interruptibly(Duration::from_millis(250))?;
    }
}

fn awk_job(loops: u32) -> String {
    format!(
        "awk 'BEGIN {{for(i=0;i<{loops};i++)for(j=0;j<{loops};j++);}}'; echo \"job $OM_JOB ran on $(uname -n)\""
    )
}

/// The batch launcher, run as a job on the first machine: starts `$1`
/// copies of the awk job with `omctl run` and the options after `$1`, all
/// at once, and waits for them.
const LAUNCHER: &str = "PATH=/bin:/sbin:/usr/bin:/usr/sbin\n\
n=$1; shift; i=0\n\
while [ $i -lt $n ]; do omctl run \"$@\" -- sh ./demo-job.sh & i=$((i+1)); done\n\
wait\n";

/// One job of a batch as the demo saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    /// Where `ps` first showed it.
    started: String,
    /// Where it said it finished (`uname -n`).
    finished: String,
    /// The most moves `ps` showed.
    moves: u64,
}

/// Sets `word` (`stay`, `nostay`…) on each of `nodes`.
fn knobs(lab: &ClusterLab, nodes: &[String], word: &str) -> Result<(), DemoError> {
    for n in nodes {
        let o = lab
            .omctl()
            .args(["knob", "--node", n, word])
            .output()
            .map_err(|source| DemoError::Io {
                what: "running omctl knob".into(),
                source,
            })?;
        if !o.status.success() {
            return Err(DemoError::Job {
                index: 0,
                status: format!("omctl knob --node {n} {word}: {}", o.status),
                stderr: String::from_utf8_lossy(&o.stderr).trim().to_string(),
            });
        }
    }
    Ok(())
}

/// Runs a batch of `jobs` awk jobs through the launcher on `first`, each
/// started with `omctl run ARGS`, and returns what became of each job and
/// the makespan. `ps` is polled meanwhile for where each job runs.
fn batch(
    lab: &ClusterLab,
    first: &str,
    jobs: usize,
    args: &[&str],
) -> Result<(BTreeMap<String, Seen>, Duration), DemoError> {
    let start = Instant::now();
    let io = |what: &str| {
        let what = what.to_string();
        move |source| DemoError::Io { what, source }
    };
    let mut launcher = lab
        .omctl_in(contracts::share::MOUNT_POINT)
        .args(["run", "--node", first, "--", "sh", "./demo-batch.sh"])
        .arg(jobs.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io("running omctl run"))?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let status = loop {
        check_interrupt()?;
        if let Some(st) = launcher.try_wait().map_err(io("waiting for omctl run"))? {
            break st;
        }
        let ps = lab
            .omctl()
            .args(["ps", "--all", "--json"])
            .output()
            .map_err(io("running omctl ps"))?;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&ps.stdout).unwrap_or_default();
        for j in listed.iter().filter(|j| {
            j["argv"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "./demo-job.sh"))
        }) {
            let (Some(id), Some(node)) = (j["job"].as_str(), j["node"].as_str()) else {
                continue;
            };
            let e = seen.entry(id.to_string()).or_default();
            if e.started.is_empty() {
                e.started = node.to_string();
            }
            e.moves = e.moves.max(j["moves"].as_u64().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let took = start.elapsed();
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut o) = launcher.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = launcher.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let finished: Vec<(String, String)> = out
        .lines()
        .filter_map(|l| {
            let (job, node) = l.strip_prefix("job ")?.split_once(" ran on ")?;
            Some((job.to_string(), node.to_string()))
        })
        .collect();
    if !status.success() || finished.len() != jobs {
        return Err(DemoError::Job {
            index: finished.len(),
            status: status.to_string(),
            stderr: err.trim().to_string(),
        });
    }
    for (job, node) in finished {
        let e = seen.entry(job).or_default();
        e.finished = node;
        if e.started.is_empty() {
            e.started = "?".into();
        }
    }
    Ok((seen, took))
}

/// The openMosix batch three ways, all launched on the first machine:
/// with the cluster spreading it by migration, on that machine alone, and
/// placed at start without migration.
fn run_batch(lab: &ClusterLab, options: &DemoOptions) -> Result<(), DemoError> {
    let Some(share) = lab.share_dir() else {
        return Ok(());
    };
    let write = |name: &str, text: String| {
        std::fs::write(share.join(name), text).map_err(|source| DemoError::Io {
            what: format!("writing {name} into the shared tree"),
            source,
        })
    };
    write("demo-job.sh", awk_job(options.awk_loops) + "\n")?;
    write("demo-batch.sh", LAUNCHER.to_string())?;
    let nodes: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();
    let Some(first) = nodes.first().cloned() else {
        return Ok(());
    };
    // The head runs natively, not under emulation: it takes no part.
    knobs(lab, &["head".to_string()], "block")?;
    let jobs = 2 * (lab.nodes.len() + 1);
    let loops = options.awk_loops;
    println!(
        "omboot demo: {jobs} copies of awk 'BEGIN {{for(i=0;i<{loops};i++)for(j=0;j<{loops};j++);}}', all started on {first} (omctl run --node {first}); the cluster spreads them by migration"
    );
    let (seen, spread) = batch(lab, &first, jobs, &["--node", &first])?;
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for (job, s) in &seen {
        let moves = match s.moves {
            1 => "1 move".to_string(),
            n => format!("{n} moves"),
        };
        println!(
            "  job {job}: started on {}, finished on {}, {moves}",
            s.started, s.finished
        );
        *per_node.entry(&s.finished).or_default() += 1;
    }
    let ends: Vec<String> = per_node.iter().map(|(n, c)| format!("{n}: {c}")).collect();
    println!("  finished on: {}", ends.join(", "));

    println!("omboot demo: the same batch on {first} alone (stay: nothing leaves it)");
    knobs(lab, std::slice::from_ref(&first), "stay")?;
    let (_, alone) = batch(lab, &first, jobs, &["--node", &first])?;
    println!(
        "omboot demo: the same batch placed at start, without migration (stay on every machine)"
    );
    knobs(lab, &nodes, "stay")?;
    let (_, placed) = batch(lab, &first, jobs, &[])?;
    knobs(lab, &nodes, "nostay")?;
    let secs = |d: Duration| d.as_secs_f64();
    println!(
        "omboot demo: makespan {:.1} s with migration; {:.1} s on {first} alone ({:.2}x); {:.1} s placed without migration ({:.2}x)",
        secs(spread),
        secs(alone),
        secs(alone) / secs(spread).max(0.001),
        secs(placed),
        secs(placed) / secs(spread).max(0.001)
    );
    Ok(())
}

/// Every netbooted machine writes a file into the shared tree from a job
/// started in `/cluster`; the head lists what arrived.
fn show_shared_tree(lab: &ClusterLab) -> Result<(), DemoError> {
    let Some(share) = lab.share_dir() else {
        return Ok(());
    };
    println!("omboot demo: shared tree: each machine writes a file into /cluster from omctl run");
    for node in &lab.nodes {
        let output = lab
            .omctl_in(contracts::share::MOUNT_POINT)
            .args(["run", "--node", &node.node_name(), "--", "sh", "-c"])
            .arg("uname -n > hello-$OM_NODE.txt && echo \"$(cat hello-$OM_NODE.txt) wrote $PWD/hello-$OM_NODE.txt\"")
            .stdin(Stdio::null())
            .output()
            .map_err(|source| DemoError::Io {
                what: "running omctl run".into(),
                source,
            })?;
        check_interrupt()?;
        let said = String::from_utf8_lossy(&output.stdout);
        let err = String::from_utf8_lossy(&output.stderr);
        println!(
            "  {}: {}",
            node.name(),
            said.trim()
                .lines()
                .chain(err.trim().lines())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let mut names: Vec<String> = std::fs::read_dir(share)
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    println!("  on the head, in {}: {}", share.display(), names.join(" "));
    Ok(())
}

/// Writes `WORK/shell`: a shell on the virtual LAN, in the shared tree, with
/// an `omctl` on `PATH` that talks to the head's agent.
fn write_shell_script(lab: &ClusterLab, options: &DemoOptions) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let bin = options.work_dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let omctl = bin.join("omctl");
    std::fs::write(
        &omctl,
        format!(
            "#!/bin/sh\nexec '{}' --socket '{}' \"$@\"\n",
            options.bin_dir.join("omctl").display(),
            lab.head_socket().display()
        ),
    )?;
    std::fs::set_permissions(&omctl, std::fs::Permissions::from_mode(0o755))?;
    let shell = options.work_dir.join("shell");
    let tree = lab.share_dir().unwrap_or(&options.work_dir);
    std::fs::write(
        &shell,
        format!(
            "#!/bin/sh\n\
             # A shell on the demo's virtual LAN, in the shared tree /cluster\n\
             # (bound from {tree} in a private mount namespace).\n\
             export PATH='{bin}':\"$PATH\"\n\
             exec unshare --mount --propagation private -- sh -c \\\n\
             \x20 'mount --bind \"$1\" /cluster && cd /cluster && exec ip netns exec {DEMO_NAMESPACE} \"${{SHELL:-/bin/sh}}\"' \\\n\
             \x20 sh '{tree}'\n",
            tree = tree.display(),
            bin = bin.display(),
        ),
    )?;
    std::fs::set_permissions(&shell, std::fs::Permissions::from_mode(0o755))?;
    Ok(shell)
}

fn print_keep_instructions(lab: &ClusterLab, options: &DemoOptions) {
    let socket = lab.head_socket().display();
    let omctl = options.bin_dir.join("omctl");
    println!("omboot demo: the cluster keeps running (--keep).");
    println!("  a shell on the virtual LAN:  ip netns exec {DEMO_NAMESPACE} bash");
    match write_shell_script(lab, options) {
        Ok(shell) => println!(
            "  a shell in /cluster:         {} (then: omctl run -- sh -c 'uname -n > out.txt')",
            shell.display()
        ),
        Err(e) => println!("  (cannot write the /cluster shell script: {e})"),
    }
    match forward_web(lab, options) {
        Ok(link) => println!(
            "  the web view (openMosixView): {link}\n                               (open it in a browser on this machine within 15 min; `omctl --socket {socket} web` makes another)"
        ),
        Err(e) => println!("  (the web view is not reachable from this machine: {e})"),
    }
    println!(
        "  watch it like mosmon:        {} --socket {socket} mon",
        omctl.display()
    );
    println!(
        "  run a job on it:             {} --socket {socket} run -- uname -n",
        omctl.display()
    );
    if let Some(first) = lab.nodes.first() {
        println!(
            "  openMosix's first test:      from the /cluster shell, omctl run --node {} -- omctl shell -i",
            first.node_name()
        );
        println!(
            "                               then type the test_mosix loop (README, \"The cluster balances itself\") and watch mon"
        );
    }
    println!(
        "  consoles and logs:           {}",
        options.work_dir.display()
    );
    println!(
        "  tear it down:                {} demo --stop",
        options.bin_dir.join("omlab").display()
    );
}

/// The directory of the running `omlab`, where the demo looks for `omnode`,
/// `omctl` and `ombuild`.
pub fn default_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_take_the_three_firmware_paths_in_turn() {
        let paths: Vec<_> = (0..4).map(firmware_for).collect();
        assert_eq!(
            paths,
            [
                Firmware::BiosIpxe,
                Firmware::UefiIpxe,
                Firmware::UefiPxe,
                Firmware::BiosIpxe
            ]
        );
    }

    #[test]
    fn the_awk_job_is_the_documented_loop_with_its_node_reported() {
        assert_eq!(
            awk_job(10000),
            "awk 'BEGIN {for(i=0;i<10000;i++)for(j=0;j<10000;j++);}'; echo \"job $OM_JOB ran on $(uname -n)\""
        );
    }
}
