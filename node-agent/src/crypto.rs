//! Sealing: every datagram between agents and every frame of an exec stream is
//! encrypted and authenticated with XChaCha20-Poly1305 under a key derived from
//! the cluster key (see [`crate::key`]). Pure: bytes and clocks in, bytes out.
//!
//! Datagram layout (all integers big-endian):
//!
//! ```text
//! magic "OMC1" | session u64 | counter u64 | timestamp_ms u64 | ciphertext+tag
//! ```
//!
//! The 24-byte XChaCha nonce is `session | counter | timestamp_ms`, the whole
//! 28-byte header is the associated data, so nothing in it can be altered.
//! The session id is random per agent start and the counter strictly
//! increases, so a nonce never repeats under one key. Replay protection: a
//! per-session sliding window of 64 counters, plus a timestamp bound
//! ([`MAX_SKEW_MS`]) so a packet captured before a receiver forgot a session
//! is too old by then. A restarted sender simply has a new session.
//!
//! During a key rotation ([`contracts::rotate`]) an [`Opener`] holds two
//! keys and tries each ([`Opener::set_keys`]); a [`Sealer`] moves to the new
//! key keeping its session and counter ([`Sealer::rekey`]), so receivers'
//! replay windows carry on. An exec stream's server tries each key on the
//! client's first frame ([`open_first`]).
//!
//! Exec streams: the client sends `"OMS1" | 32 random bytes`, the server
//! answers 32 random bytes; each direction's key is HKDF of the stream root key
//! with both nonces, so a recorded connection replayed later fails on the first
//! frame. Frames are `len u32 | ciphertext+tag` with a per-direction counter as
//! nonce.

use std::collections::HashMap;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Magic at the start of every sealed datagram.
pub const DATAGRAM_MAGIC: &[u8; 4] = b"OMC1";
/// What starts both hellos of an exec stream, before the protocol digit.
pub const STREAM_MAGIC: &[u8; 3] = b"OMS";
/// The peer protocol's number ([`crate::wire::PeerFrame`] and the stream's
/// hellos): up by one with every change to them. It travels as one ASCII
/// digit after [`STREAM_MAGIC`]; release 0.1.0's agents sent `OMS1` and
/// knew no version check.
pub const PEER_PROTOCOL: u8 = 4;
/// Sealed datagram header length.
pub const HEADER_LEN: usize = 4 + 8 + 8 + 8;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// How far a datagram's timestamp may be from the receiver's clock.
pub const MAX_SKEW_MS: u64 = 60_000;
/// Sessions idle longer than this are forgotten (more than twice the skew
/// bound, so a forgotten session's old packets are already too old).
pub const SESSION_IDLE_MS: u64 = 3 * MAX_SKEW_MS;
/// Most sessions remembered at once.
pub const MAX_SESSIONS: usize = 4096;
const WINDOW: u64 = 64;

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Shorter than a header and a tag.
    #[error("datagram of {0} bytes is too short")]
    TooShort(usize),
    /// Does not start with the datagram magic.
    #[error("datagram has a wrong magic")]
    BadMagic,
    /// The packet is one we sent (multicast loops back).
    #[error("datagram is our own")]
    OwnPacket,
    /// Timestamp outside the accepted window.
    #[error("datagram timestamp is {skew_ms} ms away from our clock")]
    Stale {
        /// Distance from our clock.
        skew_ms: u64,
    },
    /// The counter was already seen (or is below the window).
    #[error("datagram counter {counter} of session {session:016x} is a replay")]
    Replayed {
        /// Sender session.
        session: u64,
        /// Counter seen before.
        counter: u64,
    },
    /// Authentication failed: wrong key, or the bytes were altered.
    #[error("datagram failed authentication (wrong key or altered)")]
    Forged,
}

/// Seals outgoing datagrams for one agent session.
pub struct Sealer {
    aead: XChaCha20Poly1305,
    session: u64,
    counter: u64,
}

impl Sealer {
    /// A sealer with a datagram key and this agent's session id.
    pub fn new(key: &[u8; 32], session: u64) -> Self {
        Self {
            aead: XChaCha20Poly1305::new(key.into()),
            session,
            counter: 0,
        }
    }

    /// Seals from now on with `key`, in the same session: the counter goes
    /// on, so a nonce never repeats and receivers' windows stay valid.
    pub fn rekey(&mut self, key: &[u8; 32]) {
        self.aead = XChaCha20Poly1305::new(key.into());
    }

    /// This sealer's session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Seals `plaintext` stamped with `now_ms` (ms since the Unix epoch).
    pub fn seal(&mut self, now_ms: u64, plaintext: &[u8]) -> Vec<u8> {
        self.counter += 1;
        let mut header = [0u8; HEADER_LEN];
        header[..4].copy_from_slice(DATAGRAM_MAGIC);
        header[4..12].copy_from_slice(&self.session.to_be_bytes());
        header[12..20].copy_from_slice(&self.counter.to_be_bytes());
        header[20..28].copy_from_slice(&now_ms.to_be_bytes());
        let nonce = XNonce::from_slice(&header[4..28]);
        let ct = self
            .aead
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad: &header,
                },
            )
            .expect("xchacha20poly1305 encryption of a datagram cannot fail");
        let mut out = Vec::with_capacity(HEADER_LEN + ct.len());
        out.extend_from_slice(&header);
        out.extend_from_slice(&ct);
        out
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    top: u64,
    seen: u64,
    last_ms: u64,
}

/// Opens incoming datagrams and rejects replays.
pub struct Opener {
    aeads: Vec<XChaCha20Poly1305>,
    own_session: u64,
    sessions: HashMap<u64, Window>,
}

/// An authenticated datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sender's session id.
    pub session: u64,
    /// The decrypted payload.
    pub plaintext: Vec<u8>,
}

impl Opener {
    /// An opener with a datagram key; packets of `own_session` are refused.
    pub fn new(key: &[u8; 32], own_session: u64) -> Self {
        Self {
            aeads: vec![XChaCha20Poly1305::new(key.into())],
            own_session,
            sessions: HashMap::new(),
        }
    }

    /// Accepts datagrams sealed with any of `keys` (tried in order) from
    /// now on; the replay state is kept.
    pub fn set_keys(&mut self, keys: &[[u8; 32]]) {
        self.aeads = keys
            .iter()
            .map(|k| XChaCha20Poly1305::new(k.into()))
            .collect();
    }

    /// Authenticates, decrypts and replay-checks one datagram.
    pub fn open(&mut self, now_ms: u64, packet: &[u8]) -> Result<Opened, OpenError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::TooShort(packet.len()));
        }
        let (header, ct) = packet.split_at(HEADER_LEN);
        if &header[..4] != DATAGRAM_MAGIC {
            return Err(OpenError::BadMagic);
        }
        let session = u64::from_be_bytes(header[4..12].try_into().expect("8 bytes"));
        let counter = u64::from_be_bytes(header[12..20].try_into().expect("8 bytes"));
        let stamp = u64::from_be_bytes(header[20..28].try_into().expect("8 bytes"));
        if session == self.own_session {
            return Err(OpenError::OwnPacket);
        }
        let skew_ms = now_ms.abs_diff(stamp);
        if skew_ms > MAX_SKEW_MS {
            return Err(OpenError::Stale { skew_ms });
        }
        let window = self.sessions.get(&session).copied();
        if let Some(w) = window {
            if !fresh(&w, counter) {
                return Err(OpenError::Replayed { session, counter });
            }
        }
        let plaintext = self
            .aeads
            .iter()
            .find_map(|aead| {
                aead.decrypt(
                    XNonce::from_slice(&header[4..28]),
                    Payload {
                        msg: ct,
                        aad: header,
                    },
                )
                .ok()
            })
            .ok_or(OpenError::Forged)?;
        self.record(session, counter, now_ms, window);
        Ok(Opened { session, plaintext })
    }

    fn record(&mut self, session: u64, counter: u64, now_ms: u64, window: Option<Window>) {
        let w = match window {
            None => {
                if self.sessions.len() >= MAX_SESSIONS {
                    self.forget_idle(now_ms);
                }
                if self.sessions.len() >= MAX_SESSIONS {
                    if let Some(oldest) = self
                        .sessions
                        .iter()
                        .min_by_key(|(_, w)| w.last_ms)
                        .map(|(s, _)| *s)
                    {
                        self.sessions.remove(&oldest);
                    }
                }
                Window {
                    top: counter,
                    seen: 1,
                    last_ms: now_ms,
                }
            }
            Some(mut w) => {
                if counter > w.top {
                    let shift = counter - w.top;
                    w.seen = if shift >= WINDOW { 0 } else { w.seen << shift };
                    w.seen |= 1;
                    w.top = counter;
                } else {
                    w.seen |= 1 << (w.top - counter);
                }
                w.last_ms = now_ms;
                w
            }
        };
        self.sessions.insert(session, w);
    }

    /// Drops sessions idle for longer than [`SESSION_IDLE_MS`].
    pub fn forget_idle(&mut self, now_ms: u64) {
        self.sessions
            .retain(|_, w| now_ms.saturating_sub(w.last_ms) <= SESSION_IDLE_MS);
    }

    /// How many sender sessions are remembered.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }
}

fn fresh(w: &Window, counter: u64) -> bool {
    if counter > w.top {
        return true;
    }
    let back = w.top - counter;
    back < WINDOW && w.seen & (1 << back) == 0
}

/// Why a stream frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The hello is malformed.
    #[error("exec stream hello is malformed")]
    BadHello,
    /// The two agents speak two peer protocols.
    #[error(
        "the other agent speaks peer protocol {theirs} and this one speaks {ours}: run one omnode release on every node"
    )]
    Version {
        /// Ours.
        ours: u8,
        /// The other agent's.
        theirs: u8,
    },
    /// A frame failed authentication.
    #[error("exec stream frame failed authentication (wrong key, replay or altered)")]
    Forged,
}

/// Length of a hello, either way: magic, protocol digit, nonce.
pub const HELLO_LEN: usize = 4 + 32;
/// Length of the server's reply hello.
pub const REPLY_LEN: usize = HELLO_LEN;

/// A hello with `nonce`, for either end, speaking `protocol`.
pub fn hello_with(protocol: u8, nonce: &[u8; 32]) -> [u8; HELLO_LEN] {
    let mut hello = [0u8; HELLO_LEN];
    hello[..3].copy_from_slice(STREAM_MAGIC);
    hello[3] = b'0' + protocol;
    hello[4..].copy_from_slice(nonce);
    hello
}

/// A fresh hello: ours, with a random nonce.
pub fn client_hello() -> [u8; HELLO_LEN] {
    hello_with(PEER_PROTOCOL, &rand10::random::<[u8; 32]>())
}

/// Checks a hello (the client's or the server's reply), returning its
/// nonce; a hello of another protocol is [`StreamError::Version`].
pub fn parse_hello(hello: &[u8]) -> Result<[u8; 32], StreamError> {
    if hello.len() != HELLO_LEN || &hello[..3] != STREAM_MAGIC || !hello[3].is_ascii_alphanumeric()
    {
        return Err(StreamError::BadHello);
    }
    let theirs = hello[3].wrapping_sub(b'0');
    if theirs != PEER_PROTOCOL {
        return Err(StreamError::Version {
            ours: PEER_PROTOCOL,
            theirs,
        });
    }
    Ok(hello[4..].try_into().expect("32 bytes"))
}

/// Which end of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected.
    Client,
    /// The side that accepted.
    Server,
}

/// One direction of a sealed stream.
pub struct FrameCipher {
    aead: XChaCha20Poly1305,
    counter: u64,
}

impl FrameCipher {
    fn nonce(&mut self) -> XNonce {
        self.counter += 1;
        let mut n = [0u8; 24];
        n[..8].copy_from_slice(&self.counter.to_be_bytes());
        *XNonce::from_slice(&n)
    }

    /// Seals the next frame.
    pub fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let nonce = self.nonce();
        self.aead
            .encrypt(&nonce, plaintext)
            .expect("xchacha20poly1305 encryption of a frame cannot fail")
    }

    /// Opens the next frame.
    pub fn open(&mut self, ciphertext: &[u8]) -> Result<Vec<u8>, StreamError> {
        let nonce = self.nonce();
        self.aead
            .decrypt(&nonce, ciphertext)
            .map_err(|_| StreamError::Forged)
    }
}

/// The (send, receive) ciphers of one end of a stream.
pub fn stream_ciphers(
    root: &[u8; 32],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
    role: Role,
) -> (FrameCipher, FrameCipher) {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(client_nonce);
    salt[32..].copy_from_slice(server_nonce);
    let hk = Hkdf::<Sha256>::new(Some(&salt), root);
    let make = |label: &[u8]| {
        let mut k = [0u8; 32];
        hk.expand(label, &mut k).expect("valid length");
        FrameCipher {
            aead: XChaCha20Poly1305::new((&k).into()),
            counter: 0,
        }
    };
    let c2s = make(b"client-to-server");
    let s2c = make(b"server-to-client");
    match role {
        Role::Client => (c2s, s2c),
        Role::Server => (s2c, c2s),
    }
}

/// The server's ciphers for a stream whose first frame, `first`, opens
/// under one of the stream root keys `roots`, with that frame's plaintext.
pub fn open_first(
    roots: &[[u8; 32]],
    client_nonce: &[u8; 32],
    server_nonce: &[u8; 32],
    first: &[u8],
) -> Result<(FrameCipher, FrameCipher, Vec<u8>), StreamError> {
    roots
        .iter()
        .find_map(|root| {
            let (send, mut recv) = stream_ciphers(root, client_nonce, server_nonce, Role::Server);
            let plain = recv.open(first).ok()?;
            Some((send, recv, plain))
        })
        .ok_or(StreamError::Forged)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn pair() -> (Sealer, Opener) {
        (Sealer::new(&[1; 32], 11), Opener::new(&[1; 32], 22))
    }

    #[test]
    fn round_trip() {
        let (mut s, mut o) = pair();
        let p = s.seal(NOW, b"hello");
        assert_eq!(
            o.open(NOW, &p).unwrap(),
            Opened {
                session: 11,
                plaintext: b"hello".to_vec()
            }
        );
    }

    #[test]
    fn replay_refused_and_reordering_allowed() {
        let (mut s, mut o) = pair();
        let a = s.seal(NOW, b"a");
        let b = s.seal(NOW, b"b");
        assert!(o.open(NOW, &b).is_ok());
        assert!(
            o.open(NOW, &a).is_ok(),
            "reordered packet inside the window"
        );
        assert!(matches!(o.open(NOW, &a), Err(OpenError::Replayed { .. })));
        assert!(matches!(o.open(NOW, &b), Err(OpenError::Replayed { .. })));
    }

    #[test]
    fn far_behind_window_refused() {
        let (mut s, mut o) = pair();
        let old = s.seal(NOW, b"old");
        for _ in 0..100 {
            let p = s.seal(NOW, b"x");
            o.open(NOW, &p).unwrap();
        }
        assert!(matches!(o.open(NOW, &old), Err(OpenError::Replayed { .. })));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let (mut s, mut o) = pair();
        let p = s.seal(NOW, b"load vector");
        for i in 0..p.len() * 8 {
            let mut q = p.clone();
            q[i / 8] ^= 1 << (i % 8);
            assert!(o.open(NOW, &q).is_err(), "bit {i} flipped was accepted");
        }
        assert!(o.open(NOW, &p).is_ok());
    }

    #[test]
    fn wrong_key_refused() {
        let mut s = Sealer::new(&[2; 32], 11);
        let mut o = Opener::new(&[1; 32], 22);
        assert_eq!(o.open(NOW, &s.seal(NOW, b"x")), Err(OpenError::Forged));
        assert_eq!(o.sessions(), 0, "a forged packet must not create state");
    }

    #[test]
    fn a_rotation_keeps_sessions_and_refuses_the_retired_key() {
        let (old, new) = ([1; 32], [2; 32]);
        let mut s = Sealer::new(&old, 11);
        let mut o = Opener::new(&old, 22);
        let before = s.seal(NOW, b"a");
        o.open(NOW, &before).unwrap();
        o.set_keys(&[old, new]);
        s.rekey(&new);
        let after = s.seal(NOW, b"b");
        assert_eq!(o.open(NOW, &after).unwrap().plaintext, b"b");
        assert!(matches!(
            o.open(NOW, &before),
            Err(OpenError::Replayed { .. })
        ));
        let mut straggler = Sealer::new(&old, 33);
        let late = straggler.seal(NOW, b"c");
        let later = straggler.seal(NOW, b"d");
        assert!(
            o.open(NOW, &late).is_ok(),
            "the old key opens in the window"
        );
        o.set_keys(&[new]);
        assert_eq!(o.open(NOW, &later), Err(OpenError::Forged));
    }

    #[test]
    fn a_stream_opens_under_either_root() {
        let (cn, sn) = ([1; 32], [2; 32]);
        let (mut c_send, _) = stream_ciphers(&[8; 32], &cn, &sn, Role::Client);
        let first = c_send.seal(b"exec");
        let second = c_send.seal(b"more");
        let (_, mut recv, plain) = open_first(&[[7; 32], [8; 32]], &cn, &sn, &first).unwrap();
        assert_eq!(plain, b"exec");
        assert_eq!(recv.open(&second).unwrap(), b"more");
        assert!(open_first(&[[7; 32]], &cn, &sn, &first).is_err());
    }

    #[test]
    fn stale_and_own_refused() {
        let (mut s, mut o) = pair();
        let p = s.seal(NOW - MAX_SKEW_MS - 1, b"x");
        assert!(matches!(o.open(NOW, &p), Err(OpenError::Stale { .. })));
        let mut me = Sealer::new(&[1; 32], 22);
        assert_eq!(o.open(NOW, &me.seal(NOW, b"x")), Err(OpenError::OwnPacket));
        assert_eq!(o.open(NOW, b"short"), Err(OpenError::TooShort(5)));
    }

    #[test]
    fn forgotten_session_replay_is_stale() {
        let (mut s, mut o) = pair();
        let p = s.seal(NOW, b"x");
        o.open(NOW, &p).unwrap();
        let later = NOW + SESSION_IDLE_MS + 1;
        o.forget_idle(later);
        assert_eq!(o.sessions(), 0);
        assert!(matches!(o.open(later, &p), Err(OpenError::Stale { .. })));
    }

    #[test]
    fn stream_frames() {
        let root = [9; 32];
        let cn = [1; 32];
        let sn = [2; 32];
        let (mut c_send, mut c_recv) = stream_ciphers(&root, &cn, &sn, Role::Client);
        let (mut s_send, mut s_recv) = stream_ciphers(&root, &cn, &sn, Role::Server);
        let f1 = c_send.seal(b"exec");
        let f2 = c_send.seal(b"stdin");
        assert_eq!(s_recv.open(&f1).unwrap(), b"exec");
        assert_eq!(s_recv.open(&f2).unwrap(), b"stdin");
        assert_eq!(c_recv.open(&s_send.seal(b"out")).unwrap(), b"out");
        // A replayed connection has another server nonce: its frames fail.
        let (_, mut other_recv) = stream_ciphers(&root, &cn, &[3; 32], Role::Server);
        assert_eq!(other_recv.open(&f1), Err(StreamError::Forged));
        assert!(parse_hello(&client_hello()).is_ok());
        assert_eq!(parse_hello(b"nope"), Err(StreamError::BadHello));
    }
}
