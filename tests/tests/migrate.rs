//! Live migration in the lab, on the netbooted machines of the
//! `netboot` test (their kernel is the image's, where CRIU works; the lab's
//! head on the host kernel is home to the jobs): a counter moves from one
//! node to another and back with every line once and in order; input the
//! job has not read yet moves with it; a 4-thread
//! program keeps its threads and then dies of Ctrl-C on its new node; a
//! shell script with two children moves as a tree; a job with a TCP
//! connection and a `--lock` job are refused with their reasons; a move
//! whose confirmation is lost on the wire leaves one copy, at the source;
//! and (with the power cut of the `netboot` test) a target that dies
//! mid-move leaves the job running where it was, and a source that dies
//! after the target restored the job, before any word of the move reached
//! the target, leaves it running at the target, followed by its home.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::chown;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use lab::ClusterLab;
use serde_json::Value;

use crate::netboot::{omctl_as_user, USER};

/// How long one migration may take under TCG on a busy machine (a bound on
/// a hang, not a speed check: speed lives in `bench/`).
const MOVE_TIMEOUT: Duration = Duration::from_secs(180);
/// The working directory of the jobs, in the shared tree.
const CWD: &str = "/cluster/u4242";

/// A job started with `omctl run` on the head, its stdout collected line
/// by line.
pub struct Job {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    what: String,
}

impl Job {
    /// Runs `sh -c script` on `node` from [`CWD`] as [`USER`], with `extra`
    /// options of `omctl run`.
    pub fn spawn(lab: &ClusterLab, node: &str, extra: &[&str], script: &str) -> Result<Job> {
        Self::spawn_with_input(lab, node, extra, script, None)
    }

    /// [`Job::spawn`] with `input` (if any) as the job's whole stdin: it is
    /// written at once, then closed.
    pub fn spawn_with_input(
        lab: &ClusterLab,
        node: &str,
        extra: &[&str],
        script: &str,
        input: Option<&[u8]>,
    ) -> Result<Job> {
        let share = lab.share_dir().context("the lab serves no shared tree")?;
        let mut child = lab::cluster::in_tree(share, CWD, &omctl_as_user(lab))
            .arg("run")
            .args(["--node", node])
            .args(extra)
            .args(["--", "sh", "-c", script])
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            std::io::Write::write_all(&mut stdin, input)?;
        }
        let out = child.stdout.take().context("no stdout")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(l);
            }
        });
        Ok(Job {
            child,
            lines,
            reader: Some(reader),
            what: script.to_string(),
        })
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn last(&self) -> Option<String> {
        self.lines.lock().unwrap().last().cloned()
    }

    /// Waits until the job printed at least `n` lines.
    pub fn wait_lines(&mut self, n: usize) -> Result<()> {
        let deadline = Instant::now() + MOVE_TIMEOUT;
        while self.count() < n {
            if let Some(st) = self.child.try_wait()? {
                bail!("`{}` ended ({st}) after {} lines", self.what, self.count());
            }
            ensure!(
                Instant::now() < deadline,
                "`{}` printed {} lines, not {n}",
                self.what,
                self.count()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Sends `sig` to `omctl run`.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)?;
        Ok(())
    }

    /// Waits for the end: omctl's exit code, its stdout lines and stderr.
    pub fn finish(mut self) -> Result<(Option<i32>, Vec<String>, String)> {
        let deadline = Instant::now() + MOVE_TIMEOUT;
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                bail!("`{}` did not end", self.what);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let lines = self.lines.lock().unwrap().clone();
        Ok((status.code(), lines, err))
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The job whose command line contains `marker`, as `omctl ps --all` sees it.
pub fn find_job(lab: &ClusterLab, marker: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = lab.omctl().args(["ps", "--all", "--json"]).output()?;
        let jobs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(j) = jobs.into_iter().find(|j| {
            j["argv"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x.as_str().is_some_and(|s| s.contains(marker)))
            }) && j["pid"].is_u64()
        }) {
            return Ok(j);
        }
        ensure!(
            Instant::now() < deadline,
            "no job running `{marker}` in omctl ps --all"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The id of the job whose command line contains `marker`.
fn job_id(lab: &ClusterLab, marker: &str) -> Result<String> {
    Ok(find_job(lab, marker)?["job"]
        .as_str()
        .context("a job without an id in omctl ps")?
        .to_string())
}

/// `omctl migrate JOB TO` as [`USER`].
pub fn migrate(lab: &ClusterLab, job: &str, to: &str) -> Result<Output> {
    Ok(omctl_as_user(lab)
        .args(["migrate", job, to])
        .stdin(Stdio::null())
        .output()?)
}

fn migrate_ok(lab: &ClusterLab, job: &str, to: &str) -> Result<()> {
    let o = migrate(lab, job, to)?;
    ensure!(
        o.status.success(),
        "omctl migrate {job} {to} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
    Ok(())
}

fn expect_at(lab: &ClusterLab, marker: &str, node: &str, moves: u64) -> Result<()> {
    let j = find_job(lab, marker)?;
    ensure!(
        j["node"] == node && j["moves"] == moves,
        "after the moves, ps shows {j}, not node {node} with {moves} moves"
    );
    Ok(())
}

/// The static 4-thread program: each thread counts; main prints the
/// thread count and the counters every 0.3 s.
const THREADS_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static volatile unsigned long counters[4];
static void *spin(void *arg) {
    long i = (long)arg;
    for (;;) { counters[i]++; usleep(2000); }
    return 0;
}
static int threads(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "Threads:", 8)) n = atoi(line + 8);
    if (f) fclose(f);
    return n;
}
int main(void) {
    pthread_t t[4];
    for (long i = 0; i < 4; i++) pthread_create(&t[i], 0, spin, (void *)i);
    setvbuf(stdout, 0, _IOLBF, 0);
    for (int k = 0;; k++) {
        printf("tick %d threads %d %lu %lu %lu %lu\n", k, threads(),
               counters[0], counters[1], counters[2], counters[3]);
        usleep(300000);
    }
}
"#;

/// (threads, counters) of a line of the thread program.
fn thread_line(l: &str) -> Option<(u64, Vec<u64>)> {
    let w: Vec<&str> = l.split_whitespace().collect();
    if w.len() != 8 || w[0] != "tick" {
        return None;
    }
    let n = w[3].parse().ok()?;
    let c = w[4..]
        .iter()
        .map(|x| x.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    Some((n, c))
}

/// Every check but the dying target, on the first two machines.
pub fn check_migration(lab: &mut ClusterLab) -> Result<()> {
    let names: Vec<String> = lab.nodes.iter().map(|n| n.node_name()).collect();
    let (a, b) = (names[0].as_str(), names[1].as_str());
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    let home = share.join("u4242");

    // Every netbooted node reports that CRIU works there.
    lab.wait_for_criu(&names, Duration::from_secs(60))?;

    // A counter moves A → B → A: every line once, in order, and its status.
    let script = "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo $i; sleep 0.2; done; exit 3";
    let mut counter = Job::spawn(lab, a, &[], script)?;
    counter.wait_lines(5)?;
    let id = job_id(lab, "$i -lt 150")?;
    migrate_ok(lab, &id, b)?;
    expect_at(lab, "$i -lt 150", b, 1)?;
    let n = counter.count();
    counter.wait_lines(n + 5)?;
    migrate_ok(lab, &id, a)?;
    expect_at(lab, "$i -lt 150", a, 2)?;
    let (code, lines, err) = counter.finish()?;
    let expected: Vec<String> = (1..=150).map(|i| i.to_string()).collect();
    ensure!(
        lines == expected,
        "the counter's output across two moves is not 1..150 once each: {lines:?} {err}"
    );
    ensure!(
        code == Some(3),
        "the counter's status came back as {code:?}: {err}"
    );

    // Input the job has not read yet moves with it: the whole stdin is in
    // its pipe (and closed at home) before it reads the sixth line.
    let input: String = (1..=30).map(|i| format!("{i}\n")).collect();
    let reader = "n=0; while read l; do n=$((n+1)); echo \"got $l\"; sleep 0.3; done; echo \"read $n lines\"";
    let mut job = Job::spawn_with_input(lab, a, &[], reader, Some(input.as_bytes()))?;
    job.wait_lines(5)?;
    let id = job_id(lab, "read $n lines")?;
    migrate_ok(lab, &id, b)?;
    let (code, lines, err) = job.finish()?;
    let mut expected: Vec<String> = (1..=30).map(|i| format!("got {i}")).collect();
    expected.push("read 30 lines".into());
    ensure!(
        lines == expected && code == Some(0),
        "a job moved while its input waited in the pipe printed {lines:?} and ended {code:?}: {err}"
    );

    // Four threads keep running after a move; Ctrl-C then ends it there.
    std::fs::write(home.join("threads.c"), THREADS_C)?;
    let cc = Command::new("gcc")
        .args(["-static", "-pthread", "-O1", "-o"])
        .arg(home.join("threads"))
        .arg(home.join("threads.c"))
        .status()?;
    ensure!(cc.success(), "gcc -static -pthread failed");
    chown(home.join("threads"), Some(USER), Some(USER))?;
    let mut threads = Job::spawn(lab, b, &[], "exec ./threads")?;
    threads.wait_lines(3)?;
    let before = threads
        .last()
        .and_then(|l| thread_line(&l))
        .context("no tick line")?;
    let id = job_id(lab, "exec ./threads")?;
    migrate_ok(lab, &id, a)?;
    let n = threads.count();
    threads.wait_lines(n + 3)?;
    let after = threads
        .last()
        .and_then(|l| thread_line(&l))
        .context("no tick line")?;
    ensure!(
        after.0 == 5 && after.1.iter().zip(&before.1).all(|(x, y)| x > y),
        "after the move: {after:?}, before: {before:?} (5 threads, every counter going)"
    );
    expect_at(lab, "exec ./threads", a, 1)?;
    threads.signal(nix::sys::signal::Signal::SIGINT)?;
    let (code, _, err) = threads.finish()?;
    ensure!(
        code == Some(130),
        "Ctrl-C after the move ended with {code:?}: {err}"
    );

    // A script with two children moves as a tree.
    let tree = "for k in 1 2; do (j=0; while [ $j -lt 50 ]; do j=$((j+1)); echo c$k-$j; sleep 0.2; done) & done; wait; echo tree-done";
    let mut job = Job::spawn(lab, a, &[], tree)?;
    job.wait_lines(6)?;
    let id = job_id(lab, "tree-done")?;
    migrate_ok(lab, &id, b)?;
    let (code, lines, err) = job.finish()?;
    for k in 1..=2 {
        let mine: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with(&format!("c{k}-")))
            .collect();
        let want: Vec<String> = (1..=50).map(|j| format!("c{k}-{j}")).collect();
        ensure!(
            mine.iter()
                .map(|s| s.as_str())
                .eq(want.iter().map(|s| s.as_str())),
            "child {k} of the moved tree printed {mine:?} {err}"
        );
    }
    ensure!(
        code == Some(0) && lines.last().map(String::as_str) == Some("tree-done"),
        "the moved tree ended with {code:?}, last line {:?}: {err}",
        lines.last()
    );

    check_lost_confirmation(lab, a, b)?;

    // A job with a TCP connection is refused, with the reason, and keeps running.
    // Both ends keep their input open (nc quits at its end), and the job
    // says whether the connection is up (5555 is 15B3, ESTABLISHED is 01).
    let tcp = "sleep 600 | nc -l -p 5555 >/dev/null & sleep 1; sleep 600 | nc 127.0.0.1 5555 & sleep 1; \
               if awk '$4 == \"01\" && ($2 ~ /:15B3$/ || $3 ~ /:15B3$/)' /proc/net/tcp | grep -q .; \
               then echo connected; else echo not-connected; fi; wait";
    let mut job = Job::spawn(lab, a, &[], tcp)?;
    job.wait_lines(1)?;
    ensure!(
        job.last().as_deref() == Some("connected"),
        "the TCP job did not connect: {:?}",
        job.last()
    );
    let id = job_id(lab, "nc 127.0.0.1 5555")?;
    let o = migrate(lab, &id, b)?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains("socket"),
        "migrating a job with a TCP connection: {} {err}",
        o.status
    );
    eprintln!("refused: {}", err.trim());
    expect_at(lab, "nc 127.0.0.1 5555", a, 0)?;
    job.signal(nix::sys::signal::Signal::SIGINT)?;
    job.finish()?;

    // --lock: refused, and ps says why.
    let job = Job::spawn(
        lab,
        a,
        &["--lock"],
        "echo locked-job; while :; do sleep 1; done",
    )?;
    let j = find_job(lab, "locked-job")?;
    ensure!(
        j["cantmove"].as_str().is_some_and(|c| c.contains("lock")),
        "ps does not say why a --lock job cannot move: {j}"
    );
    let o = migrate(lab, j["job"].as_str().context("no job id")?, b)?;
    let err = String::from_utf8_lossy(&o.stderr);
    ensure!(
        !o.status.success() && err.contains("lock"),
        "migrating a --lock job: {} {err}",
        o.status
    );
    job.signal(nix::sys::signal::Signal::SIGINT)?;
    job.finish()?;
    Ok(())
}

/// Starts moving a counter on `from` to `victim` and returns the job and
/// the running `omctl migrate`; the caller powers `victim` off.
pub fn start_doomed_move(lab: &ClusterLab, from: &str, victim: &str) -> Result<(Job, Child)> {
    // 16 MB held in the shell: the checkpoint takes seconds to cross, so
    // the plug is pulled mid-move, never after it.
    let script = "pad=$(head -c 16000000 /dev/zero | tr '\\0' x); i=0; while [ $i -lt 120 ]; do i=$((i+1)); echo $i; sleep 0.2; done; exit 5";
    let mut job = Job::spawn(lab, from, &[], script)?;
    job.wait_lines(5)?;
    let id = job_id(lab, "$i -lt 120")?;
    let mover = omctl_as_user(lab)
        .args(["migrate", &id, victim])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Into the dump, before the target is reached.
    std::thread::sleep(Duration::from_millis(700));
    Ok((job, mover))
}

/// After the power cut: the move failed with a reason, and the job ran on
/// where it was to its end, nothing lost.
pub fn check_doomed_move(lab: &ClusterLab, from: &str, job: Job, mover: Child) -> Result<()> {
    let o = mover.wait_with_output()?;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!("the move to a dying node: {} {}", o.status, err.trim());
    ensure!(
        !o.status.success(),
        "omctl migrate to a powered-off node succeeded"
    );
    expect_at(lab, "$i -lt 120", from, 0)?;
    let (code, lines, err) = job.finish()?;
    let expected: Vec<String> = (1..=120).map(|i| i.to_string()).collect();
    ensure!(
        lines == expected && code == Some(5),
        "the job whose move failed printed {lines:?} and ended {code:?}: {err}"
    );
    Ok(())
}

/// Waits until a line of `node`'s console holds every one of `needles`
/// (tracing fields come with colour codes between them: match the parts).
fn wait_console(
    lab: &ClusterLab,
    node: &str,
    needles: &[&str],
    timeout: Duration,
) -> Result<String> {
    let machine = lab
        .nodes
        .iter()
        .find(|n| n.node_name() == node)
        .with_context(|| format!("no machine {node}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(l) = machine
            .console()
            .lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
        {
            return Ok(l.trim_end_matches('\r').to_string());
        }
        ensure!(
            Instant::now() < deadline,
            "{node}'s console never said {needles:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A move from `source` (about to be powered off) to `target` that the
/// source's death interrupts after the target restored the job and before
/// any word of the move reached the target: the bridge drops the target's
/// `Restored` and its questions. Returns once the target has restored it.
pub struct OrphanedMove {
    job: Job,
    id: String,
    mover: Child,
    _filter: BridgeFilter,
}

/// Starts an [`OrphanedMove`]; the caller powers `source` off.
pub fn start_orphaned_move(lab: &ClusterLab, source: &str, target: &str) -> Result<OrphanedMove> {
    let (s_ip, _) = agent_addr(lab, source)?;
    let (t_ip, port) = agent_addr(lab, target)?;
    let script = "i=0; while [ $i -lt 150 ]; do i=$((i+1)); echo $i; sleep 0.2; done; exit 6";
    let mut job = Job::spawn(lab, source, &[], script)?;
    job.wait_lines(5)?;
    let id = job_id(lab, "exit 6")?;
    let filter =
        BridgeFilter::install(lab, "omlab_orphaned_move", &word_rules(&t_ip, &s_ip, &port))?;
    let mover = omctl_as_user(lab)
        .args(["migrate", &id, target])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let line = wait_console(
        lab,
        target,
        &["restored; waiting for the source's word", &id],
        MOVE_TIMEOUT,
    )?;
    eprintln!("{target}: {line}");
    Ok(OrphanedMove {
        job,
        id,
        mover,
        _filter: filter,
    })
}

/// After the source's death: home followed the job to the target, which
/// resumed it; every line came once and the status came back.
pub fn check_orphaned_move(lab: &ClusterLab, target: &str, orphan: OrphanedMove) -> Result<()> {
    let OrphanedMove {
        job,
        id,
        mover,
        _filter,
    } = orphan;
    let o = mover.wait_with_output()?;
    eprintln!(
        "the move whose source died: {} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr).trim()
    );
    let (code, lines, err) = job.finish()?;
    let expected: Vec<String> = (1..=150).map(|i| i.to_string()).collect();
    ensure!(
        lines == expected && code == Some(6),
        "the job whose source died mid-move printed {lines:?} and ended {code:?}: {err}"
    );
    let line = wait_console(lab, target, &["job moved in", &id], Duration::from_secs(5))?;
    eprintln!("{target}: {line}");
    Ok(())
}

/// Rules that drop, from `target` to `source` on the agents' port, the
/// segments that carry data as small as a sealed `Restored` (4 + 3 or 4 +
/// 16 bytes, over 52 bytes of IP and TCP with timestamps; the handshake's
/// 32-byte reply is larger), and every connection `target` opens to
/// `source`'s agent (the `Outcome` question). Membership's UDP passes.
fn word_rules(target: &str, source: &str, port: &str) -> [String; 2] {
    [
        format!("ip saddr {target} ip daddr {source} tcp sport {port} tcp flags & psh == psh ip length 60-83"),
        format!("ip saddr {target} ip daddr {source} tcp dport {port} tcp flags & (syn | ack) == syn"),
    ]
}

/// Rules of a bridge table in the lab's LAN namespace, deleted when
/// dropped (the namespace's removal would delete them too).
struct BridgeFilter {
    ns: String,
    table: &'static str,
}

impl BridgeFilter {
    /// Drops, in the bridge between the machines, what `rules` match.
    fn install(lab: &ClusterLab, table: &'static str, rules: &[String]) -> Result<Self> {
        let mut script = format!(
            "table bridge {table} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n"
        );
        for r in rules {
            script += &format!("  {r} drop\n");
        }
        script += " }\n}\n";
        let mut nft = lab
            .lan()
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run nft (apt-get install nftables)")?;
        std::io::Write::write_all(nft.stdin.as_mut().context("nft stdin")?, script.as_bytes())?;
        drop(nft.stdin.take());
        let o = nft.wait_with_output()?;
        ensure!(
            o.status.success(),
            "nft refused the rules: {}\n{script}",
            String::from_utf8_lossy(&o.stderr)
        );
        Ok(BridgeFilter {
            ns: lab.lan().name().to_string(),
            table,
        })
    }
}

impl Drop for BridgeFilter {
    fn drop(&mut self) {
        let _ = lab::netns::netns_command(&self.ns, "nft")
            .args(["delete", "table", "bridge", self.table])
            .status();
    }
}

/// A node's agent address (ip, port), as the head's `status` has it.
fn agent_addr(lab: &ClusterLab, node: &str) -> Result<(String, String)> {
    let status = lab.status()?;
    let addr = status["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == node))
        .and_then(|n| n["addr"].as_str())
        .with_context(|| format!("no address of {node} in {status}"))?;
    let (ip, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("odd agent address {addr}"))?;
    Ok((ip.to_string(), port.to_string()))
}

/// The target restores the job, but its `Restored` never reaches the
/// source, and the target cannot ask the source afterwards either (the
/// bridge drops them; both stay alive for membership, whose UDP passes).
/// The source keeps the job, the target drops its restored copy: the job
/// runs once, at the source, and every line comes once.
fn check_lost_confirmation(lab: &mut ClusterLab, a: &str, b: &str) -> Result<()> {
    let share = lab.share_dir().context("no shared tree")?.to_path_buf();
    let (a_ip, _) = agent_addr(lab, a)?;
    let (b_ip, port) = agent_addr(lab, b)?;
    let ticks = share.join("u4242/lost-confirmation.txt");
    let stop = share.join("u4242/lost-confirmation.stop");
    let _ = std::fs::remove_file(&ticks);
    let _ = std::fs::remove_file(&stop);
    // Every tick goes to stdout and to a file in the shared tree: a second
    // live copy, wherever it ran, would write its ticks there too.
    let script = "i=0; while [ ! -e lost-confirmation.stop ]; do i=$((i+1)); echo $i; echo $i >> lost-confirmation.txt; sleep 0.2; done; exit 4";
    let mut job = Job::spawn(lab, a, &[], script)?;
    job.wait_lines(5)?;
    let id = job_id(lab, "lost-confirmation.stop")?;
    let filter = BridgeFilter::install(
        lab,
        "omlab_lost_confirmation",
        &word_rules(&b_ip, &a_ip, &port),
    )?;
    let o = migrate(lab, &id, b)?;
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    eprintln!(
        "a move whose confirmation is lost: {} {}",
        o.status,
        err.trim()
    );
    ensure!(
        !o.status.success(),
        "omctl migrate succeeded though the target's confirmation was dropped"
    );
    let line = wait_console(
        lab,
        b,
        &["dropping the restored copy", &id],
        Duration::from_secs(120),
    )?;
    eprintln!("{b}: {line}");
    drop(filter);
    expect_at(lab, "lost-confirmation.stop", a, 0)?;
    let n = job.count();
    job.wait_lines(n + 5)?;
    std::fs::write(&stop, "")?;
    let (code, lines, err) = job.finish()?;
    let expected: Vec<String> = (1..=lines.len()).map(|i| i.to_string()).collect();
    let written: Vec<String> = std::fs::read_to_string(&ticks)?
        .lines()
        .map(str::to_string)
        .collect();
    ensure!(
        lines == expected && written == expected && code == Some(4),
        "after a lost confirmation the job printed {lines:?}, wrote {written:?} and ended {code:?}: {err}"
    );
    Ok(())
}
