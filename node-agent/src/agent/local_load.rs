//! This node's load vector, sampled when asked for: by the presence tick
//! (sent to every member), by `omctl status` and by placement; the shared
//! tree's part comes from its probe thread ([`crate::share::Probe`]), the
//! demand from the balancer's last sample (`balancer`).

use std::sync::Arc;

use crate::exec::ExecContext;
use crate::load::{self, LoadVector};

/// What sampling our load needs: the speed, job tables, knobs and quota of
/// the node's state, and what the balancer measured.
#[derive(Debug, Clone)]
pub(super) struct LocalLoad {
    /// What this CPU offers a job (read once at start).
    pub(super) cpu_features: crate::cpu::Features,
    /// The node's state (jobs, CRIU's verdict, knobs, the balancer's
    /// demand) and what the exec side was told.
    pub(super) exec: ExecContext,
    /// The shared tree's probe.
    pub(super) share: Arc<crate::share::Probe>,
}

impl LocalLoad {
    /// Our load vector now.
    pub(super) fn sample(&self) -> LoadVector {
        let x = &self.exec;
        let (jobs, started) = x.state.job_counts();
        let mut vector = load::sample(x.state.speed(), jobs, started, x.state.quota());
        vector.share = self.share.view();
        vector.criu = matches!(x.state.criu(), Some(Ok(())));
        if let Some(d) = x.state.demand() {
            vector.demand = d;
        }
        vector.knobs = x.state.knobs();
        vector.root_jobs = x.allow_root_jobs;
        vector.cpu_features = self.cpu_features;
        vector.guests = x.state.guests(&x.node);
        (vector.moved_in, vector.moved_out) = x.state.moves_last_minute();
        vector
    }
}
