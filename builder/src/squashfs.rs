//! A [`Tree`] as a squashfs image: the compressed read-only system layer a
//! node mounts as its root's lower half. Written with the `backhand` crate
//! (squashfs 4.0, zstd, 128 KiB blocks), byte-reproducible: every inode's
//! time is clamped to the build's epoch, the superblock's time is the
//! epoch, every file belongs to root but those the tree gives an owner
//! ([`Tree::owner`]), and entries go in the tree's sorted order. A progress bar with an ETA follows the bytes compressed. The
//! image is made in memory, like the initramfs, and written with the rest
//! of the image directory.

use std::io::{Cursor, Read};

use backhand::compression::Compressor;
use backhand::{FilesystemCompressor, FilesystemWriter, NodeHeader};
use indicatif::ProgressBar;

use crate::tree::{Node, Tree};

/// The data block size.
pub const BLOCK_SIZE: u32 = 128 * 1024;

/// Why a squashfs image could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SquashfsError {
    /// backhand refused an entry or the image.
    #[error("squashfs {what}: {source}")]
    Backhand {
        /// The path or step.
        what: String,
        /// The cause.
        source: backhand::BackhandError,
    },
    /// A time does not fit squashfs's 32-bit field.
    #[error("time {0} is past what squashfs can hold (2106)")]
    Time(u64),
}

/// A reader that advances a progress bar as it is read.
struct Counted<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bar.inc(n as u64);
        Ok(n)
    }
}

fn time(t: u64) -> Result<u32, SquashfsError> {
    u32::try_from(t).map_err(|_| SquashfsError::Time(t))
}

/// A progress bar over `total` bytes, drawn on stderr when it is a
/// terminal (indicatif hides it otherwise).
pub fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(crate::fetch::bytes_style());
    bar.set_message(what.to_string());
    bar
}

/// `tree` as a squashfs image, the superblock stamped `epoch` and every
/// mtime clamped to it.
pub fn image(tree: &Tree, epoch: u64, bar: &ProgressBar) -> Result<Vec<u8>, SquashfsError> {
    let bh = |what: &str| {
        let what = what.to_string();
        move |source| SquashfsError::Backhand { what, source }
    };
    let mut fs = FilesystemWriter::default();
    fs.set_time(time(epoch)?);
    fs.set_only_root_id();
    fs.set_root_mode(0o755);
    fs.set_block_size(BLOCK_SIZE);
    fs.set_compressor(FilesystemCompressor::new(Compressor::Zstd, None).map_err(bh("compressor"))?);
    for (path, entry) in tree.iter() {
        let (uid, gid) = tree.owner(path).map_or((0, 0), |o| (o.uid, o.gid));
        let header = NodeHeader::new(
            (entry.mode & 0o7777) as u16,
            uid,
            gid,
            time(entry.mtime.min(epoch))?,
        );
        match &entry.node {
            Node::Dir => fs.push_dir(path, header).map_err(bh(path))?,
            Node::File(data) => fs
                .push_file(
                    Counted {
                        inner: Cursor::new(data.as_slice()),
                        bar: bar.clone(),
                    },
                    path,
                    header,
                )
                .map_err(bh(path))?,
            Node::Symlink(target) => fs.push_symlink(target, path, header).map_err(bh(path))?,
            Node::CharDev(major, minor) => fs
                .push_char_device(device_number(*major, *minor), path, header)
                .map_err(bh(path))?,
        }
    }
    let mut out = Cursor::new(Vec::new());
    let written = fs.write(&mut out).map_err(bh("image"));
    bar.finish_and_clear();
    written?;
    Ok(out.into_inner())
}

/// The kernel's encoding of a device number, as squashfs stores it.
fn device_number(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const EPOCH: u64 = 1_704_067_200;

    fn sample() -> Tree {
        let mut t = Tree::new();
        t.mkdir_p("usr/bin", 0o755, EPOCH).unwrap();
        t.add_file(
            "usr/bin/hello",
            Arc::new(b"#!/bin/sh\necho hi\n".to_vec()),
            0o755,
            EPOCH,
        )
        .unwrap();
        t.add_file("usr/share/big", Arc::new(vec![7u8; 300_000]), 0o644, EPOCH)
            .unwrap();
        t.add_symlink("bin", "usr/bin", EPOCH).unwrap();
        t.mkdir_p("var/local", 0o2775, EPOCH).unwrap();
        t.set_owner(
            "var/local",
            crate::tree::Owner {
                user: "root".into(),
                uid: 0,
                group: "staff".into(),
                gid: 50,
            },
        );
        t
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_and_unsquashfs_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.squashfs");
        let tree = sample();
        let bar = ProgressBar::hidden();
        let bytes = image(&tree, EPOCH, &bar).unwrap();
        assert_eq!(bytes, image(&tree, EPOCH, &bar).unwrap());
        std::fs::write(&a, &bytes).unwrap();
        let Some(unsquashfs) = lab::gate::tool("unsquashfs") else {
            return;
        };
        let out = std::process::Command::new(unsquashfs)
            .args(["-lln", "-d", ""])
            .env("TZ", "UTC")
            .arg(&a)
            .output()
            .unwrap();
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{listing}");
        // The kernel's own squashfs driver reads it too (root only: a loop
        // mount).
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&mnt).unwrap();
            let mount = std::process::Command::new("mount")
                .args(["-t", "squashfs", "-o", "loop,ro"])
                .arg(&a)
                .arg(&mnt)
                .output()
                .unwrap();
            assert!(
                mount.status.success(),
                "mount: {}",
                String::from_utf8_lossy(&mount.stderr)
            );
            let hello = std::fs::read(mnt.join("bin/hello"));
            let big = std::fs::read(mnt.join("usr/share/big"));
            let local = std::fs::metadata(mnt.join("var/local"));
            let _ = std::process::Command::new("umount").arg(&mnt).status();
            assert_eq!(hello.unwrap(), b"#!/bin/sh\necho hi\n");
            assert_eq!(big.unwrap(), vec![7u8; 300_000]);
            let local = std::os::unix::fs::MetadataExt::gid(&local.unwrap());
            assert_eq!(local, 50, "the owner's group reaches the kernel");
        }
        for want in [
            "-rwxr-xr-x 0/0                18 2024-01-01 00:00 /usr/bin/hello",
            "lrwxrwxrwx 0/0                 7 2024-01-01 00:00 /bin -> usr/bin",
            "drwxrwsr-x 0/50                3 2024-01-01 00:00 /var/local",
        ] {
            let got = listing.lines().any(|l| {
                l.split_whitespace().collect::<Vec<_>>()
                    == want.split_whitespace().collect::<Vec<_>>()
            });
            assert!(got, "{want:?} not in\n{listing}");
        }
    }
}
