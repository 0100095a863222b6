//! Who may look and who may steer, with no I/O: one-time login tokens (what
//! `omctl web` prints) and the sessions they are exchanged for (an HttpOnly
//! cookie in the browser).
//!
//! Only hashes of tokens and session ids are kept, so a memory dump of the
//! agent gives no way in. A token works once and for [`TOKEN_TTL_MS`]; a
//! session lasts [`SESSION_TTL_MS`] from its last use (a wall screen stays
//! logged in while it watches). Both tables are bounded: the oldest entry
//! goes when a new one would overflow.
//!
//! Secrets come from the caller (randomness is I/O); time is passed in as
//! Unix milliseconds.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long a login token from `omctl web` can be used.
pub const TOKEN_TTL_MS: u64 = 15 * 60 * 1000;
/// How long a session lasts after its last request.
pub const SESSION_TTL_MS: u64 = 24 * 3600 * 1000;
/// Tokens waiting to be used, at most.
pub const MAX_TOKENS: usize = 256;
/// Sessions open at once, at most.
pub const MAX_SESSIONS: usize = 1024;
/// What a login token starts with.
pub const TOKEN_PREFIX: &str = "omw1.";

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// See everything, change nothing (a wall screen).
    Read,
    /// See and act: migrate, knobs.
    Steer,
}

impl Access {
    /// `read` or `steer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Steer => "steer",
        }
    }
}

/// Why a token was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// Not of the form `omw1.` + 64 hex digits.
    #[error("that is not a login token (they look like omw1.<64 hex digits>; run omctl web)")]
    Malformed,
    /// Never issued, already used, or expired.
    #[error("the login token is unknown, used or expired: run omctl web for a new one")]
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    access: Access,
    /// Unix ms it ends at.
    until_ms: u64,
    /// Unix ms it was made at (the oldest goes first).
    made_ms: u64,
}

/// The login tokens and sessions of one web view.
#[derive(Debug, Default)]
pub struct Sessions {
    tokens: HashMap<[u8; 32], Entry>,
    sessions: HashMap<[u8; 32], Entry>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Drops the expired entries, then the oldest while `table` is at `cap`.
fn make_room(table: &mut HashMap<[u8; 32], Entry>, cap: usize, now_ms: u64) {
    table.retain(|_, e| e.until_ms > now_ms);
    while table.len() >= cap {
        let Some(oldest) = table.iter().min_by_key(|(_, e)| e.made_ms).map(|(k, _)| *k) else {
            break;
        };
        table.remove(&oldest);
    }
}

impl Sessions {
    /// Registers a login token made of `secret` for `access`; returns the
    /// token to hand out.
    pub fn issue(&mut self, secret: [u8; 32], access: Access, now_ms: u64) -> String {
        let token = format!("{TOKEN_PREFIX}{}", hex::encode(secret));
        make_room(&mut self.tokens, MAX_TOKENS, now_ms);
        self.tokens.insert(
            digest(&token),
            Entry {
                access,
                until_ms: now_ms + TOKEN_TTL_MS,
                made_ms: now_ms,
            },
        );
        token
    }

    /// Takes `token` (once) and opens a session with id `hex(secret)`;
    /// returns that id and what it may do.
    pub fn login(
        &mut self,
        token: &str,
        secret: [u8; 32],
        now_ms: u64,
    ) -> Result<(String, Access), LoginError> {
        let well_formed = token
            .strip_prefix(TOKEN_PREFIX)
            .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        if !well_formed {
            return Err(LoginError::Malformed);
        }
        let entry = self
            .tokens
            .remove(&digest(token))
            .filter(|e| e.until_ms > now_ms)
            .ok_or(LoginError::Refused)?;
        let id = hex::encode(secret);
        make_room(&mut self.sessions, MAX_SESSIONS, now_ms);
        self.sessions.insert(
            digest(&id),
            Entry {
                access: entry.access,
                until_ms: now_ms + SESSION_TTL_MS,
                made_ms: now_ms,
            },
        );
        Ok((id, entry.access))
    }

    /// What the session `id` may do, if it is open; using it extends it.
    pub fn check(&mut self, id: &str, now_ms: u64) -> Option<Access> {
        let e = self.sessions.get_mut(&digest(id))?;
        if e.until_ms <= now_ms {
            self.sessions.remove(&digest(id));
            return None;
        }
        e.until_ms = now_ms + SESSION_TTL_MS;
        Some(e.access)
    }

    /// Ends the session `id`.
    pub fn logout(&mut self, id: &str) {
        self.sessions.remove(&digest(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once_and_opens_a_session_of_its_access() {
        let mut s = Sessions::default();
        let t = s.issue([1; 32], Access::Read, 1000);
        assert!(t.starts_with("omw1.") && t.len() == 5 + 64);
        let (id, access) = s.login(&t, [2; 32], 2000).unwrap();
        assert_eq!(access, Access::Read);
        assert_eq!(s.check(&id, 3000), Some(Access::Read));
        assert_eq!(s.login(&t, [3; 32], 2000), Err(LoginError::Refused));
        s.logout(&id);
        assert_eq!(s.check(&id, 3000), None);
    }

    #[test]
    fn expired_tokens_and_sessions_are_refused() {
        let mut s = Sessions::default();
        let t = s.issue([1; 32], Access::Steer, 0);
        assert_eq!(s.login(&t, [2; 32], TOKEN_TTL_MS), Err(LoginError::Refused));
        let t = s.issue([4; 32], Access::Steer, 0);
        let (id, _) = s.login(&t, [5; 32], 10).unwrap();
        // Use keeps it open…
        assert_eq!(s.check(&id, SESSION_TTL_MS), Some(Access::Steer));
        // …silence ends it.
        assert_eq!(s.check(&id, 2 * SESSION_TTL_MS + 1), None);
    }

    #[test]
    fn malformed_tokens_say_what_a_token_looks_like() {
        let mut s = Sessions::default();
        for bad in [
            "",
            "omw1.",
            "omw1.zz",
            "hello",
            &format!("omw2.{}", "a".repeat(64)),
        ] {
            assert_eq!(
                s.login(bad, [0; 32], 0),
                Err(LoginError::Malformed),
                "{bad:?}"
            );
        }
        let forged = format!("omw1.{}", "ab".repeat(32));
        assert_eq!(s.login(&forged, [0; 32], 0), Err(LoginError::Refused));
    }

    #[test]
    fn the_tables_are_bounded_oldest_first() {
        let mut s = Sessions::default();
        let first = s.issue([0; 32], Access::Read, 0);
        for i in 1..=MAX_TOKENS {
            let mut secret = [0; 32];
            secret[..8].copy_from_slice(&(i as u64).to_be_bytes());
            s.issue(secret, Access::Read, i as u64);
        }
        assert_eq!(s.tokens.len(), MAX_TOKENS);
        assert_eq!(s.login(&first, [9; 32], 500), Err(LoginError::Refused));
    }
}
