//! Configuration for `omboot serve`: the TOML wire format and the validated
//! [`ServeConfig`] the server runs on.
//!
//! Two layers, as in dora: [`WireConfig`] is what serde reads (every struct
//! `deny_unknown_fields`, so a typo is an error naming the key and line), and
//! command-line flags ([`Overrides`]) are laid over it before
//! [`ServeConfig::resolve`] checks everything that can be checked before a
//! socket is opened: pools inside their subnet and not overlapping, the images
//! directory present, reservations inside a pool's subnet. The interfaces'
//! addresses come from an [`InterfaceAddr`] table, read from the kernel with
//! [`interface_addrs`] (getifaddrs).

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use contracts::key::ClusterKey;
use contracts::mac::MacAddr;
use ipnet::Ipv4Net;
use keystore::{KeyFile, LoadError};
use serde::Deserialize;

/// Default lease time handed to clients, in seconds.
pub const DEFAULT_LEASE_TIME: u32 = 3600;
/// Default time a declined address stays out of the pool, in seconds.
pub const DEFAULT_DECLINE_QUARANTINE: u32 = 86400;
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/omboot";

/// An error in the configuration file, the flags or their combination.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has an unknown or mistyped key.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// What serde/toml said, on one line.
        message: String,
    },
    /// A value (flag or key) could not be parsed.
    #[error("invalid {what} {value:?}: {reason}")]
    Invalid {
        /// Which setting.
        what: &'static str,
        /// The text given.
        value: String,
        /// Why it is wrong.
        reason: String,
    },
    /// No interface was named.
    #[error("no interface given: use --interface IFACE or `interfaces = [...]`")]
    NoInterface,
    /// A named interface does not exist or has no IPv4 address.
    #[error("interface {0} has no IPv4 address (or does not exist)")]
    InterfaceWithoutAddress(String),
    /// No images directory was named.
    #[error("no images directory given: use --images DIR or `images = \"DIR\"`")]
    NoImages,
    /// The images directory does not exist.
    #[error("images directory {0} does not exist or is not a directory")]
    MissingImages(PathBuf),
    /// dhcp mode without any pool.
    #[error("dhcp mode needs at least one pool: use --pool START-END or [[pool]]")]
    NoPool,
    /// A pool lies (partly) outside its subnet.
    #[error("pool {pool} is outside {subnet}{on}")]
    PoolOutsideSubnet {
        /// The pool.
        pool: Pool,
        /// The subnet it must be in.
        subnet: Ipv4Net,
        /// " on IFACE" when the subnet is an interface's.
        on: String,
    },
    /// A pool is in no interface's subnet and names no relay subnet.
    #[error("pool {pool} is outside the subnets of the interfaces ({subnets}); name its relay subnet with `subnet = \"A.B.C.D/N\"`")]
    PoolOnNoInterface {
        /// The pool.
        pool: Pool,
        /// The interfaces' subnets.
        subnets: String,
    },
    /// Two pools share addresses.
    #[error("pools {0} and {1} overlap")]
    OverlappingPools(Pool, Pool),
    /// A reservation's MAC appears twice.
    #[error("reservation for {0} appears twice")]
    DuplicateReservation(String),
    /// Two reservations share an address.
    #[error("address {0} is reserved for both {1} and {2}")]
    DuplicateReservedAddress(Ipv4Addr, String, String),
    /// A reservation's address is in no pool's subnet.
    #[error("reservation {mac} → {address} is in no pool's subnet")]
    ReservationOutsidePools {
        /// The MAC.
        mac: String,
        /// The address.
        address: Ipv4Addr,
    },
    /// The interfaces could not be listed.
    #[error("cannot list network interfaces: {0}")]
    Interfaces(#[from] nix::Error),
    /// The images directory is not a complete image (`ombuild image` output).
    #[error(transparent)]
    Image(#[from] crate::image::ImageError),
    /// `--share` (or `share =`) is neither a directory nor an `nfs://` URL.
    #[error(transparent)]
    Share(#[from] crate::share::ShareError),
    /// The key file cannot be read or does not hold 64 hex digits.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Default cluster id when none is configured.
pub const DEFAULT_CLUSTER: &str = "omcluster";

/// The key file `omboot` keeps in its state directory when given none.
pub const STATE_KEY_FILE: &str = "cluster.key";

/// The cluster key of a head given no `--key-file`: `STATE/cluster.key`,
/// made (mode 0600, from the operating system's generator) the first time
/// and reused after; the flag says whether it was made now.
pub fn state_key(state: &Path) -> Result<(ClusterKey, PathBuf, bool), ConfigError> {
    let file = KeyFile::new(state.join(STATE_KEY_FILE)).creating_dirs();
    let path = file.path().to_owned();
    let key = ClusterKey::generate();
    match file.create(&key) {
        Ok(()) => Ok((key, path, true)),
        Err(e) if e.source.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok((read_key(&path)?, path, false))
        }
        Err(e) => Err(ConfigError::KeyFile {
            path,
            reason: e.source.to_string(),
        }),
    }
}

/// Reads the key file with the one parse rule of [`ClusterKey::parse`].
fn read_key(path: &Path) -> Result<ClusterKey, ConfigError> {
    KeyFile::new(path).load().map_err(|e| ConfigError::KeyFile {
        path: path.to_owned(),
        reason: match e {
            LoadError::Read { source, .. } => source.to_string(),
            LoadError::Parse(_) => "expected 64 hex digits".into(),
        },
    })
}

/// DHCP mode: authoritative server or ProxyDHCP beside another server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Authoritative DHCP server for the pools.
    #[default]
    Dhcp,
    /// ProxyDHCP: boot information for PXE clients only, never an address.
    Proxy,
}

impl FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "dhcp" => Ok(Mode::Dhcp),
            "proxy" => Ok(Mode::Proxy),
            _ => Err(ConfigError::Invalid {
                what: "mode",
                value: s.into(),
                reason: "expected dhcp or proxy".into(),
            }),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Dhcp => "dhcp",
            Mode::Proxy => "proxy",
        })
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(ConfigError::Invalid {
                what: "log format",
                value: s.into(),
                reason: "expected text or json".into(),
            }),
        }
    }
}

/// An inclusive address range `START-END`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address (inclusive).
    pub end: Ipv4Addr,
}

impl Pool {
    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.start <= ip && ip <= self.end
    }
    /// Number of addresses.
    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.end)) - u64::from(u32::from(self.start)) + 1
    }
    /// Always false: a pool has at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

impl FromStr for Pool {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::Invalid {
            what: "pool",
            value: s.into(),
            reason: reason.into(),
        };
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| invalid("expected START-END"))?;
        let start: Ipv4Addr = a.trim().parse().map_err(|_| invalid("bad start address"))?;
        let end: Ipv4Addr = b.trim().parse().map_err(|_| invalid("bad end address"))?;
        if start > end {
            return Err(invalid("start is after end"));
        }
        Ok(Pool { start, end })
    }
}

/// `[[pool]]` in the file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WirePool {
    /// `"START-END"`.
    pub range: String,
    /// Subnet for a pool served through a relay agent (giaddr), `"A.B.C.D/N"`.
    pub subnet: Option<String>,
    /// Router (option 3) for this pool.
    pub router: Option<Ipv4Addr>,
}

/// `[[reservation]]` in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireReservation {
    /// The client's MAC.
    pub mac: String,
    /// The address it always gets.
    pub address: Ipv4Addr,
    /// Host name (option 12) it is given.
    pub hostname: Option<String>,
}

/// The TOML file as written.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    /// Interfaces to serve on.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `"dhcp"` or `"proxy"`.
    pub mode: Option<Mode>,
    /// The image directory written by `ombuild image`.
    pub images: Option<PathBuf>,
    /// Lease database and other state.
    pub state: Option<PathBuf>,
    /// HTTP port (default 80).
    pub http_port: Option<u16>,
    /// TFTP port (default 69).
    pub tftp_port: Option<u16>,
    /// DHCP server port (default 67).
    pub dhcp_port: Option<u16>,
    /// Cluster id passed to nodes (`om.cluster=`).
    pub cluster: Option<String>,
    /// File holding the cluster key (64 hex digits).
    pub key_file: Option<PathBuf>,
    /// Admission policy: `"auto"` or `"manual"`.
    pub admit: Option<crate::admission::Policy>,
    /// `"text"` or `"json"`.
    pub log_format: Option<LogFormat>,
    /// Lease time in seconds.
    pub lease_time: Option<u32>,
    /// Seconds a declined address stays out of the pool.
    pub decline_quarantine: Option<u32>,
    /// Default router (option 3) for pools that name none.
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    pub domain: Option<String>,
    /// Address pools (dhcp mode).
    #[serde(default, rename = "pool")]
    pub pools: Vec<WirePool>,
    /// Static reservations.
    #[serde(default, rename = "reservation")]
    pub reservations: Vec<WireReservation>,
    /// The shared tree nodes see at `/cluster`: a directory the head
    /// serves, or `nfs://SERVER/EXPORT` for the nodes to mount.
    pub share: Option<String>,
}

impl WireConfig {
    /// Parse TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: e.message().replace('\n', " "),
            }
        })
    }

    /// Read and parse a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

/// Settings given on the command line; each one present replaces the file's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--interface` (repeatable): replaces the file's list when non-empty.
    pub interfaces: Vec<String>,
    /// `--mode`.
    pub mode: Option<Mode>,
    /// `--pool` (repeatable): replaces the file's pools when non-empty.
    pub pools: Vec<Pool>,
    /// `--images`.
    pub images: Option<PathBuf>,
    /// `--state`.
    pub state: Option<PathBuf>,
    /// `--http-port`.
    pub http_port: Option<u16>,
    /// `--tftp-port`.
    pub tftp_port: Option<u16>,
    /// `--dhcp-port`.
    pub dhcp_port: Option<u16>,
    /// `--cluster`.
    pub cluster: Option<String>,
    /// `--key-file`.
    pub key_file: Option<PathBuf>,
    /// `--admit`.
    pub admit: Option<crate::admission::Policy>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
    /// `--share`.
    pub share: Option<String>,
}

impl Overrides {
    /// Lay the flags over the file's settings.
    pub fn apply(self, mut w: WireConfig) -> WireConfig {
        if !self.interfaces.is_empty() {
            w.interfaces = self.interfaces;
        }
        if !self.pools.is_empty() {
            w.pools = self
                .pools
                .into_iter()
                .map(|p| WirePool {
                    range: p.to_string(),
                    ..WirePool::default()
                })
                .collect();
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if self.$f.is_some() { w.$f = self.$f; } )* };
        }
        set!(
            mode, images, state, http_port, tftp_port, dhcp_port, cluster, key_file, admit,
            log_format, share
        );
        w
    }
}

/// An interface's IPv4 address and subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddr {
    /// Interface name.
    pub name: String,
    /// Its address and prefix.
    pub net: Ipv4Net,
}

/// The IPv4 addresses of the host's interfaces (first address per interface).
pub fn interface_addrs() -> Result<Vec<InterfaceAddr>, ConfigError> {
    let mut out: Vec<InterfaceAddr> = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let (Some(addr), Some(mask)) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (Some(addr), Some(mask)) = (addr.as_sockaddr_in(), mask.as_sockaddr_in()) else {
            continue;
        };
        if out.iter().any(|i| i.name == ifa.interface_name) {
            continue;
        }
        let prefix = u32::from(mask.ip()).leading_ones() as u8;
        if let Ok(net) = Ipv4Net::new(addr.ip(), prefix) {
            out.push(InterfaceAddr {
                name: ifa.interface_name.clone(),
                net,
            });
        }
    }
    Ok(out)
}

/// An interface the server answers on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// The server's address on it: server identifier, next-server, HTTP host.
    pub addr: Ipv4Addr,
    /// Its subnet.
    pub net: Ipv4Net,
}

/// A validated pool with the subnet it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The addresses handed out.
    pub range: Pool,
    /// The clients' subnet (mask option, pool choice by interface or giaddr).
    pub subnet: Ipv4Net,
    /// Router option.
    pub router: Option<Ipv4Addr>,
}

/// A static reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The address.
    pub address: Ipv4Addr,
    /// Host name option.
    pub hostname: Option<String>,
}

/// Everything `omboot serve` runs on, validated.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Interfaces with their addresses.
    pub interfaces: Vec<Interface>,
    /// dhcp or proxy.
    pub mode: Mode,
    /// Image directory (TFTP and HTTP root), as given.
    pub images: PathBuf,
    /// The validated image directory.
    pub image: crate::image::ImageDir,
    /// State directory (leases).
    pub state: PathBuf,
    /// HTTP port.
    pub http_port: u16,
    /// TFTP port.
    pub tftp_port: u16,
    /// DHCP server port (ProxyDHCP also answers on 4011).
    pub dhcp_port: u16,
    /// Cluster id (`om.cluster=`).
    pub cluster: String,
    /// Cluster key file (`--key-file`); without one, [`state_key`] makes
    /// one in the state directory.
    pub key_file: Option<PathBuf>,
    /// The cluster key read from it.
    pub key: Option<ClusterKey>,
    /// Who gets the key: `--admit`, by default `auto` on a boot network of
    /// the head's own (dhcp mode) and `manual` beside an existing LAN
    /// (proxy mode).
    pub admit: crate::admission::Policy,
    /// Log format.
    pub log_format: LogFormat,
    /// DHCP settings.
    pub dhcp: DhcpConfig,
    /// The shared tree (`--share`), if any.
    pub share: Option<crate::share::ShareConfig>,
}

/// The DHCP part of [`ServeConfig`].
#[derive(Debug, Clone, Default)]
pub struct DhcpConfig {
    /// Pools (empty in proxy mode).
    pub pools: Vec<PoolConfig>,
    /// Reservations by MAC.
    pub reservations: HashMap<MacAddr, Reservation>,
    /// Lease time in seconds.
    pub lease_time: u32,
    /// Seconds a declined address stays out of the pool.
    pub decline_quarantine: u32,
    /// DNS servers.
    pub dns: Vec<Ipv4Addr>,
    /// Domain name.
    pub domain: Option<String>,
}

impl ServeConfig {
    /// Validate the wire config against the host's interfaces.
    pub fn resolve(w: WireConfig, host: &[InterfaceAddr]) -> Result<Self, ConfigError> {
        if w.interfaces.is_empty() {
            return Err(ConfigError::NoInterface);
        }
        let mut interfaces = Vec::new();
        for name in &w.interfaces {
            let ia = host
                .iter()
                .find(|i| &i.name == name)
                .ok_or_else(|| ConfigError::InterfaceWithoutAddress(name.clone()))?;
            interfaces.push(Interface {
                name: name.clone(),
                addr: ia.net.addr(),
                net: ia.net.trunc(),
            });
        }
        let images = w.images.ok_or(ConfigError::NoImages)?;
        if !images.is_dir() {
            return Err(ConfigError::MissingImages(images));
        }
        let mode = w.mode.unwrap_or_default();
        let mut pools: Vec<PoolConfig> = Vec::new();
        for wp in &w.pools {
            let range: Pool = wp.range.parse()?;
            let subnet = match &wp.subnet {
                Some(s) => {
                    let net: Ipv4Net = s.parse().map_err(|_| ConfigError::Invalid {
                        what: "subnet",
                        value: s.clone(),
                        reason: "expected A.B.C.D/N".into(),
                    })?;
                    let net = net.trunc();
                    if !net.contains(&range.start) || !net.contains(&range.end) {
                        return Err(ConfigError::PoolOutsideSubnet {
                            pool: range,
                            subnet: net,
                            on: String::new(),
                        });
                    }
                    net
                }
                None => {
                    let iface = interfaces.iter().find(|i| i.net.contains(&range.start));
                    match iface {
                        Some(i) if i.net.contains(&range.end) => i.net,
                        Some(i) => {
                            return Err(ConfigError::PoolOutsideSubnet {
                                pool: range,
                                subnet: i.net,
                                on: format!(" on {}", i.name),
                            })
                        }
                        None if interfaces.len() == 1 => {
                            return Err(ConfigError::PoolOutsideSubnet {
                                pool: range,
                                subnet: interfaces[0].net,
                                on: format!(" on {}", interfaces[0].name),
                            })
                        }
                        None => {
                            return Err(ConfigError::PoolOnNoInterface {
                                pool: range,
                                subnets: interfaces
                                    .iter()
                                    .map(|i| format!("{} on {}", i.net, i.name))
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            })
                        }
                    }
                }
            };
            if let Some(other) = pools
                .iter()
                .find(|p| p.range.start <= range.end && range.start <= p.range.end)
            {
                return Err(ConfigError::OverlappingPools(other.range, range));
            }
            pools.push(PoolConfig {
                range,
                subnet,
                router: wp.router.or(w.router),
            });
        }
        if mode == Mode::Dhcp && pools.is_empty() {
            return Err(ConfigError::NoPool);
        }
        let mut reservations = HashMap::new();
        let mut by_addr: HashMap<Ipv4Addr, String> = HashMap::new();
        for r in &w.reservations {
            let mac: MacAddr = r.mac.parse().map_err(|_| ConfigError::Invalid {
                what: "MAC address",
                value: r.mac.clone(),
                reason: "expected six hex bytes like 52:54:00:12:34:56".into(),
            })?;
            if mode == Mode::Dhcp && !pools.iter().any(|p| p.subnet.contains(&r.address)) {
                return Err(ConfigError::ReservationOutsidePools {
                    mac: mac.to_string(),
                    address: r.address,
                });
            }
            if let Some(other) = by_addr.insert(r.address, mac.to_string()) {
                return Err(ConfigError::DuplicateReservedAddress(
                    r.address,
                    other,
                    mac.to_string(),
                ));
            }
            let res = Reservation {
                address: r.address,
                hostname: r.hostname.clone(),
            };
            if reservations.insert(mac, res).is_some() {
                return Err(ConfigError::DuplicateReservation(mac.to_string()));
            }
        }
        let image = crate::image::ImageDir::open(&images)?;
        let key = w.key_file.as_deref().map(read_key).transpose()?;
        let share = w
            .share
            .as_deref()
            .map(crate::share::ShareConfig::parse)
            .transpose()?;
        Ok(ServeConfig {
            interfaces,
            mode,
            image,
            images,
            key,
            state: w.state.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            http_port: w.http_port.unwrap_or(80),
            tftp_port: w.tftp_port.unwrap_or(69),
            dhcp_port: w.dhcp_port.unwrap_or(67),
            cluster: w.cluster.unwrap_or_else(|| DEFAULT_CLUSTER.into()),
            key_file: w.key_file,
            admit: w.admit.unwrap_or(match mode {
                Mode::Dhcp => crate::admission::Policy::Auto,
                Mode::Proxy => crate::admission::Policy::Manual,
            }),
            log_format: w.log_format.unwrap_or_default(),
            dhcp: DhcpConfig {
                pools,
                reservations,
                lease_time: w.lease_time.unwrap_or(DEFAULT_LEASE_TIME),
                decline_quarantine: w.decline_quarantine.unwrap_or(DEFAULT_DECLINE_QUARANTINE),
                dns: w.dns,
                domain: w.domain,
            },
            share,
        })
    }

    /// Read the file (if any), lay the flags over it and validate against the
    /// host's interfaces.
    pub fn load(file: Option<&Path>, flags: Overrides) -> Result<Self, ConfigError> {
        let wire = match file {
            Some(p) => WireConfig::load(p)?,
            None => WireConfig::default(),
        };
        Self::resolve(flags.apply(wire), &interface_addrs()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn host() -> Vec<InterfaceAddr> {
        vec![
            InterfaceAddr {
                name: "eth0".into(),
                net: "10.0.0.1/24".parse().unwrap(),
            },
            InterfaceAddr {
                name: "eth1".into(),
                net: "10.1.0.1/16".parse().unwrap(),
            },
        ]
    }

    /// A complete (tiny) image directory.
    pub(crate) fn fake_image(dir: &Path) {
        std::fs::create_dir_all(dir.join("ipxe")).unwrap();
        for f in crate::image::REQUIRED_FILES {
            std::fs::write(dir.join(f), b"x").unwrap();
        }
        std::fs::write(dir.join("manifest.json"), br#"{"kernel_cmdline":"quiet"}"#).unwrap();
    }

    fn check(toml: &str, expect: Expect) {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        let toml = toml.replace("IMAGES", dir.path().to_str().unwrap());
        let got = WireConfig::parse(&toml, Path::new("omboot.toml"))
            .and_then(|w| ServeConfig::resolve(w, &host()));
        let text = match got {
            Ok(c) => {
                let mut pools: Vec<String> = c
                    .dhcp
                    .pools
                    .iter()
                    .map(|p| format!("{} in {} router {:?}", p.range, p.subnet, p.router))
                    .collect();
                pools.sort();
                let mut res: Vec<String> = c
                    .dhcp
                    .reservations
                    .iter()
                    .map(|(m, r)| format!("{m} → {} {:?}", r.address, r.hostname))
                    .collect();
                res.sort();
                format!(
                    "ok mode={} ifaces={:?} http={} tftp={} dhcp={} lease={} pools={pools:?} res={res:?}",
                    c.mode,
                    c.interfaces.iter().map(|i| format!("{}={}/{}", i.name, i.addr, i.net)).collect::<Vec<_>>(),
                    c.http_port,
                    c.tftp_port,
                    c.dhcp_port,
                    c.dhcp.lease_time,
                )
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&text);
    }

    #[test]
    fn valid_config() {
        check(
            r#"
interfaces = ["eth0"]
images = "IMAGES"
lease_time = 600
router = "10.0.0.254"
[[pool]]
range = "10.0.0.100-10.0.0.200"
[[pool]]
range = "10.5.0.10-10.5.0.20"
subnet = "10.5.0.0/24"
router = "10.5.0.1"
[[reservation]]
mac = "52:54:00:00:00:01"
address = "10.0.0.50"
hostname = "node1"
"#,
            expect![[
                r#"ok mode=dhcp ifaces=["eth0=10.0.0.1/10.0.0.0/24"] http=80 tftp=69 dhcp=67 lease=600 pools=["10.0.0.100-10.0.0.200 in 10.0.0.0/24 router Some(10.0.0.254)", "10.5.0.10-10.5.0.20 in 10.5.0.0/24 router Some(10.5.0.1)"] res=["52:54:00:00:00:01 → 10.0.0.50 Some(\"node1\")"]"#
            ]],
        );
    }

    #[test]
    fn unknown_key_names_line() {
        check(
            "interfaces = [\"eth0\"]\nimages = \"IMAGES\"\n[[pool]]\nrange = \"10.0.0.2-10.0.0.9\"\nrouterr = \"10.0.0.1\"\n",
            expect![[r#"error: omboot.toml:5: unknown field `routerr`, expected one of `range`, `subnet`, `router`"#]],
        );
    }

    #[test]
    fn overlapping_pools() {
        check(
            "interfaces = [\"eth0\"]\nimages = \"IMAGES\"\n[[pool]]\nrange = \"10.0.0.2-10.0.0.9\"\n[[pool]]\nrange = \"10.0.0.9-10.0.0.20\"\n",
            expect![[r#"error: pools 10.0.0.2-10.0.0.9 and 10.0.0.9-10.0.0.20 overlap"#]],
        );
    }

    #[test]
    fn pool_outside_interface_subnet() {
        check(
            "interfaces = [\"eth0\"]\nimages = \"IMAGES\"\n[[pool]]\nrange = \"10.0.0.200-10.0.1.5\"\n",
            expect![[r#"error: pool 10.0.0.200-10.0.1.5 is outside 10.0.0.0/24 on eth0"#]],
        );
        check(
            "interfaces = [\"eth0\"]\nimages = \"IMAGES\"\n[[pool]]\nrange = \"192.168.0.2-192.168.0.5\"\n",
            expect![[r#"error: pool 192.168.0.2-192.168.0.5 is outside 10.0.0.0/24 on eth0"#]],
        );
        check(
            "interfaces = [\"eth0\", \"eth1\"]\nimages = \"IMAGES\"\n[[pool]]\nrange = \"192.168.0.2-192.168.0.5\"\n",
            expect![[r#"error: pool 192.168.0.2-192.168.0.5 is outside the subnets of the interfaces (10.0.0.0/24 on eth0, 10.1.0.0/16 on eth1); name its relay subnet with `subnet = "A.B.C.D/N"`"#]],
        );
    }

    #[test]
    fn missing_images_and_interfaces() {
        check(
            "interfaces = [\"eth0\"]\nimages = \"/nonexistent/omboot-images\"\n[[pool]]\nrange = \"10.0.0.2-10.0.0.9\"\n",
            expect![[r#"error: images directory /nonexistent/omboot-images does not exist or is not a directory"#]],
        );
        check(
            "interfaces = [\"wlan9\"]\nimages = \"IMAGES\"\n",
            expect![[r#"error: interface wlan9 has no IPv4 address (or does not exist)"#]],
        );
        check(
            "images = \"IMAGES\"\n",
            expect![[
                r#"error: no interface given: use --interface IFACE or `interfaces = [...]`"#
            ]],
        );
    }

    #[test]
    fn proxy_mode_needs_no_pool() {
        check(
            "interfaces = [\"eth1\"]\nimages = \"IMAGES\"\nmode = \"proxy\"\nhttp_port = 8080\n",
            expect![[
                r#"ok mode=proxy ifaces=["eth1=10.1.0.1/10.1.0.0/16"] http=8080 tftp=69 dhcp=67 lease=3600 pools=[] res=[]"#
            ]],
        );
    }

    #[test]
    fn flags_win_over_file() {
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        let wire = WireConfig::parse(
            "interfaces = [\"eth0\"]\nimages = \"/nonexistent\"\n[[pool]]\nrange = \"10.0.0.2-10.0.0.9\"\n",
            Path::new("x"),
        )
        .unwrap();
        let flags = Overrides {
            interfaces: vec!["eth1".into()],
            pools: vec!["10.1.2.0-10.1.2.255".parse().unwrap()],
            images: Some(dir.path().into()),
            http_port: Some(8080),
            ..Overrides::default()
        };
        let c = ServeConfig::resolve(flags.apply(wire), &host()).unwrap();
        assert_eq!(c.interfaces[0].name, "eth1");
        assert_eq!(c.dhcp.pools[0].range.to_string(), "10.1.2.0-10.1.2.255");
        assert_eq!(c.http_port, 8080);
    }

    #[test]
    fn documented_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/omboot.toml");
        let mut wire = WireConfig::load(&path).unwrap();
        let dir = tempfile::tempdir().unwrap();
        fake_image(dir.path());
        wire.images = Some(dir.path().into());
        let host = [InterfaceAddr {
            name: "eth1".into(),
            net: "10.10.0.2/16".parse().unwrap(),
        }];
        let c = ServeConfig::resolve(wire, &host).unwrap();
        assert_eq!(c.dhcp.pools.len(), 2);
        assert_eq!(c.dhcp.reservations.len(), 1);
    }

    #[test]
    fn incomplete_image_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmlinuz"), b"x").unwrap();
        let wire = WireConfig {
            interfaces: vec!["eth0".into()],
            images: Some(dir.path().into()),
            pools: vec![WirePool {
                range: "10.0.0.2-10.0.0.9".into(),
                ..WirePool::default()
            }],
            ..WireConfig::default()
        };
        let e = ServeConfig::resolve(wire, &host()).unwrap_err().to_string();
        assert!(
            e.ends_with(
                "is missing initrd.img, ipxe/undionly.kpxe, ipxe/snponly.efi, manifest.json"
            ),
            "{e}"
        );
    }

    #[test]
    fn bad_values() {
        assert_eq!(
            "10.0.0.9-10.0.0.2".parse::<Pool>().unwrap_err().to_string(),
            "invalid pool \"10.0.0.9-10.0.0.2\": start is after end"
        );
        assert!("52:54:00:00:00".parse::<MacAddr>().is_err());
        assert_eq!(
            "52-54-00-AB-cd-01".parse::<MacAddr>().unwrap().to_string(),
            "52:54:00:ab:cd:01"
        );
    }
}
