//! This node's load vector, sampled when asked for: by the presence tick
//! (sent to every member), by `omctl status` and by placement; the shared
//! tree's part comes from its probe thread ([`crate::share::Probe`]).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crate::exec::{self, Jobs};
use crate::load::{self, LoadVector};

/// What sampling our load needs: the calibrated speed, the quota and the
/// job counters the exec listener keeps.
#[derive(Debug, Clone)]
pub(super) struct LocalLoad {
    pub(super) speed: f32,
    pub(super) cpu_quota: u32,
    pub(super) running: Jobs,
    pub(super) started: Arc<AtomicU64>,
    /// The shared tree's probe.
    pub(super) share: Arc<crate::share::Probe>,
    /// Whether CRIU works here (see [`crate::job::criu::probe`]).
    pub(super) criu: exec::CriuState,
}

impl LocalLoad {
    /// Our load vector now.
    pub(super) fn sample(&self) -> LoadVector {
        let (jobs, started) = exec::job_counts(&self.running, &self.started);
        let mut vector = load::sample(self.speed, jobs, started, self.cpu_quota);
        vector.share = self.share.view();
        vector.criu = matches!(*self.criu.lock().expect("criu state"), Some(Ok(())));
        vector
    }
}
