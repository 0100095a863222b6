//! The kernel command line `omboot` writes into a node's iPXE script and
//! `omnode init` reads from `/proc/cmdline` (ARCHITECTURE.md, "Kernel
//! command line").
//!
//! [`KernelCmdline`] is the whole line as a list of [`Param`]s: the `om.*`
//! settings as typed [`OmParam`]s, everything else (`initrd=initrd.img`,
//! `console=ttyS0`, `quiet`) as [`Param::Other`], all in order. `Display`
//! writes it, `FromStr` reads it back and refuses the first bad `om.*`
//! parameter; [`KernelCmdline::parse_lossy`] is the reader PID 1 uses: a bad
//! value never stops the boot, so the problems come back beside the line (the
//! bad parameter stays in it verbatim as [`Param::Other`]).
//! [`KernelCmdline::settings`] folds the `om.*` parameters into [`Settings`],
//! later ones winning as the kernel's do.
//!
//! Splitting follows the kernel: whitespace separates, double quotes group
//! and are removed. A parameter that holds whitespace (or is empty) is
//! written in double quotes; no parameter can hold a `"` itself.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::key::ClusterKey;
use crate::share::Share;

/// The parameter every line `omboot` writes starts with: the 2019 iPXE that
/// Debian ships does not hand the initrd to the kernel's EFI stub otherwise.
pub const INITRD_PARAM: &str = "initrd=initrd.img";

/// The `om.*` parameters this version knows, in the order they are listed.
pub const KNOWN: [&str; 10] = [
    "om.server",
    "om.http",
    "om.role",
    "om.cluster",
    "om.key",
    "om.modules",
    "om.ip",
    "om.pxe",
    "om.share",
    "om.system",
];

/// What this node is in the cluster (`om.role=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An ordinary member: runs the agent only.
    #[default]
    Node,
    /// The head: also serves the netboot (`omboot serve`) from its boot medium.
    Head,
}

/// Whether `id` is a cluster id: letters, digits, `-`, `_` and `.`, at
/// least one.
pub fn is_cluster_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Where the cluster key comes from (`om.key=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The key itself (`om.key=HEX64`, read with [`ClusterKey::parse`]).
    Key(ClusterKey),
    /// A plain `http://` URL to fetch the key from (normally the head).
    Url(String),
}

/// How the head serves the netboot (`om.pxe=`); ignored on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PxeMode {
    /// Decide from the network: ProxyDHCP when a DHCP server gave the head
    /// its address, authoritative DHCP when the address is static (from
    /// `om.ip=` or the fallback after no DHCP server answered).
    #[default]
    Auto,
    /// Authoritative DHCP server for the head's subnet.
    Dhcp,
    /// ProxyDHCP beside the LAN's own DHCP server.
    Proxy,
    /// No boot server: the head runs only the agent.
    Off,
}

/// A static IPv4 address for an interface (`om.ip=ADDR/PREFIX[,GATEWAY]`),
/// used instead of DHCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticIp {
    /// The address.
    pub address: Ipv4Addr,
    /// The prefix length (netmask).
    pub prefix: u8,
    /// The default gateway, if any.
    pub gateway: Option<Ipv4Addr>,
}

/// Everything `omnode init` reads from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `om.server=IP`: the head node's address (also the agent's seed).
    pub server: Option<Ipv4Addr>,
    /// `om.http=PORT`: the head's HTTP port (default 80).
    pub http_port: u16,
    /// `om.role=node|head`.
    pub role: Role,
    /// `om.cluster=ID`.
    pub cluster: Option<String>,
    /// `om.key=HEX64` or `om.key=http://…`.
    pub key: Option<KeySource>,
    /// `om.modules=a,b`: extra kernel modules to load.
    pub modules: Vec<String>,
    /// `om.ip=ADDR/PREFIX[,GATEWAY]`: static address instead of DHCP.
    pub static_ip: Option<StaticIp>,
    /// `om.pxe=auto|dhcp|proxy|off`: how the head serves the netboot.
    pub pxe: PxeMode,
    /// `om.share=off|nfs://SERVER/EXPORT`: the shared tree at `/cluster`
    /// (none when absent).
    pub share: Option<Share>,
    /// `om.system=off|nfs://SERVER/EXPORT`: the export holding the image's
    /// system layer ([`crate::image::SYSTEM_LAYER`]), which becomes the
    /// root; `off` keeps the initramfs as the root even where a layer is
    /// found (none when absent: a head uses the one on its boot medium).
    pub system: Option<Share>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: None,
            http_port: 80,
            role: Role::Node,
            cluster: None,
            key: None,
            modules: Vec::new(),
            static_ip: None,
            pxe: PxeMode::Auto,
            share: None,
            system: None,
        }
    }
}

/// A setting on the command line that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CmdlineError {
    /// A parameter's value does not have the expected form.
    #[error("{param}={value:?} is not valid: {why}")]
    BadValue {
        /// The parameter name, e.g. `om.server`.
        param: String,
        /// The value as written.
        value: String,
        /// What was expected.
        why: &'static str,
    },
    /// An `om.` parameter this version does not know.
    #[error("unknown parameter {0} (known: {known})", known = KNOWN.join(", "))]
    Unknown(String),
}

/// Splits a kernel command line into parameters the way the kernel does:
/// whitespace separates, double quotes group (and are removed).
pub fn split(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// One `om.*` parameter, its value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OmParam {
    /// `om.server=IP`.
    Server(Ipv4Addr),
    /// `om.http=PORT` (1-65535).
    Http(u16),
    /// `om.role=node|head`.
    Role(Role),
    /// `om.cluster=ID` (letters, digits, `-`, `_`, `.`).
    Cluster(String),
    /// `om.key=HEX64` or `om.key=http://…`.
    Key(KeySource),
    /// `om.modules=a,b` (names with `_`, as the kernel spells them).
    Modules(Vec<String>),
    /// `om.ip=ADDR/PREFIX[,GATEWAY]`.
    Ip(StaticIp),
    /// `om.pxe=auto|dhcp|proxy|off`.
    Pxe(PxeMode),
    /// `om.share=off|nfs://SERVER[:PORT]/EXPORT[?vers=V]`.
    Share(Share),
    /// `om.system=off|nfs://SERVER[:PORT]/EXPORT[?vers=V]`.
    System(Share),
}

/// One parameter of the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    /// An `om.*` setting.
    Om(OmParam),
    /// Anything else, for the kernel (or, from
    /// [`KernelCmdline::parse_lossy`], an `om.*` parameter that could not be
    /// read), as written without its quotes.
    Other(String),
}

impl From<OmParam> for Param {
    fn from(p: OmParam) -> Self {
        Param::Om(p)
    }
}

/// A whole kernel command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KernelCmdline {
    /// The parameters, in order.
    pub params: Vec<Param>,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Head => "head",
        }
    }
}

impl PxeMode {
    fn as_str(self) -> &'static str {
        match self {
            PxeMode::Auto => "auto",
            PxeMode::Dhcp => "dhcp",
            PxeMode::Proxy => "proxy",
            PxeMode::Off => "off",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for PxeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Key(k) => f.write_str(&k.to_hex()),
            KeySource::Url(u) => f.write_str(u),
        }
    }
}

impl fmt::Display for StaticIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)?;
        if let Some(gw) = self.gateway {
            write!(f, ",{gw}")?;
        }
        Ok(())
    }
}

impl fmt::Display for OmParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OmParam::Server(ip) => write!(f, "om.server={ip}"),
            OmParam::Http(port) => write!(f, "om.http={port}"),
            OmParam::Role(r) => write!(f, "om.role={r}"),
            OmParam::Cluster(id) => write!(f, "om.cluster={id}"),
            OmParam::Key(k) => write!(f, "om.key={k}"),
            OmParam::Modules(m) => write!(f, "om.modules={}", m.join(",")),
            OmParam::Ip(ip) => write!(f, "om.ip={ip}"),
            OmParam::Pxe(p) => write!(f, "om.pxe={p}"),
            OmParam::Share(s) => write!(f, "om.share={s}"),
            OmParam::System(s) => write!(f, "om.system={s}"),
        }
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Param::Om(p) => p.to_string(),
            Param::Other(s) => s.clone(),
        };
        if text.is_empty() || text.contains(char::is_whitespace) {
            write!(f, "\"{text}\"")
        } else {
            f.write_str(&text)
        }
    }
}

impl fmt::Display for KernelCmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.params.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Reads one `om.NAME=VALUE` parameter. `Ok(None)` for a parameter that is
/// not `om.*`. A bad `om.modules=` entry is reported while the good ones are
/// kept, hence the list of problems beside the parameter.
fn parse_om(param: &str) -> Option<(Result<OmParam, CmdlineError>, Vec<CmdlineError>)> {
    let rest = param.strip_prefix("om.")?;
    let (name, value) = match rest.split_once('=') {
        Some((n, v)) => (n, v),
        None => (rest, ""),
    };
    let bad = |why: &'static str| CmdlineError::BadValue {
        param: format!("om.{name}"),
        value: value.to_string(),
        why,
    };
    let mut extra = Vec::new();
    let parsed = match name {
        "server" => value
            .parse()
            .map(OmParam::Server)
            .map_err(|_| bad("expected an IPv4 address")),
        "http" => match value.parse::<u16>() {
            Ok(p) if p != 0 => Ok(OmParam::Http(p)),
            _ => Err(bad("expected a TCP port 1-65535")),
        },
        "role" => match value {
            "node" => Ok(OmParam::Role(Role::Node)),
            "head" => Ok(OmParam::Role(Role::Head)),
            _ => Err(bad("expected node or head")),
        },
        "cluster" => {
            if is_cluster_id(value) {
                Ok(OmParam::Cluster(value.to_string()))
            } else {
                Err(bad("expected letters, digits, '-', '_' or '.'"))
            }
        }
        "key" => {
            if value.starts_with("http://") {
                Ok(OmParam::Key(KeySource::Url(value.to_string())))
            } else if let Ok(key) = ClusterKey::parse(value) {
                Ok(OmParam::Key(KeySource::Key(key)))
            } else {
                Err(bad("expected 64 hex digits or an http:// URL"))
            }
        }
        "modules" => {
            let mut names = Vec::new();
            for m in value.split(',').filter(|m| !m.is_empty()) {
                if m.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    names.push(m.replace('-', "_"));
                } else {
                    extra.push(CmdlineError::BadValue {
                        param: "om.modules".into(),
                        value: m.to_string(),
                        why: "not a module name",
                    });
                }
            }
            Ok(OmParam::Modules(names))
        }
        "ip" => parse_static_ip(value)
            .map(OmParam::Ip)
            .ok_or_else(|| bad("expected ADDR/PREFIX or ADDR/PREFIX,GATEWAY")),
        "pxe" => match value {
            "auto" => Ok(OmParam::Pxe(PxeMode::Auto)),
            "dhcp" => Ok(OmParam::Pxe(PxeMode::Dhcp)),
            "proxy" => Ok(OmParam::Pxe(PxeMode::Proxy)),
            "off" => Ok(OmParam::Pxe(PxeMode::Off)),
            _ => Err(bad("expected auto, dhcp, proxy or off")),
        },
        "share" => value
            .parse()
            .map(OmParam::Share)
            .map_err(|e: crate::share::ShareError| bad(e.why)),
        "system" => value
            .parse()
            .map(OmParam::System)
            .map_err(|e: crate::share::ShareError| bad(e.why)),
        _ => Err(CmdlineError::Unknown(format!("om.{name}"))),
    };
    Some((parsed, extra))
}

impl KernelCmdline {
    /// Reads a line the way PID 1 must: every problem is returned, none
    /// stops the reading. A bad or unknown `om.*` parameter stays in the
    /// line as [`Param::Other`] (so a line passed on keeps it); a bad entry
    /// of `om.modules=` is left out of the list.
    pub fn parse_lossy(line: &str) -> (KernelCmdline, Vec<CmdlineError>) {
        let mut params = Vec::new();
        let mut problems = Vec::new();
        for word in split(line) {
            match parse_om(&word) {
                None => params.push(Param::Other(word)),
                Some((Ok(p), extra)) => {
                    problems.extend(extra);
                    params.push(Param::Om(p));
                }
                Some((Err(e), _)) => {
                    problems.push(e);
                    params.push(Param::Other(word));
                }
            }
        }
        (KernelCmdline { params }, problems)
    }

    /// The `om.*` settings of the line; a later parameter wins over an
    /// earlier one, `om.modules=` lists add up.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::default();
        for p in &self.params {
            let Param::Om(p) = p else { continue };
            match p {
                OmParam::Server(ip) => s.server = Some(*ip),
                OmParam::Http(port) => s.http_port = *port,
                OmParam::Role(r) => s.role = *r,
                OmParam::Cluster(id) => s.cluster = Some(id.clone()),
                OmParam::Key(k) => s.key = Some(k.clone()),
                OmParam::Modules(m) => s.modules.extend(m.iter().cloned()),
                OmParam::Ip(ip) => s.static_ip = Some(*ip),
                OmParam::Pxe(p) => s.pxe = *p,
                OmParam::Share(share) => s.share = Some(share.clone()),
                OmParam::System(system) => s.system = Some(system.clone()),
            }
        }
        s
    }

    /// Appends a parameter.
    pub fn push(&mut self, p: impl Into<Param>) {
        self.params.push(p.into());
    }
}

impl Settings {
    /// The settings of a command line and the problems found in it: what
    /// `omnode init` reads from `/proc/cmdline`.
    pub fn from_cmdline(line: &str) -> (Settings, Vec<CmdlineError>) {
        let (line, problems) = KernelCmdline::parse_lossy(line);
        (line.settings(), problems)
    }
}

impl FromStr for KernelCmdline {
    type Err = CmdlineError;
    /// Strict: the first bad `om.*` parameter (or `om.modules=` entry) is
    /// the error.
    fn from_str(line: &str) -> Result<Self, CmdlineError> {
        let (parsed, problems) = KernelCmdline::parse_lossy(line);
        match problems.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(parsed),
        }
    }
}

fn parse_static_ip(value: &str) -> Option<StaticIp> {
    let (net, gw) = match value.split_once(',') {
        Some((n, g)) => (n, Some(g.parse().ok()?)),
        None => (value, None),
    };
    let (addr, prefix) = net.split_once('/')?;
    let prefix: u8 = prefix.parse().ok()?;
    if prefix > 32 {
        return None;
    }
    Some(StaticIp {
        address: addr.parse().ok()?,
        prefix,
        gateway: gw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(line: &str, expect: Expect) {
        let (s, problems) = Settings::from_cmdline(line);
        let mut out = format!("{s:#?}\n");
        for p in problems {
            out.push_str(&format!("problem: {p}\n"));
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn full_node_line() {
        check(
            "initrd=initrd.img console=ttyS0 om.server=10.99.0.1 om.http=8080 om.role=node om.cluster=lab1 om.key=http://10.99.0.1:8080/cluster.key quiet",
            expect![[r#"
                Settings {
                    server: Some(
                        10.99.0.1,
                    ),
                    http_port: 8080,
                    role: Node,
                    cluster: Some(
                        "lab1",
                    ),
                    key: Some(
                        Url(
                            "http://10.99.0.1:8080/cluster.key",
                        ),
                    ),
                    modules: [],
                    static_ip: None,
                    pxe: Auto,
                    share: None,
                    system: None,
                }
            "#]],
        );
    }

    #[test]
    fn head_with_hex_key_modules_and_static_ip() {
        check(
            "om.role=head om.key=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff om.modules=e1000,virtio-net om.ip=10.77.0.1/24,10.77.0.254 om.pxe=proxy om.share=nfs://10.77.0.1/cluster om.system=nfs://10.77.0.1/images",
            expect![[r#"
                Settings {
                    server: None,
                    http_port: 80,
                    role: Head,
                    cluster: None,
                    key: Some(
                        Key(
                            ClusterKey(..),
                        ),
                    ),
                    modules: [
                        "e1000",
                        "virtio_net",
                    ],
                    static_ip: Some(
                        StaticIp {
                            address: 10.77.0.1,
                            prefix: 24,
                            gateway: Some(
                                10.77.0.254,
                            ),
                        },
                    ),
                    pxe: Proxy,
                    share: Some(
                        Nfs(
                            NfsShare {
                                server: 10.77.0.1,
                                port: None,
                                export: "/cluster",
                                version: V4,
                            },
                        ),
                    ),
                    system: Some(
                        Nfs(
                            NfsShare {
                                server: 10.77.0.1,
                                port: None,
                                export: "/images",
                                version: V4,
                            },
                        ),
                    ),
                }
            "#]],
        );
    }

    #[test]
    fn bad_values_are_reported_and_defaults_kept() {
        check(
            "om.server=head.local om.http=0 om.role=boss om.key=abc om.cluster= om.modules=ok,b/ad om.ip=10.0.0.1/33 om.pxe=maybe om.share=/srv om.system=http://x om.colour=blue",
            expect![[r#"
                Settings {
                    server: None,
                    http_port: 80,
                    role: Node,
                    cluster: None,
                    key: None,
                    modules: [
                        "ok",
                    ],
                    static_ip: None,
                    pxe: Auto,
                    share: None,
                    system: None,
                }
                problem: om.server="head.local" is not valid: expected an IPv4 address
                problem: om.http="0" is not valid: expected a TCP port 1-65535
                problem: om.role="boss" is not valid: expected node or head
                problem: om.key="abc" is not valid: expected 64 hex digits or an http:// URL
                problem: om.cluster="" is not valid: expected letters, digits, '-', '_' or '.'
                problem: om.modules="b/ad" is not valid: not a module name
                problem: om.ip="10.0.0.1/33" is not valid: expected ADDR/PREFIX or ADDR/PREFIX,GATEWAY
                problem: om.pxe="maybe" is not valid: expected auto, dhcp, proxy or off
                problem: om.share="/srv" is not valid: expected off or nfs://SERVER/EXPORT
                problem: om.system="http://x" is not valid: expected off or nfs://SERVER/EXPORT
                problem: unknown parameter om.colour (known: om.server, om.http, om.role, om.cluster, om.key, om.modules, om.ip, om.pxe, om.share, om.system)
            "#]],
        );
    }

    #[test]
    fn quotes_group_and_are_removed() {
        assert_eq!(
            split("a \"b c\" om.cluster=\"x\"  d=\"e f\"g\n"),
            vec!["a", "b c", "om.cluster=x", "d=e fg"]
        );
        let (s, p) = Settings::from_cmdline("om.cluster=\"lab-2\"");
        assert_eq!(s.cluster.as_deref(), Some("lab-2"));
        assert!(p.is_empty());
    }

    #[test]
    fn empty_line_gives_defaults() {
        let (s, p) = Settings::from_cmdline("");
        assert_eq!(s, Settings::default());
        assert!(p.is_empty());
    }

    /// Reads `line` leniently and writes it back, with the problems found.
    fn check_rewrite(line: &str, expect: Expect) {
        let (parsed, problems) = KernelCmdline::parse_lossy(line);
        let mut out = format!("{parsed}\n");
        for p in problems {
            out.push_str(&format!("problem: {p}\n"));
        }
        // What was written reads back to the same line.
        assert_eq!(KernelCmdline::parse_lossy(&parsed.to_string()).0, parsed);
        expect.assert_eq(&out);
    }

    #[test]
    fn lines_are_rewritten_in_order_with_bad_parameters_kept() {
        check_rewrite(
            "initrd=initrd.img  console=tty0 console=ttyS0,115200 quiet\tno_timer_check om.server=10.77.0.1 om.http=80 om.cluster=omcluster",
            expect![[r#"
                initrd=initrd.img console=tty0 console=ttyS0,115200 quiet no_timer_check om.server=10.77.0.1 om.http=80 om.cluster=omcluster
            "#]],
        );
        check_rewrite(
            "a=\"b c\" \"\" om.key=ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB om.modules=virtio-net,,e1000 om.colour=blue om.http=0",
            expect![[r#"
                "a=b c" "" om.key=abababababababababababababababababababababababababababababababab om.modules=virtio_net,e1000 om.colour=blue om.http=0
                problem: unknown parameter om.colour (known: om.server, om.http, om.role, om.cluster, om.key, om.modules, om.ip, om.pxe, om.share, om.system)
                problem: om.http="0" is not valid: expected a TCP port 1-65535
            "#]],
        );
    }

    #[test]
    fn display_then_from_str_is_identity() {
        let key: ClusterKey = "01".repeat(32).parse().unwrap();
        let all = vec![
            Param::Other(INITRD_PARAM.into()),
            Param::Other("console=ttyS0,115200".into()),
            Param::Other("quiet".into()),
            Param::Other("with space=a b".into()),
            Param::Other(String::new()),
            OmParam::Server(Ipv4Addr::new(10, 77, 0, 1)).into(),
            OmParam::Http(65535).into(),
            OmParam::Role(Role::Head).into(),
            OmParam::Role(Role::Node).into(),
            OmParam::Cluster("lab-1_a.b".into()).into(),
            OmParam::Key(KeySource::Key(key)).into(),
            OmParam::Key(KeySource::Url("http://10.0.0.1:8080/k".into())).into(),
            OmParam::Key(KeySource::Url("http://x/a b".into())).into(),
            OmParam::Modules(vec![]).into(),
            OmParam::Modules(vec!["e1000".into(), "virtio_net".into()]).into(),
            OmParam::Ip(StaticIp {
                address: Ipv4Addr::new(10, 9, 0, 1),
                prefix: 16,
                gateway: None,
            })
            .into(),
            OmParam::Ip(StaticIp {
                address: Ipv4Addr::new(10, 9, 0, 1),
                prefix: 0,
                gateway: Some(Ipv4Addr::new(10, 9, 0, 254)),
            })
            .into(),
            OmParam::Pxe(PxeMode::Auto).into(),
            OmParam::Pxe(PxeMode::Dhcp).into(),
            OmParam::Pxe(PxeMode::Proxy).into(),
            OmParam::Pxe(PxeMode::Off).into(),
        ];
        let lines = std::iter::once(KernelCmdline::default())
            .chain(all.iter().map(|p| KernelCmdline {
                params: vec![p.clone()],
            }))
            .chain(std::iter::once(KernelCmdline {
                params: all.clone(),
            }));
        for line in lines {
            let text = line.to_string();
            assert_eq!(text.parse::<KernelCmdline>(), Ok(line), "{text}");
        }
    }

    #[test]
    fn from_str_refuses_the_first_bad_parameter() {
        expect!["unknown parameter om.colour (known: om.server, om.http, om.role, om.cluster, om.key, om.modules, om.ip, om.pxe, om.share, om.system)"]
            .assert_eq(&"quiet om.colour=blue om.role=boss".parse::<KernelCmdline>().unwrap_err().to_string());
        expect![[r#"om.modules="b/ad" is not valid: not a module name"#]].assert_eq(
            &"om.modules=ok,b/ad"
                .parse::<KernelCmdline>()
                .unwrap_err()
                .to_string(),
        );
    }

    #[test]
    fn later_parameters_win_and_modules_add_up() {
        let (s, p) = Settings::from_cmdline(
            "om.role=head om.role=node om.modules=a om.modules=b om.http=81 om.http=82",
        );
        assert!(p.is_empty());
        assert_eq!((s.role, s.http_port), (Role::Node, 82));
        assert_eq!(s.modules, vec!["a", "b"]);
    }

    #[test]
    fn the_key_is_read_with_the_key_rule() {
        let (s, _) = Settings::from_cmdline(&format!("om.key={}", "AB".repeat(32)));
        assert_eq!(
            s.key,
            Some(KeySource::Key(ClusterKey::from_bytes([0xab; 32])))
        );
    }
}
