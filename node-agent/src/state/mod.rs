//! The node's state, with one owner ([`State`]): the jobs running here and
//! the driver each listens on for migration orders, the jobs launched from
//! here, the moves (parked restores waiting for their home, the ledger of
//! attempts, the last minute's moves), the knobs, CRIU's verdict, the
//! demand the balancer measured, and the membership view ([`View`]).
//!
//! Its lock stays behind its methods, which never await: no task can hold
//! it across an `.await` (`clippy::await_holding_lock` agrees). Readers get
//! snapshots (copies); every change that a watcher would show is published
//! on a stream ([`State::subscribe`], a `broadcast` of [`Change`]), which
//! `omctl mon`-style views, the web view and a metrics endpoint follow.
//!
//! - `view`: the membership view (members, their loads, our placements).
//! - `ledger`: the source's record of each migration attempt (pending,
//!   committed, kept), settled once.

mod ledger;
mod view;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::balance::Knobs;
use crate::load::LoadVector;
use crate::membership::{Membership, NodeId};
use crate::stream::SecureStream;
use crate::wire::{JobInfo, MigrateDone, MigrateOrder};

pub use ledger::{Ledger, Settled};
pub use view::{NodeState, View};

/// How many changes a slow watcher may fall behind before it misses some
/// (it is told: `RecvError::Lagged`).
const CHANGE_BACKLOG: usize = 1024;
/// How long a move counts in the last minute's moves.
const MOVE_WINDOW: Duration = Duration::from_secs(60);

/// The result of a migration as the requester gets it.
pub type MigrateResult = Result<MigrateDone, (i32, String)>;

/// What the driver of a job running here is asked, one at a time (so an
/// order never lands in the middle of a move).
#[derive(Debug)]
pub enum DriverCmd {
    /// Move the job.
    Move(MigrateCmd),
    /// Signal or renice it.
    Steer(SteerCmd),
}

/// No driver listens for the job: it does not run here (or just ended).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRunning;

/// The outcome of a [`SteerCmd`]: one line, or (exit status, why).
pub type SteerResult = Result<String, (i32, String)>;

/// A signal or nice value for the driver of a job running here (see
/// [`State::order_steer`]).
#[derive(Debug)]
pub struct SteerCmd {
    /// What to do.
    pub order: agent_control::steer::JobOrder,
    /// Who asks.
    pub uid: u32,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<SteerResult>,
}

/// A migration order for the driver of a job running here (see
/// [`State::order_move`]).
#[derive(Debug)]
pub struct MigrateCmd {
    /// The order.
    pub order: MigrateOrder,
    /// Where the outcome goes.
    pub reply: oneshot::Sender<MigrateResult>,
}

/// Whether CRIU works here: unknown until the probe at start has run.
pub type Criu = Option<Result<(), String>>;

/// One change to the node's state, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A job started running here.
    JobStarted(JobInfo),
    /// A job moved in and runs here now.
    JobArrived(JobInfo),
    /// A job running here moved away to `to`.
    JobLeft {
        /// The job.
        job: String,
        /// Where it runs now.
        to: String,
    },
    /// A job running here ended.
    JobEnded {
        /// The job.
        job: String,
    },
    /// A job running here was stopped by its owner (`why` says so and it
    /// stays put) or let go on (`None`).
    JobHeld {
        /// The job.
        job: String,
        /// Why it cannot move now.
        why: Option<String>,
    },
    /// A job launched from here was placed on `node`.
    Launched {
        /// The job.
        job: String,
        /// Where it was sent.
        node: String,
    },
    /// A job launched from here runs on `node` now (it started or moved).
    LaunchRuns {
        /// The job.
        job: String,
        /// Where it runs.
        node: String,
    },
    /// A job launched from here ended (or was lost).
    LaunchEnded {
        /// The job.
        job: String,
    },
    /// The knobs changed.
    Knobs(Knobs),
    /// The CPU quota of cluster jobs changed (percent).
    Quota(u32),
    /// The node's calibrated speed went up (a quieter measurement).
    Speed(f32),
    /// The CRIU probe gave its verdict.
    Criu(Result<(), String>),
    /// A member's liveness changed (or it appeared).
    Member {
        /// Its name.
        name: String,
        /// Its liveness now.
        state: NodeState,
    },
    /// A node's load vector arrived.
    Load {
        /// The node.
        node: String,
        /// Its job counts changed: a job started, ended or moved there.
        jobs_changed: bool,
    },
}

/// What the owner guards.
#[derive(Debug)]
struct Inner {
    running: BTreeMap<String, JobInfo>,
    started: u64,
    drivers: HashMap<String, mpsc::Sender<DriverCmd>>,
    launched: BTreeMap<String, JobInfo>,
    parked: HashMap<String, oneshot::Sender<SecureStream>>,
    ledger: Ledger,
    attempts: u64,
    moves: VecDeque<(Instant, bool)>,
    knobs: Knobs,
    quota: u32,
    speed: f32,
    criu: Criu,
    demand: Option<f32>,
    view: View,
}

/// The node's state and its change stream; cheap to clone (one owner,
/// many handles).
#[derive(Debug, Clone)]
pub struct State {
    inner: Arc<Mutex<Inner>>,
    changes: broadcast::Sender<Change>,
}

impl State {
    /// The state of node `me` in `cluster`: no jobs, no moves, `knobs`,
    /// no CPU quota, CRIU not probed yet.
    pub fn new(cluster: String, me: NodeId, knobs: Knobs) -> Self {
        State {
            inner: Arc::new(Mutex::new(Inner {
                running: BTreeMap::new(),
                started: 0,
                drivers: HashMap::new(),
                launched: BTreeMap::new(),
                parked: HashMap::new(),
                ledger: Ledger::default(),
                attempts: 0,
                moves: VecDeque::new(),
                knobs,
                quota: 100,
                speed: 0.0,
                criu: None,
                demand: None,
                view: View::new(cluster, me),
            })),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
        }
    }

    /// Every change from now on, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug that already ended a
        // task; the data is still consistent (every method's changes are
        // applied before anything can panic), so go on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes changes made under the lock, after it is released.
    fn publish(&self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            // Nobody watching is fine.
            let _ = self.changes.send(c);
        }
    }

    // --- Jobs running here -------------------------------------------------

    /// A job runs here now, driven by the task listening on `driver`
    /// (`arrived`: it moved in). Returns its sequence number among the jobs
    /// started here (a load vector's `started` counts it from then on).
    pub fn job_runs(&self, info: JobInfo, driver: mpsc::Sender<DriverCmd>, arrived: bool) -> u64 {
        let seq = {
            let mut s = self.lock();
            s.drivers.insert(info.job.clone(), driver);
            s.running.insert(info.job.clone(), info.clone());
            s.started += 1;
            s.started
        };
        self.publish([if arrived {
            Change::JobArrived(info)
        } else {
            Change::JobStarted(info)
        }]);
        seq
    }

    /// A job no longer runs here: it ended, or moved to `moved_to`.
    pub fn job_gone(&self, job: &str, moved_to: Option<String>) {
        {
            let mut s = self.lock();
            s.drivers.remove(job);
            s.parked.remove(job);
            s.running.remove(job);
        }
        self.publish([match moved_to {
            Some(to) => Change::JobLeft {
                job: job.to_string(),
                to,
            },
            None => Change::JobEnded {
                job: job.to_string(),
            },
        }]);
    }

    /// A job running here, as it is now.
    pub fn job(&self, job: &str) -> Option<JobInfo> {
        self.lock().running.get(job).cloned()
    }

    /// The jobs running here, as they are recorded.
    pub fn jobs(&self) -> Vec<JobInfo> {
        self.lock().running.values().cloned().collect()
    }

    /// The jobs running here as `ps` shows them: a job that could move but
    /// sits on a node where CRIU does not work says so.
    pub fn jobs_here(&self) -> Vec<JobInfo> {
        let s = self.lock();
        let why = match &s.criu {
            Some(Ok(())) => None,
            Some(Err(e)) => Some(format!("this node cannot checkpoint jobs: {e}")),
            None => Some("this node is still checking CRIU".to_string()),
        };
        s.running
            .values()
            .map(|j| {
                let mut j = j.clone();
                if j.cantmove.is_none() {
                    j.cantmove.clone_from(&why);
                }
                j
            })
            .collect()
    }

    /// (jobs running, jobs ever started), read together: every job counted
    /// in the second and still running is counted in the first.
    pub fn job_counts(&self) -> (u32, u64) {
        let s = self.lock();
        (s.running.len() as u32, s.started)
    }

    /// Jobs running here whose home is another node than `me`.
    pub fn guests(&self, me: &str) -> u32 {
        self.lock()
            .running
            .values()
            .filter(|j| j.home != me)
            .count() as u32
    }

    /// Hands a migration order to the driver of `job`; `Err` when no
    /// driver listens (the job is not running here, or just ended).
    pub async fn order_move(&self, job: &str, cmd: MigrateCmd) -> Result<(), NotRunning> {
        self.order(job, DriverCmd::Move(cmd)).await
    }

    /// Hands a signal or nice value to the driver of `job`; `Err` when no
    /// driver listens.
    pub async fn order_steer(&self, job: &str, cmd: SteerCmd) -> Result<(), NotRunning> {
        self.order(job, DriverCmd::Steer(cmd)).await
    }

    async fn order(&self, job: &str, cmd: DriverCmd) -> Result<(), NotRunning> {
        let driver = self.lock().drivers.get(job).cloned().ok_or(NotRunning)?;
        driver.send(cmd).await.map_err(|_| NotRunning)
    }

    /// What job `job` used lately, as the balancer measured it.
    pub fn set_usage(&self, job: &str, usage: agent_control::model::JobUsage) {
        if let Some(j) = self.lock().running.get_mut(job) {
            j.usage = Some(usage);
        }
    }

    /// Job `job` was stopped by its owner and cannot move (`why`), or was
    /// let go on (`None`).
    pub fn hold(&self, job: &str, why: Option<String>) {
        {
            let mut s = self.lock();
            let Some(j) = s.running.get_mut(job) else {
                return;
            };
            j.cantmove.clone_from(&why);
        }
        self.publish([Change::JobHeld {
            job: job.to_string(),
            why,
        }]);
    }

    // --- Moves -------------------------------------------------------------

    /// A restored job waits here for its home node to attach (`Attach`).
    pub fn park(&self, job: &str, attach: oneshot::Sender<SecureStream>) {
        self.lock().parked.insert(job.to_string(), attach);
    }

    /// The restored job `job` stops waiting; where its home attaches, if it
    /// still waits.
    pub fn unpark(&self, job: &str) -> Option<oneshot::Sender<SecureStream>> {
        self.lock().parked.remove(job)
    }

    /// Numbers a new migration attempt sourced here.
    pub fn next_attempt(&self) -> u64 {
        let mut s = self.lock();
        s.attempts += 1;
        s.attempts
    }

    /// Runs `f` on the ledger of the attempts sourced here. `f` cannot
    /// await: the ledger's decisions are made whole, under the lock.
    pub fn ledger<R>(&self, f: impl FnOnce(&mut Ledger) -> R) -> R {
        f(&mut self.lock().ledger)
    }

    /// Notes a job that moved in (`inward`) or out just now.
    pub fn note_move(&self, inward: bool) {
        let mut s = self.lock();
        s.moves.push_back((Instant::now(), inward));
        while s
            .moves
            .front()
            .is_some_and(|(t, _)| t.elapsed() > MOVE_WINDOW)
        {
            s.moves.pop_front();
        }
    }

    /// Jobs that moved (in, out) during the last minute.
    pub fn moves_last_minute(&self) -> (u32, u32) {
        let s = self.lock();
        s.moves
            .iter()
            .filter(|(t, _)| t.elapsed() <= MOVE_WINDOW)
            .fold(
                (0, 0),
                |(i, o), (_, inward)| {
                    if *inward {
                        (i + 1, o)
                    } else {
                        (i, o + 1)
                    }
                },
            )
    }

    // --- Knobs, CRIU, demand -------------------------------------------------

    /// The knobs now.
    pub fn knobs(&self) -> Knobs {
        self.lock().knobs
    }

    /// Turns the knob `name` on or off; `false` if there is none of that
    /// name.
    pub fn set_knob(&self, name: &str, on: bool) -> bool {
        let (known, knobs) = {
            let mut s = self.lock();
            let known = s.knobs.set(name, on);
            (known, s.knobs)
        };
        if known {
            self.publish([Change::Knobs(knobs)]);
        }
        known
    }

    /// The share of the CPUs cluster jobs may use here, percent.
    pub fn quota(&self) -> u32 {
        self.lock().quota
    }

    /// Records a new quota (the job cgroup has it already).
    pub fn set_quota(&self, percent: u32) {
        let changed = {
            let mut s = self.lock();
            std::mem::replace(&mut s.quota, percent) != percent
        };
        if changed {
            self.publish([Change::Quota(percent)]);
        }
    }

    /// This node's relative speed (0 until calibrated).
    pub fn speed(&self) -> f32 {
        self.lock().speed
    }

    /// Takes `speed` if it is higher than the one known: a calibration
    /// can only be slowed by whatever else runs, never sped up, so the
    /// fastest measurement is the truest. Whether it was taken.
    pub fn raise_speed(&self, speed: f32) -> bool {
        let raised = {
            let mut s = self.lock();
            let raised = speed.is_finite() && speed > s.speed;
            if raised {
                s.speed = speed;
            }
            raised
        };
        if raised {
            self.publish([Change::Speed(speed)]);
        }
        raised
    }

    /// CRIU's verdict here, once the probe has run.
    pub fn criu(&self) -> Criu {
        self.lock().criu.clone()
    }

    /// Records the CRIU probe's verdict.
    pub fn set_criu(&self, verdict: Result<(), String>) {
        self.lock().criu = Some(verdict.clone());
        self.publish([Change::Criu(verdict)]);
    }

    /// CPUs wanted here, as the balancer last measured them.
    pub fn demand(&self) -> Option<f32> {
        self.lock().demand
    }

    /// Records the balancer's measurement (not published: it changes every
    /// sample and rides in the load vector).
    pub fn set_demand(&self, demand: f32) {
        self.lock().demand = Some(demand);
    }

    // --- Jobs launched from here ---------------------------------------------

    /// A job launched from here, placed on `info.node`, not started yet.
    pub fn launch(&self, info: JobInfo) {
        let change = Change::Launched {
            job: info.job.clone(),
            node: info.node.clone(),
        };
        {
            let mut s = self.lock();
            s.view.place(&info.node, &info.job);
            s.launched.insert(info.job.clone(), info);
        }
        self.publish([change]);
    }

    /// The job launched from here started on `node` as `pid`, the `seq`th
    /// job started there; `placed_on` is where it was sent.
    pub fn launch_started(&self, job: &str, placed_on: &str, node: &str, pid: u32, seq: u64) {
        {
            let mut s = self.lock();
            if node == placed_on {
                s.view.started(placed_on, job, seq);
            }
            if let Some(j) = s.launched.get_mut(job) {
                j.pid = Some(pid);
            }
        }
        self.publish([Change::LaunchRuns {
            job: job.to_string(),
            node: node.to_string(),
        }]);
    }

    /// The job launched from here moved to `node`.
    pub fn launch_moved(&self, job: &str, node: &str) {
        {
            let mut s = self.lock();
            if let Some(j) = s.launched.get_mut(job) {
                j.node = node.to_string();
                j.moves += 1;
            }
        }
        self.publish([Change::LaunchRuns {
            job: job.to_string(),
            node: node.to_string(),
        }]);
    }

    /// The job launched from here, placed on `placed_on`, ended.
    pub fn launch_ended(&self, job: &str, placed_on: &str) {
        {
            let mut s = self.lock();
            s.launched.remove(job);
            s.view.ended(placed_on, job);
        }
        self.publish([Change::LaunchEnded {
            job: job.to_string(),
        }]);
    }

    /// The jobs launched from here that have not ended.
    pub fn launched(&self) -> Vec<JobInfo> {
        self.lock().launched.values().cloned().collect()
    }

    // --- The membership view -------------------------------------------------

    /// A snapshot of the membership view.
    pub fn view(&self) -> View {
        self.lock().view.clone()
    }

    /// This node's identity.
    pub fn me(&self) -> NodeId {
        self.lock().view.me().clone()
    }

    /// Records a load vector heard from `id`.
    pub fn heard(&self, id: NodeId, load: LoadVector) {
        let node = id.name.clone();
        let jobs_changed = self.lock().view.heard(id, load);
        self.publish([Change::Load { node, jobs_changed }]);
    }

    /// Copies membership's member states into the view; publishes the
    /// members whose liveness changed.
    pub fn refresh(&self, membership: &Membership) {
        let changed: Vec<Change> = {
            let mut s = self.lock();
            let before = s.view.members();
            s.view.refresh(membership);
            s.view
                .members()
                .into_iter()
                .filter(|m| !before.contains(m))
                .map(|(name, state)| Change::Member { name, state })
                .collect()
        };
        self.publish(changed);
    }

    /// This node is `me` again, a new incarnation after a rejoin.
    pub fn rejoined(&self, me: NodeId) {
        self.lock().view.rejoined(me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> NodeId {
        NodeId {
            name: "a".into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            started_ms: 1,
            bump: 0,
        }
    }

    fn info(job: &str, node: &str) -> JobInfo {
        JobInfo {
            job: job.into(),
            argv: vec!["sleep".into(), "9".into()],
            uid: 1000,
            node: node.into(),
            home: "a".into(),
            pid: None,
            started_ms: 1,
            moves: 0,
            cantmove: None,
            since_ms: 1,
            usage: None,
        }
    }

    fn drain(rx: &mut broadcast::Receiver<Change>) -> Vec<Change> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_job_started_moved_and_ended_is_published_in_order() {
        let state = State::new("c".into(), me(), Knobs::default());
        let mut rx = state.subscribe();

        // Launched here, it starts on this node, moves to b, and ends there.
        state.launch(info("a-1", "a"));
        let (driver, mut orders) = mpsc::channel(1);
        let seq = state.job_runs(info("a-1", "a"), driver, false);
        state.launch_started("a-1", "a", "a", 42, seq);
        assert_eq!(state.job_counts(), (1, 1));
        state.job_gone("a-1", Some("b".into()));
        state.note_move(false);
        state.launch_moved("a-1", "b");
        state.launch_ended("a-1", "a");

        assert_eq!(
            drain(&mut rx),
            vec![
                Change::Launched {
                    job: "a-1".into(),
                    node: "a".into()
                },
                Change::JobStarted(info("a-1", "a")),
                Change::LaunchRuns {
                    job: "a-1".into(),
                    node: "a".into()
                },
                Change::JobLeft {
                    job: "a-1".into(),
                    to: "b".into()
                },
                Change::LaunchRuns {
                    job: "a-1".into(),
                    node: "b".into()
                },
                Change::LaunchEnded { job: "a-1".into() },
            ]
        );
        assert_eq!(state.job_counts(), (0, 1));
        assert_eq!(state.moves_last_minute(), (0, 1));
        assert!(state.launched().is_empty());
        // Its driver is gone with it: an order finds nobody.
        let (reply, _) = oneshot::channel();
        let order = MigrateOrder {
            job: "a-1".into(),
            to: "b".into(),
            to_addr: "10.0.0.2:7946".parse().unwrap(),
            uid: 0,
        };
        assert!(state
            .order_move("a-1", MigrateCmd { order, reply })
            .await
            .is_err());
        assert!(orders.try_recv().is_err());
    }

    #[tokio::test]
    async fn an_order_reaches_the_driver_of_a_running_job() {
        let state = State::new("c".into(), me(), Knobs::default());
        let (driver, mut orders) = mpsc::channel(1);
        state.job_runs(info("a-2", "a"), driver, true);
        let (reply, _) = oneshot::channel();
        let order = MigrateOrder {
            job: "a-2".into(),
            to: "b".into(),
            to_addr: "10.0.0.2:7946".parse().unwrap(),
            uid: 0,
        };
        state
            .order_move("a-2", MigrateCmd { order, reply })
            .await
            .unwrap();
        match orders.recv().await.unwrap() {
            DriverCmd::Move(m) => assert_eq!(m.order.to, "b"),
            other => panic!("{other:?}"),
        }
        let (reply, _) = oneshot::channel();
        let steer = SteerCmd {
            order: agent_control::steer::JobOrder::Signal(19),
            uid: 0,
            reply,
        };
        state.order_steer("a-2", steer).await.unwrap();
        assert!(matches!(orders.recv().await, Some(DriverCmd::Steer(_))));
        let (reply, _) = oneshot::channel();
        let lost = SteerCmd {
            order: agent_control::steer::JobOrder::Renice(1),
            uid: 0,
            reply,
        };
        assert_eq!(state.order_steer("zz-9", lost).await, Err(NotRunning));
    }

    #[test]
    fn a_stopped_job_is_held_and_the_hold_published() {
        let state = State::new("c".into(), me(), Knobs::default());
        let (driver, _orders) = mpsc::channel(1);
        state.job_runs(info("a-3", "a"), driver, false);
        let mut rx = state.subscribe();
        state.hold("a-3", Some("stopped".into()));
        assert_eq!(
            state.job("a-3").unwrap().cantmove.as_deref(),
            Some("stopped")
        );
        assert_eq!(
            rx.try_recv().unwrap(),
            Change::JobHeld {
                job: "a-3".into(),
                why: Some("stopped".into())
            }
        );
        state.hold("a-3", None);
        assert_eq!(state.job("a-3").unwrap().cantmove, None);
    }

    #[test]
    fn the_speed_only_goes_up_and_each_rise_is_published() {
        let state = State::new("c".into(), me(), Knobs::default());
        let mut rx = state.subscribe();
        assert!(state.raise_speed(0.2));
        assert!(!state.raise_speed(0.1), "a slower measurement is noise");
        assert!(!state.raise_speed(f32::NAN));
        assert!(state.raise_speed(0.8));
        assert_eq!(state.speed(), 0.8);
        assert_eq!(rx.try_recv().unwrap(), Change::Speed(0.2));
        assert_eq!(rx.try_recv().unwrap(), Change::Speed(0.8));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn knobs_and_criu_are_published_and_unknown_knobs_are_not() {
        let state = State::new("c".into(), me(), Knobs::default());
        let mut rx = state.subscribe();
        assert!(state.set_knob("block", true));
        assert!(!state.set_knob("fast", true));
        state.set_criu(Err("no criu".into()));
        let knobs = Knobs {
            block: true,
            ..Knobs::default()
        };
        assert_eq!(
            drain(&mut rx),
            vec![Change::Knobs(knobs), Change::Criu(Err("no criu".into()))]
        );
        assert_eq!(state.jobs_here(), Vec::<JobInfo>::new(), "no job yet");
    }
}
