//! Downloads and the package cache.
//!
//! The cache lives in `$XDG_CACHE_HOME/omcluster` (or `~/.cache/omcluster`,
//! or `--cache DIR`): `debs/<pool file name>` for packages and
//! `dists/<mirror>/<suite>/` for the signed index files. Every file is
//! checked against its expected SHA256 before use, wherever it came from; a
//! cached file that fails the check is fetched again (online) or refused
//! (`--offline`). Downloads run in parallel worker threads, resume a partial
//! `.part` file with an HTTP `Range` request, and show `indicatif` bars when
//! stderr is a terminal, plain log lines otherwise.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

/// Errors from fetching or reading the cache.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The mirror could not be reached or the transfer broke.
    #[error("cannot fetch {url}: {message}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The mirror answered with an HTTP error status.
    #[error("cannot fetch {url}: HTTP status {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The mirror no longer has a pinned package file (archives drop old
    /// versions at point releases).
    #[error("{what} is gone from the mirror ({url}: HTTP status 404); run with --update to pin current versions")]
    Gone {
        /// The package.
        what: String,
        /// The URL.
        url: String,
    },
    /// `--offline` and the file is not in the cache.
    #[error("offline build: {what} is not in the cache ({path}); run once without --offline")]
    NotCached {
        /// The package or index file.
        what: String,
        /// Where it was expected.
        path: PathBuf,
    },
    /// A file's SHA256 is not the expected one.
    #[error("SHA256 mismatch for {what}: expected {expected}, got {actual}")]
    HashMismatch {
        /// The file checked (package name and where it came from).
        what: String,
        /// The hash the signed index or the lockfile gives.
        expected: String,
        /// The hash of the bytes at hand.
        actual: String,
    },
    /// The disk is full.
    #[error("no space left on device while writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
    },
    /// Another file-system error.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Wrap an I/O error on `path`, recognising a full disk.
pub fn io_error(path: &Path, source: std::io::Error) -> FetchError {
    if source.raw_os_error() == Some(libc::ENOSPC) {
        FetchError::DiskFull {
            path: path.to_path_buf(),
        }
    } else {
        FetchError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Lowercase hex SHA256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The default cache directory.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(x).join("omcluster"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/omcluster"))
}

/// A file wanted from the mirror, with its expected hash.
#[derive(Debug, Clone)]
pub struct Want {
    /// What it is, for messages (the package name).
    pub what: String,
    /// Path relative to the mirror root (`pool/main/…`).
    pub remote: String,
    /// Where it goes in the cache.
    pub dest: PathBuf,
    /// Expected size.
    pub size: u64,
    /// Expected lowercase hex SHA256.
    pub sha256: String,
}

/// The HTTP client, the cache policy and the progress display.
pub struct Fetcher {
    agent: ureq::Agent,
    mirror: Option<String>,
    offline: bool,
    bars: Option<MultiProgress>,
}

impl Fetcher {
    /// A fetcher for `mirror` (`None` only works offline).
    pub fn new(mirror: Option<String>, offline: bool) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(20)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .user_agent(concat!("ombuild/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let bars = std::io::IsTerminal::is_terminal(&std::io::stderr())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Fetcher {
            agent,
            mirror,
            offline,
            bars,
        }
    }

    /// Whether this fetcher may use the network.
    pub fn offline(&self) -> bool {
        self.offline
    }

    fn url(&self, what: &str, remote: &str, dest: &Path) -> Result<String, FetchError> {
        match (&self.mirror, self.offline) {
            (Some(m), false) => Ok(format!(
                "{}/{}",
                m.trim_end_matches('/'),
                remote.trim_start_matches('/')
            )),
            _ => Err(FetchError::NotCached {
                what: what.to_string(),
                path: dest.to_path_buf(),
            }),
        }
    }

    /// Fetch a small file (an index) into memory, bypassing the cache.
    pub fn get_bytes(&self, remote: &str, what: &str, dest: &Path) -> Result<Vec<u8>, FetchError> {
        let url = self.url(what, remote, dest)?;
        let resp = self.agent.get(&url).call().map_err(|e| FetchError::Http {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(FetchError::Status { url, status });
        }
        let mut out = Vec::new();
        resp.into_body()
            .into_reader()
            .read_to_end(&mut out)
            .map_err(|e| FetchError::Http {
                url: url.clone(),
                message: e.to_string(),
            })?;
        info!(url = %url, bytes = out.len(), "fetched");
        Ok(out)
    }

    /// Make sure every wanted file is in the cache with the right hash,
    /// downloading the missing ones with up to four parallel transfers.
    pub fn ensure_all(&self, wants: &[Want]) -> Result<(), FetchError> {
        let mut missing = Vec::new();
        for w in wants {
            if !self.cached_ok(w)? {
                missing.push(w.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let total: u64 = missing.iter().map(|w| w.size).sum();
        info!(files = missing.len(), bytes = total, "downloading packages");
        let queue = Mutex::new(missing);
        let first_error = Mutex::new(None);
        let workers = 4.min(queue.lock().expect("queue").len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    if first_error.lock().expect("error slot").is_some() {
                        return;
                    }
                    let Some(w) = queue.lock().expect("queue").pop() else {
                        return;
                    };
                    if let Err(e) = self.download(&w) {
                        first_error.lock().expect("error slot").get_or_insert(e);
                        return;
                    }
                });
            }
        });
        match first_error.into_inner().expect("error slot") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// [`Fetcher::ensure_all`] for one file (an index).
    pub fn ensure_index(&self, w: &Want) -> Result<(), FetchError> {
        if self.cached_ok(w)? {
            return Ok(());
        }
        self.download(w)
    }

    /// Whether the cached copy exists and is good; a bad one is removed
    /// (online) or refused (offline).
    fn cached_ok(&self, w: &Want) -> Result<bool, FetchError> {
        let data = match std::fs::read(&w.dest) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.offline {
                    return Err(FetchError::NotCached {
                        what: w.what.clone(),
                        path: w.dest.clone(),
                    });
                }
                return Ok(false);
            }
            Err(e) => return Err(io_error(&w.dest, e)),
        };
        let actual = sha256_hex(&data);
        if actual == w.sha256 {
            return Ok(true);
        }
        if self.offline {
            return Err(FetchError::HashMismatch {
                what: format!("{} (cached {})", w.what, w.dest.display()),
                expected: w.sha256.clone(),
                actual,
            });
        }
        warn!(package = %w.what, path = %w.dest.display(), "cached file fails its SHA256 check, fetching it again");
        std::fs::remove_file(&w.dest).map_err(|e| io_error(&w.dest, e))?;
        Ok(false)
    }

    fn bar(&self, w: &Want, start: u64) -> Option<ProgressBar> {
        let mp = self.bars.as_ref()?;
        let pb = mp.add(ProgressBar::new(w.size));
        pb.set_style(bytes_style());
        pb.set_message(w.what.clone());
        pb.set_position(start);
        Some(pb)
    }

    /// Download one file into the cache, resuming a `.part` file.
    fn download(&self, w: &Want) -> Result<(), FetchError> {
        let url = self.url(&w.what, &w.remote, &w.dest)?;
        if let Some(dir) = w.dest.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        }
        let mut part = w.dest.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let have = if have >= w.size { 0 } else { have };
        let mut req = self.agent.get(&url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let http = |e: &dyn std::fmt::Display| FetchError::Http {
            url: url.clone(),
            message: e.to_string(),
        };
        let resp = req.call().map_err(|e| http(&e))?;
        let status = resp.status().as_u16();
        let (mut file, start) = match status {
            206 if have > 0 => {
                let f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&part)
                    .map_err(|e| io_error(&part, e))?;
                (f, have)
            }
            200 => (
                std::fs::File::create(&part).map_err(|e| io_error(&part, e))?,
                0,
            ),
            404 => {
                return Err(FetchError::Gone {
                    what: w.what.clone(),
                    url,
                })
            }
            _ => return Err(FetchError::Status { url, status }),
        };
        if start > 0 {
            info!(package = %w.what, from = start, "resuming download");
        }
        let bar = self.bar(w, start);
        let mut reader = resp.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|e| http(&e))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(|e| io_error(&part, e))?;
            if let Some(b) = &bar {
                b.inc(n as u64);
            }
        }
        file.sync_all().map_err(|e| io_error(&part, e))?;
        drop(file);
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let data = std::fs::read(&part).map_err(|e| io_error(&part, e))?;
        let actual = sha256_hex(&data);
        if actual != w.sha256 {
            let _ = std::fs::remove_file(&part);
            return Err(FetchError::HashMismatch {
                what: format!("{} (downloaded from {url})", w.what),
                expected: w.sha256.clone(),
                actual,
            });
        }
        std::fs::rename(&part, &w.dest).map_err(|e| io_error(&w.dest, e))?;
        // With bars on screen a log line would tear them; the bar said it.
        if self.bars.is_some() {
            debug!(package = %w.what, bytes = data.len(), "downloaded");
        } else {
            info!(package = %w.what, bytes = data.len(), "downloaded");
        }
        Ok(())
    }
}

/// The style of every byte-counting bar `ombuild` shows (downloads,
/// compression): name, bytes of total, rate and ETA.
pub fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{msg:28!} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} eta {eta:>3} {wide_bar}",
    )
    .expect("valid template")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named() {
        let e = io_error(
            Path::new("/out/initrd.img"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert_eq!(
            e.to_string(),
            "no space left on device while writing /out/initrd.img"
        );
        let e = io_error(
            Path::new("/x"),
            std::io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(matches!(e, FetchError::Io { .. }));
    }
}
