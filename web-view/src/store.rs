//! The one owner of what the view knows: the current [`Board`], the
//! [`History`] and the [`Counters`], behind methods that never await.
//! Readers get snapshots; the board is also published on a `watch`
//! channel, which every open event stream follows.
//!
//! [`Store::refresh`] keeps it current: the cluster's status each second
//! (local to the serving agent, so cheap), and the job table, which asks
//! every node, when the agent's change stream says jobs changed (a burst is
//! taken as one, after [`COALESCE`]) and at least every [`JOBS_EVERY`]
//! otherwise (moves between two other nodes reach no stream here); and the
//! boot server's machines every [`MACHINES_EVERY`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_control::model::{ClusterStatus, JobInfo};
use contracts::clock::unix_millis;
use futures::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::board::{self, Board, Marker, MarkerKind};
use crate::history::History;
use crate::metrics::Counters;
use crate::{Cluster, Nudge};

/// What the board says of the machines before the boot server was asked.
const NOT_ASKED: &str = "the boot server has not been asked yet";
/// How long a burst of changes is gathered before one refresh.
pub const COALESCE: Duration = Duration::from_millis(100);
/// The job table is asked for at least this often.
pub const JOBS_EVERY: Duration = Duration::from_secs(2);
/// The boot server is asked this often.
pub const MACHINES_EVERY: Duration = Duration::from_secs(3);
/// Markers the board carries (the page's recent events).
pub const BOARD_MARKERS: usize = 50;

#[derive(Debug, Default)]
struct Inner {
    history: History,
    counters: Counters,
    status: Option<ClusterStatus>,
    jobs: Vec<JobInfo>,
    seq: u64,
    jobs_seq: u64,
    machines: Option<Result<Vec<crate::boot::Machine>, String>>,
}

/// What the view knows; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    board: Arc<watch::Sender<Arc<Board>>>,
    poke: Arc<Notify>,
    want_jobs: Arc<AtomicBool>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    /// Knows nothing yet.
    pub fn new() -> Self {
        let empty = Board {
            seq: 0,
            at_ms: 0,
            status: ClusterStatus {
                cluster: String::new(),
                node: String::new(),
                nodes: Vec::new(),
            },
            jobs: Vec::new(),
            jobs_seq: 0,
            efficiency: None,
            markers: Vec::new(),
            machines: Err(NOT_ASKED.into()),
        };
        Store {
            inner: Arc::default(),
            board: Arc::new(watch::channel(Arc::new(empty)).0),
            poke: Arc::default(),
            want_jobs: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method changes the tables whole before anything can panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The picture now.
    pub fn board(&self) -> Arc<Board> {
        self.board.borrow().clone()
    }

    /// The picture now and every new one.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Board>> {
        self.board.subscribe()
    }

    /// Runs `f` on the history.
    pub fn history<R>(&self, f: impl FnOnce(&History) -> R) -> R {
        f(&self.lock().history)
    }

    /// What was counted so far.
    pub fn counters(&self) -> Counters {
        self.lock().counters.clone()
    }

    /// Asks the refresh loop for a refresh soon (after an action here).
    pub fn poke(&self, what: Nudge) {
        if what == Nudge::Jobs {
            self.want_jobs.store(true, Ordering::Relaxed);
        }
        self.poke.notify_one();
    }

    /// A move asked for here did not happen: a marker says why.
    pub fn move_failed(&self, job: &str, from: &str, to: &str, why: &str) {
        let m = Marker {
            at_ms: unix_millis(),
            kind: MarkerKind::MoveFailed,
            node: from.to_string(),
            job: Some(job.to_string()),
            from: Some(from.to_string()),
            text: format!("job {job} did not move to {to}: {why}"),
        };
        let mut s = self.lock();
        s.counters.count(std::slice::from_ref(&m));
        s.history.mark([m]);
        self.publish(&mut s, unix_millis());
    }

    /// Takes the cluster's status now.
    pub fn status_now(&self, status: ClusterStatus) {
        let now = unix_millis();
        let mut s = self.lock();
        let markers = match &s.status {
            Some(old) => board::node_markers(old, &status, now),
            None => Vec::new(),
        };
        s.counters.count(&markers);
        s.history.mark(markers);
        s.history.sample(now / 1000, &status);
        s.status = Some(status);
        self.publish(&mut s, now);
    }

    /// Takes the job table now.
    pub fn jobs_now(&self, jobs: Vec<JobInfo>) {
        let now = unix_millis();
        let mut s = self.lock();
        let markers = board::job_markers(&s.jobs, &jobs, now);
        s.counters.count(&markers);
        s.history.mark(markers);
        s.history.jobs(now, &jobs);
        if jobs != s.jobs {
            s.jobs_seq += 1;
            s.jobs = jobs;
        }
        self.publish(&mut s, now);
    }

    /// Takes what the boot server said now.
    pub fn machines_now(&self, boot: Result<crate::boot::BootPicture, String>) {
        let now = unix_millis();
        let mut s = self.lock();
        s.machines = Some(boot.map(|p| crate::boot::machines(&p)));
        self.publish(&mut s, now);
    }

    /// A new board from the tables, to every watcher.
    fn publish(&self, s: &mut Inner, now: u64) {
        let Some(status) = s.status.clone() else {
            return;
        };
        s.seq += 1;
        let board = Board {
            seq: s.seq,
            at_ms: now,
            efficiency: board::efficiency(&status),
            status,
            jobs: s.jobs.clone(),
            jobs_seq: s.jobs_seq,
            markers: s.history.last_markers(BOARD_MARKERS),
            machines: s.machines.clone().unwrap_or_else(|| Err(NOT_ASKED.into())),
        };
        self.board.send_replace(Arc::new(board));
    }

    /// Keeps the store current from `cluster` until `stop`.
    pub async fn refresh<C: Cluster>(&self, cluster: C, stop: CancellationToken) {
        let mut nudges = cluster.nudges();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut jobs_at: Option<Instant> = None;
        let mut machines_at: Option<Instant> = None;
        let mut due: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    self.status_now(cluster.status());
                    if jobs_at.is_none_or(|t| t.elapsed() >= JOBS_EVERY) {
                        self.want_jobs.store(true, Ordering::Relaxed);
                        due.get_or_insert_with(Instant::now);
                    }
                    if machines_at.is_none_or(|t| t.elapsed() >= MACHINES_EVERY) {
                        machines_at = Some(Instant::now());
                        match stop.run_until_cancelled(cluster.boot()).await {
                            Some(b) => self.machines_now(b),
                            None => break,
                        }
                    }
                }
                n = nudges.next() => match n {
                    Some(what) => {
                        if what == Nudge::Jobs {
                            self.want_jobs.store(true, Ordering::Relaxed);
                        }
                        due.get_or_insert_with(|| Instant::now() + COALESCE);
                    }
                    // The agent is going away; the tick and `stop` go on.
                    None => nudges = futures::stream::pending().boxed(),
                },
                () = self.poke.notified() => {
                    due.get_or_insert_with(|| Instant::now() + COALESCE);
                }
                () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                    due = None;
                    self.status_now(cluster.status());
                    if self.want_jobs.swap(false, Ordering::Relaxed) {
                        match stop.run_until_cancelled(cluster.jobs()).await {
                            Some(jobs) => self.jobs_now(jobs),
                            None => break,
                        }
                        jobs_at = Some(Instant::now());
                    }
                }
            }
        }
    }
}
