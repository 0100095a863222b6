//! The cluster key: from the command line or fetched over plain HTTP from
//! the head, written to `/run/omcluster.key` (mode 0600) for the agent.
//!
//! The file holds the 64 hex digits and a newline. The HTTP client is the
//! minimum for one GET from the head on the LAN (HTTP/1.0, no redirects, no
//! TLS); [`parse_response`] is the pure half.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// Where `omnode init` writes the key.
pub const KEY_FILE: &str = "/run/omcluster.key";

/// Getting or storing the key failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The URL is not `http://host[:port]/path`.
    #[error("bad key URL {0:?}: expected http://HOST[:PORT]/PATH")]
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
    /// The body is not 64 hex digits.
    #[error("key from {0} is not 64 hex digits")]
    NotAKey(String),
    /// Writing the key file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Splits `http://host[:port]/path` into host, port and path.
pub fn parse_url(url: &str) -> Result<(String, u16, String), KeyError> {
    let bad = || KeyError::BadUrl(url.to_string());
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
    Ok((host.to_string(), port, path.to_string()))
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

/// Checks and normalises a key: 64 hex digits, surrounding whitespace allowed.
pub fn normalise(text: &str) -> Option<String> {
    let t = text.trim();
    (t.len() == 64 && t.chars().all(|c| c.is_ascii_hexdigit())).then(|| t.to_ascii_lowercase())
}

/// Fetches the key from `url` (one attempt, 5 s connect and read timeouts).
pub fn fetch(url: &str) -> Result<String, KeyError> {
    let (host, port, path) = parse_url(url)?;
    let io = |source| KeyError::Io {
        url: url.to_string(),
        source,
    };
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| KeyError::BadUrl(url.to_string()))?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(io)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: omnode-init\r\n\r\n");
    s.write_all(request.as_bytes()).map_err(io)?;
    let mut buf = Vec::new();
    s.take(64 * 1024).read_to_end(&mut buf).map_err(io)?;
    let (status, body) = parse_response(&buf).ok_or_else(|| KeyError::Malformed {
        url: url.to_string(),
    })?;
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(KeyError::Status {
            url: url.to_string(),
            status,
        });
    }
    normalise(&String::from_utf8_lossy(body)).ok_or_else(|| KeyError::NotAKey(url.to_string()))
}

/// Writes the key (hex and a newline) to `path` with mode 0600.
pub fn install(key_hex: &str, path: &Path) -> Result<(), KeyError> {
    let err = |source| KeyError::Write {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // The mode only applies at creation; an old file keeps its own.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(err)?;
    f.write_all(format!("{key_hex}\n").as_bytes()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://10.0.0.1:8080/keys/c1").unwrap(),
            ("10.0.0.1".into(), 8080, "/keys/c1".into())
        );
        assert_eq!(
            parse_url("http://head").unwrap(),
            ("head".into(), 80, "/".into())
        );
        for bad in ["https://x/", "http://:80/", "http://x:port/", "ftp://x"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn responses() {
        let (st, body) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef").unwrap();
        assert_eq!((st.as_str(), body), ("HTTP/1.1 200 OK", &b"abc"[..]));
        let (_, body) = parse_response(b"HTTP/1.0 200 OK\r\n\r\nall of it").unwrap();
        assert_eq!(body, b"all of it");
        assert!(parse_response(b"SSH-2.0-x\r\n\r\n").is_none());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_none());
    }

    #[test]
    fn fetch_and_install_against_a_local_server() {
        let key = "ab".repeat(32);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let body = format!("{}\n", key.to_uppercase());
        let server = std::thread::spawn(move || {
            for (i, conn) in listener.incoming().take(2).enumerate() {
                let mut conn = conn.unwrap();
                let mut req = Vec::new();
                let mut chunk = [0u8; 1024];
                while !req.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut chunk).unwrap();
                    assert!(n > 0, "client closed before ending its request");
                    req.extend_from_slice(&chunk[..n]);
                }
                assert!(req.starts_with(b"GET /k HTTP/1.0\r\n"));
                let resp = if i == 0 {
                    format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.0 404 Not Found\r\n\r\n".to_string()
                };
                conn.write_all(resp.as_bytes()).unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/k");
        assert_eq!(fetch(&url).unwrap(), key);
        let err = fetch(&url).unwrap_err().to_string();
        assert!(
            err.ends_with("server answered HTTP/1.0 404 Not Found"),
            "{err}"
        );
        server.join().unwrap();

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/omcluster.key");
        install(&key, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{key}\n"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
