//! Finding the head without a command line that names it: a machine booted
//! from the ISO's "compute node" entry or a USB stick listens for the
//! announcement `omboot serve` multicasts on each LAN it serves
//! ([`contracts::announce`]) and takes the first head of its cluster it
//! hears. PID 1 then asks that head for admission, mounts its shared tree
//! and starts the agent exactly as on a netbooted node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use contracts::announce::{Announcement, GROUP, MAX_LEN, PORT};

/// How often a machine still listening says so on its console.
const STILL_LISTENING: Duration = Duration::from_secs(60);

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for the head's announcement on {iface} ({what}): {source}")]
pub struct ListenError {
    iface: String,
    what: &'static str,
    source: std::io::Error,
}

/// Which announcements this machine takes: its cluster's, or any when the
/// command line names none.
pub fn accepts(wanted: Option<&str>, heard: &Announcement, from: IpAddr) -> Result<(), String> {
    if from != IpAddr::V4(heard.server) {
        return Err(format!(
            "{from} announced a head at {}, not at its own address; ignored",
            heard.server
        ));
    }
    match wanted {
        Some(c) if c != heard.cluster => Err(format!(
            "heard the head of cluster {:?} at {}; this machine is for {c:?} (om.cluster=)",
            heard.cluster, heard.server
        )),
        _ => Ok(()),
    }
}

/// Listens on interface `iface` (address `addr`) until a head of cluster
/// `wanted` (any, if `None`) announces itself; prints why it ignores what
/// it ignores, once each.
pub fn wait_for_head(
    iface: &str,
    addr: Ipv4Addr,
    wanted: Option<&str>,
) -> Result<Announcement, ListenError> {
    let fail = |what, source| ListenError {
        iface: iface.to_string(),
        what,
        source,
    };
    let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)))
        .map_err(|e| fail("bind", e))?;
    socket
        .join_multicast_v4(&GROUP, &addr)
        .map_err(|e| fail("join the group", e))?;
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail("timeout", e))?;
    say!(
        "no om.server= on the kernel command line: listening on {iface} for the head's announcement ({GROUP} port {PORT})"
    );
    let mut said = std::collections::BTreeSet::new();
    let mut buf = vec![0u8; MAX_LEN + 1];
    let mut last_note = Instant::now();
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if last_note.elapsed() >= STILL_LISTENING {
                    say!("still listening on {iface} for a head; is omboot serving this LAN?");
                    last_note = Instant::now();
                }
                continue;
            }
            Err(e) => return Err(fail("receive", e)),
        };
        let verdict = Announcement::decode(&buf[..n])
            .map_err(|e| format!("{}: {e}", from.ip()))
            .and_then(|a| accepts(wanted, &a, from.ip()).map(|()| a));
        match verdict {
            Ok(a) => return Ok(a),
            Err(why) => {
                if said.len() < 16 && said.insert(why.clone()) {
                    say!("{why}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(cluster: &str) -> Announcement {
        Announcement {
            cluster: cluster.into(),
            server: Ipv4Addr::new(10, 0, 0, 1),
            http_port: 80,
            share: None,
        }
    }

    #[test]
    fn takes_its_clusters_head_from_the_heads_own_address() {
        let head = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(accepts(None, &heard("lab"), head), Ok(()));
        assert_eq!(accepts(Some("lab"), &heard("lab"), head), Ok(()));
        let other = accepts(Some("lab"), &heard("blue"), head).unwrap_err();
        assert!(other.contains("cluster \"blue\""), "{other}");
        let elsewhere = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9));
        let spoof = accepts(None, &heard("lab"), elsewhere).unwrap_err();
        assert!(spoof.contains("not at its own address"), "{spoof}");
    }
}
