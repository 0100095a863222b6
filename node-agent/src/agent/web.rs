//! The web view over this agent (`--web`): [`web_view::Cluster`] as the
//! control server's [`Controller`] sees the cluster (its status, `ps
//! --cluster`, `migrate`, `knob`, `kill` and `renice` as root; the boot
//! server's machines and `admit`/`reject` through its admission relay), and the node's change stream
//! as the view's nudges.

use std::net::Ipv4Addr;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::control_server::Controller;
use crate::balance::KnobAction;
use crate::state::Change;
use crate::wire::{ClusterStatus, JobInfo, MigrateDone};
use agent_control::steer::JobOrder;
use contracts::admit::Verdict;
use contracts::boot::NODES_PATH;
use web_view::{Nudge, Refusal};

/// The gate of a view listening on `listener`: its links name the node's
/// address `addr` when it listens on every address.
pub(super) fn gate(listener: &TcpListener, addr: Ipv4Addr) -> web_view::Gate {
    let base = match listener.local_addr() {
        Ok(a) if a.ip().is_unspecified() => format!("http://{addr}:{}", a.port()),
        Ok(a) => format!("http://{a}"),
        Err(_) => format!("http://{addr}:{}", web_view::DEFAULT_PORT),
    };
    web_view::Gate::new(base)
}

/// Serves the view until `stop`.
pub(super) async fn serve(
    listener: TcpListener,
    gate: web_view::Gate,
    ctl: Controller,
    metrics_open: bool,
    stop: CancellationToken,
) {
    let options = web_view::Options { metrics_open };
    if let Err(e) = web_view::serve(listener, ctl, gate, options, stop).await {
        warn!(cause = %e, "the web view stopped");
    }
}

/// What a change of the node's state means for the view.
fn nudge(c: &Change) -> Option<Nudge> {
    match c {
        Change::JobStarted(_)
        | Change::JobArrived(_)
        | Change::JobLeft { .. }
        | Change::JobEnded { .. }
        | Change::JobHeld { .. }
        | Change::Launched { .. }
        | Change::LaunchRuns { .. }
        | Change::LaunchEnded { .. } => Some(Nudge::Jobs),
        Change::Knobs(_)
        | Change::Quota(_)
        | Change::Speed(_)
        | Change::Criu(_)
        | Change::Member { .. } => Some(Nudge::Nodes),
        // A node's job counts changed: a job started, ended or moved
        // there, maybe between two other nodes, which no stream here tells.
        Change::Load {
            jobs_changed: true, ..
        } => Some(Nudge::Jobs),
        // Load vectors arrive twice a second from every node; the view
        // samples them each second anyway.
        Change::Load { .. } => None,
    }
}

impl web_view::Cluster for Controller {
    fn status(&self) -> ClusterStatus {
        Controller::status(self)
    }

    async fn jobs(&self) -> Vec<JobInfo> {
        self.cluster_jobs().await
    }

    async fn migrate(&self, job: String, to: String) -> Result<MigrateDone, Refusal> {
        Controller::migrate(self, &job, &to, 0).await
    }

    async fn knob(&self, node: String, action: KnobAction) -> Result<Vec<String>, Refusal> {
        Controller::knob(self, Some(node), action, 0).await
    }

    async fn steer(&self, job: String, order: JobOrder) -> Result<String, Refusal> {
        Controller::steer(self, &job, order, 0).await
    }

    async fn boot(&self) -> Result<web_view::boot::BootPicture, String> {
        let Some(server) = &self.boot_server else {
            return Err(
                "this agent knows no boot server (it runs without --checkin); the head's view shows the machines booting"
                    .into(),
            );
        };
        let url = format!("{}{NODES_PATH}", server.base);
        let (status, body) = crate::checkin::exchange(&url, "GET", &[], &[])
            .await
            .map_err(|e| format!("the boot server at {}: {e}", server.base))?;
        if status != 200 {
            return Err(format!(
                "the boot server at {} answered {status} to {NODES_PATH}",
                server.base
            ));
        }
        let nodes = serde_json::from_slice(&body)
            .map_err(|e| format!("the boot server's {NODES_PATH} is malformed: {e}"))?;
        let list = server.admission(None).await.map_err(|(_, why)| why)?;
        let admission = serde_json::from_str(&list)
            .map_err(|e| format!("the boot server's admission list is malformed: {e}"))?;
        Ok(web_view::boot::BootPicture { nodes, admission })
    }

    async fn admit(&self, machine: String, admit: bool) -> Result<String, Refusal> {
        let server = super::admission::for_caller(self.boot_server.as_ref(), 0)?;
        let verdict = if admit {
            Verdict::Admit
        } else {
            Verdict::Reject
        };
        let json = server.admission(Some((machine.clone(), verdict))).await?;
        let m: contracts::admit::Machine = serde_json::from_str(&json).map_err(|e| {
            (
                crate::exec::EXIT_NO_AGENT,
                format!("the boot server's answer is malformed: {e}"),
            )
        })?;
        Ok(format!(
            "{} ({}) {}",
            m.mac,
            m.name.as_deref().unwrap_or("no name"),
            if admit {
                "admitted: it gets the cluster key when it next asks"
            } else {
                "rejected"
            }
        ))
    }

    fn nudges(&self) -> BoxStream<'static, Nudge> {
        futures::stream::unfold(self.state.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(c) => {
                        if let Some(n) = nudge(&c) {
                            return Some((n, rx));
                        }
                    }
                    // Missed some: refresh everything.
                    Err(RecvError::Lagged(_)) => return Some((Nudge::Jobs, rx)),
                    Err(RecvError::Closed) => return None,
                }
            }
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_changes_refresh_the_jobs_and_loads_nothing() {
        assert_eq!(
            nudge(&Change::JobEnded { job: "a-1".into() }),
            Some(Nudge::Jobs)
        );
        assert_eq!(
            nudge(&Change::Knobs(Default::default())),
            Some(Nudge::Nodes)
        );
        let load = |jobs_changed| Change::Load {
            node: "b".into(),
            jobs_changed,
        };
        assert_eq!(nudge(&load(false)), None);
        assert_eq!(nudge(&load(true)), Some(Nudge::Jobs));
    }
}
