//! A workstation joining the cluster with a token: `omctl join URL TOKEN`
//! on an ordinary Linux machine, as root.
//!
//! It makes a fresh key pair, proves to the head that it holds the token's
//! secret (`contracts::admit::join_proof`, bound to that key pair and the
//! machine's name), and opens the cluster key the head seals back in HPKE's
//! PSK mode. Then it writes the key (mode 0600), the agent's settings
//! (`OM_AGENT_ARGS=…`, the file the `omnode-agent.service` unit reads) and,
//! where systemd runs, enables and (re)starts that unit. The token's secret
//! never crosses the wire; a spent or expired token is refused by the head
//! with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};

use contracts::admit::{join_proof, AdmitAnswer, JoinRequest, MachineKey, Token, JOIN_PATH};
use contracts::http::{HttpUrl, CHECKIN_PATH};
use keystore::{KeyFile, WriteError};

use boot_client::{self as checkin, CheckinError};

/// Where `omctl join` writes the key by default.
pub const DEFAULT_KEY_FILE: &str = "/etc/omcluster/cluster.key";
/// Where `omctl join` writes the agent's settings by default.
pub const DEFAULT_ENV_FILE: &str = "/etc/omcluster/agent.env";
/// The systemd unit that runs the agent on a workstation.
pub const AGENT_UNIT: &str = "omnode-agent.service";

/// What `omctl join` writes and does.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The name the machine joins under.
    pub name: String,
    /// Whether the name was chosen (so the agent gets `--name`) rather
    /// than the hostname.
    pub name_given: bool,
    /// The key file to write.
    pub key_file: PathBuf,
    /// The agent settings file to write.
    pub env_file: PathBuf,
    /// Whether to enable and start [`AGENT_UNIT`].
    pub service: bool,
}

/// What came of a join.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The cluster id.
    pub cluster: String,
    /// The agent's command-line arguments, as written to the settings file.
    pub agent_args: Vec<String>,
    /// What happened to the service.
    pub service: Service,
}

/// The agent service after a join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// Enabled and (re)started.
    Started,
    /// Not asked for (`--no-service`).
    Skipped,
    /// No systemd runs here.
    NoSystemd,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The URL is not `http://HEAD[:PORT]`.
    #[error("{0:?} is not the head's address: expected http://HEAD[:PORT] as `omctl token create` prints it")]
    BadUrl(String),
    /// Talking to the head failed.
    #[error(transparent)]
    Http(#[from] CheckinError),
    /// The head refused.
    #[error("the head refused: {0}")]
    Refused(String),
    /// The head's answer is not an admission answer.
    #[error("the head's answer (HTTP {0}) is not an admission answer: is {1} an omboot?")]
    Malformed(u16, String),
    /// The sealed key does not open.
    #[error("the cluster key from the head does not open with this token ({0}): not the head that made the token?")]
    Open(contracts::admit::AdmitError),
    /// Writing the key failed.
    #[error(transparent)]
    Key(#[from] WriteError),
    /// Writing the settings failed.
    #[error("cannot write {path}: {source}")]
    Env {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// systemctl failed.
    #[error("the key and settings are written, but `systemctl {0}` failed: {1}")]
    Service(String, String),
}

/// Joins the cluster whose head answers at `url` with `token`.
pub async fn join(url: &str, token: &Token, opts: &JoinOptions) -> Result<Joined, JoinError> {
    let base = url.trim_end_matches('/');
    let parsed: HttpUrl = base
        .parse()
        .map_err(|_| JoinError::BadUrl(url.to_string()))?;
    if parsed.path != "/" {
        return Err(JoinError::BadUrl(url.to_string()));
    }
    let me = MachineKey::generate();
    let req = JoinRequest {
        token: token.id_hex(),
        name: opts.name.clone(),
        mac: mac_toward(&parsed.host, parsed.port),
        public: me.public(),
        proof: join_proof(token, &me.public(), &opts.name),
    };
    let body = serde_json::to_vec(&req).expect("a join request serialises");
    let (status, answer) =
        checkin::exchange(&format!("{base}{JOIN_PATH}"), "POST", &[], &body).await?;
    let answer: AdmitAnswer = serde_json::from_slice(&answer)
        .map_err(|_| JoinError::Malformed(status, base.to_string()))?;
    let (cluster, key) = match answer {
        AdmitAnswer::Admitted {
            cluster,
            enc,
            sealed,
        } => {
            let key = me
                .open_join(token, &cluster, &enc, &sealed)
                .map_err(JoinError::Open)?;
            (cluster, key)
        }
        AdmitAnswer::Refused { reason } | AdmitAnswer::Pending { reason } => {
            return Err(JoinError::Refused(reason))
        }
    };
    KeyFile::new(&opts.key_file).creating_dirs().replace(&key)?;
    let mut agent_args = vec![
        "--key-file".to_string(),
        opts.key_file.display().to_string(),
        "--cluster".into(),
        cluster.clone(),
    ];
    if opts.name_given {
        agent_args.extend(["--name".into(), opts.name.clone()]);
    }
    agent_args.extend([
        "--seed".into(),
        parsed.host.clone(),
        "--checkin".into(),
        format!("{base}{CHECKIN_PATH}"),
    ]);
    write_env(&opts.env_file, base, &agent_args)?;
    let service = if !opts.service {
        Service::Skipped
    } else if !Path::new("/run/systemd/system").is_dir() {
        Service::NoSystemd
    } else {
        for args in [["enable", AGENT_UNIT], ["restart", AGENT_UNIT]] {
            let out = tokio::process::Command::new("systemctl")
                .args(args)
                .output()
                .await
                .map_err(|e| JoinError::Service(args.join(" "), e.to_string()))?;
            if !out.status.success() {
                return Err(JoinError::Service(
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
        }
        Service::Started
    };
    Ok(Joined {
        cluster,
        agent_args,
        service,
    })
}

/// The settings file: one `OM_AGENT_ARGS=` line the unit passes to
/// `omnode agent` (no argument holds a space: paths and names are checked).
fn write_env(path: &Path, head: &str, args: &[String]) -> Result<(), JoinError> {
    let err = |source| JoinError::Env {
        path: path.display().to_string(),
        source,
    };
    if let Some(bad) = args.iter().find(|a| a.contains(char::is_whitespace)) {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{bad:?} holds a space, which the unit's OM_AGENT_ARGS cannot carry"),
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    write!(
        f,
        "# Written by `omctl join {head}`: the arguments of `omnode agent` for {AGENT_UNIT}.\nOM_AGENT_ARGS={}\n",
        args.join(" ")
    )
    .map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// The MAC of the interface this machine reaches `host` through.
fn mac_toward(host: &str, port: u16) -> Option<contracts::mac::MacAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect((host, port)).ok()?;
    checkin::mac_of(s.local_addr().ok()?.ip())
}
