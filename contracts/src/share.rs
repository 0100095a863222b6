//! The shared tree every machine of the cluster sees at [`MOUNT_POINT`]
//! (openMosix's `/mfs`, rebuilt on NFS): where it comes from (`om.share=` on
//! a node's kernel command line, `--share` / `share =` for `omboot`) and the
//! kernel mount a node makes of it.
//!
//! [`Share`] is the setting: `off`, or an [`NfsShare`] written as
//! `nfs://SERVER[:PORT]/EXPORT[?vers=V]`. [`NfsShare::mounts`] turns it into
//! the arguments of `mount(2)` for the kernel's own NFS client: the node has
//! no `mount.nfs`, so the options are the kernel's text options, with the
//! server's address given as `addr=` (the kernel resolves no names). The
//! kernel takes `vers=4` as 4.0, so plain NFSv4 is the list `mount.nfs`
//! would try: 4.2, then 4.1, then 4.0.
//!
//! Numbers here are the cluster's choices, kept in one place: the head's own
//! server exports the tree under the NFSv4 path [`EXPORT_PATH`]; a node's
//! mount is `hard` (I/O waits through a server restart instead of failing)
//! over TCP.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Where the tree is on every machine of the cluster.
pub const MOUNT_POINT: &str = "/cluster";
/// The path under which the head's own server exports the tree (NFSv4
/// pseudo path).
pub const EXPORT_PATH: &str = "/cluster";
/// The NFS port, the only one an NFSv4 client needs (no portmapper, no
/// mountd).
pub const NFS_PORT: u16 = 2049;
/// Where the head's user and group tables are served over HTTP, so that
/// numeric owners in the tree show as the same names on every node.
pub const PASSWD_PATH: &str = "/cluster/passwd";
/// The group table, beside [`PASSWD_PATH`].
pub const GROUP_PATH: &str = "/cluster/group";

/// The NFS protocol version a node mounts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NfsVersion {
    /// NFSv3 (a NAS that speaks nothing newer; the kernel asks the server's
    /// portmapper for mountd). Mounted `nolock`: a node runs no `rpc.statd`.
    V3,
    /// NFSv4, the newest minor version both ends speak (the default):
    /// mounted as 4.2, else 4.1, else 4.0.
    #[default]
    V4,
    /// NFSv4.1 exactly.
    V4_1,
    /// NFSv4.2 exactly.
    V4_2,
}

impl NfsVersion {
    fn as_str(self) -> &'static str {
        match self {
            NfsVersion::V3 => "3",
            NfsVersion::V4 => "4",
            NfsVersion::V4_1 => "4.1",
            NfsVersion::V4_2 => "4.2",
        }
    }
}

/// An NFS export to mount at [`MOUNT_POINT`]: `nfs://SERVER[:PORT]/EXPORT[?vers=V]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsShare {
    /// The server's IPv4 address (a node resolves no names at boot).
    pub server: Ipv4Addr,
    /// The server's NFS port, when not [`NFS_PORT`].
    pub port: Option<u16>,
    /// The exported path, absolute.
    pub export: String,
    /// The protocol version.
    pub version: NfsVersion,
}

/// The `om.share=` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Share {
    /// `off`: no shared tree on this machine.
    Off,
    /// Mount this export at [`MOUNT_POINT`].
    Nfs(NfsShare),
}

/// Why a share URL could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a share: {why}")]
pub struct ShareError {
    /// The text as given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// The arguments of `mount(2)` for a node's mount of a share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArgs {
    /// The source, `SERVER:/EXPORT`.
    pub source: String,
    /// The file system type, `nfs` or `nfs4`.
    pub fstype: &'static str,
    /// The kernel's text mount options.
    pub options: String,
    /// The kernel module that provides `fstype`.
    pub module: &'static str,
}

/// What is mounted at [`MOUNT_POINT`] according to a mount table
/// (`/proc/self/mounts` text): `(source, fstype)` of the last entry there,
/// the one that shows.
pub fn find_mount(mounts: &str) -> Option<(String, String)> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (target == MOUNT_POINT).then(|| (source.to_string(), fstype.to_string()))
        })
        .next_back()
}

impl NfsShare {
    /// The head's own export: its server at `server`, the default port and
    /// version.
    pub fn head(server: Ipv4Addr) -> Self {
        NfsShare::head_export(server, EXPORT_PATH)
    }

    /// Another export of the head's own server (`export`, absolute), on the
    /// default port and version.
    pub fn head_export(server: Ipv4Addr, export: &str) -> Self {
        NfsShare {
            server,
            port: None,
            export: export.to_string(),
            version: NfsVersion::V4,
        }
    }

    /// The `mount(2)` arguments to try in turn for the kernel's NFS client
    /// on a node whose own address toward the server is `client` (NFSv4
    /// gives it to the server for callbacks): one for an exact version;
    /// 4.2, 4.1 and 4.0 for plain NFSv4, the next one to be tried when the
    /// server refuses a minor version (the kernel says `EPROTONOSUPPORT`
    /// or `EINVAL`).
    pub fn mounts(&self, client: Ipv4Addr) -> Vec<MountArgs> {
        match self.version {
            NfsVersion::V4 => ["4.2", "4.1", "4.0"]
                .iter()
                .map(|minor| self.mount_as(minor, client))
                .collect(),
            v => vec![self.mount_as(v.as_str(), client)],
        }
    }

    /// The first of [`NfsShare::mounts`]: what a server of today is mounted
    /// with.
    pub fn mount(&self, client: Ipv4Addr) -> MountArgs {
        let version = match self.version {
            NfsVersion::V4 => "4.2",
            v => v.as_str(),
        };
        self.mount_as(version, client)
    }

    fn mount_as(&self, version: &str, client: Ipv4Addr) -> MountArgs {
        let port = self.port.unwrap_or(NFS_PORT);
        // hard: a job's I/O waits while the server restarts, it never sees
        // EIO; timeo (tenths of a second) and retrans set how soon the
        // client retries and logs "server not responding".
        let common = format!(
            "addr={},port={port},proto=tcp,hard,timeo=100,retrans=3",
            self.server
        );
        match version {
            "3" => MountArgs {
                source: format!("{}:{}", self.server, self.export),
                fstype: "nfs",
                options: format!("vers=3,{common},mountproto=tcp,nolock"),
                module: "nfsv3",
            },
            v => MountArgs {
                source: format!("{}:{}", self.server, self.export),
                fstype: "nfs4",
                options: format!("vers={v},{common},clientaddr={client}"),
                module: "nfsv4",
            },
        }
    }
}

impl fmt::Display for NfsShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nfs://{}", self.server)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(&self.export)?;
        if self.version != NfsVersion::V4 {
            write!(f, "?vers={}", self.version.as_str())?;
        }
        Ok(())
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Share::Off => f.write_str("off"),
            Share::Nfs(n) => n.fmt(f),
        }
    }
}

impl FromStr for NfsShare {
    type Err = ShareError;
    fn from_str(value: &str) -> Result<Self, ShareError> {
        let bad = |why| ShareError {
            value: value.to_string(),
            why,
        };
        let rest = value
            .strip_prefix("nfs://")
            .ok_or_else(|| bad("expected nfs://SERVER/EXPORT"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (host, export) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("expected an export path after the server")),
        };
        let (server, port) = match host.split_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(p) if p != 0 => (h, Some(p)),
                _ => return Err(bad("expected a port 1-65535 after ':'")),
            },
            None => (host, None),
        };
        let server: Ipv4Addr = server
            .parse()
            .map_err(|_| bad("the server must be an IPv4 address (nodes resolve no names)"))?;
        if export.len() > 1 && export.ends_with('/') || export.contains("//") {
            return Err(bad("the export path has an empty component"));
        }
        if export
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == ',')
        {
            return Err(bad(
                "the export path holds a space, quote, comma or control character",
            ));
        }
        let version = match query {
            None => NfsVersion::V4,
            Some("vers=3") => NfsVersion::V3,
            Some("vers=4") => NfsVersion::V4,
            Some("vers=4.1") => NfsVersion::V4_1,
            Some("vers=4.2") => NfsVersion::V4_2,
            Some(_) => return Err(bad("the only option is vers=3, 4, 4.1 or 4.2")),
        };
        Ok(NfsShare {
            server,
            port,
            export: export.to_string(),
            version,
        })
    }
}

impl FromStr for Share {
    type Err = ShareError;
    fn from_str(value: &str) -> Result<Self, ShareError> {
        if value == "off" {
            return Ok(Share::Off);
        }
        if !value.starts_with("nfs://") {
            return Err(ShareError {
                value: value.to_string(),
                why: "expected off or nfs://SERVER/EXPORT",
            });
        }
        value.parse().map(Share::Nfs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(text: &str, expect: Expect) {
        let out = match text.parse::<Share>() {
            Ok(Share::Off) => "off".to_string(),
            Ok(Share::Nfs(n)) => {
                let client = Ipv4Addr::new(10, 77, 0, 100);
                assert_eq!(n.mount(client), n.mounts(client)[0]);
                let tries: Vec<String> = n
                    .mounts(client)
                    .iter()
                    .map(|m| {
                        format!(
                            "mount -t {} {} -o {} (module {})",
                            m.fstype, m.source, m.options, m.module
                        )
                    })
                    .collect();
                format!("{n}\n{}", tries.join("\n"))
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&out);
    }

    #[test]
    fn urls_and_their_mounts() {
        check("off", expect!["off"]);
        check(
            "nfs://10.77.0.1/cluster",
            expect![[r#"
                nfs://10.77.0.1/cluster
                mount -t nfs4 10.77.0.1:/cluster -o vers=4.2,addr=10.77.0.1,port=2049,proto=tcp,hard,timeo=100,retrans=3,clientaddr=10.77.0.100 (module nfsv4)
                mount -t nfs4 10.77.0.1:/cluster -o vers=4.1,addr=10.77.0.1,port=2049,proto=tcp,hard,timeo=100,retrans=3,clientaddr=10.77.0.100 (module nfsv4)
                mount -t nfs4 10.77.0.1:/cluster -o vers=4.0,addr=10.77.0.1,port=2049,proto=tcp,hard,timeo=100,retrans=3,clientaddr=10.77.0.100 (module nfsv4)"#]],
        );
        check(
            "nfs://192.168.1.5:2050/volume1/cluster?vers=3",
            expect![[r#"
                nfs://192.168.1.5:2050/volume1/cluster?vers=3
                mount -t nfs 192.168.1.5:/volume1/cluster -o vers=3,addr=192.168.1.5,port=2050,proto=tcp,hard,timeo=100,retrans=3,mountproto=tcp,nolock (module nfsv3)"#]],
        );
        check(
            "nfs://10.0.0.2/?vers=4.2",
            expect![[r#"
                nfs://10.0.0.2/?vers=4.2
                mount -t nfs4 10.0.0.2:/ -o vers=4.2,addr=10.0.0.2,port=2049,proto=tcp,hard,timeo=100,retrans=3,clientaddr=10.77.0.100 (module nfsv4)"#]],
        );
    }

    #[test]
    fn the_mount_at_the_mount_point_is_the_last_one_listed() {
        let table = "proc /proc proc rw 0 0\n\
                     /dev/vda /cluster ext4 rw 0 0\n\
                     10.77.0.1:/cluster /cluster nfs4 rw,vers=4.2 0 0\n\
                     tmpfs /cluster-old tmpfs rw 0 0\n";
        assert_eq!(
            find_mount(table),
            Some(("10.77.0.1:/cluster".into(), "nfs4".into()))
        );
        assert_eq!(find_mount("proc /proc proc rw 0 0\n"), None);
    }

    #[test]
    fn bad_urls_name_the_problem() {
        check(
            "/srv/cluster",
            expect![[
                r#"error: "/srv/cluster" is not a share: expected off or nfs://SERVER/EXPORT"#
            ]],
        );
        check(
            "nfs://nas.local/x",
            expect![[
                r#"error: "nfs://nas.local/x" is not a share: the server must be an IPv4 address (nodes resolve no names)"#
            ]],
        );
        check(
            "nfs://10.0.0.2",
            expect![[
                r#"error: "nfs://10.0.0.2" is not a share: expected an export path after the server"#
            ]],
        );
        check(
            "nfs://10.0.0.2:0/x",
            expect![[
                r#"error: "nfs://10.0.0.2:0/x" is not a share: expected a port 1-65535 after ':'"#
            ]],
        );
        check(
            "nfs://10.0.0.2/a//b",
            expect![[
                r#"error: "nfs://10.0.0.2/a//b" is not a share: the export path has an empty component"#
            ]],
        );
        check(
            "nfs://10.0.0.2/a,b",
            expect![[
                r#"error: "nfs://10.0.0.2/a,b" is not a share: the export path holds a space, quote, comma or control character"#
            ]],
        );
        check(
            "nfs://10.0.0.2/x?vers=2",
            expect![[
                r#"error: "nfs://10.0.0.2/x?vers=2" is not a share: the only option is vers=3, 4, 4.1 or 4.2"#
            ]],
        );
    }
}
