//! SWIM membership through `foca`: the node identity and a pure wrapper that
//! turns foca's runtime callbacks into a list of effects (datagrams to send,
//! timers to arm, membership events) for the agent's I/O shell to carry out.
//!
//! Tuning (see [`config`]): probes every 500 ms, a suspect is declared down
//! after 1.5 s, and updates are piggybacked often enough that a death is known
//! by every member of a 16-node cluster well within 5 s.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use foca::{
    AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec,
};
use rand10::rngs::StdRng;
use serde::{Deserialize, Serialize};

pub use foca::Timer;

/// A node's identity in the cluster. A restart makes a new `started_ms`, so
/// a rejoin is a new identity that wins over the old one at the same address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's name (unique in a cluster).
    pub name: String,
    /// Where its agent listens (UDP for membership, TCP for exec, same port).
    pub addr: SocketAddr,
    /// When this agent started, ms since the Unix epoch.
    pub started_ms: u64,
    /// Bumped when the node rejoins after being declared down.
    pub bump: u32,
}

impl foca::Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            bump: self.bump.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.started_ms, self.bump) > (adversary.started_ms, adversary.bump)
    }
}

/// A change in membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member is alive.
    Up(NodeId),
    /// A member was declared dead.
    Down(NodeId),
    /// A member came back under a newer identity.
    Renamed(NodeId, NodeId),
    /// We are known by at least one other member.
    Active,
    /// Every other member is gone.
    Idle,
    /// We were declared down and rejoined under a new identity.
    Rejoined(NodeId),
}

/// What the I/O shell must do after feeding the membership something.
#[derive(Debug, Default)]
pub struct Effects {
    /// Datagrams (unsealed foca payloads) to send.
    pub sends: Vec<(SocketAddr, Vec<u8>)>,
    /// Timers to arm.
    pub timers: Vec<(Duration, Timer<NodeId>)>,
    /// Membership changes.
    pub events: Vec<Event>,
}

/// Membership errors.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Foca refused the input (malformed payload, or a message for another identity).
    #[error("membership refused input: {0}")]
    Foca(String),
}

/// The foca configuration used by every agent.
pub fn config() -> Config {
    let mut c = Config::new_lan(NonZeroU32::new(32).expect("nonzero"));
    c.probe_period = Duration::from_millis(500);
    c.probe_rtt = Duration::from_millis(250);
    c.num_indirect_probes = NonZeroUsize::new(3).expect("nonzero");
    c.suspect_to_down_after = Duration::from_millis(1500);
    c.remove_down_after = Some(Duration::from_secs(120));
    c.max_packet_size = NonZeroUsize::new(1200).expect("nonzero");
    c.notify_down_members = true;
    c
}

/// The membership state machine of one agent.
pub struct Membership {
    foca: Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>,
    rt: AccumulatingRuntime<NodeId>,
}

impl Membership {
    /// A membership for `me`, alone until it meets someone.
    pub fn new(me: NodeId) -> Self {
        let rng: StdRng = rand10::make_rng();
        Self {
            foca: Foca::new(me, config(), rng, PostcardCodec),
            rt: AccumulatingRuntime::new(),
        }
    }

    /// Our current identity.
    pub fn identity(&self) -> &NodeId {
        self.foca.identity()
    }

    /// Feeds a foca payload received from the network.
    pub fn handle_data(&mut self, data: &[u8]) -> Result<Effects, MembershipError> {
        let r = self.foca.handle_data(data, &mut self.rt);
        self.finish(r)
    }

    /// Feeds an expired timer.
    pub fn handle_timer(&mut self, timer: Timer<NodeId>) -> Result<Effects, MembershipError> {
        let r = self.foca.handle_timer(timer, &mut self.rt);
        self.finish(r)
    }

    /// Introduces ourselves to `dst` (found by discovery or a seed).
    pub fn announce(&mut self, dst: NodeId) -> Result<Effects, MembershipError> {
        let r = self.foca.announce(dst, &mut self.rt);
        self.finish(r)
    }

    /// Tells the cluster we are leaving.
    pub fn leave(&mut self) -> Result<Effects, MembershipError> {
        let r = self.foca.leave_cluster(&mut self.rt);
        self.finish(r)
    }

    /// Active members (alive or suspect), not counting ourselves.
    pub fn members(&self) -> Vec<NodeId> {
        self.foca.iter_members().map(|m| m.id().clone()).collect()
    }

    /// Every member foca knows with its state (alive, suspect, down).
    pub fn states(&self) -> Vec<(NodeId, foca::State)> {
        self.foca
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.state()))
            .collect()
    }

    /// Whether `id` is an active member.
    pub fn is_member(&self, id: &NodeId) -> bool {
        self.foca.iter_members().any(|m| m.id() == id)
    }

    fn finish(&mut self, result: Result<(), foca::Error>) -> Result<Effects, MembershipError> {
        let mut fx = Effects::default();
        while let Some((to, data)) = self.rt.to_send() {
            fx.sends.push((to.addr, data.to_vec()));
        }
        while let Some((after, timer)) = self.rt.to_schedule() {
            fx.timers.push((after, timer));
        }
        while let Some(n) = self.rt.to_notify() {
            let ev = match n {
                OwnedNotification::MemberUp(id) => Event::Up(id),
                OwnedNotification::MemberDown(id) => Event::Down(id),
                OwnedNotification::Rename(a, b) => Event::Renamed(a, b),
                OwnedNotification::Active => Event::Active,
                OwnedNotification::Idle => Event::Idle,
                OwnedNotification::Rejoin(id) => Event::Rejoined(id),
                _ => continue,
            };
            fx.events.push(ev);
        }
        result
            .map(|()| fx)
            .map_err(|e| MembershipError::Foca(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};

    fn id(n: u8) -> NodeId {
        NodeId {
            name: format!("n{n}"),
            addr: SocketAddr::from(([10, 0, 0, n], 7946)),
            started_ms: 1000,
            bump: 0,
        }
    }

    /// A deterministic in-memory network: delivers datagrams and fires timers
    /// in virtual time order, dropping traffic to `dead` nodes.
    struct Net {
        nodes: BTreeMap<SocketAddr, Membership>,
        queue: VecDeque<(SocketAddr, Vec<u8>)>,
        timers: Vec<(Duration, SocketAddr, Timer<NodeId>)>,
        now: Duration,
        dead: Vec<SocketAddr>,
        events: Vec<(SocketAddr, Event)>,
    }

    impl Net {
        fn apply(&mut self, at: SocketAddr, fx: Effects) {
            self.queue.extend(fx.sends);
            for (d, t) in fx.timers {
                self.timers.push((self.now + d, at, t));
            }
            for e in fx.events {
                self.events.push((at, e));
            }
        }

        fn run_until(&mut self, until: Duration) {
            loop {
                while let Some((to, data)) = self.queue.pop_front() {
                    if self.dead.contains(&to) {
                        continue;
                    }
                    if let Some(m) = self.nodes.get_mut(&to) {
                        if let Ok(fx) = m.handle_data(&data) {
                            self.apply(to, fx);
                        }
                    }
                }
                self.timers.sort_by_key(|t| t.0);
                if self.timers.is_empty() || self.timers[0].0 > until {
                    self.now = until;
                    return;
                }
                let (at, who, t) = self.timers.remove(0);
                self.now = at;
                if self.dead.contains(&who) {
                    continue;
                }
                let fx = self.nodes.get_mut(&who).unwrap().handle_timer(t).unwrap();
                self.apply(who, fx);
            }
        }
    }

    #[test]
    fn eight_nodes_join_and_a_death_is_seen_by_all() {
        let mut net = Net {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            timers: Vec::new(),
            now: Duration::ZERO,
            dead: Vec::new(),
            events: Vec::new(),
        };
        for n in 1..=8 {
            net.nodes.insert(id(n).addr, Membership::new(id(n)));
        }
        // Everyone announces to node 1, as discovery would make them.
        for n in 2..=8 {
            let fx = net
                .nodes
                .get_mut(&id(n).addr)
                .unwrap()
                .announce(id(1))
                .unwrap();
            net.apply(id(n).addr, fx);
        }
        net.run_until(Duration::from_secs(3));
        for m in net.nodes.values() {
            assert_eq!(
                m.members().len(),
                7,
                "{} sees {:?}",
                m.identity().name,
                m.members()
            );
        }
        let victim = id(5).addr;
        net.dead.push(victim);
        let killed_at = net.now;
        net.run_until(killed_at + Duration::from_secs(5));
        for (addr, m) in &net.nodes {
            if *addr != victim {
                assert!(
                    !m.members().iter().any(|x| x.addr == victim),
                    "{} still sees the dead node",
                    m.identity().name
                );
                assert!(net
                    .events
                    .iter()
                    .any(|(a, e)| a == addr && matches!(e, Event::Down(d) if d.addr == victim)));
            }
        }
    }

    #[test]
    fn garbage_is_refused() {
        let mut m = Membership::new(id(1));
        assert!(m.handle_data(b"\xff\xff\xff not foca").is_err());
    }
}
