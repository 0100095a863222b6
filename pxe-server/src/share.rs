//! The shared tree (`--share`): every machine of the cluster sees one
//! directory at `/cluster` (openMosix's `/mfs`).
//!
//! `--share DIR` makes the head serve DIR itself: omboot writes a
//! configuration for nfs-ganesha, the user-space NFS server (the head of a
//! lab runs on a host kernel without an NFS server, and a head booted from
//! the ISO runs the same code), starts it, waits until it answers, and
//! restarts it if it dies, the way it owns its other services. Nodes are told
//! `om.share=nfs://HEAD/cluster` on their command line and mount it with the
//! kernel's NFSv4 client. `--share nfs://SERVER/EXPORT` serves nothing: the
//! nodes mount that server instead (a NAS carries the data).
//!
//! Why nfs-ganesha and NFSv4 (README, "The shared tree"): NFSv4 needs one
//! TCP port and no portmapper or mountd; ganesha's VFS backend builds file
//! handles from the kernel's own (`name_to_handle_at`), so handles survive a
//! server restart, and its state recovery on disk lets clients reclaim
//! their open files during a short grace period instead of getting
//! stale-handle errors; `COMMIT` is an `fsync` of the head's file.
//!
//! The same server carries the image's system layer: when the image
//! directory holds [`SYSTEM_LAYER`], it is exported read-only at
//! [`SYSTEM_EXPORT`] and nodes are told `om.system=nfs://HEAD/images`; they
//! map the layer from there and read only the blocks their programs touch.
//!
//! Layout: [`ShareConfig`] is the validated setting; [`Export`] one served
//! directory; [`ganesha_conf`] is the pure configuration writer
//! (snapshot-tested); [`serve`] is the supervisor.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use contracts::image::{SYSTEM_EXPORT, SYSTEM_LAYER};
use contracts::share::{NfsShare, Share, EXPORT_PATH, NFS_PORT};
use ipnet::Ipv4Net;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The server program, looked up on `PATH` (Debian: package `nfs-ganesha`,
/// with `nfs-ganesha-vfs` for the backend).
pub const GANESHA: &str = "ganesha.nfsd";
/// How long the server may take to answer on its port after a start.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Seconds a restarted server waits for clients to reclaim their state
/// before it takes new opens; and the lease a client must renew within.
/// Short, so a restart stalls nodes' I/O for seconds, not ganesha's
/// default minute and a half.
const GRACE_SECONDS: u32 = 20;
const LEASE_SECONDS: u32 = 15;

/// Where the tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareConfig {
    /// The head serves this directory (`--share DIR`).
    Serve(PathBuf),
    /// The nodes mount this existing server (`--share nfs://SERVER/EXPORT`).
    External(NfsShare),
}

/// Why `--share` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// `--share` names neither a directory nor an `nfs://` URL.
    #[error("--share {0}: no such directory")]
    Missing(PathBuf),
    /// `--share` names a file or something else that is not a directory.
    #[error("--share {0}: not a directory")]
    NotDirectory(PathBuf),
    /// The directory's path cannot be written into the server's
    /// configuration.
    #[error(
        "--share {0}: the path must be absolute and hold no '\"', '\\\\' or control character"
    )]
    UnusablePath(PathBuf),
    /// The `nfs://` URL is malformed (not a `source`: the message holds it
    /// whole, and `{:#}` would print it twice).
    #[error("--share: {0}")]
    Url(contracts::share::ShareError),
    /// nfs-ganesha is not installed.
    #[error("serving the shared tree or the system layer needs nfs-ganesha: {GANESHA} is not on PATH (apt-get install nfs-ganesha nfs-ganesha-vfs)")]
    NoServer,
    /// The server's files could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server did not come up.
    #[error("nfs-ganesha did not start: {0}")]
    Start(String),
}

impl ShareConfig {
    /// Reads `--share`: an `nfs://` URL, or an existing directory (made
    /// absolute).
    pub fn parse(value: &str) -> Result<Self, ShareError> {
        if value.starts_with("nfs://") {
            return value
                .parse()
                .map(ShareConfig::External)
                .map_err(ShareError::Url);
        }
        let path = PathBuf::from(value);
        let meta = std::fs::metadata(&path).map_err(|_| ShareError::Missing(path.clone()))?;
        if !meta.is_dir() {
            return Err(ShareError::NotDirectory(path));
        }
        let path = std::path::absolute(&path).map_err(|_| ShareError::UnusablePath(path))?;
        let text = path.to_string_lossy();
        if text
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
            || path.to_str().is_none()
        {
            return Err(ShareError::UnusablePath(path));
        }
        Ok(ShareConfig::Serve(path))
    }

    /// What a node that reached the head at `server` is told (`om.share=`).
    pub fn for_nodes(&self, server: Ipv4Addr) -> Share {
        match self {
            ShareConfig::Serve(_) => Share::Nfs(NfsShare::head(server)),
            ShareConfig::External(n) => Share::Nfs(n.clone()),
        }
    }
}

/// One directory the server exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// The directory.
    pub dir: PathBuf,
    /// Its NFSv4 path ([`EXPORT_PATH`], [`SYSTEM_EXPORT`]).
    pub pseudo: &'static str,
    /// Whether clients may write.
    pub writable: bool,
}

impl Export {
    /// The shared tree `--share DIR` serves, read-write.
    pub fn tree(dir: PathBuf) -> Self {
        Export {
            dir,
            pseudo: EXPORT_PATH,
            writable: true,
        }
    }

    /// The image directory `images`, read-only, if it holds a system layer.
    pub fn system_layer(images: &Path) -> Option<Self> {
        images.join(SYSTEM_LAYER).is_file().then(|| Export {
            dir: images.to_path_buf(),
            pseudo: SYSTEM_EXPORT,
            writable: false,
        })
    }
}

/// What [`ganesha_conf`] writes.
#[derive(Debug, Clone)]
pub struct GaneshaSettings<'a> {
    /// The directories served.
    pub exports: &'a [Export],
    /// The one address to listen on (every address when `None`).
    pub bind: Option<Ipv4Addr>,
    /// The networks allowed to mount (the boot networks).
    pub clients: &'a [Ipv4Net],
    /// Where client state is kept across restarts.
    pub recovery: &'a Path,
}

/// The nfs-ganesha configuration for `s`: NFSv4 over TCP only (one port,
/// no portmapper), each export at its pseudo path for the boot networks and
/// nothing else (read-write or read-only as the export says), root not
/// squashed (root on a netbooted node is root of the cluster), numeric
/// owners (uids mean the same on every machine), attributes revalidated on
/// every access (the head writes into the directories directly, beside the
/// server).
pub fn ganesha_conf(s: &GaneshaSettings<'_>) -> String {
    let bind = s
        .bind
        .map(|a| format!("    Bind_addr = {a};\n"))
        .unwrap_or_default();
    let clients: Vec<String> = s.clients.iter().map(|n| n.to_string()).collect();
    let exports: String = s
        .exports
        .iter()
        .enumerate()
        .map(|(i, e)| {
            format!(
                "EXPORT {{\n\
                 \x20   Export_Id = {id};\n\
                 \x20   Path = \"{dir}\";\n\
                 \x20   Pseudo = {pseudo};\n\
                 \x20   Protocols = 4;\n\
                 \x20   Transports = TCP;\n\
                 \x20   SecType = sys;\n\
                 \x20   Squash = No_Root_Squash;\n\
                 \x20   Attr_Expiration_Time = 0;\n\
                 \x20   Access_Type = None;\n\
                 \x20   CLIENT {{\n\
                 \x20       Clients = {clients};\n\
                 \x20       Access_Type = {access};\n\
                 \x20   }}\n\
                 \x20   FSAL {{\n\
                 \x20       Name = VFS;\n\
                 \x20   }}\n\
                 }}\n",
                id = i + 1,
                dir = e.dir.display(),
                pseudo = e.pseudo,
                clients = clients.join(", "),
                access = if e.writable { "RW" } else { "RO" },
            )
        })
        .collect();
    format!(
        "# Written by omboot serve at each start; edits are lost.\n\
         NFS_CORE_PARAM {{\n\
         \x20   Protocols = 4;\n\
         \x20   NFS_Port = {NFS_PORT};\n\
         {bind}\
         \x20   Enable_NLM = false;\n\
         \x20   Enable_RQUOTA = false;\n\
         \x20   Enable_UDP = false;\n\
         }}\n\
         NFS_KRB5 {{\n\
         \x20   Active_krb5 = false;\n\
         }}\n\
         NFSv4 {{\n\
         \x20   RecoveryBackend = fs;\n\
         \x20   RecoveryRoot = \"{recovery}\";\n\
         \x20   Grace_Period = {GRACE_SECONDS};\n\
         \x20   Lease_Lifetime = {LEASE_SECONDS};\n\
         \x20   Only_Numeric_Owners = true;\n\
         }}\n\
         {exports}\
         LOG {{\n\
         \x20   Default_Log_Level = EVENT;\n\
         \x20   Components {{\n\
         \x20       NFS4 = INFO;\n\
         \x20   }}\n\
         }}\n",
        recovery = s.recovery.display(),
    )
}

/// The files of the running server, under `STATE/share/`.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// `ganesha.conf`.
    pub conf: PathBuf,
    /// `ganesha.log`: every start, stop, grace period and refused client.
    pub log: PathBuf,
    /// `ganesha.pid`.
    pub pid: PathBuf,
    /// `recovery/`: the clients' state kept across restarts.
    pub recovery: PathBuf,
}

impl ServerFiles {
    /// The files under `state`.
    pub fn under(state: &Path) -> Self {
        let dir = state.join("share");
        ServerFiles {
            conf: dir.join("ganesha.conf"),
            log: dir.join("ganesha.log"),
            pid: dir.join("ganesha.pid"),
            recovery: dir.join("recovery"),
        }
    }
}

/// Finds [`GANESHA`] on `PATH`.
pub fn find_server() -> Result<PathBuf, ShareError> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(GANESHA))
        .find(|p| p.is_file())
        .ok_or(ShareError::NoServer)
}

/// Serves `exports` to `clients` until `stop`: writes the configuration,
/// starts nfs-ganesha, and restarts it (after 1 s, doubling up to 30 s)
/// whenever it exits. Fails only if the first start does not answer on its
/// port.
pub async fn serve(
    exports: Vec<Export>,
    bind: Option<Ipv4Addr>,
    clients: Vec<Ipv4Net>,
    state: &Path,
    stop: CancellationToken,
) -> Result<(), ShareError> {
    let program = find_server()?;
    let files = ServerFiles::under(state);
    std::fs::create_dir_all(&files.recovery).map_err(|source| ShareError::Write {
        path: files.recovery.clone(),
        source,
    })?;
    let conf = ganesha_conf(&GaneshaSettings {
        exports: &exports,
        bind,
        clients: &clients,
        recovery: &files.recovery,
    });
    let served: Vec<String> = exports
        .iter()
        .map(|e| {
            let access = if e.writable { "rw" } else { "ro" };
            format!("{}={} ({access})", e.pseudo, e.dir.display())
        })
        .collect();
    std::fs::write(&files.conf, conf).map_err(|source| ShareError::Write {
        path: files.conf.clone(),
        source,
    })?;
    let probe = SocketAddr::from((bind.unwrap_or(Ipv4Addr::LOCALHOST), NFS_PORT));
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    loop {
        let mut command = Command::new(&program);
        // SAFETY: prctl is async-signal-safe and touches no memory of the
        // parent; the closure runs in the child between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // An omboot killed outright (SIGKILL runs no destructor)
                // must not leave the server behind: it dies with omboot.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .arg("-F")
            .arg("-L")
            .arg(&files.log)
            .arg("-f")
            .arg(&files.conf)
            .arg("-p")
            .arg(&files.pid)
            .args(["-N", "NIV_EVENT"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ShareError::Start(format!("{}: {e}", program.display())))?;
        let started = Instant::now();
        let pid = child.id().unwrap_or(0);
        let ready = tokio::select! {
            r = wait_ready(probe) => r,
            status = child.wait() => Err(format!(
                "exited ({}) before answering; {}",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
                log_tail(&files.log)
            )),
            _ = stop.cancelled() => return Ok(()),
        };
        match ready {
            Ok(()) if first => info!(
                exports = %served.join(", "), pid, port = NFS_PORT,
                clients = %clients.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(","),
                log = %files.log.display(),
                "share: serving {} over NFSv4 (nfs-ganesha)",
                if exports.iter().any(|e| e.pseudo == EXPORT_PATH) { "the tree" } else { "the system layer" }
            ),
            Ok(()) => info!(
                pid,
                "share: nfs-ganesha restarted; clients reclaim their state"
            ),
            Err(why) if first => return Err(ShareError::Start(why)),
            Err(why) => warn!(%why, "share: nfs-ganesha did not come back"),
        }
        first = false;
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                warn!(pid, %status, log = %log_tail(&files.log), restart_in_s = backoff.as_secs(),
                    "share: nfs-ganesha exited; restarting it");
            }
            _ = stop.cancelled() => {
                terminate(&mut child).await;
                return Ok(());
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Waits until something accepts on `addr`, up to [`READY_TIMEOUT`].
async fn wait_ready(addr: SocketAddr) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "nothing answered on {addr} after {READY_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// SIGTERM, then SIGKILL after 5 s: ganesha writes its recovery state on
/// a clean stop.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// The server's last serious log lines (its startup always logs harmless
/// complaints about D-Bus and Kerberos, left out), for an error message.
fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let serious: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(":FATAL :") || l.contains(":MAJ :") || l.contains(":CRIT :"))
        .filter(|l| {
            !["DBUS", "dbus", "krb5", "principal", "on UDP"]
                .iter()
                .any(|noise| l.contains(noise))
        })
        .collect();
    match serious.len() {
        0 => format!("see {}", log.display()),
        n => serious[n.saturating_sub(3)..]
            .iter()
            .map(|l| l.rsplit(" :").next().unwrap_or(l).trim())
            .collect::<Vec<_>>()
            .join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn configuration_exports_the_directories_to_the_boot_networks_only() {
        let images = tempfile::tempdir().unwrap();
        assert_eq!(Export::system_layer(images.path()), None);
        std::fs::write(images.path().join(SYSTEM_LAYER), "hsqs").unwrap();
        let mut layer = Export::system_layer(images.path()).unwrap();
        assert!(!layer.writable);
        layer.dir = PathBuf::from("/srv/images");
        let conf = ganesha_conf(&GaneshaSettings {
            exports: &[Export::tree(PathBuf::from("/srv/cluster")), layer],
            bind: Some(Ipv4Addr::new(10, 77, 0, 1)),
            clients: &["10.77.0.0/24".parse().unwrap()],
            recovery: Path::new("/var/lib/omboot/share/recovery"),
        });
        expect![[r##"
            # Written by omboot serve at each start; edits are lost.
            NFS_CORE_PARAM {
                Protocols = 4;
                NFS_Port = 2049;
                Bind_addr = 10.77.0.1;
                Enable_NLM = false;
                Enable_RQUOTA = false;
                Enable_UDP = false;
            }
            NFS_KRB5 {
                Active_krb5 = false;
            }
            NFSv4 {
                RecoveryBackend = fs;
                RecoveryRoot = "/var/lib/omboot/share/recovery";
                Grace_Period = 20;
                Lease_Lifetime = 15;
                Only_Numeric_Owners = true;
            }
            EXPORT {
                Export_Id = 1;
                Path = "/srv/cluster";
                Pseudo = /cluster;
                Protocols = 4;
                Transports = TCP;
                SecType = sys;
                Squash = No_Root_Squash;
                Attr_Expiration_Time = 0;
                Access_Type = None;
                CLIENT {
                    Clients = 10.77.0.0/24;
                    Access_Type = RW;
                }
                FSAL {
                    Name = VFS;
                }
            }
            EXPORT {
                Export_Id = 2;
                Path = "/srv/images";
                Pseudo = /images;
                Protocols = 4;
                Transports = TCP;
                SecType = sys;
                Squash = No_Root_Squash;
                Attr_Expiration_Time = 0;
                Access_Type = None;
                CLIENT {
                    Clients = 10.77.0.0/24;
                    Access_Type = RO;
                }
                FSAL {
                    Name = VFS;
                }
            }
            LOG {
                Default_Log_Level = EVENT;
                Components {
                    NFS4 = INFO;
                }
            }
        "##]]
        .assert_eq(&conf);
    }

    #[test]
    fn share_setting_is_a_directory_or_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert_eq!(
            ShareConfig::parse(dir.path().to_str().unwrap()).unwrap(),
            ShareConfig::Serve(dir.path().to_owned())
        );
        let err = |v: &str| ShareConfig::parse(v).unwrap_err().to_string();
        assert_eq!(
            err(file.to_str().unwrap()),
            format!("--share {}: not a directory", file.display())
        );
        assert_eq!(
            err("/nonexistent/omt-share"),
            "--share /nonexistent/omt-share: no such directory"
        );
        assert_eq!(
            err("nfs://nas/x"),
            "--share: \"nfs://nas/x\" is not a share: the server must be an IPv4 address (nodes resolve no names)"
        );
        let nas = ShareConfig::parse("nfs://192.168.1.5/volume1").unwrap();
        assert_eq!(
            nas.for_nodes(Ipv4Addr::new(10, 77, 0, 1)).to_string(),
            "nfs://192.168.1.5/volume1"
        );
        let own = ShareConfig::parse(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(
            own.for_nodes(Ipv4Addr::new(10, 77, 0, 1)).to_string(),
            "nfs://10.77.0.1/cluster"
        );
    }
}
