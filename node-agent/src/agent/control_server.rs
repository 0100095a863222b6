//! The control socket server: accepts `omctl`'s connections until shutdown,
//! each in a task of its own, and answers its one request ([`Controller`]):
//! `status` from the view, `ps` from the job tables (`ps --cluster` asks
//! every live node), `run`, which places the job ([`crate::placement`]) and
//! relays it ([`exec::relay`]), `migrate`, `knob` (in `admin`) and
//! `admission` (relayed to the boot server, in `admission`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use contracts::clock::unix_millis;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::local_load::LocalLoad;
use super::view::View;
use crate::exec::{self, Jobs, RelayEnd};
use crate::membership::NodeId;
use crate::placement;
use crate::wire::{
    self, ClusterStatus, ExecRequest, Frame, JobInfo, MigrateDone, MigrateOrder, RunRequest,
};

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
    pub(super) view: Arc<Mutex<View>>,
    /// Our load, and the jobs running here.
    pub(super) load: LocalLoad,
    /// Jobs launched from here, until they end.
    pub(super) launched: Jobs,
    /// Nodes membership declared dead (a relay to one gives up).
    pub(super) down: broadcast::Sender<NodeId>,
    /// The cluster keys.
    pub(super) keys: crate::keys::Keys,
    /// Numbers the jobs launched from here.
    pub(super) counter: Arc<AtomicU64>,
    /// Where admission requests go (from `--checkin`).
    pub(super) boot_server: Option<super::admission::BootServer>,
}

impl Controller {
    /// The cluster as `omctl status` shows it.
    fn status(&self) -> ClusterStatus {
        let local = self.load.sample();
        self.view.lock().expect("view").status(local)
    }

    /// Jobs running here and jobs launched from here.
    fn jobs(&self) -> Vec<JobInfo> {
        let mut all = exec::listed(&self.load.exec.running, &self.load.exec.criu);
        for j in self.launched.lock().expect("jobs").values() {
            if !all.iter().any(|x| x.job == j.job) {
                all.push(j.clone());
            }
        }
        all.sort_by(|a, b| a.job.cmp(&b.job));
        all
    }

    /// Jobs of every live node: ours, and each other node's answer to `Ps`
    /// (asked in parallel; a node that does not answer is left out).
    async fn cluster_jobs(&self) -> Vec<JobInfo> {
        let peers = self.view.lock().expect("view").live_peers();
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

    /// Answers the one request of a control connection. Its frame reader
    /// is a task of this call and ends with it.
    async fn handle(self, stream: UnixStream) {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(cause = %e, "no peer credentials on control connection");
                return;
            }
        };
        let (rd, mut wr) = stream.into_split();
        let mut tasks = JoinSet::new();
        let mut frames = exec::plain_reader(rd, &mut tasks);
        let first = match frames.recv().await {
            Some(Ok(f)) => f,
            _ => return,
        };
        match first {
            Frame::Status => {
                let _ = wire::write_frame(&mut wr, &Frame::StatusReply(self.status())).await;
            }
            Frame::Ps => {
                let _ = wire::write_frame(&mut wr, &Frame::PsReply(self.jobs())).await;
            }
            Frame::PsCluster => {
                let jobs = self.cluster_jobs().await;
                let _ = wire::write_frame(&mut wr, &Frame::PsReply(jobs)).await;
            }
            Frame::Migrate { job, to } => {
                let f = match self.migrate(&job, &to, cred.uid()).await {
                    Ok(done) => Frame::Migrated(done),
                    Err((code, message)) => Frame::Failed { code, message },
                };
                let _ = wire::write_frame(&mut wr, &f).await;
            }
            Frame::Knob { node, action } => {
                let f = match self.knob(node, action, cred.uid()).await {
                    Ok(lines) => Frame::KnobDone(lines),
                    Err((code, message)) => Frame::Failed { code, message },
                };
                let _ = wire::write_frame(&mut wr, &f).await;
            }
            Frame::Admission { verdict } => {
                let f = match self.admission(verdict, cred.uid()).await {
                    Ok(json) => Frame::AdmissionDone(json),
                    Err((code, message)) => Frame::Failed { code, message },
                };
                let _ = wire::write_frame(&mut wr, &f).await;
            }
            Frame::Key { rotate } => {
                let f = match self.key(rotate, cred.uid()).await {
                    Ok(lines) => Frame::KeyDone(lines),
                    Err((code, message)) => Frame::Failed { code, message },
                };
                let _ = wire::write_frame(&mut wr, &f).await;
            }
            Frame::Token { ttl_s, uses } => {
                let f = match self.token(ttl_s, uses, cred.uid()).await {
                    Ok(f) => f,
                    Err((code, message)) => Frame::Failed { code, message },
                };
                let _ = wire::write_frame(&mut wr, &f).await;
            }
            Frame::Run(req) => {
                let (tx, mut rx) = mpsc::channel::<Frame>(64);
                let writer = async move {
                    while let Some(f) = rx.recv().await {
                        if wire::write_frame(&mut wr, &f).await.is_err() {
                            break;
                        }
                    }
                };
                // Ends by dropping `tx`, which ends the writer.
                let job = async move {
                    let end = self
                        .run(req, cred.uid(), cred.gid(), frames, tx.clone())
                        .await;
                    let last = match end {
                        RelayEnd::Exit(e) => Some(Frame::Exit(e)),
                        RelayEnd::Failed(code, message) => Some(Frame::Failed { code, message }),
                        RelayEnd::CallerGone => None,
                    };
                    if let Some(f) = last {
                        let _ = tx.send(f).await;
                    }
                };
                tokio::join!(writer, job);
            }
            other => {
                let _ = wire::write_frame(
                    &mut wr,
                    &Frame::Failed {
                        code: exec::EXIT_NO_AGENT,
                        message: format!("unexpected request {other:?}"),
                    },
                )
                .await;
            }
        }
    }

    /// Moves the job `what` (id, or pid as `ps` shows it) to `to` (a node,
    /// `home` or `best`) for the caller `uid`.
    async fn migrate(&self, what: &str, to: &str, uid: u32) -> Result<MigrateDone, (i32, String)> {
        let bad = |m: String| (exec::EXIT_CANNOT_RUN, m);
        let jobs = self.cluster_jobs().await;
        let found: Vec<&JobInfo> = jobs
            .iter()
            .filter(|j| j.job == what || j.pid.is_some_and(|p| p.to_string() == what))
            .collect();
        let job = match found.as_slice() {
            [] => return Err(bad(format!("no running job {what} (see omctl ps --all)"))),
            [one] => *one,
            several => {
                let names: Vec<String> = several
                    .iter()
                    .map(|j| format!("{} on {}", j.job, j.node))
                    .collect();
                return Err(bad(format!(
                    "pid {what} names several jobs ({}); name the job",
                    names.join(", ")
                )));
            }
        };
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
            let v = self.view.lock().expect("view");
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
                    let c = placement::candidates(&v.me.name, &local, &known, job.uid == 0);
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
            let v = self.view.lock().expect("view");
            (v.fresh_peers(Duration::from_secs(3)), v.me.name.clone())
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

    /// Picks the node for a job of `uid`: the one named, or by placement
    /// (among the nodes that run root's jobs, for root).
    fn pick(&self, want: Option<&str>, uid: u32) -> Result<NodeId, String> {
        let local = self.load.sample();
        let v = self.view.lock().expect("view");
        let known = v.known();
        if let Some(want) = want {
            return placement::named(&known, want)
                .cloned()
                .ok_or_else(|| format!("no live node matches {want}"));
        }
        let c = placement::candidates(&v.me.name, &local, &known, uid == 0);
        if c.candidates.is_empty() {
            return Ok(v.me.clone());
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
        caller_rx: mpsc::Receiver<Result<Frame, wire::WireError>>,
        caller_tx: mpsc::Sender<Frame>,
    ) -> RelayEnd {
        let target = match self.pick(req.node.as_deref(), uid) {
            Ok(t) => t,
            Err(message) => return RelayEnd::Failed(exec::EXIT_NO_AGENT, message),
        };
        let home = self.view.lock().expect("view").me.name.clone();
        let job = format!(
            "{home}-{}",
            self.counter.fetch_add(1, Ordering::Relaxed) + 1
        );
        info!(%job, target = %target.name, uid, argv = ?req.argv, "launching job");
        self.view.lock().expect("view").place(&target.name, &job);
        self.launched.lock().expect("jobs").insert(
            job.clone(),
            JobInfo {
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
            },
        );
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
        let (tap_tx, mut tap_rx) = mpsc::channel::<Frame>(64);
        let view = self.view.clone();
        let launched = self.launched.clone();
        let (jb, tn) = (job.clone(), target.name.clone());
        let tap = async move {
            while let Some(f) = tap_rx.recv().await {
                if let Frame::Started { pid, seq, node } = &f {
                    if *node == tn {
                        view.lock().expect("view").started(&tn, &jb, *seq);
                    }
                    if let Some(j) = launched.lock().expect("jobs").get_mut(&jb) {
                        j.pid = Some(*pid);
                    }
                }
                if let Frame::Moved { node, .. } = &f {
                    if let Some(j) = launched.lock().expect("jobs").get_mut(&jb) {
                        j.node = node.clone();
                        j.moves += 1;
                    }
                    continue;
                }
                if caller_tx.send(f).await.is_err() {
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
        self.launched.lock().expect("jobs").remove(&job);
        self.view.lock().expect("view").ended(&target.name, &job);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::NodeId;

    #[tokio::test]
    async fn shutdown_ends_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let me = NodeId {
            name: "a".into(),
            addr: "10.0.0.1:7946".parse().unwrap(),
            started_ms: 1,
            bump: 0,
        };
        let keys = crate::keys::Keys::new(crate::key::ClusterKey::generate(), "c", None);
        let ctl = Controller {
            view: Arc::new(Mutex::new(View::new("c".into(), me.clone()))),
            load: LocalLoad {
                speed: 1.0,
                cpu_quota: 100,
                cpu_features: Default::default(),
                exec: exec::ExecContext::new("a".into(), me.addr, keys.clone(), None),
                share: Arc::new(crate::share::Probe::start(None).unwrap()),
                demand: Arc::default(),
            },
            launched: Jobs::default(),
            down: broadcast::channel(1).0,
            keys,
            counter: Arc::default(),
            boot_server: None,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, ctl, stop.clone()));
        // A status round trip shows the server is up; the second caller
        // says nothing, which the server would wait for forever.
        let status = crate::control::status(&path).await.unwrap();
        assert_eq!(status.node, "a");
        let mut idle = UnixStream::connect(&path).await.unwrap();

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server waited for an idle caller")
            .unwrap();
        let r = wire::read_frame(&mut idle).await;
        assert!(!matches!(r, Ok(Some(_))), "{r:?}");
    }
}
