//! What Debian's maintainer scripts would have set up in the system layer,
//! done at build time without running them (running them needs root, or a
//! user namespace, and a shell with dpkg in the tree).
//!
//! - **Alternatives** ([`alternatives`], [`apply_alternatives`]): the
//!   `update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK
//!   NAME PATH]…` lines of each package's `postinst` are read (a line whose
//!   words are not all literal, a `$variable` say, is counted and left), and
//!   for each name the highest priority whose target is in the tree wins,
//!   as `update-alternatives` in automatic mode picks: `LINK` →
//!   `/etc/alternatives/NAME` → `PATH`, and the same for each slave whose
//!   target exists (slaves into the manuals left out go with them).
//!
//! - **Accounts** ([`base_accounts`]): `/etc/passwd` and `/etc/group` from
//!   base-passwd's master files, as its `postinst` makes them on a new
//!   system.
//!
//! - **Package accounts and owners** ([`accounts`]): the system users and
//!   groups packages create (`adduser`, `useradd`, sysusers.d), the owners
//!   and modes their scripts set, and the archives' owners by name.
//!
//! Pure: trees and script texts in, a tree changed.

pub mod accounts;

use std::collections::BTreeMap;

use crate::tree::{Node, Tree, TreeError};

/// One `update-alternatives --install` of a `postinst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The generic link (`/usr/bin/awk`).
    pub link: String,
    /// The name (`awk`).
    pub name: String,
    /// The target (`/usr/bin/mawk`).
    pub path: String,
    /// Its priority; the highest wins.
    pub priority: i64,
    /// Slave links: (link, name, path).
    pub slaves: Vec<(String, String, String)>,
}

/// The alternatives a `postinst` installs, and how many
/// `update-alternatives --install` lines could not be read literally.
pub fn alternatives(postinst: &str) -> (Vec<Alternative>, usize) {
    let joined = postinst.replace("\\\n", " ");
    let mut found = Vec::new();
    let mut unread = 0;
    for line in joined.lines() {
        let line = line.trim();
        if line.starts_with('#') || !line.contains("update-alternatives") {
            continue;
        }
        let Some(words) = shell_words(line) else {
            if line.contains("--install") {
                unread += 1;
            }
            continue;
        };
        let Some(at) = words.iter().position(|w| w == "--install") else {
            continue;
        };
        match parse_install(&words[at + 1..]) {
            Some(alt) => found.push(alt),
            None => unread += 1,
        }
    }
    (found, unread)
}

fn literal(w: &str) -> bool {
    !w.is_empty() && !w.contains(['$', '`', '*', '?'])
}

fn parse_install(words: &[String]) -> Option<Alternative> {
    let [link, name, path, priority, rest @ ..] = words else {
        return None;
    };
    if ![link, name, path].iter().all(|w| literal(w)) {
        return None;
    }
    let priority = priority.parse().ok()?;
    let mut slaves = Vec::new();
    let mut rest = rest;
    while let [flag, l, n, p, more @ ..] = rest {
        if flag != "--slave" {
            break;
        }
        if [l, n, p].iter().all(|w| literal(w)) {
            slaves.push((l.clone(), n.clone(), p.clone()));
        }
        rest = more;
    }
    Some(Alternative {
        link: link.clone(),
        name: name.clone(),
        path: path.clone(),
        priority,
        slaves,
    })
}

/// Splits a shell command line into words (quotes and backslashes), up to
/// the first `;`, `&&`, `||` or `|` outside quotes; `None` if a quote is
/// left open.
fn shell_words(line: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        c => cur.push(c),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => cur.push(chars.next()?),
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(chars.next()?);
            }
            ';' | '&' | '|' => break,
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Some(words)
}

fn rel(path: &str) -> &str {
    path.trim_start_matches('/')
}

/// Whether `path` names something in `tree` (through symlinks).
fn exists(tree: &Tree, path: &str) -> bool {
    tree.resolve(rel(path)).is_some()
}

/// Points `link` at `/etc/alternatives/NAME` and that at `path`. A real
/// file at `link` is left alone (`update-alternatives` refuses to replace
/// one too); false then.
fn point(
    tree: &mut Tree,
    link: &str,
    name: &str,
    path: &str,
    mtime: u64,
) -> Result<bool, TreeError> {
    if matches!(
        tree.get(rel(link)).map(|e| &e.node),
        Some(Node::File(_) | Node::Dir)
    ) {
        return Ok(false);
    }
    let alt = format!("etc/alternatives/{name}");
    tree.add_symlink(&alt, path, mtime)?;
    tree.add_symlink(rel(link), &format!("/{alt}"), mtime)?;
    Ok(true)
}

/// Sets up every alternative of `alts` (in package order) in `tree`, times
/// `mtime`: the chosen `name -> path` lines, sorted.
pub fn apply_alternatives(
    tree: &mut Tree,
    alts: &[Alternative],
    mtime: u64,
) -> Result<Vec<String>, TreeError> {
    let mut best: BTreeMap<&str, &Alternative> = BTreeMap::new();
    for alt in alts.iter().filter(|a| exists(tree, &a.path)) {
        match best.get(alt.name.as_str()) {
            Some(b) if b.priority >= alt.priority => {}
            _ => {
                best.insert(&alt.name, alt);
            }
        }
    }
    let mut chosen = Vec::new();
    for (name, alt) in best {
        if !point(tree, &alt.link, name, &alt.path, mtime)? {
            continue;
        }
        chosen.push(format!("{name} -> {}", alt.path));
        for (link, slave, path) in &alt.slaves {
            if exists(tree, path) {
                point(tree, link, slave, path, mtime)?;
            }
        }
    }
    Ok(chosen)
}

/// base-passwd's master files, and where its `postinst` copies them.
const ACCOUNTS: [(&str, &str); 2] = [
    ("usr/share/base-passwd/passwd.master", "etc/passwd"),
    ("usr/share/base-passwd/group.master", "etc/group"),
];

/// Writes `/etc/passwd` and `/etc/group` from base-passwd's master files
/// when the tree has them and not the targets; the files written.
pub fn base_accounts(tree: &mut Tree, mtime: u64) -> Result<Vec<&'static str>, TreeError> {
    let mut written = Vec::new();
    for (master, target) in ACCOUNTS {
        if tree.get(target).is_some() {
            continue;
        }
        if let Some(data) = tree.file(master) {
            tree.add_file(target, data, 0o644, mtime)?;
            written.push(target);
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const MAWK: &str = r#"#!/bin/sh
set -e
update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \
  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz \
  --slave /usr/bin/nawk nawk /usr/bin/mawk
"#;

    const GAWK: &str = r#"
if [ "$1" = configure ]; then
    update-alternatives --quiet --install "/usr/bin/awk" awk /usr/bin/gawk 10 || true
    update-alternatives --install $link awk $target 20
fi
"#;

    #[test]
    fn accounts_come_from_base_passwd_unless_present() {
        let mut tree = Tree::new();
        let passwd = Arc::new(b"root:*:0:0:root:/root:/bin/sh\n".to_vec());
        tree.add_file(
            "usr/share/base-passwd/passwd.master",
            passwd.clone(),
            0o644,
            1,
        )
        .unwrap();
        tree.add_file("etc/group", Arc::new(b"root:*:0:\n".to_vec()), 0o644, 1)
            .unwrap();
        assert_eq!(base_accounts(&mut tree, 5).unwrap(), vec!["etc/passwd"]);
        assert_eq!(tree.file("etc/passwd").unwrap(), passwd);
        assert_eq!(tree.file("etc/group").unwrap().as_slice(), b"root:*:0:\n");
    }

    #[test]
    fn install_lines_are_read_with_their_slaves_and_variables_are_left() {
        let (mawk, unread) = alternatives(MAWK);
        assert_eq!(unread, 0);
        assert_eq!(
            mawk,
            vec![Alternative {
                link: "/usr/bin/awk".into(),
                name: "awk".into(),
                path: "/usr/bin/mawk".into(),
                priority: 5,
                slaves: vec![
                    (
                        "/usr/share/man/man1/awk.1.gz".into(),
                        "awk.1.gz".into(),
                        "/usr/share/man/man1/mawk.1.gz".into()
                    ),
                    (
                        "/usr/bin/nawk".into(),
                        "nawk".into(),
                        "/usr/bin/mawk".into()
                    ),
                ],
            }]
        );
        let (gawk, unread) = alternatives(GAWK);
        assert_eq!(unread, 1, "the line with variables is counted");
        assert_eq!(gawk.len(), 1);
        assert_eq!(
            (gawk[0].link.as_str(), gawk[0].priority),
            ("/usr/bin/awk", 10)
        );
    }

    #[test]
    fn the_highest_priority_present_wins_and_missing_slaves_are_skipped() {
        let mut tree = Tree::new();
        let exe = Arc::new(b"\x7fELF".to_vec());
        tree.add_file("usr/bin/mawk", exe.clone(), 0o755, 1)
            .unwrap();
        tree.add_file("usr/bin/gawk", exe, 0o755, 1).unwrap();
        let (mut alts, _) = alternatives(MAWK);
        alts.extend(alternatives(GAWK).0);
        // A candidate whose target is not in the tree never wins.
        alts.push(Alternative {
            link: "/usr/bin/awk".into(),
            name: "awk".into(),
            path: "/usr/bin/original-awk".into(),
            priority: 99,
            slaves: vec![],
        });
        let chosen = apply_alternatives(&mut tree, &alts, 7).unwrap();
        assert_eq!(chosen, vec!["awk -> /usr/bin/gawk"]);
        assert_eq!(
            tree.get("usr/bin/awk").unwrap().node,
            Node::Symlink("/etc/alternatives/awk".into())
        );
        assert_eq!(tree.resolve("usr/bin/awk").unwrap().0, "usr/bin/gawk");
        assert!(tree.get("usr/bin/nawk").is_none(), "gawk has no nawk slave");

        // mawk alone: its nawk slave is made, its manual slave is not.
        let mut tree = Tree::new();
        tree.add_file("usr/bin/mawk", Arc::new(vec![1]), 0o755, 1)
            .unwrap();
        apply_alternatives(&mut tree, &alternatives(MAWK).0, 7).unwrap();
        assert_eq!(tree.resolve("usr/bin/nawk").unwrap().0, "usr/bin/mawk");
        assert!(tree.get("usr/share/man/man1/awk.1.gz").is_none());

        // A real file at the link stays.
        let mut tree = Tree::new();
        tree.add_file("usr/bin/mawk", Arc::new(vec![1]), 0o755, 1)
            .unwrap();
        tree.add_file("usr/bin/awk", Arc::new(vec![2]), 0o755, 1)
            .unwrap();
        assert!(apply_alternatives(&mut tree, &alternatives(MAWK).0, 7)
            .unwrap()
            .is_empty());
        assert_eq!(tree.file("usr/bin/awk").unwrap().as_slice(), &[2]);
    }
}
