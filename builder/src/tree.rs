//! In-memory file tree: the model of the initramfs before it becomes a cpio
//! archive.
//!
//! Paths are relative, `/`-separated, without a leading `/` (`bin/busybox`).
//! Entries live in a `BTreeMap`, so iteration is sorted and a directory always
//! comes before its children (a path sorts after every prefix of itself).
//! Nothing here touches the disk: packages are unpacked into a [`Tree`], the
//! builder adds its own files, and [`crate::cpio`] serialises it.
//!
//! Owners are kept beside the entries, only for paths a package gives to
//! someone other than root ([`Tree::set_owner`]): the system layer keeps
//! them (`/var/local` is group `staff`, `unix_chkpwd` group `shadow`); the
//! initramfs, where everything is root's, ignores them. A path that is
//! replaced loses its owner.

use std::collections::BTreeMap;
use std::sync::Arc;

/// What a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory.
    Dir,
    /// A regular file; the bytes are shared so copies are cheap.
    File(Arc<Vec<u8>>),
    /// A symbolic link to the given target.
    Symlink(String),
    /// A character device node (major, minor).
    CharDev(u32, u32),
}

/// One entry: the node plus its permission bits and modification time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// What the path holds.
    pub node: Node,
    /// Permission bits including setuid/setgid/sticky (`0o7777` mask).
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: u64,
}

/// Errors from building a tree.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// A path had an empty, `.` or `..` component or was empty.
    #[error("invalid path {0:?} in the image tree")]
    InvalidPath(String),
    /// A parent of the path exists but is not a directory.
    #[error("cannot add {path}: {parent} is not a directory")]
    ParentNotDir {
        /// The path being added.
        path: String,
        /// Its parent that is a file or symlink.
        parent: String,
    },
    /// A directory would replace a file or the other way round.
    #[error("cannot add {0}: a directory and a non-directory share this path")]
    TypeClash(String),
}

/// Who owns a path, as a package's archive names it: the names first (as
/// dpkg maps them through the target system's accounts), the numbers for
/// a name the system does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user's name (`root`), empty if the archive gives none.
    pub user: String,
    /// The user's number.
    pub uid: u32,
    /// The group's name (`staff`), empty if the archive gives none.
    pub group: String,
    /// The group's number.
    pub gid: u32,
}

impl Owner {
    /// Whether this is root:root, the owner every path has by default.
    pub fn is_root(&self) -> bool {
        let root = |name: &str, id: u32| {
            if name.is_empty() {
                id == 0
            } else {
                name == "root"
            }
        };
        root(&self.user, self.uid) && root(&self.group, self.gid)
    }
}

/// A sorted in-memory file tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
    owners: BTreeMap<String, Owner>,
}

/// Turn `/a/./b/` or `./a/b` into `a/b`; rejects `..` and empty results.
pub fn normalize(path: &str) -> Result<String, TreeError> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(TreeError::InvalidPath(path.to_string())),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(TreeError::InvalidPath(path.to_string()));
    }
    Ok(parts.join("/"))
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Iterate over all entries in sorted order (parents before children).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The entry at `path`, if any.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let p = normalize(path).ok()?;
        self.entries.get(&p)
    }

    /// The owner of `path` when it is not root:root.
    pub fn owner(&self, path: &str) -> Option<&Owner> {
        self.owners.get(&normalize(path).ok()?)
    }

    /// Paths given to someone other than root, sorted.
    pub fn owners(&self) -> impl Iterator<Item = (&str, &Owner)> {
        self.owners.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Gives the existing `path` to `owner` (root:root clears it); false if
    /// the tree has no such path.
    pub fn set_owner(&mut self, path: &str, owner: Owner) -> bool {
        let Ok(p) = normalize(path) else { return false };
        if !self.entries.contains_key(&p) {
            return false;
        }
        if owner.is_root() {
            self.owners.remove(&p);
        } else {
            self.owners.insert(p, owner);
        }
        true
    }

    /// Sets the permission bits of the existing `path`; false if the tree
    /// has no such path.
    pub fn set_mode(&mut self, path: &str, mode: u32) -> bool {
        let Ok(p) = normalize(path) else { return false };
        match self.entries.get_mut(&p) {
            Some(e) => {
                e.mode = mode & 0o7777;
                true
            }
            None => false,
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the sizes of all regular files.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.node {
                Node::File(d) => d.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Create `path` and its parents as directories (mode 0755 for parents
    /// that don't exist yet).
    pub fn mkdir_p(&mut self, path: &str, mode: u32, mtime: u64) -> Result<(), TreeError> {
        self.insert(
            path,
            Entry {
                node: Node::Dir,
                mode,
                mtime,
            },
        )
    }

    /// Add a regular file (replacing an existing non-directory at `path`).
    pub fn add_file(
        &mut self,
        path: &str,
        data: impl Into<Arc<Vec<u8>>>,
        mode: u32,
        mtime: u64,
    ) -> Result<(), TreeError> {
        self.insert(
            path,
            Entry {
                node: Node::File(data.into()),
                mode,
                mtime,
            },
        )
    }

    /// Add a symbolic link.
    pub fn add_symlink(&mut self, path: &str, target: &str, mtime: u64) -> Result<(), TreeError> {
        self.insert(
            path,
            Entry {
                node: Node::Symlink(target.to_string()),
                mode: 0o777,
                mtime,
            },
        )
    }

    /// Insert an entry, creating missing parents as 0755 directories. A
    /// directory inserted over an existing directory only updates its mode.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<(), TreeError> {
        let path = normalize(path)?;
        let mut idx = 0;
        while let Some(off) = path[idx..].find('/') {
            let parent = &path[..idx + off];
            match self.entries.get(parent) {
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry {
                            node: Node::Dir,
                            mode: 0o755,
                            mtime: entry.mtime,
                        },
                    );
                }
                Some(Entry {
                    node: Node::Dir, ..
                }) => {}
                Some(_) => {
                    return Err(TreeError::ParentNotDir {
                        path: path.clone(),
                        parent: parent.to_string(),
                    })
                }
            }
            idx += off + 1;
        }
        match (self.entries.get_mut(&path), &entry.node) {
            (Some(existing), Node::Dir) => {
                if existing.node != Node::Dir {
                    return Err(TreeError::TypeClash(path));
                }
                existing.mode = entry.mode;
            }
            (Some(existing), _) if existing.node == Node::Dir => {
                return Err(TreeError::TypeClash(path))
            }
            _ => {
                self.owners.remove(&path);
                self.entries.insert(path, entry);
            }
        }
        Ok(())
    }

    /// Remove `path` and everything below it.
    pub fn remove(&mut self, path: &str) {
        let Ok(p) = normalize(path) else { return };
        let prefix = format!("{p}/");
        let gone = |k: &String| k == &p || k.starts_with(&prefix);
        self.entries.retain(|k, _| !gone(k));
        self.owners.retain(|k, _| !gone(k));
    }

    /// Paths starting with `prefix` (a directory path, no trailing `/`).
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        let start = format!("{prefix}/");
        self.entries
            .range(start.clone()..)
            .take_while(move |(k, _)| k.starts_with(&start))
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The bytes of the regular file `path` names, following symlinks (see
    /// [`Tree::resolve`]); `None` if it names nothing or no regular file.
    pub fn file(&self, path: &str) -> Option<Arc<Vec<u8>>> {
        match self.resolve(path) {
            Some((
                _,
                Entry {
                    node: Node::File(d),
                    ..
                },
            )) => Some(d.clone()),
            _ => None,
        }
    }

    /// Follow symlinks (absolute or relative, up to 16 hops) from `path` to
    /// the entry it finally names, resolving symlinked parent directories.
    pub fn resolve(&self, path: &str) -> Option<(String, &Entry)> {
        let mut cur = normalize(path).ok()?;
        for _ in 0..16 {
            // Resolve symlinks in parent components first.
            let comps: Vec<&str> = cur.split('/').collect();
            let mut prefix = String::new();
            let mut rewritten = None;
            for (i, c) in comps.iter().enumerate() {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
                if let Some(Entry {
                    node: Node::Symlink(t),
                    ..
                }) = self.entries.get(&prefix)
                {
                    let base = prefix.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let joined = if t.starts_with('/') {
                        t.clone()
                    } else {
                        format!("{base}/{t}")
                    };
                    let rest = comps[i + 1..].join("/");
                    let full = if rest.is_empty() {
                        joined
                    } else {
                        format!("{joined}/{rest}")
                    };
                    rewritten = Some(resolve_dots(&full)?);
                    break;
                }
            }
            match rewritten {
                Some(next) => cur = next,
                None => return self.entries.get(&cur).map(|e| (cur.clone(), e)),
            }
        }
        None
    }
}

/// Collapse `.` and `..` components of a path (relative to the root; `..`
/// at the root stays there); `None` when nothing is left.
pub fn resolve_dots(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::new();
        t.add_file("/usr/lib/x-y", vec![1], 0o644, 0).unwrap();
        t.add_file("usr/lib/x/z", vec![2], 0o644, 0).unwrap();
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            ["usr", "usr/lib", "usr/lib/x", "usr/lib/x-y", "usr/lib/x/z"]
        );
    }

    #[test]
    fn symlinks_resolve_through_parents() {
        let mut t = Tree::new();
        t.add_file("usr/lib/libc.so.6", vec![1], 0o644, 0).unwrap();
        t.add_symlink("lib", "usr/lib", 0).unwrap();
        t.add_symlink("usr/lib/libc.so", "libc.so.6", 0).unwrap();
        let (p, _) = t.resolve("/lib/libc.so").unwrap();
        assert_eq!(p, "usr/lib/libc.so.6");
        assert!(t.add_file("lib/foo", vec![], 0o644, 0).is_err());
    }

    #[test]
    fn owners_stay_with_their_path_until_it_is_replaced_or_removed() {
        let mut t = Tree::new();
        let staff = Owner {
            user: "root".into(),
            uid: 0,
            group: "staff".into(),
            gid: 50,
        };
        t.mkdir_p("var/local", 0o2775, 0).unwrap();
        t.add_file("sbin/unix_chkpwd", vec![1], 0o2755, 0).unwrap();
        assert!(!t.set_owner("var/missing", staff.clone()));
        assert!(t.set_owner("/var/local/", staff.clone()));
        assert!(t.set_owner("sbin/unix_chkpwd", staff.clone()));
        // A directory inserted again keeps its owner; a file replaced does not.
        t.mkdir_p("var/local", 0o2775, 0).unwrap();
        t.add_file("sbin/unix_chkpwd", vec![2], 0o755, 0).unwrap();
        assert_eq!(t.owner("var/local"), Some(&staff));
        assert_eq!(t.owner("sbin/unix_chkpwd"), None);
        // root:root by name, or by number without names, is no owner.
        let root = Owner {
            user: String::new(),
            uid: 0,
            group: "root".into(),
            gid: 7,
        };
        assert!(t.set_owner("var/local", root));
        assert_eq!(t.owners().count(), 0);
        t.set_owner("var/local", staff);
        t.remove("var");
        assert_eq!(t.owners().count(), 0);
    }

    #[test]
    fn file_follows_symlinks_to_regular_files_only() {
        let mut t = Tree::new();
        t.add_file("boot/ipxe.efi", vec![7], 0o644, 0).unwrap();
        t.add_symlink("usr/lib/ipxe/ipxe.efi", "/boot/ipxe.efi", 0)
            .unwrap();
        assert_eq!(t.file("usr/lib/ipxe/ipxe.efi").as_deref(), Some(&vec![7]));
        assert_eq!(t.file("usr/lib/ipxe"), None);
        assert_eq!(t.file("usr/lib/ipxe/missing.efi"), None);
    }
}
