//! The control socket server: accepts `omctl`'s connections until shutdown,
//! each in a task of its own, and answers its one request ([`Controller`]):
//! `status` from the view, `ps` from the job tables (`ps --cluster` asks
//! every live node), `run`, which places the job ([`crate::placement`]) and
//! relays it ([`exec::relay`]), `migrate`, `knob` (in `admin`) and
//! `admission` (relayed to the boot server, in `admission`).

use contracts::clock::unix_millis;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admission;
use super::local_load::LocalLoad;
use crate::exec::target::steer;
use crate::exec::{self, RelayEnd, RelayEvent};
use crate::membership::NodeId;
use crate::placement;
use crate::state::State;
use crate::wire::{
    ClusterStatus, ExecRequest, HomeFrame, JobInfo, MigrateDone, MigrateOrder, RunRequest,
    SteerOrder,
};
use agent_control::protocol::{self, Hello};
use agent_control::steer::JobOrder;
use agent_control::{ControlReply, ControlRequest};

/// Accepts control connections until `stop`, then waits for the open ones,
/// which `stop` ends too.
pub(super) async fn serve(listener: UnixListener, ctl: Controller, stop: CancellationToken) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => match r {
                Ok((stream, _)) => {
                    let (ctl, stop) = (ctl.clone(), stop.clone());
                    conns.spawn(async move {
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => {}
                            () = ctl.handle(stream) => {}
                        }
                    });
                }
                Err(e) => {
                    warn!(cause = %e, "control accept failed");
                    stop.run_until_cancelled(tokio::time::sleep(Duration::from_millis(100))).await;
                }
            },
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Answers requests on the control socket; one clone per connection.
#[derive(Clone)]
pub(super) struct Controller {
    /// The node's state (the same as the exec side's).
    pub(super) state: State,
    /// Our load, and the jobs running here.
    pub(super) load: LocalLoad,
    /// Nodes membership declared dead (a relay to one gives up).
    pub(super) down: broadcast::Sender<NodeId>,
    /// The cluster keys.
    pub(super) keys: crate::keys::Keys,
    /// Numbers the jobs launched from here.
    pub(super) counter: Arc<AtomicU64>,
    /// Where admission requests go (from `--checkin`).
    pub(super) boot_server: Option<admission::BootServer>,
    /// The web view's login links (with `--web`).
    pub(super) web: Option<web_view::Gate>,
    /// Where a power off (`false`) or reboot (`true`) goes, once asked for
    /// and allowed (see [`super::admin::power`]).
    pub(super) power: mpsc::Sender<bool>,
}

impl Controller {
    /// The cluster as `omctl status` shows it.
    pub(super) fn status(&self) -> ClusterStatus {
        let local = self.load.sample();
        self.state.view().status(local)
    }

    /// Jobs running here and jobs launched from here.
    fn jobs(&self) -> Vec<JobInfo> {
        let mut all = self.state.jobs_here();
        for j in self.state.launched() {
            if !all.iter().any(|x| x.job == j.job) {
                all.push(j);
            }
        }
        all.sort_by(|a, b| a.job.cmp(&b.job));
        all
    }

    /// Jobs of every live node: ours, and each other node's answer to `Ps`
    /// (asked in parallel; a node that does not answer is left out).
    pub(super) async fn cluster_jobs(&self) -> Vec<JobInfo> {
        let peers = self.state.view().live_peers();
        let stream_key = self.keys.stream();
        let asks = peers
            .iter()
            .map(|id| exec::remote_jobs(id.addr, &stream_key));
        let mut all = self.jobs();
        for jobs in futures::future::join_all(asks).await.into_iter().flatten() {
            for j in jobs {
                // The target's entry (with its pid) replaces our launch record.
                all.retain(|x| x.job != j.job);
                all.push(j);
            }
        }
        all.sort_by(|a, b| a.job.cmp(&b.job));
        all
    }

    /// Answers the one request of a control connection, after the hellos.
    async fn handle(self, stream: UnixStream) {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(cause = %e, "no peer credentials on control connection");
                return;
            }
        };
        let (mut rd, mut wr) = stream.into_split();
        if let Err(e) = protocol::answer(&mut rd, &mut wr, &Hello::ours()).await {
            warn!(cause = %e, "control caller refused");
            return;
        }
        let first = match protocol::read::<ControlRequest, _>(&mut rd).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                debug!(cause = %e, "unreadable control request");
                return;
            }
        };
        let failed = |(code, message)| ControlReply::Failed { code, message };
        let reply = match first {
            ControlRequest::Status => ControlReply::Status(self.status()),
            ControlRequest::Ps => ControlReply::Ps(self.jobs()),
            ControlRequest::PsCluster => ControlReply::Ps(self.cluster_jobs().await),
            ControlRequest::Migrate { job, to } => self
                .migrate(&job, &to, cred.uid())
                .await
                .map_or_else(failed, ControlReply::Migrated),
            ControlRequest::Knob { node, action } => self
                .knob(node, action, cred.uid())
                .await
                .map_or_else(failed, ControlReply::KnobDone),
            ControlRequest::Steer { job, order } => self
                .steer(&job, order, cred.uid())
                .await
                .map_or_else(failed, ControlReply::Steered),
            ControlRequest::Admission { verdict } => {
                match admission::for_caller(self.boot_server.as_ref(), cred.uid()) {
                    Ok(server) => server
                        .admission(verdict)
                        .await
                        .map_or_else(failed, ControlReply::AdmissionDone),
                    Err(e) => failed(e),
                }
            }
            ControlRequest::Key { rotate } => self
                .key(rotate, cred.uid())
                .await
                .map_or_else(failed, ControlReply::KeyDone),
            ControlRequest::Token { ttl_s, uses } => {
                match admission::for_caller(self.boot_server.as_ref(), cred.uid()) {
                    Ok(server) => server.token(ttl_s, uses).await.unwrap_or_else(failed),
                    Err(e) => failed(e),
                }
            }
            ControlRequest::Web { read_only } => {
                self.web_link(read_only, cred.uid())
                    .map_or_else(failed, |(url, access)| ControlReply::WebLink {
                        url,
                        access,
                    })
            }
            ControlRequest::Run(req) => return self.run_for(req, cred, rd, wr).await,
            ControlRequest::Stdin(_) | ControlRequest::StdinEof | ControlRequest::Signal(_) => {
                failed((
                    exec::EXIT_NO_AGENT,
                    "job input before a job: a connection opens with its request".into(),
                ))
            }
        };
        let _ = protocol::write(&mut wr, &reply).await;
    }

    /// `omctl run`: relays the caller's input to the job and the job's
    /// output and end back, until it ends or the caller goes away. The
    /// input reader and the reply writer are tasks of this call.
    async fn run_for(
        &self,
        req: RunRequest,
        cred: tokio::net::unix::UCred,
        mut rd: OwnedReadHalf,
        mut wr: OwnedWriteHalf,
    ) {
        let mut tasks = JoinSet::new();
        let (input_tx, input_rx) = mpsc::channel::<HomeFrame>(64);
        tasks.spawn(async move {
            // Ends at the caller's end of stream or first bad frame, which
            // drops `input_tx`: the relay then takes the caller as gone.
            while let Ok(Some(r)) = protocol::read::<ControlRequest, _>(&mut rd).await {
                let input = match r {
                    ControlRequest::Stdin(b) => HomeFrame::Stdin(b),
                    ControlRequest::StdinEof => HomeFrame::StdinEof,
                    ControlRequest::Signal(s) => HomeFrame::Signal(s),
                    other @ (ControlRequest::Status
                    | ControlRequest::Ps
                    | ControlRequest::PsCluster
                    | ControlRequest::Run(_)
                    | ControlRequest::Migrate { .. }
                    | ControlRequest::Knob { .. }
                    | ControlRequest::Steer { .. }
                    | ControlRequest::Admission { .. }
                    | ControlRequest::Token { .. }
                    | ControlRequest::Key { .. }
                    | ControlRequest::Web { .. }) => {
                        debug!(request = ?other, "ignored a second request during a job");
                        continue;
                    }
                };
                if input_tx.send(input).await.is_err() {
                    break;
                }
            }
        });
        let (reply_tx, mut reply_rx) = mpsc::channel::<ControlReply>(64);
        let writer = async move {
            while let Some(r) = reply_rx.recv().await {
                if protocol::write(&mut wr, &r).await.is_err() {
                    break;
                }
            }
        };
        // Ends by dropping `reply_tx`, which ends the writer.
        let job = async move {
            let end = self
                .run(req, cred.uid(), cred.gid(), input_rx, reply_tx.clone())
                .await;
            let last = match end {
                RelayEnd::Exit(e) => Some(ControlReply::Exit(e)),
                RelayEnd::Failed(code, message) => Some(ControlReply::Failed { code, message }),
                RelayEnd::CallerGone => None,
            };
            if let Some(r) = last {
                let _ = reply_tx.send(r).await;
            }
        };
        tokio::join!(writer, job);
    }

    /// A login link to the web view for the caller `uid`: one that steers
    /// for root, one that only looks for anyone.
    fn web_link(&self, read_only: bool, uid: u32) -> Result<(String, String), (i32, String)> {
        let Some(gate) = &self.web else {
            return Err((
                exec::EXIT_NO_AGENT,
                "this agent serves no web view (start it with --web ADDR:PORT; the head's does on port 7947)".into(),
            ));
        };
        let access = if read_only {
            web_view::Access::Read
        } else if uid == 0 {
            web_view::Access::Steer
        } else {
            return Err((
                exec::EXIT_NO_PERMISSION,
                "a link that can steer the cluster takes root; omctl web --read-only makes one that only looks".into(),
            ));
        };
        Ok((gate.login_url(access), access.as_str().to_string()))
    }

    /// Moves the job `what` (id, or pid as `ps` shows it) to `to` (a node,
    /// `home` or `best`) for the caller `uid`.
    pub(super) async fn migrate(
        &self,
        what: &str,
        to: &str,
        uid: u32,
    ) -> Result<MigrateDone, (i32, String)> {
        let bad = |m: String| (exec::EXIT_CANNOT_RUN, m);
        let job = &self.find_job(what).await?;
        if uid != 0 && uid != job.uid {
            return Err((
                exec::EXIT_NO_PERMISSION,
                format!(
                    "job {} belongs to uid {}; only its owner or root may move it",
                    job.job, job.uid
                ),
            ));
        }
        let local = self.load.sample();
        let (source, target) = {
            let v = self.state.view();
            let known = v.known();
            let source = placement::named(&known, &job.node)
                .cloned()
                .ok_or_else(|| {
                    bad(format!(
                        "node {} running job {} is not alive",
                        job.node, job.job
                    ))
                })?;
            let target = match to {
                "home" => placement::named(&known, &job.home)
                    .cloned()
                    .ok_or_else(|| {
                        bad(format!(
                            "job {}'s home node {} is not alive",
                            job.job, job.home
                        ))
                    })?,
                "best" => {
                    let c = placement::candidates(&v.me().name, &local, &known, job.uid == 0);
                    placement::best_elsewhere(&c, &job.node)
                        .ok_or_else(|| bad(format!("no other node can take job {}", job.job)))?
                }
                name => placement::named(&known, name)
                    .cloned()
                    .ok_or_else(|| bad(format!("no live node matches {name}")))?,
            };
            (source, target)
        };
        if target.name == job.node {
            return Err(bad(format!(
                "job {} already runs on node {}",
                job.job, job.node
            )));
        }
        let (fresh, me) = {
            let v = self.state.view();
            (v.fresh_peers(Duration::from_secs(3)), v.me().name.clone())
        };
        let vector = |name: &str| {
            if name == me {
                return Some(local.clone());
            }
            fresh
                .iter()
                .find(|(id, _)| id.name == name)
                .map(|(_, l)| l.clone())
        };
        let (from, to) = (vector(&source.name), vector(&target.name));
        if to.as_ref().is_some_and(|l| l.knobs.block) && job.home != target.name {
            return Err(bad(format!(
                "node {} accepts no guest jobs (block)",
                target.name
            )));
        }
        let features = |l: Option<crate::load::LoadVector>| l.map(|l| l.cpu_features);
        if let Some(why) = crate::cpu::refusal(
            &source.name,
            features(from).unwrap_or_default(),
            &target.name,
            features(to).unwrap_or_default(),
        ) {
            return Err(bad(format!("job {} cannot move: {why}", job.job)));
        }
        info!(job = %job.job, from = %source.name, to = %target.name, uid, "ordering a migration");
        exec::order_migration(
            &source,
            &self.keys.stream(),
            MigrateOrder {
                job: job.job.clone(),
                to: target.name.clone(),
                to_addr: target.addr,
                uid,
            },
        )
        .await
    }

    /// The running job `what` names (its id, or a pid `ps` shows).
    async fn find_job(&self, what: &str) -> Result<JobInfo, (i32, String)> {
        let bad = |m: String| (exec::EXIT_CANNOT_RUN, m);
        let jobs = self.cluster_jobs().await;
        let found: Vec<&JobInfo> = jobs
            .iter()
            .filter(|j| j.job == what || j.pid.is_some_and(|p| p.to_string() == what))
            .collect();
        match found.as_slice() {
            [] => Err(bad(format!("no running job {what} (see omctl ps --all)"))),
            [one] => Ok((*one).clone()),
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|j| format!("{} on {}", j.job, j.node))
                    .collect();
                Err(bad(format!(
                    "pid {what} names several jobs ({}); name the job",
                    names.join(", ")
                )))
            }
        }
    }

    /// Signals or renices job `what` for the caller `uid`, on the node
    /// running it (`omctl kill`, `omctl renice`, the web view).
    pub(super) async fn steer(
        &self,
        what: &str,
        order: JobOrder,
        uid: u32,
    ) -> Result<String, (i32, String)> {
        order.valid().map_err(|e| (exec::EXIT_CANNOT_RUN, e))?;
        let job = self.find_job(what).await?;
        let o = SteerOrder {
            job: job.job.clone(),
            order,
            uid,
        };
        let node = {
            let v = self.state.view();
            if job.node == v.me().name {
                None
            } else {
                Some(
                    placement::named(&v.known(), &job.node)
                        .cloned()
                        .ok_or_else(|| {
                            (
                                exec::EXIT_CANNOT_RUN,
                                format!("node {} running job {} is not alive", job.node, job.job),
                            )
                        })?,
                )
            }
        };
        info!(job = %job.job, node = %job.node, order = %order.describe(), uid, "steering a job");
        match node {
            None => steer::steer_here(o, &self.load.exec).await,
            Some(n) => exec::steer_job(&n, &self.keys.stream(), o).await,
        }
    }

    /// Picks the node for a job of `uid`: the one named, or by placement
    /// (among the nodes that run root's jobs, for root).
    fn pick(&self, want: Option<&str>, uid: u32) -> Result<NodeId, String> {
        let local = self.load.sample();
        let v = self.state.view();
        let known = v.known();
        if let Some(want) = want {
            return placement::named(&known, want)
                .cloned()
                .ok_or_else(|| format!("no live node matches {want}"));
        }
        let c = placement::candidates(&v.me().name, &local, &known, uid == 0);
        if c.candidates.is_empty() {
            return Ok(v.me().clone());
        }
        let i = placement::choose(
            &c.candidates,
            c.local,
            placement::DEFAULT_CHOICES,
            &mut rand10::rng(),
        );
        debug!(chosen = %c.ids[i].name, candidates = ?c.candidates, "placed job");
        Ok(c.ids[i].clone())
    }

    /// Launches `req` for the caller `uid`/`gid` on the node [`Self::pick`]
    /// chooses and relays until it ends. The job counts as placed there
    /// (for later placements) until the target's load vector shows it.
    async fn run(
        &self,
        req: RunRequest,
        uid: u32,
        gid: u32,
        caller_rx: mpsc::Receiver<HomeFrame>,
        caller_tx: mpsc::Sender<ControlReply>,
    ) -> RelayEnd {
        let target = match self.pick(req.node.as_deref(), uid) {
            Ok(t) => t,
            Err(message) => return RelayEnd::Failed(exec::EXIT_NO_AGENT, message),
        };
        let home = self.state.me().name;
        let job = format!(
            "{home}-{}",
            self.counter.fetch_add(1, Ordering::Relaxed) + 1
        );
        info!(%job, target = %target.name, uid, argv = ?req.argv, "launching job");
        self.state.launch(JobInfo {
            job: job.clone(),
            argv: req.argv.clone(),
            uid,
            node: target.name.clone(),
            home: home.clone(),
            pid: None,
            started_ms: unix_millis(),
            moves: 0,
            cantmove: None,
            since_ms: unix_millis(),
            usage: None,
        });
        let exec_req = ExecRequest {
            job: job.clone(),
            argv: req.argv,
            cwd: req.cwd,
            env: req.env,
            uid,
            gid,
            home,
            lock: req.lock,
        };
        let down = self.down.subscribe();
        // Watch the stream for `Started` to settle the optimistic placement count.
        let (tap_tx, mut tap_rx) = mpsc::channel::<RelayEvent>(64);
        let state = self.state.clone();
        let (jb, tn) = (job.clone(), target.name.clone());
        let tap = async move {
            while let Some(event) = tap_rx.recv().await {
                let reply = match event {
                    RelayEvent::Started { node, pid, seq } => {
                        state.launch_started(&jb, &tn, &node, pid, seq);
                        ControlReply::Started { node, pid }
                    }
                    RelayEvent::Moved { node } => {
                        state.launch_moved(&jb, &node);
                        continue;
                    }
                    RelayEvent::Stdout(b) => ControlReply::Stdout(b),
                    RelayEvent::Stderr(b) => ControlReply::Stderr(b),
                };
                if caller_tx.send(reply).await.is_err() {
                    break;
                }
            }
        };
        let relay = exec::relay(
            target.addr,
            &target.name,
            &self.keys,
            exec_req,
            caller_rx,
            tap_tx,
            down,
        );
        // The relay ends by dropping `tap_tx`, which ends the tap.
        let (end, ()) = tokio::join!(relay, tap);
        info!(%job, end = ?end, "job finished");
        self.state.launch_ended(&job, &target.name);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeId;

    /// A control server of node "a" on a socket in `dir`, until `stop`.
    fn server(
        dir: &std::path::Path,
        stop: &CancellationToken,
    ) -> (std::path::PathBuf, tokio::task::JoinHandle<()>) {
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let me = NodeId {
            name: "a".into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            started_ms: 1,
            bump: 0,
        };
        let keys = crate::keys::Keys::new(crate::key::ClusterKey::generate(), "c", None);
        let state = State::new("c".into(), me.clone(), Default::default());
        let ctl = Controller {
            state: state.clone(),
            load: LocalLoad {
                cpu_features: Default::default(),
                exec: exec::ExecContext::new("a".into(), me.addr, keys.clone(), None, state),
                share: Arc::new(crate::share::Probe::start(None).unwrap()),
            },
            down: broadcast::channel(1).0,
            keys,
            counter: Arc::default(),
            boot_server: None,
            web: None,
            power: mpsc::channel(1).0,
        };
        (path, tokio::spawn(serve(listener, ctl, stop.clone())))
    }

    #[tokio::test]
    async fn shutdown_ends_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let (path, server) = server(dir.path(), &stop);
        // A status round trip shows the server is up; the second caller
        // says nothing, which the server would wait for forever.
        let status = agent_control::client::status(&path).await.unwrap();
        assert_eq!(status.node, "a");
        let mut idle = UnixStream::connect(&path).await.unwrap();

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server waited for an idle caller")
            .unwrap();
        let r = protocol::read::<ControlReply, _>(&mut idle).await;
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
    }

    #[tokio::test]
    async fn an_omctl_of_another_protocol_gets_one_line_naming_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let stop = CancellationToken::new();
        let (path, server) = server(dir.path(), &stop);
        for other in [protocol::PROTOCOL - 1, protocol::PROTOCOL + 1] {
            let (mut rd, mut wr) = UnixStream::connect(&path).await.unwrap().into_split();
            let caller = Hello {
                protocol: other,
                release: "9.9.9".into(),
            };
            let err = protocol::greet(&mut rd, &mut wr, &caller)
                .await
                .unwrap_err();
            let ours = Hello::ours();
            assert_eq!(
                err.to_string(),
                format!(
                    "omctl 9.9.9 speaks control protocol {other} and the agent (omnode {}) speaks {}: use the omctl of the agent's release",
                    ours.release, ours.protocol
                )
            );
            // And the agent answered nothing else.
            assert!(matches!(
                protocol::read::<ControlReply, _>(&mut rd).await,
                Ok(None) | Err(_)
            ));
        }
        stop.cancel();
        server.await.unwrap();
    }
}
