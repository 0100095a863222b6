//! The agent's check-in with the boot server: once the node has joined, it
//! tells `omboot` (`POST /api/v1/checkin`) so the head's node list shows the
//! last boot stage, "agent", next to DHCP, TFTP, script, kernel and initrd.
//! Its one HTTP exchange ([`exchange`]) also carries the admin's admission
//! requests that the agent relays for `omctl` (`agent/admission`).
//!
//! `omnode init` passes the URL (`--checkin http://SERVER:PORT/api/v1/checkin`)
//! when the kernel command line names the server; an agent started by hand
//! has none and does not check in. The request is plain HTTP/1.0 with a JSON
//! body, made by a task the agent owns ([`run`]) once the node has joined,
//! and retried a few times: a boot server that is away must not hold up or
//! fail the agent. The task ends at the agent's shutdown like every other.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use contracts::http::{parse_response, status_code, Checkin, HttpUrl, Request};
use contracts::mac::MacAddr;

/// What went wrong with one check-in attempt.
#[derive(Debug, thiserror::Error)]
pub enum CheckinError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad check-in URL {0:?}: expected http://HOST[:PORT]/PATH")]
    BadUrl(String),
    /// No interface holds the agent's address, so there is no MAC to report.
    #[error("no interface holds {0}; cannot tell the boot server this node's MAC")]
    NoMac(IpAddr),
    /// Talking to the boot server failed.
    #[error("check-in at {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The error.
        source: std::io::Error,
    },
    /// The boot server answered something other than 200.
    #[error("check-in at {url}: server answered {status:?}")]
    Status {
        /// The URL.
        url: String,
        /// Its status line (or what came instead).
        status: String,
    },
}

/// The MAC address of the interface holding `address`, from sysfs.
pub fn mac_of(address: IpAddr) -> Option<MacAddr> {
    // From the interface list itself (its link-layer entries), not sysfs:
    // an agent that entered only a network namespace sees the host's /sys.
    let addrs: Vec<_> = nix::ifaddrs::getifaddrs().ok()?.collect();
    let name = addrs.iter().find_map(|a| {
        a.address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .filter(|s| IpAddr::V4(s.ip()) == address)
            .map(|_| a.interface_name.clone())
    })?;
    addrs.iter().find_map(|a| {
        let link = a.address.as_ref()?.as_link_addr()?;
        (a.interface_name == name)
            .then(|| link.addr())
            .flatten()
            .map(MacAddr)
    })
}

/// The JSON body `omboot` expects.
pub fn body(mac: MacAddr, name: &str, address: IpAddr) -> String {
    Checkin {
        address: Some(address),
        mac,
        name: Some(name.to_string()),
    }
    .to_json()
}

/// How the agent names itself to the boot server.
const USER_AGENT: &str = "omnode-agent";

/// How long one attempt may take to connect, and then to be answered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts before giving up, and the pause between them.
const ATTEMPTS: u32 = 5;
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// One check-in attempt.
pub async fn post(url: &str, name: &str, address: IpAddr) -> Result<(), CheckinError> {
    let mac = mac_of(address).ok_or(CheckinError::NoMac(address))?;
    let json = body(mac, name, address);
    let (status, _) = exchange(url, "POST", &[], json.as_bytes()).await?;
    if status != 200 {
        return Err(CheckinError::Status {
            url: url.to_string(),
            status: format!("HTTP {status}"),
        });
    }
    Ok(())
}

/// One HTTP/1.0 request to the boot server at `url` with `headers` and a
/// JSON `body` (sent when not empty); returns the status code and the body
/// whatever the status.
pub async fn exchange(
    url: &str,
    method: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, Vec<u8>), CheckinError> {
    let parsed: HttpUrl = url.parse().map_err(|_| CheckinError::BadUrl(url.into()))?;
    let io = |source| CheckinError::Io {
        url: url.to_string(),
        source,
    };
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time");
    let mut stream = tokio::time::timeout(
        ATTEMPT_TIMEOUT,
        TcpStream::connect((parsed.host.as_str(), parsed.port)),
    )
    .await
    .map_err(|_| io(timed_out()))?
    .map_err(io)?;
    let mut request = Request::new(method, &parsed, USER_AGENT);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    if !body.is_empty() {
        request = request.json(body);
    }
    let request = request.to_bytes();
    let mut answer = Vec::new();
    let exchange = async {
        stream.write_all(&request).await?;
        (&mut stream).take(64 * 1024).read_to_end(&mut answer).await
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, exchange)
        .await
        .map_err(|_| io(timed_out()))?
        .map_err(io)?;
    let malformed = || CheckinError::Status {
        url: url.to_string(),
        status: "a malformed response".into(),
    };
    let (status, body) = parse_response(&answer).ok_or_else(malformed)?;
    let code = status_code(&status).ok_or_else(malformed)?;
    Ok((code, body.to_vec()))
}

/// The agent's check-in task: waits until the node has joined (`joined`
/// brings its address), then checks in, up to five attempts two seconds
/// apart. Returns at once when `stop` is cancelled.
pub async fn run(
    url: String,
    name: String,
    joined: oneshot::Receiver<IpAddr>,
    stop: CancellationToken,
) {
    let address = tokio::select! {
        () = stop.cancelled() => return,
        joined = joined => match joined {
            Ok(address) => address,
            // The membership loop ended without joining.
            Err(_) => return,
        },
    };
    for attempt in 1..=ATTEMPTS {
        let result = tokio::select! {
            () = stop.cancelled() => return,
            result = post(&url, &name, address) => result,
        };
        match result {
            Ok(()) => {
                info!(%url, "checked in with the boot server");
                return;
            }
            Err(e) if attempt == ATTEMPTS => warn!(cause = %e, "giving up the check-in"),
            Err(e) => warn!(cause = %e, attempt, "check-in failed; retrying"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_what_omboot_reads() {
        assert_eq!(
            body(
                "52:54:00:0c:00:01".parse().unwrap(),
                "node-1",
                "10.77.0.100".parse().unwrap()
            ),
            r#"{"address":"10.77.0.100","mac":"52:54:00:0c:00:01","name":"node-1"}"#
        );
    }

    #[tokio::test]
    async fn a_check_in_reaches_a_local_server_and_needs_a_200() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = vec![0; 4096];
            let n = conn.read(&mut request).unwrap();
            conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                .unwrap();
            String::from_utf8_lossy(&request[..n]).into_owned()
        });
        let url = format!("http://127.0.0.1:{port}/api/v1/checkin");
        post(&url, "node-1", "127.0.0.1".parse().unwrap())
            .await
            .unwrap();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /api/v1/checkin HTTP/1.0\r\n"),
            "{request}"
        );
        assert!(request.ends_with(r#""name":"node-1"}"#), "{request}");
    }

    #[tokio::test]
    async fn a_bad_url_is_named() {
        let err = post("ftp://x/y", "n", "127.0.0.1".parse().unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"bad check-in URL "ftp://x/y": expected http://HOST[:PORT]/PATH"#
        );
    }
}
