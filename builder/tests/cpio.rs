//! The newc writer read back by GNU cpio.

use std::io::Write;
use std::process::{Command, Stdio};

use builder::cpio::write_newc;
use builder::tree::{Entry, Node, Tree};

#[test]
fn gnu_cpio_lists_what_was_written() {
    let Some(cpio) = crate::util::tool("cpio") else {
        return;
    };
    let mut t = Tree::new();
    t.add_file("bin/busybox", vec![7u8; 1001], 0o755, 1)
        .unwrap();
    t.add_symlink("bin/sh", "busybox", 1).unwrap();
    t.add_symlink("init", "bin/sh", 1).unwrap();
    t.add_file(
        "etc/passwd",
        b"root:x:0:0::/root:/bin/sh\n".to_vec(),
        0o644,
        1,
    )
    .unwrap();
    t.insert(
        "dev/console",
        Entry {
            node: Node::CharDev(5, 1),
            mode: 0o600,
            mtime: 1,
        },
    )
    .unwrap();
    let bytes = write_newc(&t, 1).unwrap();
    let mut child = Command::new(cpio)
        .args(["-t", "-v", "--quiet", "--numeric-uid-gid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // mode links uid gid size/dev … name: keep mode, uid, gid and name.
            let f: Vec<&str> = l.split_whitespace().collect();
            let name = l
                .split(" -> ")
                .next()
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap();
            format!("{} {} {} {name}", f[0], f[2], f[3])
        })
        .collect();
    assert_eq!(
        listing,
        [
            "drwxr-xr-x 0 0 bin",
            "-rwxr-xr-x 0 0 bin/busybox",
            "lrwxrwxrwx 0 0 bin/sh",
            "drwxr-xr-x 0 0 dev",
            "crw------- 0 0 dev/console",
            "drwxr-xr-x 0 0 etc",
            "-rw-r--r-- 0 0 etc/passwd",
            "lrwxrwxrwx 0 0 init",
        ]
    );
}
