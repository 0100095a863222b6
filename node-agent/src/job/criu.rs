//! Running CRIU: the dump of a stopped job into a directory, and the probe
//! that tells whether this node can restore jobs at all (reported in the
//! load vector, so a node whose kernel CRIU cannot handle is never chosen).

use std::path::Path;
use std::time::{Duration, Instant};

/// The program.
pub const CRIU: &str = "criu";

pub use job_holder::criu_log_tail as log_tail;

/// Where CRIU's parasite mounts a /proc of the job's PID namespace: the
/// name is relative to the dumped init's working directory, which is `/`
/// for every job on this node (see `job::holder`).
const PARASITE_PROC: &str = "/proc.crtools";

/// One dump at a time on this node. CRIU's parasite in each job's init
/// makes [`PARASITE_PROC`] and removes it when done, so two dumps at once
/// (an `expel` or `bring` moving several jobs) collide on that directory
/// and the second fails with "Can't get proc fd".
static DUMPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This node's turn to dump, held from before the job stops until its dump
/// is written, so that no job waits frozen for another's dump.
pub struct DumpTurn {
    _held: tokio::sync::MutexGuard<'static, ()>,
}

/// Waits for this node's turn to dump.
pub async fn dump_turn() -> DumpTurn {
    DumpTurn {
        _held: DUMPS.lock().await,
    }
}

/// Dumps the stopped job whose init is `init` into `dir`, leaving it
/// stopped here (the caller kills or resumes it), in the node's dump turn
/// `_turn`. Returns the time taken.
pub async fn dump(init: u32, dir: &Path, _turn: &DumpTurn) -> Result<Duration, String> {
    let t = Instant::now();
    // A CRIU killed halfway leaves the directory behind, empty, and every
    // later dump would fail on it; an empty directory holds nothing.
    let _ = std::fs::remove_dir(PARASITE_PROC);
    let out = tokio::process::Command::new(CRIU)
        .arg("dump")
        .arg("-t")
        .arg(init.to_string())
        .arg("-D")
        .arg(dir)
        .args([
            "--leave-stopped",
            "--manage-cgroups=ignore",
            "-v4",
            "-o",
            "dump.log",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("cannot run {CRIU}: {e}"))?;
    if out.status.success() {
        return Ok(t.elapsed());
    }
    let log = std::fs::read_to_string(dir.join("dump.log")).unwrap_or_default();
    // What CRIU did just before it failed, beyond the error lines.
    let last: Vec<&str> = log.lines().rev().take(40).collect();
    let last: Vec<&str> = last.into_iter().rev().collect();
    tracing::warn!(log = %last.join(" | "), "criu dump failed; the end of its log");
    let mut why = log_tail(&log);
    if log.is_empty() {
        why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    }
    Err(format!("criu dump failed ({}): {why}", out.status))
}

/// Whether CRIU can checkpoint and restore here: `criu` runs and knows
/// this kernel's vDSO layout (`criu check` fails on kernels newer than the
/// CRIU release). Run once at start, off the async threads.
pub fn probe() -> Result<(), String> {
    let out = std::process::Command::new(CRIU)
        .arg("check")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{CRIU} is not installed ({e})"))?;
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    if text.contains("vdso") || text.contains("vDSO") {
        return Err(format!(
            "criu cannot handle this kernel: {}",
            log_tail(&text)
        ));
    }
    Ok(())
}
