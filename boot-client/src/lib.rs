//! The HTTP/1.0 exchanges agents and `omctl` make with the boot server
//! (`omboot`): the agent's check-in and the admission requests it relays,
//! and `omctl join`'s request. One request per connection, a bounded
//! answer, a timeout on each step; [`contracts::http`] writes and reads
//! the messages, this crate moves them. Also [`mac_of`], the MAC the
//! boot server knows a machine by.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use contracts::http::{parse_response, status_code, HttpUrl, Request};
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

/// How agents and `omctl` name themselves to the boot server.
const USER_AGENT: &str = "omnode-agent";

/// How long one attempt may take to connect, and then to be answered.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
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
