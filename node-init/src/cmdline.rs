//! The `om.*` settings on the kernel command line (`/proc/cmdline`).
//!
//! Pure: [`parse`] takes the text and returns [`Settings`] plus the problems it
//! found. A bad value never stops the boot: PID 1 reports it and goes on with
//! the default, so the problems are returned alongside the settings, not as an
//! `Err`.

use std::net::Ipv4Addr;

use contracts::key::ClusterKey;

/// What this node is in the cluster (`om.role=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An ordinary member: runs the agent only.
    #[default]
    Node,
    /// The head: also serves the netboot (`omboot serve`) from its boot medium.
    Head,
}

/// Where the cluster key comes from (`om.key=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The key itself (`om.key=HEX64`).
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
    #[error("unknown parameter {0} (known: om.server, om.http, om.role, om.cluster, om.key, om.modules, om.ip, om.pxe)")]
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

/// Parses the `om.*` parameters of a kernel command line; everything else
/// (`console=`, `initrd=`, `quiet`…) is the kernel's and is ignored.
pub fn parse(line: &str) -> (Settings, Vec<CmdlineError>) {
    let mut s = Settings::default();
    let mut problems = Vec::new();
    for param in split(line) {
        let Some(rest) = param.strip_prefix("om.") else {
            continue;
        };
        let (name, value) = match rest.split_once('=') {
            Some((n, v)) => (n, v),
            None => (rest, ""),
        };
        let bad = |why: &'static str| CmdlineError::BadValue {
            param: format!("om.{name}"),
            value: value.to_string(),
            why,
        };
        match name {
            "server" => match value.parse() {
                Ok(ip) => s.server = Some(ip),
                Err(_) => problems.push(bad("expected an IPv4 address")),
            },
            "http" => match value.parse::<u16>() {
                Ok(p) if p != 0 => s.http_port = p,
                _ => problems.push(bad("expected a TCP port 1-65535")),
            },
            "role" => match value {
                "node" => s.role = Role::Node,
                "head" => s.role = Role::Head,
                _ => problems.push(bad("expected node or head")),
            },
            "cluster" => {
                if value.is_empty()
                    || !value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    problems.push(bad("expected letters, digits, '-', '_' or '.'"));
                } else {
                    s.cluster = Some(value.to_string());
                }
            }
            "key" => {
                if value.starts_with("http://") {
                    s.key = Some(KeySource::Url(value.to_string()));
                } else if let Ok(key) = ClusterKey::parse(value) {
                    s.key = Some(KeySource::Key(key));
                } else {
                    problems.push(bad("expected 64 hex digits or an http:// URL"));
                }
            }
            "modules" => {
                for m in value.split(',').filter(|m| !m.is_empty()) {
                    if m.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        s.modules.push(m.replace('-', "_"));
                    } else {
                        problems.push(CmdlineError::BadValue {
                            param: "om.modules".into(),
                            value: m.to_string(),
                            why: "not a module name",
                        });
                    }
                }
            }
            "ip" => match parse_static_ip(value) {
                Some(ip) => s.static_ip = Some(ip),
                None => problems.push(bad("expected ADDR/PREFIX or ADDR/PREFIX,GATEWAY")),
            },
            "pxe" => match value {
                "auto" => s.pxe = PxeMode::Auto,
                "dhcp" => s.pxe = PxeMode::Dhcp,
                "proxy" => s.pxe = PxeMode::Proxy,
                "off" => s.pxe = PxeMode::Off,
                _ => problems.push(bad("expected auto, dhcp, proxy or off")),
            },
            _ => problems.push(CmdlineError::Unknown(format!("om.{name}"))),
        }
    }
    (s, problems)
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
        let (s, problems) = parse(line);
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
                }
            "#]],
        );
    }

    #[test]
    fn head_with_hex_key_modules_and_static_ip() {
        check(
            "om.role=head om.key=00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff om.modules=e1000,virtio-net om.ip=10.77.0.1/24,10.77.0.254 om.pxe=proxy",
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
                }
            "#]],
        );
    }

    #[test]
    fn bad_values_are_reported_and_defaults_kept() {
        check(
            "om.server=head.local om.http=0 om.role=boss om.key=abc om.cluster= om.modules=ok,b/ad om.ip=10.0.0.1/33 om.pxe=maybe om.colour=blue",
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
                }
                problem: om.server="head.local" is not valid: expected an IPv4 address
                problem: om.http="0" is not valid: expected a TCP port 1-65535
                problem: om.role="boss" is not valid: expected node or head
                problem: om.key="abc" is not valid: expected 64 hex digits or an http:// URL
                problem: om.cluster="" is not valid: expected letters, digits, '-', '_' or '.'
                problem: om.modules="b/ad" is not valid: not a module name
                problem: om.ip="10.0.0.1/33" is not valid: expected ADDR/PREFIX or ADDR/PREFIX,GATEWAY
                problem: om.pxe="maybe" is not valid: expected auto, dhcp, proxy or off
                problem: unknown parameter om.colour (known: om.server, om.http, om.role, om.cluster, om.key, om.modules, om.ip, om.pxe)
            "#]],
        );
    }

    #[test]
    fn quotes_group_and_are_removed() {
        assert_eq!(
            split("a \"b c\" om.cluster=\"x\"  d=\"e f\"g\n"),
            vec!["a", "b c", "om.cluster=x", "d=e fg"]
        );
        let (s, p) = parse("om.cluster=\"lab-2\"");
        assert_eq!(s.cluster.as_deref(), Some("lab-2"));
        assert!(p.is_empty());
    }

    #[test]
    fn empty_line_gives_defaults() {
        let (s, p) = parse("");
        assert_eq!(s, Settings::default());
        assert!(p.is_empty());
    }
}
