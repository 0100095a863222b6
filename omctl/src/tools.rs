//! The `omctl` subcommands, and their classic openMosix names: `mosmon` →
//! `mon`, `mtop` → `top`, `mps` → `ps`, `mosctl` → `status`/`whois`,
//! `mosrun` → `run`. Each talks to the local agent through the control
//! socket ([`agent_control::client`]).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use contracts::share::MOUNT_POINT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use agent_control::client::{Connection, ControlError};
use agent_control::protocol;
use agent_control::{
    ClusterStatus, ControlReply, ControlRequest, JobInfo, NodeStatus, RunRequest, EXIT_NODE_LOST,
    EXIT_NO_AGENT,
};

/// Signals `omctl run` forwards to the job's process group.
pub const FORWARDED_SIGNALS: &[i32] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Rewrites `argv` when `omctl` was invoked through one of the classic names,
/// so `mosrun -- ls` parses as `omctl run -- ls`.
pub fn classic_argv(argv: Vec<String>) -> Vec<String> {
    let base = argv
        .first()
        .map(|a| {
            Path::new(a)
                .file_name()
                .and_then(|f| f.to_str())
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let sub = match base.as_str() {
        "mosmon" => "mon",
        "mtop" => "top",
        "mps" => "ps",
        "mosrun" => "run",
        "migrate" => "migrate",
        "mosctl" => {
            // `mosctl [--socket S] whois X` keeps its subcommand.
            let mut args = argv.iter().skip(1);
            let mut first = None;
            while let Some(a) = args.next() {
                if a == "--socket" {
                    args.next();
                } else if !a.starts_with("--socket=") {
                    first = Some(a.as_str());
                    break;
                }
            }
            if matches!(first, Some("whois" | "status")) {
                return replace_first(argv);
            }
            // `mosctl block`, `mosctl expel`…: the knobs.
            if first.is_some_and(|w| agent_control::knobs::KnobAction::parse(w).is_some()) {
                "knob"
            } else {
                "status"
            }
        }
        _ => return argv,
    };
    let mut out = vec!["omctl".to_string(), sub.to_string()];
    out.extend(argv.into_iter().skip(1));
    out
}

fn replace_first(mut argv: Vec<String>) -> Vec<String> {
    argv[0] = "omctl".into();
    argv
}

fn fmt_kib(kib: u64) -> String {
    let b = kib as f64 * 1024.0;
    if b >= 1e9 {
        format!("{:.1}G", b / (1u64 << 30) as f64)
    } else {
        format!("{:.0}M", b / (1u64 << 20) as f64)
    }
}

/// The `status` table.
pub fn status_table(s: &ClusterStatus) -> String {
    let mut out = format!(
        "cluster {}, seen from {}: {} nodes, {} alive\n",
        s.cluster,
        s.node,
        s.nodes.len(),
        s.nodes.iter().filter(|n| n.state == "alive").count()
    );
    out.push_str(&format!(
        "{:>6}  {:<16} {:<21} {:<7} {:>4} {:>6} {:>6} {:>4} {:>5} {:>13} {}\n",
        "NODE",
        "NAME",
        "ADDRESS",
        "STATE",
        "CPUS",
        "SPEED",
        "LOAD",
        "JOBS",
        "QUOTA",
        "MEM FREE/TOT",
        "KNOBS"
    ));
    for n in &s.nodes {
        let name = if n.local {
            format!("{}*", n.name)
        } else {
            n.name.clone()
        };
        match &n.load {
            Some(l) => out.push_str(&format!(
                "{:>6}  {:<16} {:<21} {:<7} {:>4} {:>6.2} {:>6.2} {:>4} {:>4}% {:>13} {}\n",
                n.number,
                name,
                n.addr,
                n.state,
                l.cpus,
                l.speed,
                l.loadavg,
                l.jobs,
                l.cpu_quota,
                format!("{}/{}", fmt_kib(l.mem_free_kib), fmt_kib(l.mem_total_kib)),
                l.knobs.describe()
            )),
            None => out.push_str(&format!(
                "{:>6}  {:<16} {:<21} {:<7} {:>4} {:>6} {:>6} {:>4} {:>5} {:>13} {}\n",
                n.number, name, n.addr, n.state, "-", "-", "-", "-", "-", "-", "-"
            )),
        }
    }
    for n in s.nodes.iter().filter(|n| n.state == "alive") {
        let problem = n.load.as_ref().and_then(|l| l.share.as_ref()?.problem());
        if let Some(p) = problem {
            out.push_str(&format!("warning: node {}: {p}\n", n.name));
        }
    }
    out
}

/// One node's line of `omctl df`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DfRow {
    /// The node's name.
    pub node: String,
    /// Its membership state.
    pub state: String,
    /// What it was told to mount, if anything.
    pub expected: Option<String>,
    /// What it has mounted at `/cluster`, if anything.
    pub mounted: Option<String>,
    /// Whether the tree answers there.
    pub responding: bool,
    /// Size in KiB.
    pub size_kib: u64,
    /// Free KiB.
    pub free_kib: u64,
}

/// Every node's view of the shared tree (nodes without one are left out).
pub fn df_rows(s: &ClusterStatus) -> Vec<DfRow> {
    s.nodes
        .iter()
        .filter_map(|n| {
            let v = n.load.as_ref()?.share.as_ref()?;
            Some(DfRow {
                node: n.name.clone(),
                state: n.state.clone(),
                expected: v.expected.clone(),
                mounted: v.mounted.clone(),
                responding: v.responding,
                size_kib: v.size_kib,
                free_kib: v.free_kib,
            })
        })
        .collect()
}

/// The `df` table: where the tree comes from, then one line per node.
pub fn df_table(s: &ClusterStatus) -> String {
    let rows = df_rows(s);
    if rows.is_empty() {
        return format!(
            "no node of cluster {} has a shared tree at {MOUNT_POINT} (omboot serve --share DIR)\n",
            s.cluster
        );
    }
    let mut sources: Vec<&str> = rows.iter().filter_map(|r| r.expected.as_deref()).collect();
    sources.sort();
    sources.dedup();
    let mut out = format!(
        "{MOUNT_POINT} from {}\n",
        if sources.is_empty() {
            "(the head's own directory)".to_string()
        } else {
            sources.join(", ")
        }
    );
    out.push_str(&format!(
        "{:<16} {:<8} {:>8} {:>8} {:>8} {:>5}  {}\n",
        "NODE", "MOUNTED", "SIZE", "USED", "FREE", "USE%", "SOURCE"
    ));
    for r in &rows {
        let mounted = match (&r.mounted, r.responding) {
            (None, _) => "no",
            (Some(_), false) => "hung",
            (Some(_), true) => "yes",
        };
        let (size, used, free, pct) = if r.mounted.is_some() && r.size_kib > 0 {
            let used = r.size_kib.saturating_sub(r.free_kib);
            (
                fmt_kib(r.size_kib),
                fmt_kib(used),
                fmt_kib(r.free_kib),
                format!("{}%", used * 100 / r.size_kib),
            )
        } else {
            ("-".into(), "-".into(), "-".into(), "-".into())
        };
        out.push_str(&format!(
            "{:<16} {:<8} {:>8} {:>8} {:>8} {:>5}  {}\n",
            r.node,
            mounted,
            size,
            used,
            free,
            pct,
            r.mounted.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// Finds a node by name, number or address.
pub fn whois<'a>(s: &'a ClusterStatus, what: &str) -> Option<&'a NodeStatus> {
    s.nodes.iter().find(|n| {
        n.name == what
            || n.number.to_string() == what
            || n.addr == what
            || n.addr.rsplit_once(':').is_some_and(|(ip, _)| ip == what)
    })
}

/// The `ps` table: where each job runs, its home, how often it moved, and
/// why it cannot move when it cannot.
pub fn ps_table(jobs: &[JobInfo]) -> String {
    let mut out = format!(
        "{:<14} {:<12} {:<12} {:>6} {:>8} {:>5}  {}\n",
        "JOB", "NODE", "HOME", "UID", "PID", "MOVES", "COMMAND"
    );
    for j in jobs {
        let cantmove = j
            .cantmove
            .as_ref()
            .map_or(String::new(), |why| format!("  (cantmove: {why})"));
        out.push_str(&format!(
            "{:<14} {:<12} {:<12} {:>6} {:>8} {:>5}  {}{cantmove}\n",
            j.job,
            j.node,
            j.home,
            j.uid,
            j.pid.map_or("-".to_string(), |p| p.to_string()),
            j.moves,
            j.argv.join(" ")
        ));
    }
    out
}

/// `omctl nodes`: the machines the boot server knows and where each stands
/// with admission (only the pending ones, and the refusals, with
/// `pending_only`); ages against `now`, Unix seconds.
pub fn admission_table(
    list: &contracts::admit::AdmissionList,
    pending_only: bool,
    now: u64,
) -> String {
    use contracts::admit::Standing;
    let mut out = format!("admission: {}\n", list.policy);
    out.push_str(&format!(
        "{:<17} {:<12} {:<15} {:<8} {:<16} {:>6}  {}\n",
        "MAC", "NAME", "ADDRESS", "STANDING", "KEY", "AGE", "BY"
    ));
    for m in list
        .machines
        .iter()
        .filter(|m| !pending_only || m.standing == Standing::Pending)
    {
        let standing = match m.standing {
            Standing::Pending => "pending",
            Standing::Admitted => "admitted",
            Standing::Rejected => "rejected",
        };
        out.push_str(&format!(
            "{:<17} {:<12} {:<15} {:<8} {:<16} {:>5}s  {}\n",
            m.mac,
            m.name.as_deref().unwrap_or("-"),
            m.address.map_or("-".to_string(), |a| a.to_string()),
            standing,
            m.public.fingerprint(),
            now.saturating_sub(m.since),
            m.by
        ));
    }
    for r in &list.refusals {
        out.push_str(&format!(
            "refused {} from {} (key {}) {}s ago: {}\n",
            r.mac,
            r.address.map_or("-".to_string(), |a| a.to_string()),
            r.public.fingerprint(),
            now.saturating_sub(r.at),
            r.reason
        ));
    }
    out
}

/// A load bar `width` wide for a fraction in 0..=1.
pub fn bar(fraction: f64, width: usize) -> String {
    let filled = ((fraction.clamp(0.0, 1.0) * width as f64).round() as usize).min(width);
    format!("{}{}", "#".repeat(filled), ".".repeat(width - filled))
}

/// Load of a node as mon shows it: runnable work per CPU.
pub fn node_load(n: &NodeStatus) -> f64 {
    n.load
        .as_ref()
        .map(|l| f64::from(l.loadavg) / f64::from(l.cpus.max(1)))
        .unwrap_or(0.0)
}

/// The `mon` screen, as lines.
pub fn mon_lines(s: &ClusterStatus, width: usize) -> Vec<String> {
    let bar_w = width.saturating_sub(64).clamp(10, 60);
    let mut lines = vec![
        format!(
            "omctl mon: cluster {} from {} ({} nodes, {} alive)   q quits",
            s.cluster,
            s.node,
            s.nodes.len(),
            s.nodes.iter().filter(|n| n.state == "alive").count()
        ),
        String::new(),
        format!(
            "{:>6} {:<14} {:<7} {:<w$} {:>5} {:>5} {:>4} {:>6} {:>7} {:>5} {:>13}",
            "NODE",
            "NAME",
            "STATE",
            "LOAD",
            "LOAD",
            "SPEED",
            "JOBS",
            "GUESTS",
            "MOVED",
            "QUOTA",
            "MEM FREE/TOT",
            w = bar_w + 2
        ),
    ];
    for n in &s.nodes {
        let (speed, jobs, guests, moved, quota, mem) = match &n.load {
            Some(l) => (
                format!("{:.2}", l.speed),
                l.jobs.to_string(),
                l.guests.to_string(),
                moved(l),
                format!("{}%", l.cpu_quota),
                format!("{}/{}", fmt_kib(l.mem_free_kib), fmt_kib(l.mem_total_kib)),
            ),
            None => (
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ),
        };
        let load = node_load(n);
        lines.push(format!(
            "{:>6} {:<14} {:<7} [{}] {:>5.2} {:>5} {:>4} {:>6} {:>7} {:>5} {:>13}",
            n.number,
            n.name,
            n.state,
            bar(load, bar_w),
            load,
            speed,
            jobs,
            guests,
            moved,
            quota,
            mem
        ));
    }
    lines.push(String::new());
    lines.push(
        "GUESTS: jobs from other nodes running there; MOVED: jobs in/out in the last minute".into(),
    );
    lines
}

/// Jobs that moved in and out of a node in the last minute, as `+IN/-OUT`.
fn moved(l: &agent_control::LoadVector) -> String {
    format!("+{}/-{}", l.moved_in, l.moved_out)
}

/// The `top` screen, as lines: nodes then jobs.
pub fn top_lines(s: &ClusterStatus, jobs: &[JobInfo]) -> Vec<String> {
    let mut lines = vec![format!(
        "omctl top: cluster {} from {}: {} nodes, {} cluster jobs   q quits",
        s.cluster,
        s.node,
        s.nodes.len(),
        jobs.len()
    )];
    for n in &s.nodes {
        lines.push(format!(
            "  {:<14} {:<7} load {:>5.2} jobs {:>3} guests {:>3} moved {}",
            n.name,
            n.state,
            node_load(n),
            n.load.as_ref().map_or(0, |l| l.jobs),
            n.load.as_ref().map_or(0, |l| l.guests),
            n.load.as_ref().map_or_else(|| "-".into(), moved)
        ));
    }
    lines.push(String::new());
    lines.extend(ps_table(jobs).lines().map(String::from));
    lines
}

/// Shows `render` full screen, refreshing every 500 ms, until `q` (or Esc, or
/// Ctrl-C). Without a terminal (or with `once`) prints one frame.
pub async fn live<F, Fut>(once: bool, mut render: F) -> Result<(), ControlError>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<String>, ControlError>>,
{
    use crossterm::event::{Event, KeyCode, KeyModifiers};
    use crossterm::{cursor, execute, queue, style, terminal};
    use std::io::IsTerminal;

    if once || !std::io::stdout().is_terminal() {
        for l in render(100).await? {
            println!("{l}");
        }
        return Ok(());
    }
    let mut out = std::io::stdout();
    let _ = terminal::enable_raw_mode();
    let _ = execute!(out, terminal::EnterAlternateScreen, cursor::Hide);
    let result = async {
        loop {
            let (w, h) = terminal::size().unwrap_or((100, 30));
            let lines = render(w as usize).await?;
            let _ = queue!(out, terminal::Clear(terminal::ClearType::All));
            for (i, l) in lines.iter().take(h as usize).enumerate() {
                let l: String = l.chars().take(w as usize).collect();
                let _ = queue!(out, cursor::MoveTo(0, i as u16), style::Print(l));
            }
            let _ = out.flush();
            let quit = tokio::task::spawn_blocking(|| {
                let deadline = std::time::Instant::now() + Duration::from_millis(500);
                loop {
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() || !crossterm::event::poll(left).unwrap_or(false) {
                        return false;
                    }
                    if let Ok(Event::Key(k)) = crossterm::event::read() {
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if matches!(
                            k.code,
                            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc
                        ) || ctrl_c
                        {
                            return true;
                        }
                    }
                }
            })
            .await
            .unwrap_or(true);
            if quit {
                return Ok(());
            }
        }
    }
    .await;
    let _ = execute!(out, cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
    result
}

/// `omctl run`: runs `argv` in the cluster and returns the exit status for
/// omctl (the job's, or one of [`exec`]'s own).
pub async fn run(socket: &Path, node: Option<String>, lock: bool, argv: Vec<String>) -> i32 {
    // A cwd deleted under us still has a name: the shell's $PWD.
    let cwd = match std::env::current_dir() {
        Ok(d) => d.display().to_string(),
        Err(_) if std::env::var("PWD").is_ok_and(|p| p.starts_with('/')) => {
            std::env::var("PWD").unwrap_or_default()
        }
        Err(e) => {
            eprintln!("omctl: cannot read the current directory: {e}");
            return EXIT_NO_AGENT;
        }
    };
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let Connection { mut rd, mut wr } = match Connection::open(socket).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("omctl: {e}");
            return EXIT_NO_AGENT;
        }
    };
    // The writer, stdin and signal forwarders end when `run` returns.
    let mut tasks = tokio::task::JoinSet::new();
    let (tx, mut rx) = mpsc::channel::<ControlRequest>(64);
    tasks.spawn(async move {
        while let Some(r) = rx.recv().await {
            if protocol::write(&mut wr, &r).await.is_err() {
                break;
            }
        }
    });
    let _ = tx
        .send(ControlRequest::Run(RunRequest {
            node,
            argv,
            cwd,
            env,
            lock,
        }))
        .await;
    let stdin_tx = tx.clone();
    tasks.spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = stdin_tx.send(ControlRequest::StdinEof).await;
                    break;
                }
                Ok(n) => {
                    if stdin_tx
                        .send(ControlRequest::Stdin(buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    for &sig in FORWARDED_SIGNALS {
        let tx = tx.clone();
        if let Ok(mut s) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig))
        {
            tasks.spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(ControlRequest::Signal(sig)).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
    let mut stdout_gone = false;
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    loop {
        let reply = match protocol::read::<ControlReply, _>(&mut rd).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                eprintln!("omctl: lost the local agent: {e}");
                return EXIT_NODE_LOST;
            }
        };
        match reply {
            ControlReply::Stdout(d) => {
                let written = match stdout.write_all(&d).await {
                    Ok(()) => stdout.flush().await,
                    Err(e) => Err(e),
                };
                // Our reader went away (`omctl run -- yes | head`): the job
                // gets the SIGPIPE it would get locally.
                if written.is_err() && !stdout_gone {
                    stdout_gone = true;
                    let _ = tx.send(ControlRequest::Signal(libc::SIGPIPE)).await;
                }
            }
            ControlReply::Stderr(d) => {
                let _ = stderr.write_all(&d).await;
                let _ = stderr.flush().await;
            }
            ControlReply::Started { node, pid } => {
                tracing::debug!(%node, pid, "job started");
            }
            ControlReply::Exit(e) => return e.as_status(),
            ControlReply::Failed { code, message } => {
                eprintln!("omctl: {message}");
                return code;
            }
            other @ (ControlReply::Status(_)
            | ControlReply::Ps(_)
            | ControlReply::Migrated(_)
            | ControlReply::Steered(_)
            | ControlReply::KnobDone(_)
            | ControlReply::AdmissionDone(_)
            | ControlReply::TokenMade { .. }
            | ControlReply::KeyDone(_)
            | ControlReply::WebLink { .. }) => {
                tracing::debug!(reply = ?other, "ignored a reply that is not the job's");
            }
        }
    }
    eprintln!("omctl: the local agent closed the connection before the job ended");
    EXIT_NODE_LOST
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_control::LoadVector;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn classic_names() {
        assert_eq!(
            classic_argv(argv("/usr/bin/mosrun -- ls -l")),
            argv("omctl run -- ls -l")
        );
        assert_eq!(classic_argv(argv("mosmon")), argv("omctl mon"));
        assert_eq!(classic_argv(argv("mtop")), argv("omctl top"));
        assert_eq!(classic_argv(argv("mps --json")), argv("omctl ps --json"));
        assert_eq!(classic_argv(argv("mosctl")), argv("omctl status"));
        assert_eq!(classic_argv(argv("mosctl whois 3")), argv("omctl whois 3"));
        assert_eq!(
            classic_argv(argv("mosctl --socket /s whois 3")),
            argv("omctl --socket /s whois 3")
        );
        assert_eq!(
            classic_argv(argv("mosctl --socket /s --json")),
            argv("omctl status --socket /s --json")
        );
        assert_eq!(classic_argv(argv("omctl status")), argv("omctl status"));
        assert_eq!(classic_argv(argv("mosctl block")), argv("omctl knob block"));
        assert_eq!(
            classic_argv(argv("mosctl --socket /s expel")),
            argv("omctl knob --socket /s expel")
        );
    }

    fn status() -> ClusterStatus {
        ClusterStatus {
            cluster: "c".into(),
            node: "a".into(),
            nodes: vec![
                NodeStatus {
                    name: "a".into(),
                    number: 258,
                    addr: "10.0.1.2:7946".into(),
                    state: "alive".into(),
                    local: true,
                    load: Some(LoadVector {
                        cpus: 2,
                        speed: 1.5,
                        loadavg: 1.0,
                        runnable: 1,
                        mem_total_kib: 4 << 20,
                        mem_free_kib: 1 << 20,
                        jobs: 1,
                        started: 4,
                        cpu_quota: 50,
                        share: None,
                        criu: false,
                        ..Default::default()
                    }),
                    load_age_ms: Some(0),
                },
                NodeStatus {
                    name: "b".into(),
                    number: 259,
                    addr: "10.0.1.3:7946".into(),
                    state: "down".into(),
                    local: false,
                    load: None,
                    load_age_ms: None,
                },
            ],
        }
    }

    #[test]
    fn whois_by_name_number_address() {
        let s = status();
        assert_eq!(whois(&s, "b").unwrap().name, "b");
        assert_eq!(whois(&s, "258").unwrap().name, "a");
        assert_eq!(whois(&s, "10.0.1.3").unwrap().name, "b");
        assert_eq!(whois(&s, "10.0.1.2:7946").unwrap().name, "a");
        assert!(whois(&s, "zz").is_none());
    }

    #[test]
    fn tables() {
        expect_test::expect![[r#"
            cluster c, seen from a: 2 nodes, 1 alive
              NODE  NAME             ADDRESS               STATE   CPUS  SPEED   LOAD JOBS QUOTA  MEM FREE/TOT KNOBS
               258  a*               10.0.1.2:7946         alive      2   1.50   1.00    1   50%     1.0G/4.0G -
               259  b                10.0.1.3:7946         down       -      -      -    -     -             - -
        "#]]
        .assert_eq(&status_table(&status()));
        let mut shared = status();
        if let Some(l) = shared.nodes[0].load.as_mut() {
            l.share = Some(agent_control::ShareView {
                expected: Some("nfs://10.0.1.1/cluster".into()),
                mounted: None,
                responding: true,
                size_kib: 0,
                free_kib: 0,
            });
        }
        expect_test::expect![[r#"
            /cluster from nfs://10.0.1.1/cluster
            NODE             MOUNTED      SIZE     USED     FREE  USE%  SOURCE
            a                no              -        -        -     -  -
        "#]]
        .assert_eq(&df_table(&shared));
        assert!(status_table(&shared).ends_with(
            "warning: node a: /cluster is not mounted (expected nfs://10.0.1.1/cluster)\n"
        ));
        if let Some(v) = shared.nodes[0].load.as_mut().and_then(|l| l.share.as_mut()) {
            v.mounted = Some("10.0.1.1:/cluster (nfs4)".into());
            v.size_kib = 100 << 20;
            v.free_kib = 25 << 20;
        }
        expect_test::expect![[r#"
            /cluster from nfs://10.0.1.1/cluster
            NODE             MOUNTED      SIZE     USED     FREE  USE%  SOURCE
            a                yes        100.0G    75.0G    25.0G   75%  10.0.1.1:/cluster (nfs4)
        "#]]
        .assert_eq(&df_table(&shared));
        let lines = mon_lines(&status(), 80);
        assert!(lines[3].contains("[########........]"), "{}", lines[3]);
        assert_eq!(bar(2.0, 4), "####");
    }
}
