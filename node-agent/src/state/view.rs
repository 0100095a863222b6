//! The membership view: the members and their liveness (copied from
//! membership), the last load vector heard from each node, and the jobs
//! this agent placed on each node and has not seen end. Part of the node's
//! state ([`super::State`]): the gossip task and the launcher change it
//! through the owner; readers get a snapshot (a clone) for `status`, `ps`
//! and placement.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use crate::load::LoadVector;
use crate::membership::{node_number, Membership, NodeId};
use crate::placement::{Known, Placed};
use crate::wire::{ClusterStatus, NodeStatus};

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
    /// `alive`, `suspect` or `down`, as `status` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Alive => "alive",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
        }
    }
}

/// What the agent knows of the cluster.
#[derive(Debug, Clone)]
pub struct View {
    cluster: String,
    me: NodeId,
    nodes: BTreeMap<String, (NodeId, NodeState)>,
    loads: HashMap<String, (NodeId, LoadVector, Instant)>,
    placed: HashMap<String, Vec<Placed>>,
}

impl View {
    /// An empty view of cluster `cluster` from node `me`.
    pub(super) fn new(cluster: String, me: NodeId) -> Self {
        Self {
            cluster,
            me,
            nodes: BTreeMap::new(),
            loads: HashMap::new(),
            placed: HashMap::new(),
        }
    }

    /// Copies membership's member states into the view. Nodes membership has
    /// forgotten (removed some time after their death) stay listed as down.
    pub(super) fn refresh(&mut self, membership: &Membership) {
        let states = membership.states();
        self.me = membership.identity().clone();
        for (name, (_, st)) in self.nodes.iter_mut() {
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
            match self.nodes.get(&id.name) {
                // An older identity of a node that came back must not overwrite it.
                Some((old, _)) if (old.started_ms, old.bump) > (id.started_ms, id.bump) => {}
                _ => {
                    self.nodes.insert(id.name.clone(), (id, st));
                }
            }
        }
    }

    /// This node.
    pub fn me(&self) -> &NodeId {
        &self.me
    }

    /// Becomes `me` again (a new incarnation after a rejoin).
    pub(super) fn rejoined(&mut self, me: NodeId) {
        self.me = me;
    }

    /// The liveness of every other node known, by name.
    pub fn members(&self) -> Vec<(String, NodeState)> {
        self.nodes
            .iter()
            .map(|(name, (_, st))| (name.clone(), *st))
            .collect()
    }

    /// Records a load vector heard from `id`; whether its job counts
    /// (running, started, moved in or out) differ from the last one's.
    pub(super) fn heard(&mut self, id: NodeId, load: LoadVector) -> bool {
        let counts = |l: &LoadVector| (l.jobs, l.started, l.moved_in, l.moved_out);
        let new = counts(&load);
        let old = self
            .loads
            .insert(id.name.clone(), (id, load, Instant::now()))
            .map(|(_, l, _)| counts(&l));
        old != Some(new)
    }

    /// The nodes not declared down, besides us.
    pub fn live_peers(&self) -> Vec<NodeId> {
        self.nodes
            .values()
            .filter(|(_, st)| *st != NodeState::Down)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// The other nodes alive now whose current incarnation sent a load
    /// vector less than `max_age` ago, with it.
    pub fn fresh_peers(&self, max_age: std::time::Duration) -> Vec<(NodeId, LoadVector)> {
        self.nodes
            .iter()
            .filter(|(_, (_, st))| *st == NodeState::Alive)
            .filter_map(|(name, (id, _))| {
                let (from, l, at) = self.loads.get(name)?;
                (from.started_ms == id.started_ms && at.elapsed() < max_age)
                    .then(|| (id.clone(), l.clone()))
            })
            .collect()
    }

    /// Us, then every node we know, as placement sees them.
    pub fn known(&self) -> Vec<Known<'_>> {
        let placed = |name: &str| self.placed.get(name).map(Vec::as_slice).unwrap_or(&[]);
        let me = Known {
            id: &self.me,
            down: false,
            heard: None,
            placed: placed(&self.me.name),
        };
        let others = self.nodes.iter().map(|(name, (id, st))| Known {
            id,
            down: *st == NodeState::Down,
            heard: self.loads.get(name).map(|(from, l, _)| (from, l)),
            placed: placed(name),
        });
        std::iter::once(me).chain(others).collect()
    }

    /// Notes job `job` as placed on `node` and not started yet.
    pub(super) fn place(&mut self, node: &str, job: &str) {
        self.placed
            .entry(node.to_string())
            .or_default()
            .push(Placed {
                job: job.to_string(),
                seq: None,
            });
    }

    /// Notes that `node` started `job` as its `seq`th job.
    pub(super) fn started(&mut self, node: &str, job: &str, seq: u64) {
        if let Some(p) = self.placed.get_mut(node) {
            if let Some(x) = p.iter_mut().find(|x| x.job == job) {
                x.seq = Some(seq);
            }
        }
    }

    /// Forgets `job` placed on `node` (it ended).
    pub(super) fn ended(&mut self, node: &str, job: &str) {
        if let Some(p) = self.placed.get_mut(node) {
            p.retain(|x| x.job != job);
        }
    }

    /// The cluster as `omctl status` shows it, with `local` as our load.
    pub fn status(&self, local: LoadVector) -> ClusterStatus {
        let mut nodes = vec![NodeStatus {
            name: self.me.name.clone(),
            number: node_number(&self.me.addr),
            addr: self.me.addr.to_string(),
            state: "alive".into(),
            local: true,
            load: Some(local),
            load_age_ms: Some(0),
        }];
        for (name, (id, st)) in &self.nodes {
            let load = self
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
            cluster: self.cluster.clone(),
            node: self.me.name.clone(),
            nodes,
        }
    }
}
