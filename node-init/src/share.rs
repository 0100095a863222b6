//! The shared tree on a netbooted node: the export `om.share=` names,
//! mounted at [`MOUNT_POINT`] with the kernel's own NFS client, and the
//! head's user and group tables installed so its numeric owners show as the
//! same names here (the node's own system accounts, such as those a system
//! layer's packages made, kept where they clash with none of the head's:
//! [`merge`]).
//!
//! The node has no `mount.nfs`: [`mount`] loads the client module and calls
//! `mount(2)` with the kernel's text options ([`NfsShare::mount`]). The mount
//! is `hard`: while the head's server restarts, I/O waits instead of
//! failing.

use std::net::Ipv4Addr;
use std::path::Path;

use contracts::share::{find_mount, NfsShare, GROUP_PATH, MOUNT_POINT, PASSWD_PATH};
use nix::errno::Errno;
use nix::mount::MsFlags;

use crate::fetch::{self, FetchError};
use crate::kmod;

/// Mounting the tree or installing the tables failed.
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    /// The NFS client module could not be loaded.
    #[error("loading {module}: {reason}")]
    Module {
        /// The module.
        module: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// mount(2) refused.
    #[error("mounting {source_} on {target}: {errno}")]
    Mount {
        /// `SERVER:/EXPORT`.
        source_: String,
        /// Where.
        target: String,
        /// What the kernel said.
        errno: Errno,
    },
    /// A table could not be fetched from the head.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A table could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Whether something is mounted at [`MOUNT_POINT`] (from
/// `/proc/self/mounts`, which never touches the file server).
pub fn is_mounted() -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| find_mount(&m))
        .is_some()
}

/// Mounts `share` at [`MOUNT_POINT`]; `client` is this node's address
/// toward the server. Already mounted counts as done.
pub fn mount(share: &NfsShare, client: Ipv4Addr) -> Result<(), ShareError> {
    if is_mounted() {
        return Ok(());
    }
    let _ = std::fs::create_dir_all(MOUNT_POINT);
    mount_at(share, client, Path::new(MOUNT_POINT), MsFlags::empty())
}

/// Mounts the NFS export `share` at `target` with `flags` (the system
/// layer's export is mounted read-only), loading the client module first.
pub fn mount_at(
    share: &NfsShare,
    client: Ipv4Addr,
    target: &Path,
    flags: MsFlags,
) -> Result<(), ShareError> {
    let mut result = Ok(());
    for args in share.mounts(client) {
        if let Some(dir) = kmod::modules_dir() {
            kmod::load_named(&dir, &[args.module.to_string()]).map_err(|e| ShareError::Module {
                module: args.module,
                reason: e.to_string(),
            })?;
        }
        result = nix::mount::mount(
            Some(args.source.as_str()),
            target,
            Some(args.fstype),
            flags,
            Some(args.options.as_str()),
        )
        .map_err(|errno| ShareError::Mount {
            source_: args.source.clone(),
            target: target.display().to_string(),
            errno,
        });
        match &result {
            Err(ShareError::Mount { errno, .. }) if older_minor_may_do(*errno) => continue,
            _ => break,
        }
    }
    result
}

/// Whether a refused NFSv4 mount is worth trying again with an older minor
/// version: what a server that lacks the one asked for makes the kernel
/// say, as `mount.nfs` reads it.
fn older_minor_may_do(errno: Errno) -> bool {
    matches!(errno, Errno::EPROTONOSUPPORT | Errno::EINVAL)
}

/// Fetches the head's `passwd` and `group` from `http://server:port` and
/// installs them as this node's (the head is where users are made), with
/// the node's own accounts [`merge`] keeps; the accounts of this node's
/// that the head's hide.
pub fn install_accounts(server: Ipv4Addr, port: u16) -> Result<Vec<String>, ShareError> {
    let mut hidden = Vec::new();
    for (path, file) in [(PASSWD_PATH, "/etc/passwd"), (GROUP_PATH, "/etc/group")] {
        let body = fetch::get(&format!("http://{server}:{port}{path}"), 4 << 20)?;
        let local = std::fs::read(file).unwrap_or_default();
        let (table, lost) = merge(
            &String::from_utf8_lossy(&body),
            &String::from_utf8_lossy(&local),
        );
        hidden.extend(lost.into_iter().map(|name| format!("{file}: {name}")));
        replace(Path::new(file), table.as_bytes())?;
    }
    Ok(hidden)
}

/// The head's table (`passwd` or `group` lines) followed by the node's own
/// lines whose name and number the head's table does not use: the head
/// decides what a number means on every node, and a system layer's
/// package accounts (`uuidd`, `messagebus`…) stay where they clash with
/// nothing. The names of the node's lines the head's hide (a name of its
/// own, the same number as another of the head's).
pub fn merge(head: &str, local: &str) -> (String, Vec<String>) {
    let fields = |line: &str| -> Option<(String, String)> {
        let mut f = line.split(':');
        let name = f.next().filter(|n| !n.is_empty())?.to_string();
        Some((name, f.nth(1)?.to_string()))
    };
    let taken: Vec<(String, String)> = head.lines().filter_map(fields).collect();
    let mut table = String::from(head);
    if !table.is_empty() && !table.ends_with('\n') {
        table.push('\n');
    }
    let mut hidden = Vec::new();
    for line in local.lines() {
        let Some((name, id)) = fields(line) else {
            continue;
        };
        if taken.iter().any(|(n, _)| *n == name) {
            continue;
        }
        if taken.iter().any(|(_, i)| *i == id) {
            hidden.push(name);
            continue;
        }
        table.push_str(line);
        table.push('\n');
    }
    (table, hidden)
}

/// Writes `body` to `path` through a temporary file and a rename, so a
/// reader never sees half a table.
fn replace(path: &Path, body: &[u8]) -> Result<(), ShareError> {
    let err = |source| ShareError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("omnode-new");
    std::fs::write(&tmp, body).map_err(err)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heads_accounts_win_and_the_nodes_own_stay_beside_them() {
        let head = "root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n\
                    messagebus:x:101:103::/nonexistent:/usr/sbin/nologin";
        let layer =
            "root:x:0:0:root:/root:/bin/bash\nuuidd:x:100:101::/run/uuidd:/usr/sbin/nologin\n\
                     messagebus:x:999:999::/nonexistent:/usr/sbin/nologin\n\
                     _chrony:x:1000:1000::/var/lib/chrony:/usr/sbin/nologin\n";
        let (table, hidden) = merge(head, layer);
        assert_eq!(
            table,
            "root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n\
             messagebus:x:101:103::/nonexistent:/usr/sbin/nologin\n\
             uuidd:x:100:101::/run/uuidd:/usr/sbin/nologin\n"
        );
        assert_eq!(hidden, ["_chrony"], "its number is alice's");
        // Groups: name and number in the third field too.
        let (groups, hidden) = merge(
            "root:x:0:\nusers:x:100:\n",
            "root:x:0:\nuuidd:x:101:\nnetdev:x:100:\n",
        );
        assert_eq!(groups, "root:x:0:\nusers:x:100:\nuuidd:x:101:\n");
        assert_eq!(hidden, ["netdev"]);
    }

    #[test]
    fn only_a_refused_minor_version_is_tried_again_older() {
        assert!(older_minor_may_do(Errno::EPROTONOSUPPORT));
        assert!(older_minor_may_do(Errno::EINVAL));
        // A server that is down or refuses this node: the same answer for
        // every minor version, said at once.
        assert!(!older_minor_may_do(Errno::ETIMEDOUT));
        assert!(!older_minor_may_do(Errno::EACCES));
        assert!(!older_minor_may_do(Errno::ECONNREFUSED));
    }

    #[test]
    fn tables_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "root:x:0:0::/root:/bin/sh\n").unwrap();
        replace(
            &path,
            b"root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("alice:x:1000"));
        assert!(!path.with_extension("omnode-new").exists());
    }
}
