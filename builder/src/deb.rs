//! `.deb` extraction without dpkg: the `ar` container (parsed here, it is a
//! few lines), then `data.tar` compressed with xz, zstd, gzip or nothing,
//! unpacked into an in-memory [`Tree`] keeping modes, mtimes and symlinks.
//! Hard links inside the archive become copies (the tree, and the cpio made
//! from it, hold every file once with a link count of 1). Nothing is run and
//! nothing is written to disk, so any user can do it.

use std::io::Read;

use crate::tree::{normalize, Entry, Node, Owner, Tree, TreeError};

/// Errors from reading a `.deb`.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// The file is not an `ar` archive or a member header is broken.
    #[error("{package}: not a valid .deb ar archive ({reason})")]
    BadAr {
        /// The package being read.
        package: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// There is no `data.tar*` member.
    #[error("{package}: .deb has no data.tar member")]
    NoData {
        /// The package being read.
        package: String,
    },
    /// The data member uses a compression this reader does not know.
    #[error("{package}: unsupported data member {member}")]
    Compression {
        /// The package being read.
        package: String,
        /// The member's name.
        member: String,
    },
    /// Decompressing or reading the tar stream failed.
    #[error("{package}: reading {member}: {source}")]
    Tar {
        /// The package being read.
        package: String,
        /// The member being read.
        member: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An entry could not be placed in the tree.
    #[error("{package}: {source}")]
    Tree {
        /// The package being read.
        package: String,
        /// The underlying error.
        source: TreeError,
    },
}

/// One member of an `ar` archive.
#[derive(Debug)]
pub struct ArMember<'a> {
    /// The member name (`debian-binary`, `control.tar.xz`, `data.tar.xz`).
    pub name: String,
    /// The member's bytes.
    pub data: &'a [u8],
}

/// Split an `ar` archive (the common/GNU format dpkg writes) into members.
pub fn ar_members<'a>(package: &str, data: &'a [u8]) -> Result<Vec<ArMember<'a>>, DebError> {
    let bad = |reason| DebError::BadAr {
        package: package.to_string(),
        reason,
    };
    if !data.starts_with(b"!<arch>\n") {
        return Err(bad("missing !<arch> magic"));
    }
    let mut off = 8;
    let mut out = Vec::new();
    while off < data.len() {
        let h = data
            .get(off..off + 60)
            .ok_or_else(|| bad("truncated member header"))?;
        if &h[58..60] != b"`\n" {
            return Err(bad("bad member header terminator"));
        }
        let name = String::from_utf8_lossy(&h[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: usize = std::str::from_utf8(&h[48..58])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("bad member size"))?;
        let start = off + 60;
        let body = data
            .get(start..start + size)
            .ok_or_else(|| bad("truncated member"))?;
        out.push(ArMember { name, data: body });
        off = start + size + (size & 1);
    }
    Ok(out)
}

/// Unpack the data member of a `.deb` into `tree`, keeping only the paths
/// for which `keep` returns true (paths as in the tree, no leading `/`).
/// Returns the number of entries added.
pub fn unpack_into(
    package: &str,
    deb: &[u8],
    tree: &mut Tree,
    keep: &dyn Fn(&str) -> bool,
) -> Result<usize, DebError> {
    let members = ar_members(package, deb)?;
    let data = members
        .iter()
        .find(|m| m.name.starts_with("data.tar"))
        .ok_or_else(|| DebError::NoData {
            package: package.to_string(),
        })?;
    let reader = member_reader(package, data)?;
    unpack_tar(package, &data.name, reader, tree, keep)
}

/// A file of the control member of a `.deb` (`postinst`, `conffiles`…), if
/// the package has it.
pub fn control_file(package: &str, deb: &[u8], name: &str) -> Result<Option<Vec<u8>>, DebError> {
    let members = ar_members(package, deb)?;
    let Some(control) = members.iter().find(|m| m.name.starts_with("control.tar")) else {
        return Ok(None);
    };
    let terr = |e| tar_err(package, &control.name, e);
    let mut archive = tar::Archive::new(member_reader(package, control)?);
    for entry in archive.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if path.trim_start_matches("./") == name {
            let mut out = Vec::new();
            entry.read_to_end(&mut out).map_err(terr)?;
            return Ok(Some(out));
        }
    }
    Ok(None)
}

/// The decompressed tar stream of an ar member (`data.tar.xz`,
/// `control.tar.zst`…).
fn member_reader<'a>(package: &str, m: &ArMember<'a>) -> Result<Box<dyn Read + 'a>, DebError> {
    let kind = m.name.rsplit_once(".tar").map_or("", |(_, ext)| ext);
    Ok(match kind {
        "" => Box::new(m.data),
        ".xz" => Box::new(xz_reader(package, m.data)?),
        ".zst" => Box::new(
            zstd::stream::read::Decoder::with_buffer(m.data)
                .map_err(|e| tar_err(package, &m.name, e))?,
        ),
        ".gz" => Box::new(flate2::read::GzDecoder::new(m.data)),
        _ => {
            return Err(DebError::Compression {
                package: package.to_string(),
                member: m.name.clone(),
            })
        }
    })
}

fn tar_err(package: &str, member: &str, source: std::io::Error) -> DebError {
    DebError::Tar {
        package: package.to_string(),
        member: member.to_string(),
        source,
    }
}

/// A multi-threaded xz decoder: dpkg-deb writes multi-block xz streams, which
/// liblzma decodes in parallel.
fn xz_reader<'a>(
    package: &str,
    data: &'a [u8],
) -> Result<liblzma::read::XzDecoder<&'a [u8]>, DebError> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .memlimit_threading(1 << 30)
        .memlimit_stop(u64::MAX)
        .decoder()
        .map_err(|e| DebError::Tar {
            package: package.to_string(),
            member: "data.tar.xz".into(),
            source: std::io::Error::other(e),
        })?;
    Ok(liblzma::read::XzDecoder::new_stream(data, stream))
}

fn unpack_tar(
    package: &str,
    member: &str,
    reader: impl Read,
    tree: &mut Tree,
    keep: &dyn Fn(&str) -> bool,
) -> Result<usize, DebError> {
    let terr = |e| tar_err(package, member, e);
    let tree_err = |source| DebError::Tree {
        package: package.to_string(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    let mut added = 0;
    for entry in archive.entries().map_err(terr)? {
        let mut entry = entry.map_err(terr)?;
        let raw = entry.path_bytes();
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let Ok(path) = normalize(&raw) else { continue }; // "./" itself
        if !keep(&path) {
            continue;
        }
        let header = entry.header();
        let mode = header.mode().map_err(terr)? & 0o7777;
        let mtime = header.mtime().map_err(terr)?;
        let kind = header.entry_type();
        let owner = Owner {
            user: header.username().ok().flatten().unwrap_or("").to_string(),
            uid: header.uid().unwrap_or(0) as u32,
            group: header.groupname().ok().flatten().unwrap_or("").to_string(),
            gid: header.gid().unwrap_or(0) as u32,
        };
        let node = if kind.is_dir() {
            Node::Dir
        } else if kind.is_symlink() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| terr(std::io::Error::other("symlink without target")))?;
            Node::Symlink(String::from_utf8_lossy(&target).into_owned())
        } else if kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| terr(std::io::Error::other("hard link without target")))?;
            let target = normalize(&String::from_utf8_lossy(&target)).map_err(tree_err)?;
            match tree.get(&target) {
                Some(Entry {
                    node: n @ Node::File(_),
                    ..
                }) => n.clone(),
                _ => continue, // the link's target was filtered out
            }
        } else if kind.is_file() {
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf).map_err(terr)?;
            Node::File(buf.into())
        } else {
            continue; // devices and fifos don't occur in Debian packages
        };
        tree.insert(&path, Entry { node, mode, mtime })
            .map_err(tree_err)?;
        tree.set_owner(&path, owner);
        added += 1;
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, data) in members {
            out.extend_from_slice(
                format!(
                    "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    name,
                    0,
                    0,
                    0,
                    100644,
                    data.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn tar_gz() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "./usr/bin/", &[][..]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o4755);
        h.set_mtime(42);
        h.set_size(5);
        h.set_username("root").unwrap();
        h.set_groupname("shadow").unwrap();
        h.set_gid(42);
        b.append_data(&mut h, "./usr/bin/tool", &b"hello"[..])
            .unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, "./usr/bin/alias", "tool").unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_mode(0o4755);
        h.set_mtime(42);
        h.set_size(0);
        b.append_link(&mut h, "./usr/bin/hard", "./usr/bin/tool")
            .unwrap();
        let tar = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn unpacks_modes_symlinks_and_hardlinks() {
        let deb = ar(&[
            ("debian-binary", b"2.0\n"),
            ("control.tar.gz", b"x"),
            ("data.tar.gz", &tar_gz()),
        ]);
        let mut t = Tree::new();
        let n = unpack_into("demo", &deb, &mut t, &|_| true).unwrap();
        assert_eq!(n, 4);
        let tool = t.get("usr/bin/tool").unwrap();
        assert_eq!((tool.mode, tool.mtime), (0o4755, 42));
        assert_eq!(tool.node, Node::File(b"hello".to_vec().into()));
        let owner = t.owner("usr/bin/tool").expect("group shadow is kept");
        assert_eq!((owner.group.as_str(), owner.gid), ("shadow", 42));
        assert_eq!(t.owner("usr/bin"), None, "root:root is no owner");
        assert_eq!(
            t.get("usr/bin/alias").unwrap().node,
            Node::Symlink("tool".into())
        );
        assert_eq!(t.get("usr/bin/hard").unwrap().node, tool.node);
    }

    #[test]
    fn broken_archives_are_named() {
        let err = unpack_into("demo", b"garbage", &mut Tree::new(), &|_| true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "demo: not a valid .deb ar archive (missing !<arch> magic)"
        );
        let deb = ar(&[("debian-binary", b"2.0\n")]);
        let err = unpack_into("demo", &deb, &mut Tree::new(), &|_| true).unwrap_err();
        assert_eq!(err.to_string(), "demo: .deb has no data.tar member");
        let deb = ar(&[("data.tar.bz2", b"x")]);
        let err = unpack_into("demo", &deb, &mut Tree::new(), &|_| true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "demo: unsupported data member data.tar.bz2"
        );
    }
}
