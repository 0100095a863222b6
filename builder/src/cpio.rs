//! newc ("070701") cpio writer for the initramfs: a [`Tree`] in, bytes out,
//! no I/O.
//!
//! Reproducibility rules applied here: entries in the tree's sorted order
//! (parents before children), inode numbers assigned 1, 2, 3… in that order,
//! owner and group 0, link count 1 for everything but directories (the kernel
//! treats a regular file with a count of 2 or more as a hardlink candidate),
//! mtimes clamped to the given epoch, no device number for the archive itself.
//! The kernel cannot take an archive of 4 GiB or more, so that is refused.

use crate::tree::{Entry, Node, Tree};

/// The largest archive the kernel's initramfs unpacker takes.
pub const MAX_ARCHIVE: u64 = u32::MAX as u64;

/// Errors from writing an archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    /// The archive would be 4 GiB or larger.
    #[error(
        "initramfs archive would be {size} bytes, the kernel takes at most 4 GiB ({max} bytes)"
    )]
    TooLarge {
        /// The size the archive would have.
        size: u64,
        /// The limit.
        max: u64,
    },
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

fn pad4(n: u64) -> u64 {
    (4 - n % 4) % 4
}

fn header_len(name: &str) -> u64 {
    let n = 110 + name.len() as u64 + 1;
    n + pad4(n)
}

fn data_of(e: &Entry) -> &[u8] {
    match &e.node {
        Node::File(d) => d,
        Node::Symlink(t) => t.as_bytes(),
        Node::Dir | Node::CharDev(..) => &[],
    }
}

/// The exact size [`write_newc`] would produce for `tree`.
pub fn archive_size(tree: &Tree) -> u64 {
    let mut size = 0;
    for (path, e) in tree.iter() {
        let d = data_of(e).len() as u64;
        size += header_len(path) + d + pad4(d);
    }
    size + header_len("TRAILER!!!")
}

/// Serialise `tree` as a newc archive with every mtime clamped to `epoch`.
pub fn write_newc(tree: &Tree, epoch: u64) -> Result<Vec<u8>, CpioError> {
    write_newc_max(tree, epoch, MAX_ARCHIVE)
}

/// [`write_newc`] with a given size limit (the real one needs 4 GiB of
/// test data to reach).
fn write_newc_max(tree: &Tree, epoch: u64, max: u64) -> Result<Vec<u8>, CpioError> {
    let size = archive_size(tree);
    if size > max {
        return Err(CpioError::TooLarge { size, max });
    }
    let mut out = Vec::with_capacity(size as usize);
    let mut ino = 0u32;
    for (path, e) in tree.iter() {
        ino += 1;
        let (kind, nlink, rdev) = match e.node {
            Node::Dir => (S_IFDIR, 2, (0, 0)),
            Node::File(_) => (S_IFREG, 1, (0, 0)),
            Node::Symlink(_) => (S_IFLNK, 1, (0, 0)),
            Node::CharDev(ma, mi) => (S_IFCHR, 1, (ma, mi)),
        };
        let mode = kind | (e.mode & 0o7777);
        let mtime = e.mtime.min(epoch) as u32;
        push_entry(&mut out, path, ino, mode, nlink, mtime, data_of(e), rdev);
    }
    push_entry(&mut out, "TRAILER!!!", 0, 0, 1, 0, &[], (0, 0));
    debug_assert_eq!(out.len() as u64, size);
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn push_entry(
    out: &mut Vec<u8>,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    data: &[u8],
    rdev: (u32, u32),
) {
    use std::fmt::Write as _;
    let mut h = String::with_capacity(110);
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        mtime,
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    h.push_str("070701");
    for f in fields {
        write!(h, "{f:08X}").expect("writing to a String cannot fail");
    }
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    let n = 110 + name.len() as u64 + 1;
    out.extend(std::iter::repeat_n(0u8, pad4(n) as usize));
    out.extend_from_slice(data);
    out.extend(std::iter::repeat_n(0u8, pad4(data.len() as u64) as usize));
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn dump(bytes: &[u8]) -> String {
        // Printable view: NULs as '~', so the padding is visible.
        bytes
            .iter()
            .map(|&b| if b == 0 { '~' } else { b as char })
            .collect()
    }

    #[test]
    fn small_tree_snapshot() {
        let mut t = Tree::new();
        t.add_file("bin/sh", b"hi\n".to_vec(), 0o755, 5000).unwrap();
        t.add_symlink("init", "bin/sh", 10).unwrap();
        t.insert(
            "dev/console",
            Entry {
                node: Node::CharDev(5, 1),
                mode: 0o600,
                mtime: 0,
            },
        )
        .unwrap();
        let out = write_newc(&t, 1000).unwrap();
        assert_eq!(out.len() as u64, archive_size(&t));
        assert_eq!(out.len() % 4, 0);
        expect![[r#"
            07070100000001000041ED000000000000000000000002000003E800000000000000000000000000000000000000000000000400000000bin~~~07070100000002000081ED000000000000000000000001000003E800000003000000000000000000000000000000000000000700000000bin/sh~~~~hi
            ~07070100000003000041ED0000000000000000000000020000000000000000000000000000000000000000000000000000000400000000dev~~~07070100000004000021800000000000000000000000010000000000000000000000000000000000000005000000010000000C00000000dev/console~~~070701000000050000A1FF0000000000000000000000010000000A00000006000000000000000000000000000000000000000500000000init~~bin/sh~~07070100000000000000000000000000000000000000010000000000000000000000000000000000000000000000000000000B00000000TRAILER!!!~~~~"#]]
        .assert_eq(&dump(&out));
    }

    #[test]
    fn oversized_archive_is_refused() {
        let mut t = Tree::new();
        t.add_file("big", vec![0; 1000], 0o644, 0).unwrap();
        let err = write_newc_max(&t, 0, 1000).unwrap_err();
        assert_eq!(
            err,
            CpioError::TooLarge {
                size: archive_size(&t),
                max: 1000
            }
        );
        assert!(err.to_string().contains("at most 4 GiB"));
    }

    #[test]
    fn mtimes_are_clamped_and_owners_zero() {
        let mut t = Tree::new();
        t.add_file("a", vec![], 0o644, u64::MAX).unwrap();
        let out = write_newc(&t, 7).unwrap();
        // mtime field is the 7th 8-hex field after the magic.
        let mtime = &out[6 + 5 * 8..6 + 6 * 8];
        assert_eq!(mtime, b"00000007");
        assert_eq!(&out[6 + 2 * 8..6 + 4 * 8], b"0000000000000000");
    }
}
