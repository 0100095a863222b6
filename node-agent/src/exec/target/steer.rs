//! Signals and nice values for a job running here (`omctl kill`, `omctl
//! renice`, the web view's process list): [`steer`] answers a `Steer`
//! request from any agent, the job's driver carries it out between two
//! moves ([`carry_out`]).
//!
//! A signal goes to every process of the job, not through its holder:
//! SIGSTOP and SIGKILL cannot be forwarded. A job its owner stopped stays
//! where it is until SIGCONT (a move would resume it); its `cantmove` says
//! so. Only root may lower a nice value, as with renice(1).

use agent_control::steer::{signal_name, JobOrder, SIGCONT, SIGSTOP};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::super::{ExecContext, EXIT_CANNOT_RUN, EXIT_NO_PERMISSION};
use crate::job;
use crate::state::{SteerCmd, SteerResult};
use crate::wire::{PeerFrame, SteerOrder};

/// Why a job its owner stopped does not move.
pub const HELD: &str = "stopped by SIGSTOP (send SIGCONT to let it move)";

/// Answers a `Steer` request: checks it, hands it to the job's driver and
/// waits for what it did.
pub(crate) async fn steer(order: SteerOrder, ctx: &ExecContext) -> PeerFrame {
    match steer_here(order, ctx).await {
        Ok(line) => PeerFrame::Steered(line),
        Err((code, message)) => PeerFrame::Failed { code, message },
    }
}

/// [`steer`] as a result: what the agent's own `omctl` gets too.
pub(crate) async fn steer_here(o: SteerOrder, ctx: &ExecContext) -> SteerResult {
    o.order.valid().map_err(|e| (EXIT_CANNOT_RUN, e))?;
    super::owned_job(ctx, &o.job, o.uid, "signal or renice")?;
    let (reply, rx) = oneshot::channel();
    let cmd = SteerCmd {
        order: o.order,
        uid: o.uid,
        reply,
    };
    if ctx.state.order_steer(&o.job, cmd).await.is_err() {
        return Err((EXIT_CANNOT_RUN, format!("job {} has ended", o.job)));
    }
    rx.await
        .unwrap_or_else(|_| Err((EXIT_CANNOT_RUN, format!("job {} ended meanwhile", o.job))))
}

/// Carries out `order` on the job whose init is `init` here, for `uid`;
/// what it did, as a line naming `job` and `node`.
pub(super) async fn carry_out(
    job: &str,
    node: &str,
    init: u32,
    order: JobOrder,
    uid: u32,
) -> SteerResult {
    let fail = |m: String| (EXIT_CANNOT_RUN, m);
    match order {
        JobOrder::Signal(SIGSTOP) => {
            let n = job::stop(init)
                .await
                .map_err(|e| fail(format!("job {job} on node {node}: {e}")))?;
            Ok(format!("job {job} on node {node}: stopped ({n} processes)"))
        }
        JobOrder::Signal(SIGCONT) => {
            job::resume(init);
            Ok(format!("job {job} on node {node}: continued"))
        }
        JobOrder::Signal(n) => {
            let sig = Signal::try_from(n).map_err(|e| fail(format!("signal {n}: {e}")))?;
            let procs = job::processes(init);
            if procs.is_empty() {
                return Err(fail(format!("job {job} has ended")));
            }
            // The deepest first: a parent that dies first would leave its
            // children to the job's init before they hear it.
            for p in procs.iter().rev() {
                let _ = kill(Pid::from_raw(*p as i32), sig);
            }
            Ok(format!(
                "job {job} on node {node}: sent {} to {} processes",
                signal_name(n),
                procs.len()
            ))
        }
        JobOrder::Renice(nice) => renice(job, node, init, nice, uid),
    }
}

/// Gives every thread of the job the nice value `nice`.
fn renice(job: &str, node: &str, init: u32, nice: i32, uid: u32) -> SteerResult {
    let procs = job::processes(init);
    let now = job::usage::of(&procs).nice;
    if uid != 0 && now.is_some_and(|n| nice < n) {
        return Err((
            EXIT_NO_PERMISSION,
            format!(
                "job {job} runs at nice {}; only root may lower it (to {nice})",
                now.unwrap_or_default()
            ),
        ));
    }
    let mut threads = 0;
    for p in &procs {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(tid) = t.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            // SAFETY: setpriority(2) on one thread id; no memory is shared.
            if unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, nice) } == 0 {
                threads += 1;
            }
        }
    }
    if threads == 0 {
        return Err((
            EXIT_CANNOT_RUN,
            format!("job {job} on node {node}: no thread took nice {nice}"),
        ));
    }
    Ok(format!(
        "job {job} on node {node}: nice {nice} ({threads} threads)"
    ))
}

/// What the job's `cantmove` becomes after `order`: [`HELD`] once its owner
/// stopped it, what it was before once continued; `None` for no change.
pub(super) fn held_after(order: JobOrder, before: &Option<String>) -> Option<Option<String>> {
    match order {
        JobOrder::Signal(SIGSTOP) => Some(Some(HELD.to_string())),
        JobOrder::Signal(SIGCONT) => Some(before.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_job_is_held_until_continued() {
        let locked = Some("locked (omctl run --lock)".to_string());
        assert_eq!(
            held_after(JobOrder::Signal(SIGSTOP), &None),
            Some(Some(HELD.into()))
        );
        assert_eq!(held_after(JobOrder::Signal(SIGCONT), &None), Some(None));
        assert_eq!(
            held_after(JobOrder::Signal(SIGCONT), &locked),
            Some(locked.clone())
        );
        assert_eq!(held_after(JobOrder::Signal(15), &locked), None);
        assert_eq!(held_after(JobOrder::Renice(5), &None), None);
    }
}
