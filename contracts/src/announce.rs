//! The head's announcement: how a machine that did not netboot (booted from
//! the ISO's "compute node" entry or a USB stick) finds the head on its LAN.
//!
//! `omboot serve` sends an [`Announcement`] every [`INTERVAL_S`] seconds to
//! the multicast group [`GROUP`] on port [`PORT`] of each interface it
//! serves (TTL 1: the local link only). `omnode init`, when its kernel
//! command line names no head (`om.server=`), listens there and takes the
//! first head of its cluster it hears: where to ask for admission, where
//! the check-in goes and which shared tree to mount; everything a
//! netbooted node reads from the command line `omboot` wrote for it.
//!
//! The announcement carries no secret and proves nothing: a machine that
//! trusts it asks that head for admission, and the head's policy decides
//! (`auto` admits machines its own DHCP served moments before; `manual`
//! waits for `omctl admit`). A rogue announcer on the LAN can at most make
//! a machine ask it, as a rogue DHCP or PXE server can make a machine boot
//! from it; the README's trust model says so.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::share::Share;

/// The multicast group: the agents' discovery group (organisation-local
/// scope), on a port of its own.
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 192, 77, 1);
/// The UDP port announcements go to.
pub const PORT: u16 = 7945;
/// How often the head announces itself.
pub const INTERVAL_S: u64 = 2;
/// The largest announcement a listener reads; anything longer is not one.
pub const MAX_LEN: usize = 1024;
/// What every announcement starts with (its `kind` field).
const KIND: &str = "omcluster-head";
/// The format's version; a listener ignores others.
const VERSION: u32 = 1;

/// What the head says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The cluster the head boots (`--cluster`).
    pub cluster: String,
    /// The head's address on this LAN.
    pub server: Ipv4Addr,
    /// Its HTTP port (admission, check-in).
    pub http_port: u16,
    /// The shared tree a node mounts (`om.share=`); `None` without one.
    pub share: Option<Share>,
}

/// Why a datagram is not an announcement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// Longer than [`MAX_LEN`].
    #[error("announcement of {0} bytes, more than {MAX_LEN}")]
    TooLong(usize),
    /// Not the JSON of one.
    #[error("not an omcluster announcement: {0}")]
    Malformed(String),
    /// An announcement of another format version.
    #[error("announcement version {0}, this machine reads {VERSION}")]
    Version(u32),
    /// A field that does not parse.
    #[error("announcement with a bad {field}: {why}")]
    Field {
        /// Which.
        field: &'static str,
        /// Why.
        why: String,
    },
}

/// The datagram's JSON.
#[derive(Serialize, Deserialize)]
struct Wire {
    kind: String,
    version: u32,
    cluster: String,
    server: Ipv4Addr,
    http_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share: Option<String>,
}

impl Announcement {
    /// The datagram.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            kind: KIND.into(),
            version: VERSION,
            cluster: self.cluster.clone(),
            server: self.server,
            http_port: self.http_port,
            share: self.share.as_ref().map(|s| s.to_string()),
        };
        serde_json::to_vec(&wire).expect("plain data serialises")
    }

    /// Reads a datagram.
    pub fn decode(datagram: &[u8]) -> Result<Self, AnnounceError> {
        if datagram.len() > MAX_LEN {
            return Err(AnnounceError::TooLong(datagram.len()));
        }
        let wire: Wire = serde_json::from_slice(datagram)
            .map_err(|e| AnnounceError::Malformed(e.to_string()))?;
        if wire.kind != KIND {
            return Err(AnnounceError::Malformed(format!("kind {:?}", wire.kind)));
        }
        if wire.version != VERSION {
            return Err(AnnounceError::Version(wire.version));
        }
        let bad = |field: &'static str, why: String| AnnounceError::Field { field, why };
        if !crate::cmdline::is_cluster_id(&wire.cluster) {
            return Err(bad("cluster", format!("{:?}", wire.cluster)));
        }
        if wire.http_port == 0 {
            return Err(bad("http_port", "0".into()));
        }
        if wire.server.is_unspecified() || wire.server.is_multicast() || wire.server.is_broadcast()
        {
            return Err(bad("server", wire.server.to_string()));
        }
        let share = match wire.share {
            None => None,
            Some(text) => Some(
                text.parse::<Share>()
                    .map_err(|e| bad("share", e.to_string()))?,
            ),
        };
        Ok(Announcement {
            cluster: wire.cluster,
            server: wire.server,
            http_port: wire.http_port,
            share,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Announcement {
        Announcement {
            cluster: "lab".into(),
            server: Ipv4Addr::new(10, 77, 0, 1),
            http_port: 80,
            share: Some("nfs://10.77.0.1/cluster".parse().unwrap()),
        }
    }

    #[test]
    fn an_announcement_reads_back_as_written() {
        let a = head();
        let bytes = a.encode();
        assert!(bytes.len() < MAX_LEN);
        assert_eq!(Announcement::decode(&bytes).unwrap(), a);
        let bare = Announcement { share: None, ..a };
        assert_eq!(Announcement::decode(&bare.encode()).unwrap(), bare);
    }

    #[test]
    fn what_is_not_an_announcement_says_why() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello", "not an omcluster announcement"),
            (
                br#"{"kind":"x","version":1,"cluster":"c","server":"10.0.0.1","http_port":80}"#,
                "kind \"x\"",
            ),
            (
                br#"{"kind":"omcluster-head","version":2,"cluster":"c","server":"10.0.0.1","http_port":80}"#,
                "version 2",
            ),
            (
                br#"{"kind":"omcluster-head","version":1,"cluster":"a b","server":"10.0.0.1","http_port":80}"#,
                "bad cluster",
            ),
            (
                br#"{"kind":"omcluster-head","version":1,"cluster":"c","server":"0.0.0.0","http_port":80}"#,
                "bad server",
            ),
            (
                br#"{"kind":"omcluster-head","version":1,"cluster":"c","server":"10.0.0.1","http_port":0}"#,
                "bad http_port",
            ),
            (
                br#"{"kind":"omcluster-head","version":1,"cluster":"c","server":"10.0.0.1","http_port":80,"share":"smb://x"}"#,
                "bad share",
            ),
        ];
        for (bytes, want) in cases {
            let e = Announcement::decode(bytes).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} lacks {want:?}");
        }
        let long = vec![b' '; MAX_LEN + 1];
        assert!(matches!(
            Announcement::decode(&long),
            Err(AnnounceError::TooLong(_))
        ));
    }
}
