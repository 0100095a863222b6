//! `omnode agent`: the daemon. It wires the sealed UDP socket (discovery and
//! membership), the exec listener (TCP, same port), the control socket and
//! the job cgroup around the pure cores ([`crate::membership`],
//! [`crate::crypto`], [`crate::placement`]).
//!
//! One task owns the membership and the sealing state and handles, in turn:
//! datagrams, foca timers and the presence tick (every 500 ms: our load vector
//! to every member, and to the multicast group for discovery). Control and
//! exec connections run in their own tasks and read the shared [`View`].
//!
//! The join line `omnode: node NAME joined cluster ID (N nodes)` is printed
//! once, when the first membership exchange completes (N counts us and the
//! members known at that moment), or, if nobody answered, after
//! [`DISCOVERY_WINDOW`] with N = 1.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpListener, UdpSocket, UnixListener, UnixStream};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, info, warn};

use crate::cgroup::{self, CgroupError, JobCgroup};
use crate::crypto::{OpenError, Opener, Sealer};
use crate::discovery::{self, DiscoveryError, Interface};
use crate::exec::{self, ExecContext, Jobs, RelayEnd};
use crate::key::{ClusterKey, Purpose};
use crate::load::{self, LoadVector};
use crate::membership::{Effects, Event, Membership, NodeId, Timer};
use crate::placement::{self, Candidate};
use crate::wire::{
    self, ClusterStatus, Datagram, ExecRequest, Frame, JobInfo, NodeStatus, RunRequest,
};

/// How long a lone agent waits for peers before printing its join line.
pub const DISCOVERY_WINDOW: Duration = Duration::from_secs(3);
/// Exec connections (jobs and handshakes) handled at once.
pub const MAX_EXEC_CONNECTIONS: usize = 1024;
/// How often the load vector goes out.
pub const PRESENCE_PERIOD: Duration = Duration::from_millis(500);

/// Everything `omnode agent` is told.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The cluster key.
    pub key: ClusterKey,
    /// Cluster id.
    pub cluster: String,
    /// This node's name.
    pub name: String,
    /// Control socket path.
    pub socket: PathBuf,
    /// Extra addresses to introduce ourselves to.
    pub seeds: Vec<SocketAddr>,
    /// CPU share for cluster jobs, percent of all CPUs (100 = uncapped).
    pub cpu_quota: u32,
    /// Interface to talk on (default: the first non-loopback one that is up).
    pub interface: Option<String>,
    /// UDP/TCP port.
    pub port: u16,
    /// Where the agent records its identity (`node.json`).
    pub state_dir: Option<PathBuf>,
    /// Relative speed; calibrated at start when `None`.
    pub speed: Option<f32>,
    /// The boot server's check-in URL (`omnode init` passes it); the agent
    /// posts there once it has joined.
    pub checkin: Option<String>,
}

/// Errors starting the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Interface or UDP socket trouble.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The job cgroup could not be set up.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A listener could not be opened.
    #[error("cannot open {what}: {source}")]
    Listen {
        /// Which listener.
        what: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// A node's liveness as the view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Answering.
    Alive,
    /// Suspected by someone.
    Suspect,
    /// Declared dead.
    Down,
}

impl NodeState {
    fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
        }
    }
}

#[derive(Debug, Clone)]
struct Placed {
    job: String,
    seq: Option<u64>,
}

/// What the agent knows, shared by its tasks.
#[derive(Debug)]
pub struct View {
    cluster: String,
    me: NodeId,
    speed: f32,
    cpu_quota: u32,
    nodes: BTreeMap<String, (NodeId, NodeState)>,
    loads: HashMap<String, (NodeId, LoadVector, Instant)>,
    placed: HashMap<String, Vec<Placed>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// openMosix-style node number: the low 16 bits of the IPv4 address.
pub fn node_number(addr: &SocketAddr) -> u32 {
    match addr.ip() {
        IpAddr::V4(v4) => u32::from(v4) & 0xffff,
        IpAddr::V6(v6) => u32::from(v6.segments()[7]),
    }
}

/// The running agent.
pub struct Agent {
    cfg: AgentConfig,
    udp: UdpSocket,
    tcp: TcpListener,
    control: UnixListener,
    me: NodeId,
    iface: Interface,
    cgroup: Option<JobCgroup>,
    speed: f32,
}

impl Agent {
    /// Opens the sockets, sets up the job cgroup and calibrates.
    pub async fn bind(cfg: AgentConfig) -> Result<Self, AgentError> {
        let iface = discovery::pick_interface(cfg.interface.as_deref())?;
        let udp = discovery::open_socket(cfg.port, &iface)?;
        let udp = UdpSocket::from_std(udp).map_err(|source| AgentError::Listen {
            what: format!("udp port {}", cfg.port),
            source,
        })?;
        let tcp = TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], cfg.port)))
            .await
            .map_err(|source| AgentError::Listen {
                what: format!("tcp port {}", cfg.port),
                source,
            })?;
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(parent) = cfg.socket.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let control = UnixListener::bind(&cfg.socket).map_err(|source| AgentError::Listen {
            what: format!("control socket {}", cfg.socket.display()),
            source,
        })?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&cfg.socket, std::fs::Permissions::from_mode(0o666));
        }
        let cgroup = if cfg.cpu_quota < 100 {
            Some(cgroup::setup(
                &format!("{}-{}", cfg.cluster, cfg.name),
                cfg.cpu_quota,
                load::cpu_count(),
            )?)
        } else {
            None
        };
        let speed = cfg.speed.unwrap_or_else(load::calibrate);
        let me = NodeId {
            name: cfg.name.clone(),
            addr: SocketAddr::new(IpAddr::V4(iface.addr), cfg.port),
            started_ms: now_ms(),
            bump: 0,
        };
        info!(name = %me.name, addr = %me.addr, iface = %iface.name, speed, cpu_quota = cfg.cpu_quota, cgroup = ?cgroup.as_ref().map(|c| c.dir.display().to_string()), "agent starting");
        Ok(Self {
            cfg,
            udp,
            tcp,
            control,
            me,
            iface,
            cgroup,
            speed,
        })
    }

    /// This agent's identity.
    pub fn identity(&self) -> &NodeId {
        &self.me
    }

    /// Runs until `shutdown` resolves, then leaves the cluster.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let Agent {
            cfg,
            udp,
            tcp,
            control,
            me,
            iface,
            cgroup,
            speed,
        } = self;
        let udp = Arc::new(udp);
        let dkey = cfg.key.derive(&cfg.cluster, Purpose::Datagram);
        let skey = cfg.key.derive(&cfg.cluster, Purpose::Stream);
        let session: u64 = rand10::random();
        let mut sealer = Sealer::new(&dkey, session);
        let mut opener = Opener::new(&dkey, session);
        let mut membership = Membership::new(me.clone());
        let view = Arc::new(Mutex::new(View {
            cluster: cfg.cluster.clone(),
            me: me.clone(),
            speed,
            cpu_quota: cfg.cpu_quota,
            nodes: BTreeMap::new(),
            loads: HashMap::new(),
            placed: HashMap::new(),
        }));
        let running: Jobs = Arc::default();
        let started_jobs: Arc<AtomicU64> = Arc::default();
        let launched: Jobs = Arc::default();
        let (down_tx, _) = broadcast::channel::<NodeId>(64);
        let (timer_tx, mut timer_rx) = mpsc::unbounded_channel::<Timer<NodeId>>();

        let exec_ctx = ExecContext {
            node: me.name.clone(),
            stream_key: skey,
            cgroup: cgroup.clone(),
            running: running.clone(),
            started: started_jobs.clone(),
        };
        // Unauthenticated peers can open connections: cap how many are handled
        // at once (each ends within the 5 s handshake timeout unless keyed).
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_EXEC_CONNECTIONS));
        let tcp_task = tokio::spawn(async move {
            loop {
                match tcp.accept().await {
                    Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let ctx = exec_ctx.clone();
                            tokio::spawn(async move {
                                exec::serve(stream, ctx).await;
                                drop(permit);
                            });
                        }
                        Err(_) => warn!(%peer, "too many exec connections, refusing"),
                    },
                    Err(e) => {
                        warn!(cause = %e, "exec accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        let ctl = Controller {
            view: view.clone(),
            running: running.clone(),
            started: started_jobs.clone(),
            launched: launched.clone(),
            down: down_tx.clone(),
            stream_key: skey,
            counter: Arc::new(AtomicU64::new(0)),
        };
        let control_task = tokio::spawn(async move {
            loop {
                match control.accept().await {
                    Ok((stream, _)) => {
                        let ctl = ctl.clone();
                        tokio::spawn(async move { ctl.handle(stream).await });
                    }
                    Err(e) => {
                        warn!(cause = %e, "control accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });

        let group = discovery::group_addr(cfg.port);
        let mut tick = tokio::time::interval(PRESENCE_PERIOD);
        let started = Instant::now();
        let mut joined = false;
        let mut announced: HashMap<NodeId, Instant> = HashMap::new();
        let mut buf = vec![0u8; 65536];
        let mut housekeeping = 0u32;
        tokio::pin!(shutdown);

        let send = |sealer: &mut Sealer, to: SocketAddr, d: &Datagram| {
            let packet = sealer.seal(now_ms(), &d.encode());
            if let Err(e) = udp.try_send_to(&packet, to) {
                debug!(%to, cause = %e, "send failed");
            }
        };
        let apply =
            |fx: Effects, sealer: &mut Sealer, membership: &Membership, joined: &mut bool| {
                for (to, data) in fx.sends {
                    send(sealer, to, &Datagram::Swim(data));
                }
                for (after, timer) in fx.timers {
                    let tx = timer_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx.send(timer);
                    });
                }
                for ev in fx.events {
                    info!(event = ?ev, "membership");
                    match &ev {
                        Event::Down(id) => {
                            let _ = down_tx.send(id.clone());
                        }
                        Event::Active if !*joined => {
                            *joined = true;
                            announce_join(
                                &cfg,
                                membership.members().len() + 1,
                                &membership.identity().clone(),
                            );
                        }
                        Event::Rejoined(id) => view.lock().expect("view").me = id.clone(),
                        _ => {}
                    }
                }
                refresh_nodes(&view, membership);
            };

        loop {
            tokio::select! {
                () = &mut shutdown => break,
                r = udp.recv_from(&mut buf) => {
                    let Ok((n, from)) = r else { continue };
                    let opened = match opener.open(now_ms(), &buf[..n]) {
                        Ok(o) => o,
                        Err(OpenError::OwnPacket) => continue,
                        Err(e) => {
                            debug!(%from, cause = %e, "dropped datagram");
                            continue;
                        }
                    };
                    match Datagram::decode(&opened.plaintext) {
                        Ok(Datagram::Swim(data)) => match membership.handle_data(&data) {
                            Ok(fx) => apply(fx, &mut sealer, &membership, &mut joined),
                            Err(e) => debug!(%from, cause = %e, "membership refused"),
                        },
                        Ok(Datagram::Presence { id, load }) => {
                            let me_now = membership.identity().clone();
                            if id.name == me_now.name {
                                if id.addr != me_now.addr {
                                    warn!(other = %id.addr, name = %id.name, "another node uses our name");
                                }
                                continue;
                            }
                            view.lock().expect("view").loads.insert(id.name.clone(), (id.clone(), load, Instant::now()));
                            if !membership.is_member(&id) {
                                let recently = announced.get(&id).is_some_and(|t| t.elapsed() < Duration::from_secs(1));
                                if !recently {
                                    announced.insert(id.clone(), Instant::now());
                                    match membership.announce(id) {
                                        Ok(fx) => apply(fx, &mut sealer, &membership, &mut joined),
                                        Err(e) => debug!(cause = %e, "announce failed"),
                                    }
                                }
                            }
                        }
                        Err(e) => debug!(%from, cause = %e, "undecodable datagram"),
                    }
                }
                Some(timer) = timer_rx.recv() => {
                    match membership.handle_timer(timer) {
                        Ok(fx) => apply(fx, &mut sealer, &membership, &mut joined),
                        Err(e) => debug!(cause = %e, "timer refused"),
                    }
                }
                _ = tick.tick() => {
                    let id = membership.identity().clone();
                    let (jobs, started_jobs) = exec::job_counts(&running, &started_jobs);
                    let load = load::sample(speed, jobs, started_jobs, cfg.cpu_quota);
                    let presence = Datagram::Presence { id, load };
                    send(&mut sealer, group, &presence);
                    for seed in &cfg.seeds {
                        if !membership.members().iter().any(|m| m.addr == *seed) {
                            send(&mut sealer, *seed, &presence);
                        }
                    }
                    for m in membership.members() {
                        send(&mut sealer, m.addr, &presence);
                    }
                    refresh_nodes(&view, &membership);
                    if !joined && started.elapsed() >= DISCOVERY_WINDOW {
                        joined = true;
                        announce_join(&cfg, membership.members().len() + 1, membership.identity());
                    }
                    housekeeping += 1;
                    if housekeeping.is_multiple_of(20) {
                        opener.forget_idle(now_ms());
                        announced.retain(|_, t| t.elapsed() < Duration::from_secs(10));
                    }
                }
            }
        }
        info!(name = %me.name, iface = %iface.name, "agent leaving");
        if let Ok(fx) = membership.leave() {
            for (to, data) in fx.sends {
                send(&mut sealer, to, &Datagram::Swim(data));
            }
        }
        tcp_task.abort();
        control_task.abort();
        let _ = std::fs::remove_file(&cfg.socket);
        if let Some(cg) = &cgroup {
            cg.remove();
        }
        Ok(())
    }
}

fn announce_join(cfg: &AgentConfig, n: usize, me: &NodeId) {
    use std::io::Write;
    let line = format!(
        "omnode: node {} joined cluster {} ({} nodes)",
        cfg.name, cfg.cluster, n
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    info!(nodes = n, "joined");
    if let Some(url) = &cfg.checkin {
        crate::checkin::spawn(url.clone(), cfg.name.clone(), me.addr.ip());
    }
    if let Some(dir) = &cfg.state_dir {
        let _ = std::fs::create_dir_all(dir);
        let record = serde_json::json!({
            "name": me.name, "addr": me.addr.to_string(), "started_ms": me.started_ms,
            "cluster": cfg.cluster, "joined_with_nodes": n,
        });
        let _ = std::fs::write(dir.join("node.json"), format!("{record:#}\n"));
    }
}

/// Copies foca's member states into the view. Nodes foca has forgotten
/// (removed some time after their death) stay listed as down.
fn refresh_nodes(view: &Mutex<View>, membership: &Membership) {
    let states = membership.states();
    let mut v = view.lock().expect("view");
    v.me = membership.identity().clone();
    for (name, (_, st)) in v.nodes.iter_mut() {
        if !states.iter().any(|(k, _)| &k.name == name) {
            *st = NodeState::Down;
        }
    }
    for (id, state) in states {
        let st = match state {
            foca::State::Alive => NodeState::Alive,
            foca::State::Suspect => NodeState::Suspect,
            foca::State::Down => NodeState::Down,
        };
        match v.nodes.get(&id.name) {
            // An older identity of a node that came back must not overwrite it.
            Some((old, _)) if (old.started_ms, old.bump) > (id.started_ms, id.bump) => {}
            _ => {
                v.nodes.insert(id.name.clone(), (id, st));
            }
        }
    }
}

#[derive(Clone)]
struct Controller {
    view: Arc<Mutex<View>>,
    running: Jobs,
    started: Arc<AtomicU64>,
    launched: Jobs,
    down: broadcast::Sender<NodeId>,
    stream_key: [u8; 32],
    counter: Arc<AtomicU64>,
}

impl Controller {
    fn status(&self) -> ClusterStatus {
        let v = self.view.lock().expect("view");
        let (jobs, started) = exec::job_counts(&self.running, &self.started);
        let mut nodes = vec![NodeStatus {
            name: v.me.name.clone(),
            number: node_number(&v.me.addr),
            addr: v.me.addr.to_string(),
            state: "alive".into(),
            local: true,
            load: Some(load::sample(v.speed, jobs, started, v.cpu_quota)),
            load_age_ms: Some(0),
        }];
        for (name, (id, st)) in &v.nodes {
            let load = v
                .loads
                .get(name)
                .filter(|(lid, _, _)| lid.started_ms == id.started_ms);
            nodes.push(NodeStatus {
                name: name.clone(),
                number: node_number(&id.addr),
                addr: id.addr.to_string(),
                state: st.as_str().into(),
                local: false,
                load: load.map(|(_, l, _)| l.clone()),
                load_age_ms: load.map(|(_, _, t)| t.elapsed().as_millis() as u64),
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterStatus {
            cluster: v.cluster.clone(),
            node: v.me.name.clone(),
            nodes,
        }
    }

    fn jobs(&self) -> Vec<JobInfo> {
        let mut all: Vec<JobInfo> = self
            .running
            .lock()
            .expect("jobs")
            .values()
            .cloned()
            .collect();
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
        let peers: Vec<NodeId> = {
            let v = self.view.lock().expect("view");
            v.nodes
                .values()
                .filter(|(_, st)| *st != NodeState::Down)
                .map(|(id, _)| id.clone())
                .collect()
        };
        let asks = peers
            .iter()
            .map(|id| exec::remote_jobs(id.addr, &self.stream_key));
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

    async fn handle(self, stream: UnixStream) {
        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(cause = %e, "no peer credentials on control connection");
                return;
            }
        };
        let (rd, mut wr) = stream.into_split();
        let mut frames = exec::plain_reader(rd);
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
            Frame::Run(req) => {
                let (tx, mut rx) = mpsc::channel::<Frame>(64);
                let writer = tokio::spawn(async move {
                    while let Some(f) = rx.recv().await {
                        if wire::write_frame(&mut wr, &f).await.is_err() {
                            break;
                        }
                    }
                });
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
                drop(tx);
                let _ = writer.await;
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

    /// Picks the node for a job: the one named, or by placement.
    fn pick(&self, want: Option<&str>) -> Result<NodeId, String> {
        let v = self.view.lock().expect("view");
        let alive: Vec<&NodeId> = std::iter::once(&v.me)
            .chain(
                v.nodes
                    .values()
                    .filter(|(_, st)| *st != NodeState::Down)
                    .map(|(id, _)| id),
            )
            .collect();
        if let Some(want) = want {
            return alive
                .iter()
                .find(|id| {
                    id.name == want
                        || node_number(&id.addr).to_string() == want
                        || id.addr.to_string() == want
                        || id.addr.ip().to_string() == want
                })
                .map(|id| (*id).clone())
                .ok_or_else(|| format!("no live node matches {want}"));
        }
        let (running_here, started_here) = exec::job_counts(&self.running, &self.started);
        let mut cands = Vec::new();
        let mut ids = Vec::new();
        for id in alive {
            let is_me = id.name == v.me.name;
            let load = if is_me {
                Some(load::sample(
                    v.speed,
                    running_here,
                    started_here,
                    v.cpu_quota,
                ))
            } else {
                v.loads
                    .get(&id.name)
                    .filter(|(lid, _, _)| lid.started_ms == id.started_ms)
                    .map(|(_, l, _)| l.clone())
            };
            let Some(load) = load else { continue };
            let pending = v
                .placed
                .get(&id.name)
                .map(|p| {
                    p.iter()
                        // Placed here but not yet counted by the load vector:
                        // not started yet, or started after the vector was made.
                        .filter(|x| x.seq.is_none_or(|q| q > load.started))
                        .count() as u32
                })
                .unwrap_or(0);
            // The 1-minute average is steadier than the instantaneous count.
            let background = (load.loadavg - load.jobs as f32).max(0.0);
            cands.push(Candidate {
                name: id.name.clone(),
                cpus: load.cpus,
                speed: load.speed,
                cpu_quota: load.cpu_quota,
                jobs: load.jobs + pending,
                background,
                mem_free_kib: load.mem_free_kib,
            });
            ids.push(id.clone());
        }
        if cands.is_empty() {
            return Ok(v.me.clone());
        }
        let local = ids.iter().position(|id| id.name == v.me.name);
        let i = placement::choose(
            &cands,
            local,
            placement::DEFAULT_CHOICES,
            &mut rand10::rng(),
        );
        debug!(chosen = %ids[i].name, candidates = ?cands, "placed job");
        Ok(ids[i].clone())
    }

    async fn run(
        &self,
        req: RunRequest,
        uid: u32,
        gid: u32,
        caller_rx: mpsc::Receiver<Result<Frame, wire::WireError>>,
        caller_tx: mpsc::Sender<Frame>,
    ) -> RelayEnd {
        let target = match self.pick(req.node.as_deref()) {
            Ok(t) => t,
            Err(message) => return RelayEnd::Failed(exec::EXIT_NO_AGENT, message),
        };
        let home = self.view.lock().expect("view").me.name.clone();
        let job = format!(
            "{home}-{}",
            self.counter.fetch_add(1, Ordering::Relaxed) + 1
        );
        info!(%job, target = %target.name, uid, argv = ?req.argv, "launching job");
        self.view
            .lock()
            .expect("view")
            .placed
            .entry(target.name.clone())
            .or_default()
            .push(Placed {
                job: job.clone(),
                seq: None,
            });
        self.launched.lock().expect("jobs").insert(
            job.clone(),
            JobInfo {
                job: job.clone(),
                argv: req.argv.clone(),
                uid,
                node: target.name.clone(),
                home: home.clone(),
                pid: None,
                started_ms: now_ms(),
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
        };
        let mut down = self.down.subscribe();
        let t = target.clone();
        let lost = async move {
            loop {
                match down.recv().await {
                    Ok(id) if id.name == t.name && id.started_ms == t.started_ms => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        // Watch the stream for `Started` to settle the optimistic placement count.
        let (tap_tx, mut tap_rx) = mpsc::channel::<Frame>(64);
        let view = self.view.clone();
        let launched = self.launched.clone();
        let (jb, tn) = (job.clone(), target.name.clone());
        let tap = tokio::spawn(async move {
            while let Some(f) = tap_rx.recv().await {
                if let Frame::Started { pid, seq, .. } = &f {
                    if let Some(p) = view.lock().expect("view").placed.get_mut(&tn) {
                        if let Some(x) = p.iter_mut().find(|x| x.job == jb) {
                            x.seq = Some(*seq);
                        }
                    }
                    if let Some(j) = launched.lock().expect("jobs").get_mut(&jb) {
                        j.pid = Some(*pid);
                    }
                }
                if caller_tx.send(f).await.is_err() {
                    break;
                }
            }
        });
        let end = exec::relay(
            target.addr,
            &target.name,
            &self.stream_key,
            exec_req,
            caller_rx,
            tap_tx,
            lost,
        )
        .await;
        let _ = tap.await;
        info!(%job, end = ?end, "job finished");
        self.launched.lock().expect("jobs").remove(&job);
        let mut v = self.view.lock().expect("view");
        if let Some(p) = v.placed.get_mut(&target.name) {
            p.retain(|x| x.job != job);
        }
        end
    }
}
