//! The HTTP requests omcluster's programs make of `omboot` without an
//! HTTP library: `omnode init` asking for admission and fetching the
//! cluster key (`om.key=http://…`) or the head's user tables, and `omnode
//! agent` checking in (`POST /api/v1/checkin`) and relaying admin requests.
//!
//! Pure halves only: [`HttpUrl`] splits a plain `http://` URL, [`Request`]
//! writes an HTTP/1.0 request and [`parse_response`] reads a whole
//! HTTP/1.x answer; the callers own the sockets. [`Checkin`] is the
//! check-in body, the one type the agent serialises and `omboot`
//! deserialises, and [`CHECKIN_PATH`] its endpoint. [`WEB_VIEW_PORT`] is
//! where a head's agent serves the web view.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// The path of the agent's check-in endpoint on `omboot`'s HTTP server.
pub const CHECKIN_PATH: &str = "/api/v1/checkin";

/// The port of the web view a head's agent serves (`omnode agent --web`).
pub const WEB_VIEW_PORT: u16 = 7947;

/// Body of `POST /api/v1/checkin`, JSON.
///
/// Field order is the wire order (`address`, `mac`, `name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkin {
    /// The node's address; `omboot` takes the connection's source address
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// The MAC of the interface holding that address.
    pub mac: MacAddr,
    /// The node's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Checkin {
    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a check-in serialises")
    }
}

/// A plain `http://host[:port]/path` URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host name or address, as written.
    pub host: String,
    /// The port (80 when not written).
    pub port: u16,
    /// The path, starting with `/` (`/` when not written).
    pub path: String,
}

/// A URL that is not `http://HOST[:PORT]/PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not http://HOST[:PORT]/PATH")]
pub struct BadUrl(pub String);

impl FromStr for HttpUrl {
    type Err = BadUrl;
    fn from_str(url: &str) -> Result<Self, BadUrl> {
        let bad = || BadUrl(url.to_string());
        let rest = url.strip_prefix("http://").ok_or_else(bad)?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(bad());
        }
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}:{}{}", self.host, self.port, self.path)
    }
}

/// One HTTP/1.0 request, as the nodes write it: the request line, `Host`,
/// `User-Agent`, the extra headers in the order given, then for a JSON body
/// `Content-Type` and `Content-Length`, an empty line and the body.
///
/// HTTP/1.0 without keep-alive, so the server closes the connection after
/// its answer and the caller reads to the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    method: &'a str,
    path: &'a str,
    host: &'a str,
    user_agent: &'a str,
    headers: Vec<(&'a str, &'a str)>,
    json: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    /// `method` of `url`'s path on its host, sent as `user_agent`.
    pub fn new(method: &'a str, url: &'a HttpUrl, user_agent: &'a str) -> Self {
        Self {
            method,
            path: &url.path,
            host: &url.host,
            user_agent,
            headers: Vec::new(),
            json: None,
        }
    }

    /// Adds the header `name: value` after those added before.
    pub fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sends `body` as JSON (even an empty one gets its `Content-Length`).
    pub fn json(mut self, body: &'a [u8]) -> Self {
        self.json = Some(body);
        self
    }

    /// The bytes to send.
    pub fn to_bytes(&self) -> Vec<u8> {
        let Self {
            method,
            path,
            host,
            user_agent,
            ..
        } = self;
        let mut head =
            format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n");
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = self.json {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(self.json.unwrap_or_default());
        bytes
    }
}

/// Parses a whole HTTP/1.x response; returns the status line and the body
/// (cut at Content-Length when given).
pub fn parse_response(bytes: &[u8]) -> Option<(String, &[u8])> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.to_string();
    if !status.starts_with("HTTP/1.") {
        return None;
    }
    let mut body = &bytes[end + 4..];
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().ok()?;
                body = body.get(..n)?;
            }
        }
    }
    Some((status, body))
}

/// Whether a status line (`HTTP/1.0 200 OK`) says 200.
pub fn is_ok(status: &str) -> bool {
    status_code(status) == Some(200)
}

/// The code of a status line (`HTTP/1.0 202 Accepted` → 202).
pub fn status_code(status: &str) -> Option<u16> {
    status.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u: HttpUrl = "http://10.0.0.1:8080/keys/c1".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("10.0.0.1", 8080, "/keys/c1")
        );
        assert_eq!(u.to_string(), "http://10.0.0.1:8080/keys/c1");
        let u: HttpUrl = "http://head".parse().unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("head", 80, "/")
        );
        for bad in [
            "https://x/",
            "http://:80/",
            "http://x:port/",
            "ftp://x",
            "http://x/a b",
        ] {
            assert_eq!(bad.parse::<HttpUrl>(), Err(BadUrl(bad.into())), "{bad}");
        }
    }

    #[test]
    fn requests() {
        let url: HttpUrl = "http://10.77.0.1:8080/api/v1/admit".parse().unwrap();
        assert_eq!(
            Request::new("GET", &url, "omnode-init").to_bytes(),
            b"GET /api/v1/admit HTTP/1.0\r\nHost: 10.77.0.1\r\nUser-Agent: omnode-init\r\n\r\n"
        );
        assert_eq!(
            Request::new("POST", &url, "omnode-init")
                .json(b"{}")
                .to_bytes(),
            b"POST /api/v1/admit HTTP/1.0\r\nHost: 10.77.0.1\r\nUser-Agent: omnode-init\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert_eq!(
            Request::new("POST", &url, "omnode-agent")
                .header("x-om-time", "1700000000")
                .header("x-om-auth", "ab12")
                .json(b"")
                .to_bytes(),
            b"POST /api/v1/admit HTTP/1.0\r\nHost: 10.77.0.1\r\nUser-Agent: omnode-agent\r\n\
              x-om-time: 1700000000\r\nx-om-auth: ab12\r\n\
              Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn responses() {
        let (st, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((st.as_str(), body), ("HTTP/1.1 200 OK", &b"abc"[..]));
        assert!(is_ok(&st));
        let (_, body) = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(body, b"all of it");
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_none());
        assert!(!is_ok("HTTP/1.0 404 Not Found"));
        assert_eq!(status_code("HTTP/1.0 202 Accepted"), Some(202));
        assert_eq!(status_code("HTTP/1.0 twenty"), None);
    }

    #[test]
    fn the_check_in_body_round_trips() {
        let c = Checkin {
            address: Some("10.77.0.100".parse().unwrap()),
            mac: "52:54:00:0c:00:01".parse().unwrap(),
            name: Some("node-1".into()),
        };
        let json = c.to_json();
        assert_eq!(
            json,
            r#"{"address":"10.77.0.100","mac":"52:54:00:0c:00:01","name":"node-1"}"#
        );
        assert_eq!(serde_json::from_str::<Checkin>(&json).unwrap(), c);
        let bare: Checkin = serde_json::from_str(r#"{"mac":"52:54:00:0c:00:01"}"#).unwrap();
        assert_eq!((bare.address, bare.name), (None, None));
        assert!(serde_json::from_str::<Checkin>(r#"{"mac":"52:54:00:0c:00:01","x":1}"#).is_err());
        assert!(serde_json::from_str::<Checkin>(r#"{"mac":"nope"}"#).is_err());
    }
}
