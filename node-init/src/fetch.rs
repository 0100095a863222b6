//! One plain HTTP request to the head on the LAN (HTTP/1.0, no redirects,
//! no TLS): admission and a key URL ([`crate::key`]; the admission answer is
//! sealed, not secret on the wire) and the head's user and group tables
//! ([`crate::share`]) come this way. Its pure half (URL split, request
//! writer, response parse) is [`contracts::http`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use contracts::http::{is_ok, parse_response, status_code, HttpUrl, Request};

/// How `omnode init` names itself to the head.
const USER_AGENT: &str = "omnode-init";

/// A GET that did not bring back a body.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad URL {0:?}: expected http://HOST[:PORT]/PATH")]
    BadUrl(String),
    /// Connecting or talking to the server failed.
    #[error("fetching {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The error.
        source: std::io::Error,
    },
    /// The server answered something other than 200.
    #[error("fetching {url}: server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status line.
        status: String,
    },
    /// The answer is not an HTTP response.
    #[error("fetching {url}: malformed HTTP response")]
    Malformed {
        /// The URL.
        url: String,
    },
}

/// Fetches `url` (one attempt, 5 s connect and read timeouts) and returns
/// the body; at most `limit` bytes of response are read.
pub fn get(url: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
    let (status, body) = request(url, None, limit)?;
    if !is_ok(&status) {
        return Err(FetchError::Status {
            url: url.to_string(),
            status,
        });
    }
    Ok(body)
}

/// POSTs the JSON `body` to `url` (one attempt, like [`get`]) and returns
/// the status code and the body whatever the status.
pub fn post_json(url: &str, body: &[u8], limit: u64) -> Result<(u16, Vec<u8>), FetchError> {
    let (status, body) = request(url, Some(body), limit)?;
    let code = status_code(&status).ok_or_else(|| FetchError::Malformed {
        url: url.to_string(),
    })?;
    Ok((code, body))
}

/// One request: GET without a body, POST of JSON with one; returns the
/// status line and the body.
fn request(url: &str, body: Option<&[u8]>, limit: u64) -> Result<(String, Vec<u8>), FetchError> {
    let parsed: HttpUrl = url
        .parse()
        .map_err(|_| FetchError::BadUrl(url.to_string()))?;
    let io = |source| FetchError::Io {
        url: url.to_string(),
        source,
    };
    let addr: SocketAddr = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| FetchError::BadUrl(url.to_string()))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let request = match body {
        None => Request::new("GET", &parsed, USER_AGENT),
        Some(b) => Request::new("POST", &parsed, USER_AGENT).json(b),
    };
    s.write_all(&request.to_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    s.take(limit).read_to_end(&mut buf).map_err(io)?;
    let (status, body) = parse_response(&buf).ok_or_else(|| FetchError::Malformed {
        url: url.to_string(),
    })?;
    Ok((status, body.to_vec()))
}
