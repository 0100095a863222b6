//! Admission: how a machine gets the cluster key without the key ever
//! crossing the wire readable, and how an admin steers who gets in.
//!
//! A booting node makes a fresh X25519 key pair ([`MachineKey`]) and asks
//! the head (`POST` [`ADMIT_PATH`], body [`AdmitRequest`]: its MAC, name and
//! public key). The head answers [`AdmitAnswer`]: `pending` (ask again
//! later), `refused` (with the reason) or `admitted`, carrying the cluster
//! key sealed to the node's public key with HPKE (RFC 9180, base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305; the `hpke`
//! crate). The HPKE `info` binds the answer to the cluster id and the MAC,
//! so an answer cannot be replayed to another machine or cluster. A
//! listener sees public keys and ciphertext only.
//!
//! The admin's side ([`ADMISSION_PATH`]: the list of pending, admitted and
//! rejected machines, and decisions) is authenticated with the cluster key:
//! an HMAC-SHA256 tag ([`admin_tag`]) under the key's `Admin` sub-key over
//! the method, path, a Unix time and the body, in the [`TIME_HEADER`] and
//! [`AUTH_HEADER`] headers. The head takes a time within
//! [`AUTH_WINDOW_S`] of its own clock ([`check_admin`]); a replayed decision
//! inside that window only repeats itself.
//!
//! A workstation joins with a token instead ([`Token`], `POST`
//! [`JOIN_PATH`], body [`JoinRequest`]). An admin makes one on a member
//! (`omctl token create`): the member picks a random id and derives the
//! secret from the cluster key ([`token_secret`]), so the head, which holds
//! the key too, needs only the id, expiry and uses (`POST` [`TOKENS_PATH`],
//! signed), and no secret crosses the wire. The workstation proves it holds
//! the secret with an HMAC over its fresh public key ([`join_proof`]) and
//! the head seals the cluster key in HPKE's PSK mode with the secret as the
//! PSK ([`seal_for_join`]): only the token's holder can open it, a head
//! without the key could not have made it, and a listener learns nothing it
//! can use, before or after the token is spent.
//!
//! Pure: the callers own sockets and clocks (`omboot`'s `admission`,
//! `omnode init`'s `admit`, the agent's relay for `omctl`).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core09::{OsRng, RngCore, TryRngCore};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::key::{ClusterKey, Purpose, KEY_LEN};
use crate::mac::MacAddr;

/// Where a machine asks for admission (`POST`, JSON [`AdmitRequest`]).
pub const ADMIT_PATH: &str = "/api/v1/admit";
/// The admin's view of admission: `GET` lists ([`AdmissionList`]), `POST`
/// decides ([`Decision`]). Both need [`admin_tag`].
pub const ADMISSION_PATH: &str = "/api/v1/admission";
/// Where a workstation joins with a token (`POST`, JSON [`JoinRequest`];
/// answered with [`AdmitAnswer`], the key sealed with [`seal_for_join`]).
pub const JOIN_PATH: &str = "/api/v1/join";
/// Where an admin registers a token (`POST`, JSON [`TokenRequest`], signed).
pub const TOKENS_PATH: &str = "/api/v1/tokens";
/// Header with the Unix time an admin request was signed at.
pub const TIME_HEADER: &str = "x-om-time";
/// Header with the admin request's tag, 64 hex digits.
pub const AUTH_HEADER: &str = "x-om-auth";
/// How far an admin request's time may be from the head's clock, seconds.
pub const AUTH_WINDOW_S: u64 = 120;

const INFO_LABEL: &[u8] = b"omcluster/v1/admit";
const PUBLIC_LEN: usize = 32;

type Kem = X25519HkdfSha256;

/// What went wrong with admission's cryptography or wire format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// A public key is not 64 hex digits of a valid X25519 point.
    #[error("public key {0:?} is not 64 hex digits")]
    BadPublic(String),
    /// The sealed key's fields are not hex of the right length.
    #[error("the head's answer is malformed: {0}")]
    Malformed(&'static str),
    /// The sealed key does not open with this machine's key, cluster and MAC.
    #[error("the sealed cluster key does not open: not for this machine, MAC or cluster")]
    DoesNotOpen,
    /// Sealing failed (cannot happen with a valid public key).
    #[error("sealing the cluster key failed")]
    Seal,
}

/// A machine's X25519 public key, as 64 hex digits on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey([u8; PUBLIC_LEN]);

impl PublicKey {
    /// A short, stable name for the key (its first 8 bytes in hex), for
    /// lists and logs.
    pub fn fingerprint(&self) -> String {
        hex::encode(&self.0[..8])
    }

    /// The key as 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = AdmitError;
    fn from_str(s: &str) -> Result<Self, AdmitError> {
        let mut bytes = [0u8; PUBLIC_LEN];
        hex::decode_to_slice(s.trim(), &mut bytes)
            .map_err(|_| AdmitError::BadPublic(truncate(s)))?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes)
            .map_err(|_| AdmitError::BadPublic(truncate(s)))?;
        Ok(Self(bytes))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A machine's own key pair, made fresh at boot; the private half never
/// leaves the machine.
pub struct MachineKey {
    private: <Kem as hpke::Kem>::PrivateKey,
    public: PublicKey,
}

impl std::fmt::Debug for MachineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MachineKey({})", self.public.fingerprint())
    }
}

impl MachineKey {
    /// A fresh key pair from the operating system's generator.
    pub fn generate() -> Self {
        let (private, public) = Kem::gen_keypair(&mut OsRng.unwrap_err());
        let mut bytes = [0u8; PUBLIC_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        Self {
            private,
            public: PublicKey(bytes),
        }
    }

    /// The public half, sent with [`AdmitRequest`].
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// Opens the cluster key the head sealed to this machine in cluster
    /// `cluster` for `mac` (the fields of [`AdmitAnswer::Admitted`]).
    pub fn open(
        &self,
        cluster: &str,
        mac: MacAddr,
        enc: &str,
        sealed: &str,
    ) -> Result<ClusterKey, AdmitError> {
        self.open_with(&OpModeR::Base, &info(cluster, mac), enc, sealed)
    }

    /// Opens a key sealed to this machine in `mode` with `info`.
    fn open_with(
        &self,
        mode: &OpModeR<'_, Kem>,
        info: &[u8],
        enc: &str,
        sealed: &str,
    ) -> Result<ClusterKey, AdmitError> {
        let enc = hex::decode(enc).map_err(|_| AdmitError::Malformed("enc is not hex"))?;
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc)
            .map_err(|_| AdmitError::Malformed("enc is not an X25519 point"))?;
        let sealed = hex::decode(sealed).map_err(|_| AdmitError::Malformed("sealed is not hex"))?;
        let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            mode,
            &self.private,
            &enc,
            info,
            &sealed,
            &[],
        )
        .map_err(|_| AdmitError::DoesNotOpen)?;
        let bytes: [u8; KEY_LEN] = plain
            .try_into()
            .map_err(|_| AdmitError::Malformed("the sealed key has the wrong length"))?;
        Ok(ClusterKey::from_bytes(bytes))
    }
}

impl MachineKey {
    /// Opens the cluster key the head sealed to this machine for `token`
    /// in cluster `cluster` (the fields of [`AdmitAnswer::Admitted`]).
    pub fn open_join(
        &self,
        token: &Token,
        cluster: &str,
        enc: &str,
        sealed: &str,
    ) -> Result<ClusterKey, AdmitError> {
        let psk = hpke::PskBundle::new(&token.secret, &token.id)
            .map_err(|_| AdmitError::Malformed("token"))?;
        self.open_with(
            &OpModeR::Psk(psk),
            &join_info(cluster, &self.public),
            enc,
            sealed,
        )
    }
}

/// Length of a token's id, bytes.
pub const TOKEN_ID_LEN: usize = 8;
/// Length of a token's secret, bytes (HPKE wants 32 bytes of entropy in a PSK).
pub const TOKEN_SECRET_LEN: usize = 32;
const TOKEN_PREFIX: &str = "om1";

/// A join token as the admin hands it over: `om1.ID.SECRET` in hex.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// Names the token to the head.
    pub id: [u8; TOKEN_ID_LEN],
    /// Derived from the cluster key and the id ([`token_secret`]).
    pub secret: [u8; TOKEN_SECRET_LEN],
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token({})", hex::encode(self.id))
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}.{}.{}",
            hex::encode(self.id),
            hex::encode(self.secret)
        )
    }
}

/// A text that is not a join token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a join token (om1.ID.SECRET, as `omctl token create` prints it)")]
pub struct BadToken(pub String);

impl std::str::FromStr for Token {
    type Err = BadToken;
    fn from_str(s: &str) -> Result<Self, BadToken> {
        let bad = || BadToken(truncate(s));
        let mut parts = s.trim().split('.');
        let (Some(TOKEN_PREFIX), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let mut t = Token {
            id: [0; TOKEN_ID_LEN],
            secret: [0; TOKEN_SECRET_LEN],
        };
        hex::decode_to_slice(id, &mut t.id).map_err(|_| bad())?;
        hex::decode_to_slice(secret, &mut t.secret).map_err(|_| bad())?;
        Ok(t)
    }
}

impl Token {
    /// A new token of cluster `cluster`: a random id, its secret derived
    /// from `key`.
    pub fn create(key: &ClusterKey, cluster: &str) -> Self {
        let mut id = [0u8; TOKEN_ID_LEN];
        OsRng.unwrap_err().fill_bytes(&mut id);
        Self {
            id,
            secret: token_secret(key, cluster, &id),
        }
    }

    /// The token with id `id` (hex, as a [`JoinRequest`] names it), its
    /// secret derived from `key`: what the head checks a join against.
    pub fn for_id(key: &ClusterKey, cluster: &str, id: &str) -> Result<Self, BadToken> {
        let mut bytes = [0u8; TOKEN_ID_LEN];
        hex::decode_to_slice(id.trim(), &mut bytes).map_err(|_| BadToken(truncate(id)))?;
        Ok(Self {
            id: bytes,
            secret: token_secret(key, cluster, &bytes),
        })
    }

    /// The id as the head lists it.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }
}

/// The secret of token `id`: HMAC-SHA256 under the key's `Admin` sub-key,
/// so every holder of the cluster key (the head included) can compute it
/// and nobody else.
pub fn token_secret(key: &ClusterKey, cluster: &str, id: &[u8; TOKEN_ID_LEN]) -> [u8; 32] {
    let mut mac = admin_hmac(key, cluster);
    mac.update(b"join-token\0");
    mac.update(id);
    mac.finalize().into_bytes().into()
}

/// The proof of holding the token's secret, bound to the joining machine's
/// public key and name: HMAC-SHA256 under the secret, hex.
pub fn join_proof(token: &Token, public: &PublicKey, name: &str) -> String {
    hex::encode(join_mac(token, public, name).finalize().into_bytes())
}

fn join_mac(token: &Token, public: &PublicKey, name: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&token.secret)
        .expect("HMAC takes a key of any length");
    mac.update(&public.0);
    mac.update(name.as_bytes());
    mac
}

/// Whether `proof` proves `token` for `public` and `name` (constant time).
pub fn check_join_proof(token: &Token, public: &PublicKey, name: &str, proof: &str) -> bool {
    let Ok(proof) = hex::decode(proof.trim()) else {
        return false;
    };
    join_mac(token, public, name).verify_slice(&proof).is_ok()
}

fn join_info(cluster: &str, public: &PublicKey) -> Vec<u8> {
    let mut info = b"omcluster/v1/join".to_vec();
    info.push(0);
    info.extend_from_slice(cluster.as_bytes());
    info.push(0);
    info.extend_from_slice(&public.0);
    info
}

/// Seals `key` to `to` for the holder of `token` (HPKE PSK mode, the
/// secret as PSK, the id as PSK id): the `enc` and `sealed` fields of
/// [`AdmitAnswer::Admitted`], in hex.
pub fn seal_for_join(
    key: &ClusterKey,
    token: &Token,
    to: &PublicKey,
    cluster: &str,
) -> Result<(String, String), AdmitError> {
    let psk = hpke::PskBundle::new(&token.secret, &token.id).map_err(|_| AdmitError::Seal)?;
    seal_with(&OpModeS::Psk(psk), key, to, &join_info(cluster, to))
}

/// Seals `key` to `to` in `mode` with `info`: (enc, sealed) in hex.
fn seal_with(
    mode: &OpModeS<'_, Kem>,
    key: &ClusterKey,
    to: &PublicKey,
    info: &[u8],
) -> Result<(String, String), AdmitError> {
    let public = <Kem as hpke::Kem>::PublicKey::from_bytes(&to.0).map_err(|_| AdmitError::Seal)?;
    let (enc, sealed) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        mode,
        &public,
        info,
        key.as_bytes(),
        &[],
        &mut OsRng.unwrap_err(),
    )
    .map_err(|_| AdmitError::Seal)?;
    Ok((hex::encode(enc.to_bytes()), hex::encode(sealed)))
}

/// Body of `POST` [`JOIN_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's id, hex (never its secret).
    pub token: String,
    /// The workstation's name.
    pub name: String,
    /// The MAC of its interface toward the head, when it knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Its fresh public key.
    pub public: PublicKey,
    /// [`join_proof`] over `public` and `name`.
    pub proof: String,
}

/// Body of `POST` [`TOKENS_PATH`]: register a token the admin made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Its id, hex.
    pub id: String,
    /// Seconds it stays valid.
    pub ttl_s: u64,
    /// How many machines may join with it.
    pub uses: u32,
}

/// A registered token, as the head answers and lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id, hex.
    pub id: String,
    /// Unix seconds it expires at.
    pub expires: u64,
    /// Joins left.
    pub uses_left: u32,
}

fn info(cluster: &str, mac: MacAddr) -> Vec<u8> {
    let mut info = INFO_LABEL.to_vec();
    info.push(0);
    info.extend_from_slice(cluster.as_bytes());
    info.push(0);
    info.extend_from_slice(mac.to_string().as_bytes());
    info
}

/// Seals `key` to `to` for machine `mac` of cluster `cluster`: the `enc`
/// and `sealed` fields of [`AdmitAnswer::Admitted`], in hex.
pub fn seal(
    key: &ClusterKey,
    to: &PublicKey,
    cluster: &str,
    mac: MacAddr,
) -> Result<(String, String), AdmitError> {
    seal_with(&OpModeS::Base, key, to, &info(cluster, mac))
}

/// Body of `POST` [`ADMIT_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmitRequest {
    /// The MAC of the interface the machine booted from.
    pub mac: MacAddr,
    /// The machine's name, when it has one yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The public half of its [`MachineKey`].
    pub public: PublicKey,
}

/// The head's answer to an [`AdmitRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdmitAnswer {
    /// Welcome: the cluster key, sealed with [`seal`].
    Admitted {
        /// The cluster id the key was sealed for.
        cluster: String,
        /// HPKE's encapsulated key, hex.
        enc: String,
        /// The sealed cluster key, hex.
        sealed: String,
    },
    /// Waiting for an admin's decision; ask again.
    Pending {
        /// What the machine waits for.
        reason: String,
    },
    /// Not let in.
    Refused {
        /// Why.
        reason: String,
    },
}

/// Where a machine stands with the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// Asked and waits for a decision.
    Pending,
    /// Let in; its current key is the one listed.
    Admitted,
    /// Turned away by an admin.
    Rejected,
}

/// One machine in the admission list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    /// Its MAC: the key of the list.
    pub mac: MacAddr,
    /// Its name, when it gave one.
    pub name: Option<String>,
    /// The address it last asked from.
    pub address: Option<IpAddr>,
    /// The key it holds (for `admitted`) or presented (otherwise).
    pub public: PublicKey,
    /// Where it stands.
    pub standing: Standing,
    /// Unix seconds of the latest change.
    pub since: u64,
    /// Who or what decided (`auto: booted from this head`, `admin`, …).
    pub by: String,
}

/// A request the head turned away because its MAC is admitted with another
/// key and the machine did not boot from the head since: a second machine
/// with a copied MAC, reported to the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The MAC it claimed.
    pub mac: MacAddr,
    /// Where the request came from.
    pub address: Option<IpAddr>,
    /// The key it presented.
    pub public: PublicKey,
    /// Unix seconds.
    pub at: u64,
    /// Why it was refused.
    pub reason: String,
}

/// `GET` [`ADMISSION_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionList {
    /// `auto` or `manual`.
    pub policy: String,
    /// Every machine the head knows, by MAC.
    pub machines: Vec<Machine>,
    /// The latest refusals, oldest first.
    pub refusals: Vec<Refusal>,
    /// The join tokens the head knows (ids only), live or lately spent.
    #[serde(default)]
    pub tokens: Vec<TokenInfo>,
}

/// What an admin decides about a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let it in (`omctl admit`).
    Admit,
    /// Turn it away (`omctl reject`).
    Reject,
}

/// `POST` [`ADMISSION_PATH`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// The machine: its MAC or the name it gave.
    pub machine: String,
    /// The decision.
    pub verdict: Verdict,
}

/// Why an admin request is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header is missing or unreadable.
    #[error(
        "missing or malformed {0} header (an admin request must be signed with the cluster key)"
    )]
    Missing(&'static str),
    /// The time is too far from the head's clock.
    #[error("request signed at {at}, {off} s from the head's clock (allowed {AUTH_WINDOW_S} s): check the clocks")]
    Stale {
        /// The request's time.
        at: u64,
        /// How far off, seconds.
        off: u64,
    },
    /// The tag does not match.
    #[error("the request is not signed with this cluster's key")]
    BadTag,
}

/// HMAC-SHA256 under the key's `Admin` sub-key: admin tags and token
/// secrets.
fn admin_hmac(key: &ClusterKey, cluster: &str) -> Hmac<Sha256> {
    <Hmac<Sha256> as Mac>::new_from_slice(&key.derive(cluster, Purpose::Admin))
        .expect("HMAC takes a key of any length")
}

fn admin_mac(
    key: &ClusterKey,
    cluster: &str,
    method: &str,
    path: &str,
    time: u64,
    body: &[u8],
) -> Hmac<Sha256> {
    let mut mac = admin_hmac(key, cluster);
    for part in [
        method.as_bytes(),
        path.as_bytes(),
        time.to_string().as_bytes(),
    ] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
    mac.update(body);
    mac
}

/// The [`AUTH_HEADER`] value of an admin request signed at Unix time `time`.
pub fn admin_tag(
    key: &ClusterKey,
    cluster: &str,
    method: &str,
    path: &str,
    time: u64,
    body: &[u8],
) -> String {
    hex::encode(
        admin_mac(key, cluster, method, path, time, body)
            .finalize()
            .into_bytes(),
    )
}

/// Checks an admin request's [`TIME_HEADER`] and [`AUTH_HEADER`] values
/// against the head's clock `now` (Unix seconds), in constant time.
#[allow(clippy::too_many_arguments)]
pub fn check_admin(
    key: &ClusterKey,
    cluster: &str,
    method: &str,
    path: &str,
    time: Option<&str>,
    tag: Option<&str>,
    body: &[u8],
    now: u64,
) -> Result<(), AuthError> {
    let at: u64 = time
        .and_then(|t| t.trim().parse().ok())
        .ok_or(AuthError::Missing(TIME_HEADER))?;
    let tag = tag
        .and_then(|t| hex::decode(t.trim()).ok())
        .ok_or(AuthError::Missing(AUTH_HEADER))?;
    let off = at.abs_diff(now);
    if off > AUTH_WINDOW_S {
        return Err(AuthError::Stale { at, off });
    }
    admin_mac(key, cluster, method, path, at, body)
        .verify_slice(&tag)
        .map_err(|_| AuthError::BadTag)
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(16) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn a_token_opens_only_for_its_holder_and_key() {
        let key = ClusterKey::generate();
        let token = Token::create(&key, "lab");
        assert_eq!(token.to_string().parse::<Token>().unwrap(), token);
        assert_eq!(token_secret(&key, "lab", &token.id), token.secret);
        assert!("om1.zz.00".parse::<Token>().is_err());
        assert!(format!("om2.{}", &token.to_string()[4..])
            .parse::<Token>()
            .is_err());

        let ws = MachineKey::generate();
        let proof = join_proof(&token, &ws.public(), "ws1");
        assert!(check_join_proof(&token, &ws.public(), "ws1", &proof));
        assert!(!check_join_proof(&token, &ws.public(), "ws2", &proof));
        let other = MachineKey::generate();
        assert!(!check_join_proof(&token, &other.public(), "ws1", &proof));

        let (enc, sealed) = seal_for_join(&key, &token, &ws.public(), "lab").unwrap();
        assert_eq!(ws.open_join(&token, "lab", &enc, &sealed).unwrap(), key);
        // Another token (a forged one, or a head that only guessed) or
        // another machine: nothing opens.
        let forged = Token::create(&ClusterKey::generate(), "lab");
        assert_eq!(
            ws.open_join(&forged, "lab", &enc, &sealed),
            Err(AdmitError::DoesNotOpen)
        );
        assert_eq!(
            other.open_join(&token, "lab", &enc, &sealed),
            Err(AdmitError::DoesNotOpen)
        );
    }

    fn mac(last: u8) -> MacAddr {
        format!("52:54:00:00:00:{last:02x}").parse().unwrap()
    }

    #[test]
    fn the_key_opens_only_for_its_machine_mac_and_cluster() {
        let key = ClusterKey::generate();
        let node = MachineKey::generate();
        let (enc, sealed) = seal(&key, &node.public(), "lab", mac(1)).unwrap();
        assert_eq!(node.open("lab", mac(1), &enc, &sealed).unwrap(), key);
        assert!(!sealed.contains(&key.to_hex()));
        let other = MachineKey::generate();
        for (who, cluster, m) in [
            (&other, "lab", mac(1)),
            (&node, "lab2", mac(1)),
            (&node, "lab", mac(2)),
        ] {
            assert_eq!(
                who.open(cluster, m, &enc, &sealed),
                Err(AdmitError::DoesNotOpen)
            );
        }
        // Two seals of one key differ: nothing repeats on the wire.
        let (enc2, sealed2) = seal(&key, &node.public(), "lab", mac(1)).unwrap();
        assert_ne!((enc, sealed), (enc2, sealed2));
    }

    #[test]
    fn wire_formats() {
        let public: PublicKey = "09".repeat(32).parse().unwrap();
        let req = AdmitRequest {
            mac: mac(1),
            name: Some("vm1".into()),
            public,
        };
        expect![[r#"{"mac":"52:54:00:00:00:01","name":"vm1","public":"0909090909090909090909090909090909090909090909090909090909090909"}"#]]
        .assert_eq(&serde_json::to_string(&req).unwrap());
        let answers = [
            AdmitAnswer::Pending {
                reason: "waiting for an admin".into(),
            },
            AdmitAnswer::Admitted {
                cluster: "lab".into(),
                enc: "aa".into(),
                sealed: "bb".into(),
            },
        ];
        expect![[r#"[{"status":"pending","reason":"waiting for an admin"},{"status":"admitted","cluster":"lab","enc":"aa","sealed":"bb"}]"#]]
        .assert_eq(&serde_json::to_string(&answers).unwrap());
        let bad =
            serde_json::from_str::<AdmitRequest>(r#"{"mac":"52:54:00:00:00:01","public":"abc"}"#)
                .unwrap_err();
        expect![[r#"public key "abc" is not 64 hex digits at line 1 column 42"#]]
            .assert_eq(&bad.to_string());
    }

    #[test]
    fn admin_requests_need_the_key_and_a_fresh_time() {
        let key = ClusterKey::from_bytes([7; 32]);
        let body = br#"{"machine":"vm1","verdict":"admit"}"#;
        let tag = admin_tag(&key, "lab", "POST", ADMISSION_PATH, 1000, body);
        let check = |k: &ClusterKey, time: &str, tag: &str, body: &[u8], now: u64| {
            check_admin(
                k,
                "lab",
                "POST",
                ADMISSION_PATH,
                Some(time),
                Some(tag),
                body,
                now,
            )
        };
        assert_eq!(check(&key, "1000", &tag, body, 1100), Ok(()));
        assert_eq!(
            check(&ClusterKey::from_bytes([8; 32]), "1000", &tag, body, 1000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            check(
                &key,
                "1000",
                &tag,
                br#"{"machine":"vm2","verdict":"admit"}"#,
                1000
            ),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            check(&key, "1001", &tag, body, 1000),
            Err(AuthError::BadTag)
        );
        assert_eq!(
            check(&key, "1000", &tag, body, 1200),
            Err(AuthError::Stale { at: 1000, off: 200 })
        );
        assert_eq!(
            check_admin(
                &key,
                "lab",
                "POST",
                ADMISSION_PATH,
                None,
                Some(&tag),
                body,
                1000
            ),
            Err(AuthError::Missing(TIME_HEADER))
        );
        assert_eq!(
            check(&key, "1000", "zz", body, 1000),
            Err(AuthError::Missing(AUTH_HEADER))
        );
    }
}
