//! `omctl key` and `omctl key rotate` ([`contracts::rotate`]): the key this
//! node uses, and moving the whole cluster to a new one. The member where
//! the admin asks makes the key and hands it out: first to the boot server
//! (signed and sealed with the old key; if it refuses, nothing has changed
//! anywhere and the rotation stops), then to itself, then to every live
//! member at once over sealed exec streams. Everyone switches at the same
//! moment, [`DEFAULT_SWITCH_MS`] after the start, and refuses the old key
//! the window after that.

use std::net::SocketAddr;
use std::time::Instant;

use contracts::key::ClusterKey;
use contracts::rotate::{
    seal_key, Phase, RotateRequest, DEFAULT_SWITCH_MS, MAX_WINDOW_MS, MIN_WINDOW_MS, ROTATE_PATH,
};
use futures::future::join_all;
use tracing::{info, warn};

use super::admission::signed;
use super::control_server::Controller;
use crate::exec::{self, ExecContext, EXIT_CANNOT_RUN, EXIT_NO_PERMISSION};
use crate::keys::KeysError;
use crate::wire::{KeyBytes, PeerFrame};

/// Takes the new key another agent hands out during a rotation: seal with
/// it after `switch_in_ms`, refuse the old one `window_ms` after that.
pub(super) fn take_key(
    ctx: &ExecContext,
    key: KeyBytes,
    switch_in_ms: u64,
    window_ms: u64,
    peer: Option<SocketAddr>,
) -> PeerFrame {
    let new = ClusterKey::from_bytes(key.0);
    let fingerprint = new.fingerprint(ctx.keys.cluster());
    match ctx.keys.rotate(new, switch_in_ms, window_ms) {
        Ok(fresh) => {
            info!(?peer, %fingerprint, fresh, switch_in_ms, window_ms, "took a new cluster key");
            PeerFrame::KeyDone(Vec::new())
        }
        Err(KeysError::File(e)) => {
            warn!(?peer, %fingerprint, cause = %e, "took a new cluster key but could not save it");
            PeerFrame::KeyDone(vec![format!(
                "node {} took the new key, but {e}; after a restart it needs admission",
                ctx.node
            )])
        }
        Err(KeysError::Rotate(e)) => PeerFrame::Failed {
            code: EXIT_CANNOT_RUN,
            message: e.to_string(),
        },
    }
}

fn seconds(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

impl Controller {
    /// `omctl key [rotate --window W]` for the caller `uid`.
    pub(super) async fn key(
        &self,
        rotate: Option<u64>,
        uid: u32,
    ) -> Result<Vec<String>, (i32, String)> {
        match rotate {
            None => Ok(vec![self.key_line()]),
            Some(window_ms) => self.rotate(window_ms, uid).await,
        }
    }

    fn key_line(&self) -> String {
        let (fingerprint, phase) = self.keys.describe();
        let node = &self.load.exec.node;
        match phase {
            Phase::Settled => format!("node {node}: cluster key {fingerprint}"),
            Phase::Announced {
                switch_in_ms,
                retire_in_ms,
            } => format!(
                "node {node}: cluster key {fingerprint}, sealing with it in {} s; the old key is refused in {} s",
                seconds(switch_in_ms),
                seconds(retire_in_ms)
            ),
            Phase::Switched { retire_in_ms } => format!(
                "node {node}: cluster key {fingerprint}; the old key is still accepted for {} s",
                seconds(retire_in_ms)
            ),
        }
    }

    async fn rotate(&self, window_ms: u64, uid: u32) -> Result<Vec<String>, (i32, String)> {
        if uid != 0 {
            return Err((
                EXIT_NO_PERMISSION,
                "rotating the cluster key takes root".into(),
            ));
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err((
                EXIT_CANNOT_RUN,
                format!(
                    "a window of {} s is outside {} s..{} s",
                    window_ms / 1000,
                    MIN_WINDOW_MS / 1000,
                    MAX_WINDOW_MS / 1000
                ),
            ));
        }
        if let (_, Phase::Announced { retire_in_ms, .. } | Phase::Switched { retire_in_ms }) =
            self.keys.describe()
        {
            return Err((
                EXIT_CANNOT_RUN,
                format!(
                    "a key rotation is already under way; it ends in {} s",
                    seconds(retire_in_ms)
                ),
            ));
        }
        let start = Instant::now();
        let new = ClusterKey::generate();
        let cluster = self.keys.cluster().to_string();
        let fingerprint = new.fingerprint(&cluster);
        let switch_in = |now: Instant| {
            DEFAULT_SWITCH_MS.saturating_sub(now.duration_since(start).as_millis() as u64)
        };
        let mut lines = Vec::new();

        // The boot server first: it admits machines with the newest key and
        // checks every signed request, so a cluster whose head kept the old
        // key would lock out everyone after the window.
        let stream_key = self.keys.stream();
        match &self.boot_server {
            Some(server) => {
                let req = RotateRequest {
                    sealed: seal_key(&self.keys.sealing(), &cluster, &new),
                    switch_in_ms: switch_in(Instant::now()),
                    window_ms,
                };
                let body = serde_json::to_vec(&req).expect("a rotate request serialises");
                signed(server, "POST", ROTATE_PATH, body)
                    .await
                    .map_err(|(code, why)| {
                        (code, format!("the key stays as it is: {why}"))
                    })?;
                lines.push(format!("boot server {} took the new key", server.base));
            }
            None => lines.push(
                "no boot server told: this agent runs without --checkin (if the cluster has a head, rotate from there)".into(),
            ),
        }

        match self
            .keys
            .rotate(new.clone(), switch_in(Instant::now()), window_ms)
        {
            Ok(_) => {}
            Err(KeysError::File(e)) => lines.push(format!(
                "node {} took the new key, but {e}; after a restart it needs admission",
                self.load.exec.node
            )),
            Err(KeysError::Rotate(e)) => return Err((EXIT_CANNOT_RUN, e.to_string())),
        }
        info!(%fingerprint, window_ms, "rotating the cluster key");

        let peers = self.state.view().live_peers();
        let handed = join_all(peers.iter().map(|id| {
            exec::hand_key(
                id,
                &stream_key,
                KeyBytes(*new.as_bytes()),
                switch_in(Instant::now()),
                window_ms,
            )
        }))
        .await;
        let mut took = 1;
        for (id, r) in peers.iter().zip(handed) {
            match r {
                Ok(warnings) => {
                    took += 1;
                    lines.extend(warnings);
                }
                Err((_, why)) => {
                    warn!(node = %id.name, %why, "a member did not take the new key");
                    lines.push(format!(
                        "node {} did not take the new key ({why}): it is cut off when the window ends and rejoins through admission",
                        id.name
                    ));
                }
            }
        }
        let switch_s = seconds(switch_in(Instant::now()));
        lines.insert(
            0,
            format!(
                "new cluster key {fingerprint}: {took} of {} nodes took it; they seal with it in {switch_s} s and refuse the old key {} s after that",
                peers.len() + 1,
                seconds(window_ms)
            ),
        );
        Ok(lines)
    }
}
