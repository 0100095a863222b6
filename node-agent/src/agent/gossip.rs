//! The gossip loop: the one task that owns membership and the datagram
//! sealing state. It handles, in turn until shutdown:
//! - datagrams ([`Gossip::on_datagram`]): SWIM messages go to membership,
//!   presence (a peer's load vector) goes to the view and introduces peers
//!   membership does not know yet;
//! - membership's timers ([`Gossip::on_timers`]), kept in one
//!   [`TimerQueue`];
//! - the presence tick ([`Gossip::on_tick`], every [`PRESENCE_PERIOD`]): our
//!   load vector to every member, the seeds and the multicast group.
//!
//! Membership's effects (datagrams to send, timers to arm, events) are
//! carried out by [`Gossip::apply`]; the first completed exchange, or
//! [`DISCOVERY_WINDOW`] without one, prints the join line.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use contracts::clock::unix_millis;
use tokio::net::UdpSocket;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, info, warn};

use super::local_load::LocalLoad;
use super::timers::TimerQueue;
use super::{AgentConfig, DISCOVERY_WINDOW, PRESENCE_PERIOD};
use crate::crypto::{OpenError, Opener, Sealer};
use crate::discovery;
use crate::keys::Keys;
use crate::membership::{Effects, Event, Membership, NodeId, Timer};
use crate::state::State;
use crate::wire::Datagram;

/// The membership side of the agent.
pub(super) struct Gossip<'a> {
    cfg: &'a AgentConfig,
    udp: UdpSocket,
    group: SocketAddr,
    sealer: Sealer,
    opener: Opener,
    /// The cluster keys, and the datagram keys derived from them that the
    /// sealer and opener use now (the sealing one first).
    keys: Keys,
    dkeys: Vec<[u8; 32]>,
    membership: Membership,
    timers: TimerQueue<Timer<NodeId>>,
    state: State,
    load: LocalLoad,
    /// Where `Event::Down` goes (to the relays of jobs on that node).
    down: broadcast::Sender<NodeId>,
    started: Instant,
    joined: bool,
    /// Told our address once we have joined (the check-in task waits on it).
    on_join: Option<oneshot::Sender<IpAddr>>,
    /// Peers we introduced ourselves to lately, so as not to on every presence.
    announced: HashMap<NodeId, Instant>,
    ticks: u32,
}

impl<'a> Gossip<'a> {
    /// Membership for `me` on `udp`, sealed with the cluster's datagram key.
    pub(super) fn new(
        cfg: &'a AgentConfig,
        udp: UdpSocket,
        me: NodeId,
        state: State,
        load: LocalLoad,
        down: broadcast::Sender<NodeId>,
        on_join: Option<oneshot::Sender<IpAddr>>,
    ) -> Self {
        let keys = load.exec.keys.clone();
        let dkeys = keys.datagram();
        let dkey = dkeys[0];
        let session: u64 = rand10::random();
        Self {
            cfg,
            udp,
            group: discovery::group_addr(cfg.port),
            sealer: Sealer::new(&dkey, session),
            opener: Opener::new(&dkey, session),
            keys,
            dkeys,
            membership: Membership::new(me),
            timers: TimerQueue::new(),
            state,
            load,
            down,
            started: Instant::now(),
            joined: false,
            on_join,
            announced: HashMap::new(),
            ticks: 0,
        }
    }

    /// Handles datagrams, timers and the presence tick until `shutdown`.
    pub(super) async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(PRESENCE_PERIOD);
        let mut buf = vec![0u8; 65536];
        tokio::pin!(shutdown);
        loop {
            let deadline = self.timers.next_deadline();
            tokio::select! {
                () = &mut shutdown => break,
                r = self.udp.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.on_datagram(&buf[..n], from);
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => self.on_timers(),
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    /// Says goodbye to the members.
    pub(super) fn leave(&mut self) {
        if let Ok(fx) = self.membership.leave() {
            for (to, data) in fx.sends {
                self.send(to, &Datagram::Swim(data));
            }
        }
    }

    fn send(&mut self, to: SocketAddr, d: &Datagram) {
        let packet = self.sealer.seal(unix_millis(), &d.encode());
        if let Err(e) = self.udp.try_send_to(&packet, to) {
            debug!(%to, cause = %e, "send failed");
        }
    }

    fn on_datagram(&mut self, packet: &[u8], from: SocketAddr) {
        let opened = match self.opener.open(unix_millis(), packet) {
            Ok(o) => o,
            Err(OpenError::OwnPacket) => return,
            Err(e) => {
                debug!(%from, cause = %e, "dropped datagram");
                return;
            }
        };
        match Datagram::decode(&opened.plaintext) {
            Ok(Datagram::Swim(data)) => match self.membership.handle_data(&data) {
                Ok(fx) => self.apply(fx),
                Err(e) => debug!(%from, cause = %e, "membership refused"),
            },
            Ok(Datagram::Presence { id, load }) => self.on_presence(id, load),
            Err(e) => debug!(%from, cause = %e, "undecodable datagram"),
        }
    }

    /// A peer's load vector: into the view, and an introduction to
    /// membership if the peer is not a member yet (at most once a second).
    fn on_presence(&mut self, id: NodeId, load: crate::load::LoadVector) {
        let me_now = self.membership.identity();
        if id.name == me_now.name {
            if id.addr != me_now.addr {
                warn!(other = %id.addr, name = %id.name, "another node uses our name");
            }
            return;
        }
        self.state.heard(id.clone(), load);
        if self.membership.is_member(&id) {
            return;
        }
        let recently = self
            .announced
            .get(&id)
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1));
        if !recently {
            self.announced.insert(id.clone(), Instant::now());
            match self.membership.announce(id) {
                Ok(fx) => self.apply(fx),
                Err(e) => debug!(cause = %e, "announce failed"),
            }
        }
    }

    /// Fires the timers that are due.
    fn on_timers(&mut self) {
        for timer in self.timers.take_due(tokio::time::Instant::now()) {
            match self.membership.handle_timer(timer) {
                Ok(fx) => self.apply(fx),
                Err(e) => debug!(cause = %e, "timer refused"),
            }
        }
    }

    /// Our presence out, the view refreshed, the join line if it is time,
    /// and every 20 ticks the replay window and the introductions pruned.
    fn on_tick(&mut self) {
        self.sync_keys();
        let id = self.membership.identity().clone();
        let presence = Datagram::Presence {
            id,
            load: self.load.sample(),
        };
        self.send(self.group, &presence);
        let members = self.membership.members();
        for seed in &self.cfg.seeds {
            if !members.iter().any(|m| m.addr == *seed) {
                self.send(*seed, &presence);
            }
        }
        for m in &members {
            self.send(m.addr, &presence);
        }
        self.state.refresh(&self.membership);
        if !self.joined && self.started.elapsed() >= DISCOVERY_WINDOW {
            self.joined = true;
            announce_join(
                self.cfg,
                members.len() + 1,
                self.membership.identity(),
                &mut self.on_join,
            );
        }
        self.ticks += 1;
        if self.ticks.is_multiple_of(20) {
            self.opener.forget_idle(unix_millis());
            self.announced
                .retain(|_, t| t.elapsed() < Duration::from_secs(10));
        }
    }

    /// Follows a key rotation: seals with the ring's sealing key and opens
    /// with every key it accepts, from this tick on.
    fn sync_keys(&mut self) {
        let now = self.keys.datagram();
        if now != self.dkeys {
            self.sealer.rekey(&now[0]);
            self.opener.set_keys(&now);
            info!(keys = now.len(), "datagram keys changed (key rotation)");
            self.dkeys = now;
        }
    }

    /// Carries out membership's effects.
    fn apply(&mut self, fx: Effects) {
        for (to, data) in fx.sends {
            self.send(to, &Datagram::Swim(data));
        }
        let now = tokio::time::Instant::now();
        for (after, timer) in fx.timers {
            self.timers.push(now + after, timer);
        }
        for ev in fx.events {
            info!(event = ?ev, "membership");
            match &ev {
                Event::Down(id) => {
                    let _ = self.down.send(id.clone());
                }
                Event::Active if !self.joined => {
                    self.joined = true;
                    announce_join(
                        self.cfg,
                        self.membership.members().len() + 1,
                        self.membership.identity(),
                        &mut self.on_join,
                    );
                }
                Event::Rejoined(id) => self.state.rejoined(id.clone()),
                _ => {}
            }
        }
        self.state.refresh(&self.membership);
    }
}

/// Prints the join line, lets the check-in task go ahead and records our
/// identity (`node.json`).
fn announce_join(
    cfg: &AgentConfig,
    n: usize,
    me: &NodeId,
    on_join: &mut Option<oneshot::Sender<IpAddr>>,
) {
    use std::io::Write;
    let line = format!(
        "omnode: node {} joined cluster {} ({} nodes)",
        cfg.name, cfg.cluster, n
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    info!(nodes = n, "joined");
    if let Some(tx) = on_join.take() {
        let _ = tx.send(me.addr.ip());
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
