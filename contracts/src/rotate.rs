//! Key rotation (`omctl key rotate`): how a cluster moves to a new key
//! without dropping a member.
//!
//! The member where the admin runs the command makes a new key and hands it,
//! over sealed exec streams under the old key, to every live member, and to
//! `omboot` ([`ROTATE_PATH`], an admin request whose body carries the new
//! key sealed under the old one, [`seal_key`]). Every holder then keeps a
//! [`KeyRing`] through three phases, timed from when it got the key (no
//! clocks need agree):
//!
//! 1. **announced**, until `switch`: it still seals with the old key and
//!    accepts both, so the members not told yet are still heard;
//! 2. **switched**, until `retire`: it seals with the new key and still
//!    accepts the old, for members that switch a moment later;
//! 3. **settled**: only the new key; anything sealed with the old one is
//!    refused. A member that was away during the window rejoins through
//!    admission (a netbooted node at its next boot, a workstation with a
//!    token).
//!
//! A key file always holds the newest key, so a member restarted during the
//! window comes back on the new one.
//!
//! Pure: times are milliseconds on the caller's clock.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::key::{ClusterKey, Purpose, KEY_LEN};

/// Where an agent hands `omboot` the new key (`POST`, JSON
/// [`RotateRequest`], signed like every admin request with the old key).
pub const ROTATE_PATH: &str = "/api/v1/key";
/// Default time from handing out the key to sealing with it, ms: long
/// enough for every member to be told.
pub const DEFAULT_SWITCH_MS: u64 = 15_000;
/// Default time the old key is still accepted after the switch, ms.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// Shortest window accepted: below it, members a heartbeat late would be
/// cut off.
pub const MIN_WINDOW_MS: u64 = 5_000;
/// Longest window accepted: the old key must stop working soon.
pub const MAX_WINDOW_MS: u64 = 24 * 3600 * 1000;

const AAD_LABEL: &[u8] = b"omcluster/v1/rotate";
const NONCE_LEN: usize = 24;

/// Why a rotation is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotateError {
    /// Another rotation has not ended yet.
    #[error("a key rotation is already under way (the old key retires in {retire_in_s} s)")]
    Busy {
        /// Seconds until the running one ends.
        retire_in_s: u64,
    },
    /// The window is out of bounds.
    #[error("a rotation window of {0} ms is outside {MIN_WINDOW_MS}..={MAX_WINDOW_MS} ms")]
    Window(u64),
    /// The sealed key is not hex of the right length.
    #[error("the sealed key is malformed")]
    Malformed,
    /// The sealed key opens under none of our keys.
    #[error("the sealed key does not open with this cluster's key")]
    DoesNotOpen,
}

/// A rotation in progress: the key being replaced and the two deadlines.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rotation {
    old: ClusterKey,
    switch_at: u64,
    retire_at: u64,
}

/// Where a ring is in a rotation, for status lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// One key.
    Settled,
    /// The new key is known; the old one still seals.
    Announced {
        /// Until the switch, ms.
        switch_in_ms: u64,
        /// Until the old key is refused, ms.
        retire_in_ms: u64,
    },
    /// The new key seals; the old one is still accepted.
    Switched {
        /// Until the old key is refused, ms.
        retire_in_ms: u64,
    },
}

/// The keys a member holds: the newest, and during a rotation the one it
/// replaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRing {
    newest: ClusterKey,
    rotation: Option<Rotation>,
}

impl KeyRing {
    /// A ring of one key.
    pub fn new(key: ClusterKey) -> Self {
        Self {
            newest: key,
            rotation: None,
        }
    }

    /// The newest key: what key files hold and admission hands out.
    pub fn newest(&self) -> &ClusterKey {
        &self.newest
    }

    /// The key to seal with at `now`.
    pub fn sealing(&self, now: u64) -> &ClusterKey {
        match &self.rotation {
            Some(r) if now < r.switch_at => &r.old,
            _ => &self.newest,
        }
    }

    /// The keys accepted at `now`, the sealing key first.
    pub fn accepted(&self, now: u64) -> Vec<&ClusterKey> {
        match &self.rotation {
            Some(r) if now < r.switch_at => vec![&r.old, &self.newest],
            Some(r) if now < r.retire_at => vec![&self.newest, &r.old],
            _ => vec![&self.newest],
        }
    }

    /// Where the ring is at `now`.
    pub fn phase(&self, now: u64) -> Phase {
        match &self.rotation {
            Some(r) if now < r.switch_at => Phase::Announced {
                switch_in_ms: r.switch_at - now,
                retire_in_ms: r.retire_at - now,
            },
            Some(r) if now < r.retire_at => Phase::Switched {
                retire_in_ms: r.retire_at - now,
            },
            _ => Phase::Settled,
        }
    }

    /// Forgets the old key once it has retired; true when it did.
    pub fn settle(&mut self, now: u64) -> bool {
        match &self.rotation {
            Some(r) if now >= r.retire_at => {
                self.rotation = None;
                true
            }
            _ => false,
        }
    }

    /// Takes `new` at `now`: sealing switches after `switch_in_ms`, the old
    /// key is refused `window_ms` after that. The same key again is a no-op
    /// (`Ok(false)`: a retried hand-out); another key while a rotation is
    /// under way is [`RotateError::Busy`].
    pub fn rotate(
        &mut self,
        new: ClusterKey,
        now: u64,
        switch_in_ms: u64,
        window_ms: u64,
    ) -> Result<bool, RotateError> {
        if new == self.newest {
            return Ok(false);
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window_ms) {
            return Err(RotateError::Window(window_ms));
        }
        self.settle(now);
        if let Some(r) = &self.rotation {
            return Err(RotateError::Busy {
                retire_in_s: r.retire_at.saturating_sub(now).div_ceil(1000),
            });
        }
        let old = std::mem::replace(&mut self.newest, new);
        let switch_at = now.saturating_add(switch_in_ms);
        self.rotation = Some(Rotation {
            old,
            switch_at,
            retire_at: switch_at.saturating_add(window_ms),
        });
        Ok(true)
    }
}

/// `POST` [`ROTATE_PATH`]: the new key for `omboot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// The new key, sealed under the sending member's sealing key
    /// ([`seal_key`]).
    pub sealed: String,
    /// From receipt to the switch, ms.
    pub switch_in_ms: u64,
    /// From the switch to the old key's end, ms.
    pub window_ms: u64,
}

fn aead(key: &ClusterKey, cluster: &str) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new((&key.derive(cluster, Purpose::Rotate)).into())
}

fn aad(cluster: &str) -> Vec<u8> {
    [AAD_LABEL, b"\0", cluster.as_bytes()].concat()
}

/// `new` sealed under `with` for cluster `cluster` (XChaCha20-Poly1305 under
/// a sub-key, random nonce), as hex: only a holder of `with` opens it.
pub fn seal_key(with: &ClusterKey, cluster: &str, new: &ClusterKey) -> String {
    let nonce: [u8; NONCE_LEN] = rand10::random();
    let ct = aead(with, cluster)
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: new.as_bytes(),
                aad: &aad(cluster),
            },
        )
        .expect("xchacha20poly1305 encryption of a key cannot fail");
    hex::encode([&nonce[..], &ct].concat())
}

/// Opens [`seal_key`]'s output with any of `keys`.
pub fn open_key(
    keys: &[&ClusterKey],
    cluster: &str,
    sealed: &str,
) -> Result<ClusterKey, RotateError> {
    let bytes = hex::decode(sealed.trim()).map_err(|_| RotateError::Malformed)?;
    if bytes.len() != NONCE_LEN + KEY_LEN + 16 {
        return Err(RotateError::Malformed);
    }
    let (nonce, ct) = bytes.split_at(NONCE_LEN);
    for key in keys {
        if let Ok(plain) = aead(key, cluster).decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ct,
                aad: &aad(cluster),
            },
        ) {
            let raw: [u8; KEY_LEN] = plain.try_into().map_err(|_| RotateError::Malformed)?;
            return Ok(ClusterKey::from_bytes(raw));
        }
    }
    Err(RotateError::DoesNotOpen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_moves_through_the_three_phases() {
        let old = ClusterKey::generate();
        let new = ClusterKey::generate();
        let mut ring = KeyRing::new(old.clone());
        assert_eq!(ring.phase(0), Phase::Settled);
        assert!(ring.rotate(new.clone(), 1000, 2000, 10_000).unwrap());
        assert_eq!(ring.newest(), &new);
        // Announced: old seals, both open.
        assert_eq!(ring.sealing(1500), &old);
        assert_eq!(ring.accepted(1500), vec![&old, &new]);
        assert_eq!(
            ring.phase(1500),
            Phase::Announced {
                switch_in_ms: 1500,
                retire_in_ms: 11_500
            }
        );
        // Switched: new seals, both open.
        assert_eq!(ring.sealing(3000), &new);
        assert_eq!(ring.accepted(3000), vec![&new, &old]);
        assert!(!ring.settle(12_999));
        // Settled: the old key is gone.
        assert_eq!(ring.accepted(13_000), vec![&new]);
        assert!(ring.settle(13_000));
        assert_eq!(ring.phase(13_000), Phase::Settled);
        assert_eq!(
            ring.accepted(0),
            vec![&new],
            "a settled ring forgets the old key"
        );
    }

    #[test]
    fn a_second_rotation_waits_for_the_first_and_a_repeat_is_a_no_op() {
        let mut ring = KeyRing::new(ClusterKey::generate());
        let new = ClusterKey::generate();
        assert!(ring.rotate(new.clone(), 0, 1000, 5000).unwrap());
        assert!(!ring.rotate(new.clone(), 10, 1000, 5000).unwrap());
        assert_eq!(
            ring.rotate(ClusterKey::generate(), 1000, 1000, 5000),
            Err(RotateError::Busy { retire_in_s: 5 })
        );
        assert!(ring
            .rotate(ClusterKey::generate(), 6000, 1000, 5000)
            .unwrap());
        assert_eq!(
            KeyRing::new(new).rotate(ClusterKey::generate(), 0, 0, 10),
            Err(RotateError::Window(10))
        );
    }

    #[test]
    fn a_sealed_key_opens_only_with_the_old_key_and_cluster() {
        let old = ClusterKey::generate();
        let new = ClusterKey::generate();
        let sealed = seal_key(&old, "lab", &new);
        assert!(!sealed.contains(&new.to_hex()));
        let other = ClusterKey::generate();
        assert_eq!(open_key(&[&other, &old], "lab", &sealed).unwrap(), new);
        assert_eq!(
            open_key(&[&other], "lab", &sealed),
            Err(RotateError::DoesNotOpen)
        );
        assert_eq!(
            open_key(&[&old], "lab2", &sealed),
            Err(RotateError::DoesNotOpen)
        );
        assert_eq!(open_key(&[&old], "lab", "zz"), Err(RotateError::Malformed));
        let mut flipped = hex::decode(&sealed).unwrap();
        flipped[30] ^= 1;
        assert_eq!(
            open_key(&[&old], "lab", &hex::encode(flipped)),
            Err(RotateError::DoesNotOpen)
        );
    }
}
