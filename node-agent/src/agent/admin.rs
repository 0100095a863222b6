//! The admin knobs at run time (`omctl knob`, `mosctl block`…): turning
//! `block`, `stay`, `lstay` and `quiet` on and off, and the two orders,
//! `expel` (every guest leaves now: home if its home takes it, else to the
//! best node), `bring` (every job launched here comes home), and
//! `poweroff` / `reboot` (guests leave, then `omnode init` shuts the node
//! down, if it booted it and no job would be lost). A request
//! comes from `omctl` on this node (root only) or, sealed with the cluster
//! key, from another agent that got it from its `omctl` (`--node`); the
//! latter reach the [`serve`] task through [`crate::exec::ExecContext::admin`].

use futures::future::join_all;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::control_server::Controller;
use crate::balance::KnobAction;
use crate::exec::{
    self, AdminCmd, ExecContext, EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_PERMISSION,
};
use crate::membership::NodeId;
use crate::placement;
use crate::state::MigrateCmd;
use crate::wire::{MigrateDone, MigrateOrder, PeerFrame};

/// Rounds of `bring` at most.
pub const BRING_ROUNDS: usize = 3;

/// Answers knob requests from other agents until `stop`.
pub(super) async fn serve(
    mut rx: mpsc::Receiver<AdminCmd>,
    ctl: Controller,
    stop: CancellationToken,
) {
    while let Some(Some((action, reply))) = stop.run_until_cancelled(rx.recv()).await {
        if let Some(r) = stop.run_until_cancelled(ctl.knob_here(action)).await {
            let _ = reply.send(r);
        }
    }
}

/// How long after a power request PID 1 is asked, so that the answer
/// reaches whoever asked first.
const POWER_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether PID 1 is `omnode init` (the same program as this agent, which
/// it started): only then do its signals mean power off and reboot.
fn booted_by_omnode_init() -> bool {
    match (
        std::fs::read_link("/proc/1/exe"),
        std::fs::read_link("/proc/self/exe"),
    ) {
        (Ok(init), Ok(me)) => init == me,
        _ => false,
    }
}

/// Asks PID 1 to power off (`false`) or reboot (`true`) when told, a
/// moment after; until `stop`. The signals are busybox init's, which
/// `omnode init` follows: SIGUSR2 powers off, SIGTERM reboots.
pub(super) async fn power(mut rx: mpsc::Receiver<bool>, stop: CancellationToken) {
    while let Some(Some(reboot)) = stop.run_until_cancelled(rx.recv()).await {
        tokio::time::sleep(POWER_DELAY).await;
        if !booted_by_omnode_init() {
            continue;
        }
        let sig = if reboot { libc::SIGTERM } else { libc::SIGUSR2 };
        // SAFETY: plain kill(2) on PID 1, checked above to be omnode init.
        unsafe { libc::kill(1, sig) };
    }
}

/// Answers a knob request from another agent (`omctl knob --node` there)
/// through the admin task.
pub(super) async fn for_peer(ctx: &ExecContext, action: KnobAction) -> PeerFrame {
    let answer = match &ctx.admin {
        Some(admin) => {
            let (tx, rx) = oneshot::channel();
            if admin.send((action, tx)).await.is_ok() {
                rx.await.ok()
            } else {
                None
            }
        }
        None => None,
    };
    match answer {
        Some(Ok(lines)) => PeerFrame::KnobDone(lines),
        Some(Err((code, message))) => PeerFrame::Failed { code, message },
        None => PeerFrame::Failed {
            code: EXIT_NODE_LOST,
            message: format!("node {} takes no knob requests now", ctx.node),
        },
    }
}

/// What a move gave, as a line.
fn outcome(job: &str, from: &str, r: Result<MigrateDone, (i32, String)>) -> String {
    match r {
        Ok(done) => done.to_string(),
        Err((_, why)) => format!("job {job} stays on node {from}: {why}"),
    }
}

impl Controller {
    /// `omctl knob [--node N] WORD` for the caller `uid`: here, or sent to
    /// the node named.
    pub(super) async fn knob(
        &self,
        node: Option<String>,
        action: KnobAction,
        uid: u32,
    ) -> Result<Vec<String>, (i32, String)> {
        if uid != 0 {
            return Err((
                EXIT_NO_PERMISSION,
                "changing a node's knobs takes root".into(),
            ));
        }
        let target = match node {
            None => None,
            Some(want) => {
                let v = self.state.view();
                let id = placement::named(&v.known(), &want)
                    .cloned()
                    .ok_or_else(|| (EXIT_CANNOT_RUN, format!("no live node matches {want}")))?;
                (id.name != v.me().name).then_some(id)
            }
        };
        match target {
            None => self.knob_here(action).await,
            Some(id) => exec::remote_knob(&id, &self.keys.stream(), action).await,
        }
    }

    /// Caps the cluster jobs here at `percent` of the CPUs: the job cgroup
    /// first, then the load vector.
    fn set_quota(&self, percent: u32) -> Result<String, (i32, String)> {
        let me = &self.load.exec.node;
        match &self.load.exec.cgroup {
            Some(cg) => cg
                .set_quota(percent, crate::load::cpu_count())
                .map_err(|e| (EXIT_CANNOT_RUN, format!("node {me}: {e}")))?,
            None if percent < 100 => {
                return Err((
                    EXIT_CANNOT_RUN,
                    format!(
                        "node {me} runs jobs without a cgroup of their own, so it cannot cap them"
                    ),
                ))
            }
            None => {}
        }
        self.state.set_quota(percent);
        info!(percent, "cpu quota changed");
        Ok(format!("node {me}: cpu quota {percent} %"))
    }

    /// Carries out a knob request on this node.
    pub(super) async fn knob_here(&self, action: KnobAction) -> Result<Vec<String>, (i32, String)> {
        let me = self.load.exec.node.clone();
        match action {
            KnobAction::Set { knob, on } => {
                if !self.state.set_knob(&knob, on) {
                    return Err((EXIT_CANNOT_RUN, format!("no knob {knob}")));
                }
                info!(%knob, on, "knob changed");
                Ok(vec![format!(
                    "node {me}: {knob} {} (knobs: {})",
                    if on { "on" } else { "off" },
                    self.state.knobs().describe()
                )])
            }
            KnobAction::Expel => Ok(self.expel().await),
            KnobAction::Bring => Ok(self.bring().await),
            KnobAction::Quota(percent) => self.set_quota(percent).map(|line| vec![line]),
            KnobAction::Power { reboot } => self.power_down(reboot).await,
        }
    }

    /// Powers this node off or reboots it once nothing would be lost: its
    /// guests leave first; a job launched here and still running (its
    /// output and exit status come here), or one that could not leave,
    /// keeps it up.
    async fn power_down(&self, reboot: bool) -> Result<Vec<String>, (i32, String)> {
        let me = self.load.exec.node.clone();
        let verb = if reboot { "reboot" } else { "power off" };
        if !booted_by_omnode_init() {
            return Err((
                EXIT_CANNOT_RUN,
                format!("node {me} was not booted by omnode init, so it cannot {verb} from here; use its own console"),
            ));
        }
        let homed = self.state.launched().len();
        if homed > 0 {
            return Err((
                EXIT_CANNOT_RUN,
                format!("node {me} is home to {homed} running job(s) (their output and exit status come here); wait for them or end them first"),
            ));
        }
        let mut lines = if self.state.job_counts().0 > 0 {
            self.expel().await
        } else {
            Vec::new()
        };
        let left = self.state.job_counts().0;
        if left > 0 {
            lines.push(format!(
                "node {me} still runs {left} job(s) that could not leave; it stays up"
            ));
            return Err((EXIT_CANNOT_RUN, lines.join("; ")));
        }
        if self.power.send(reboot).await.is_err() {
            return Err((
                EXIT_NODE_LOST,
                format!("node {me} is shutting down already"),
            ));
        }
        info!(reboot, "powering down on request");
        lines.push(format!(
            "node {me}: {}",
            if reboot { "rebooting" } else { "powering off" }
        ));
        Ok(lines)
    }

    /// Where each guest expelled from here goes (`homes`, one per guest):
    /// home if home takes it, else the best other node, counting the
    /// guests already sent to each so that they do not all pick one.
    fn expel_targets(&self, homes: &[String]) -> Vec<Option<NodeId>> {
        let local = self.load.sample();
        let v = self.state.view();
        let me = &v.me().name;
        let fresh = v.fresh_peers(std::time::Duration::from_secs(3));
        // Root's guests go only where root's jobs run; other nodes refuse
        // them at the door, and they stay.
        let mut c = placement::candidates(me, &local, &v.known(), false);
        homes
            .iter()
            .map(|home| {
                let takes = |l: &crate::load::LoadVector| {
                    l.criu && self.load.cpu_features.fits(l.cpu_features)
                };
                if let Some((id, _)) = fresh.iter().find(|(id, l)| id.name == *home && takes(l)) {
                    return Some(id.clone());
                }
                let to = placement::best_elsewhere(&c, me)?;
                if let Some(i) = c.ids.iter().position(|id| *id == to) {
                    c.candidates[i].jobs += 1;
                }
                Some(to)
            })
            .collect()
    }

    /// Sends every guest away at once; a line per guest.
    async fn expel(&self) -> Vec<String> {
        let x = &self.load.exec;
        let guests: Vec<(String, String)> = x
            .state
            .jobs()
            .into_iter()
            .filter(|j| j.home != x.node)
            .map(|j| (j.job.clone(), j.home.clone()))
            .collect();
        if guests.is_empty() {
            return vec![format!("node {}: no guest jobs", x.node)];
        }
        let homes: Vec<String> = guests.iter().map(|(_, h)| h.clone()).collect();
        let targets = self.expel_targets(&homes);
        let moves = guests
            .into_iter()
            .zip(targets)
            .map(|((job, _), to)| async move {
                let Some(to) = to else {
                    return outcome(&job, &x.node, Err((0, "no node can take it".into())));
                };
                let (tx, rx) = oneshot::channel();
                let order = MigrateOrder {
                    job: job.clone(),
                    to: to.name.clone(),
                    to_addr: to.addr,
                    uid: 0,
                };
                let cmd = MigrateCmd { order, reply: tx };
                if x.state.order_move(&job, cmd).await.is_err() {
                    return outcome(&job, &x.node, Err((0, "it has ended".into())));
                }
                let r = rx
                    .await
                    .unwrap_or_else(|_| Err((0, "it ended while moving".into())));
                outcome(&job, &x.node, r)
            });
        join_all(moves).await
    }

    /// Brings every job launched here and running elsewhere home; a line
    /// each. A job this node's balancer sends out meanwhile is brought back
    /// in a further round (at most [`BRING_ROUNDS`]; with `lstay` on, none
    /// leaves again).
    async fn bring(&self) -> Vec<String> {
        let me = self.state.me();
        let mut lines = Vec::new();
        let mut tried = std::collections::BTreeSet::new();
        for _ in 0..BRING_ROUNDS {
            let away: Vec<(String, String)> = self
                .state
                .launched()
                .into_iter()
                .filter(|j| j.node != me.name && !tried.contains(&(j.job.clone(), j.node.clone())))
                .map(|j| (j.job.clone(), j.node.clone()))
                .collect();
            if away.is_empty() {
                break;
            }
            tried.extend(away.iter().cloned());
            let moves = away.into_iter().map(|(job, node)| {
                let me = me.clone();
                async move {
                    let source = placement::named(&self.state.view().known(), &node).cloned();
                    let Some(source) = source else {
                        return outcome(&job, &node, Err((0, "its node is not alive".into())));
                    };
                    let order = MigrateOrder {
                        job: job.clone(),
                        to: me.name.clone(),
                        to_addr: me.addr,
                        uid: 0,
                    };
                    let r = exec::order_migration(&source, &self.keys.stream(), order).await;
                    outcome(&job, &node, r)
                }
            });
            lines.extend(join_all(moves).await);
        }
        if lines.is_empty() {
            lines.push(format!("node {}: no jobs of its own elsewhere", me.name));
        }
        lines
    }
}
