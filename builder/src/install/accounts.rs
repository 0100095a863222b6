//! The users and groups packages create, and the owners and modes their
//! scripts give files, set up at build time the way the tools would have
//! done it on a new Debian system.
//!
//! Two sources, applied in package order:
//! - **Scripts** ([`requests`]): the `adduser`, `addgroup`, `useradd`,
//!   `groupadd`, `chown`, `chgrp`, `chmod` and `dpkg-statoverride --add`
//!   commands of a package's `preinst` and `postinst`, read word by word
//!   (backslash-joined lines, quotes; anything after `;`, `&&`, `||` or
//!   `|` left). A command with a `$variable` or a backquote in it cannot be
//!   read without running the script: it is counted, never guessed.
//! - **sysusers.d** ([`sysusers`]): the `u`, `g` and `m` lines of the
//!   layer's `usr/lib/sysusers.d/*.conf`, what `systemd-sysusers` makes on
//!   a systemd machine (and what packages call it for in their `postinst`).
//!
//! Numbers are chosen as the tools choose them, deterministically (so two
//! builds give the same layer): `adduser`/`addgroup` take the lowest free
//! system id from 100, `useradd`, `groupadd` and `systemd-sysusers` the
//! highest free one down from 999; a user with a group of its own gets the
//! same number for both when it is free. An account that exists is left as
//! it is, as the scripts' `getent` guards would.
//!
//! Pure: texts in, a [`Tree`] changed.

use std::collections::BTreeMap;

use super::{literal, shell_words};
use crate::tree::{Node, Owner, Tree, TreeError};

/// The first and last system user and group ids (Debian's `adduser.conf`
/// and `login.defs`).
const SYSTEM_IDS: std::ops::RangeInclusive<u32> = 100..=999;

/// `nogroup`, the group of an `adduser --system` user given none.
const NOGROUP: u32 = 65534;

/// Which way a tool looks for a free id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// The lowest free one from 100 (`adduser`).
    Lowest,
    /// The highest free one down from 999 (`useradd`, `systemd-sysusers`).
    Highest,
}

/// The group a new user gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserGroup {
    /// A group of its own name, made if missing.
    Own,
    /// A group by name (or by number, when all digits).
    Named(String),
}

/// One thing a package asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A system group.
    Group {
        /// Its name.
        name: String,
        /// The id asked for, if any.
        gid: Option<u32>,
        /// How a free id is found.
        pick: Pick,
    },
    /// A system user.
    User {
        /// Its name.
        name: String,
        /// The id asked for, if any.
        uid: Option<u32>,
        /// Its primary group.
        group: UserGroup,
        /// The comment field.
        gecos: String,
        /// Its home.
        home: String,
        /// Its shell.
        shell: String,
        /// Supplementary groups.
        groups: Vec<String>,
        /// How a free id is found.
        pick: Pick,
    },
    /// A user joins a group.
    Member {
        /// The user.
        user: String,
        /// The group.
        group: String,
    },
    /// Paths change owner (`user` or `group` may be left as they are).
    Own {
        /// The new user, if it changes.
        user: Option<String>,
        /// The new group, if it changes.
        group: Option<String>,
        /// Absolute paths.
        paths: Vec<String>,
        /// Everything below them too.
        recursive: bool,
    },
    /// Paths get a mode.
    Mode {
        /// The new mode, or how the old one changes.
        mode: ModeChange,
        /// Absolute paths.
        paths: Vec<String>,
        /// Everything below them too.
        recursive: bool,
    },
}

/// A `chmod` mode: octal, or symbolic clauses (`+x`, `u+s`, `go-w,a+r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeChange {
    /// These permission bits.
    Set(u32),
    /// Clauses applied to the old mode, checked by [`ModeChange::parse`].
    Symbolic(String),
}

/// The bits a class of users has: read, write, execute, and its special
/// bit (setuid, setgid, sticky).
const CLASSES: [(char, [u32; 4]); 3] = [
    ('u', [0o400, 0o200, 0o100, 0o4000]),
    ('g', [0o040, 0o020, 0o010, 0o2000]),
    ('o', [0o004, 0o002, 0o001, 0o1000]),
];

/// The umask dpkg runs maintainer scripts with: a clause without `u`, `g`,
/// `o` or `a` leaves these bits alone, as chmod does.
const UMASK: u32 = 0o022;

impl ModeChange {
    /// An octal mode up to `7777`, or symbolic clauses chmod takes (copying
    /// another class's bits, `g=u`, is not read).
    pub fn parse(text: &str) -> Option<Self> {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            return u32::from_str_radix(text, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .map(ModeChange::Set);
        }
        let valid = text.split(',').all(|clause| {
            let ops = clause.trim_start_matches(['u', 'g', 'o', 'a']);
            ops.starts_with(['+', '-', '=']) && ops.chars().all(|c| "+-=rwxXst".contains(c))
        });
        valid.then(|| ModeChange::Symbolic(text.to_string()))
    }

    /// The mode `old` becomes (`dir`: whether the path is a directory, for
    /// `X`).
    pub fn apply(&self, old: u32, dir: bool) -> u32 {
        let clauses = match self {
            ModeChange::Set(mode) => return *mode,
            ModeChange::Symbolic(text) => text.split(','),
        };
        let mut mode = old & 0o7777;
        for clause in clauses {
            let who: String = clause
                .chars()
                .take_while(|c| matches!(c, 'u' | 'g' | 'o' | 'a'))
                .collect();
            let classes: Vec<&[u32; 4]> = CLASSES
                .iter()
                .filter(|(c, _)| who.is_empty() || who.contains('a') || who.contains(*c))
                .map(|(_, bits)| bits)
                .collect();
            let keep = if who.is_empty() { !UMASK } else { !0 };
            let mut rest = &clause[who.len()..];
            while let Some(op) = rest.chars().next() {
                let perms: String = rest[1..]
                    .chars()
                    .take_while(|c| !matches!(c, '+' | '-' | '='))
                    .collect();
                rest = &rest[1 + perms.len()..];
                let exec =
                    perms.contains('x') || (perms.contains('X') && (dir || old & 0o111 != 0));
                let mut bits = 0;
                for b in &classes {
                    bits |= if perms.contains('r') { b[0] } else { 0 };
                    bits |= if perms.contains('w') { b[1] } else { 0 };
                    bits |= if exec { b[2] } else { 0 };
                    // s is setuid and setgid; t is the sticky bit.
                    let special = if b[3] == 0o1000 { 't' } else { 's' };
                    bits |= if perms.contains(special) { b[3] } else { 0 };
                }
                let bits = bits & (keep | 0o7000);
                match op {
                    '+' => mode |= bits,
                    '-' => mode &= !bits,
                    _ => {
                        let all: u32 = classes.iter().map(|b| b[0] | b[1] | b[2] | b[3]).sum();
                        mode = (mode & !(all & (keep | 0o7000))) | bits;
                    }
                }
            }
        }
        mode
    }
}

/// The commands read, and the ones left.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Found {
    /// What the commands ask for, in script order.
    pub requests: Vec<Request>,
    /// Commands that could not be read literally.
    pub unread: Vec<String>,
}

/// The command a line runs, if it is one of ours: its name and its words
/// after the name (redirections and a trailing comment dropped). A
/// wrapper before it (`in_sysroot adduser …`) is allowed.
fn command(words: &[String]) -> Option<(&'static str, Vec<String>)> {
    const NAMES: [&str; 8] = [
        "adduser",
        "addgroup",
        "useradd",
        "groupadd",
        "chown",
        "chgrp",
        "chmod",
        "dpkg-statoverride",
    ];
    let (at, name) = words.iter().enumerate().find_map(|(i, w)| {
        let base = w.rsplit('/').next().unwrap_or(w);
        NAMES.iter().find(|n| **n == base).map(|n| (i, *n))
    })?;
    let args = words[at + 1..]
        .iter()
        .take_while(|w| !w.starts_with('#'))
        .filter(|w| {
            let w = w.trim_start_matches(|c: char| c.is_ascii_digit());
            !(w.starts_with('>') || w.starts_with('<'))
        })
        .cloned()
        .collect();
    Some((name, args))
}

/// Options (`--name value`, `--name=value`, `-x value`) and the other
/// words; `valued` lists the options that take a value.
fn options(args: &[String], valued: &[&str]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut opts = BTreeMap::new();
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some((k, v)) = a.split_once('=').filter(|_| a.starts_with("--")) {
            opts.insert(k.to_string(), v.to_string());
        } else if a.starts_with('-') && a.len() > 1 {
            let value = if valued.contains(&a.as_str()) {
                it.next().cloned().unwrap_or_default()
            } else {
                String::new()
            };
            opts.insert(a.clone(), value);
        } else {
            rest.push(a.clone());
        }
    }
    (opts, rest)
}

fn id(text: Option<&String>) -> Option<u32> {
    text.and_then(|t| t.parse().ok())
}

/// `adduser` and `addgroup` (Debian's adduser 3.13x).
fn adduser(name: &str, args: &[String]) -> Option<Vec<Request>> {
    let (o, rest) = options(
        args,
        &[
            "--home",
            "--shell",
            "--gecos",
            "--comment",
            "--uid",
            "--gid",
            "--ingroup",
            "--conf",
            "--firstuid",
            "--lastuid",
            "--firstgid",
            "--lastgid",
            "--key",
        ],
    );
    let system = o.contains_key("--system");
    let group_only = name == "addgroup" || (o.contains_key("--group") && !system);
    match (group_only, rest.as_slice()) {
        (_, [user, group]) => Some(vec![Request::Member {
            user: user.clone(),
            group: group.clone(),
        }]),
        (true, [group]) => Some(vec![Request::Group {
            name: group.clone(),
            gid: id(o.get("--gid")),
            pick: Pick::Lowest,
        }]),
        (false, [user]) if system => {
            let group = if o.contains_key("--group") {
                UserGroup::Own
            } else if let Some(g) = o.get("--ingroup").or(o.get("--gid")) {
                UserGroup::Named(g.clone())
            } else {
                UserGroup::Named(NOGROUP.to_string())
            };
            Some(vec![Request::User {
                name: user.clone(),
                uid: id(o.get("--uid")),
                group,
                gecos: o
                    .get("--gecos")
                    .or(o.get("--comment"))
                    .cloned()
                    .unwrap_or_default(),
                home: o
                    .get("--home")
                    .cloned()
                    .unwrap_or_else(|| "/nonexistent".into()),
                shell: o
                    .get("--shell")
                    .cloned()
                    .unwrap_or_else(|| "/usr/sbin/nologin".into()),
                groups: Vec::new(),
                pick: Pick::Lowest,
            }])
        }
        // An ordinary user would be asked for a password: not a thing
        // scripts do.
        _ => None,
    }
}

/// `useradd` and `groupadd` (shadow's; Debian's `login.defs` makes a group
/// per user).
fn useradd(name: &str, args: &[String]) -> Option<Vec<Request>> {
    let short_long = [
        ("-c", "--comment"),
        ("-d", "--home-dir"),
        ("-g", "--gid"),
        ("-G", "--groups"),
        ("-s", "--shell"),
        ("-u", "--uid"),
        ("-r", "--system"),
        ("-N", "--no-user-group"),
    ];
    let (mut o, rest) = options(
        args,
        &[
            "-c",
            "--comment",
            "-d",
            "--home-dir",
            "-g",
            "--gid",
            "-G",
            "--groups",
            "-s",
            "--shell",
            "-u",
            "--uid",
            "-k",
            "--skel",
            "-K",
            "--key",
            "-e",
            "--expiredate",
            "-f",
            "--inactive",
            "-p",
            "--password",
            "-b",
            "--base-dir",
            "-R",
            "--root",
            "-P",
            "--prefix",
            "-Z",
            "--selinux-user",
        ],
    );
    for (short, long) in short_long {
        if let Some(v) = o.remove(short) {
            o.insert(long.to_string(), v);
        }
    }
    let [account] = rest.as_slice() else {
        return None;
    };
    let name_ = account.clone();
    // A group with a fixed number is the same whether system or not; an
    // ordinary user or a group numbered from 1000 is not a package's.
    let fixed_group = name == "groupadd" && o.contains_key("--gid");
    if !(o.contains_key("--system") || fixed_group) {
        return None;
    }
    if name == "groupadd" {
        return Some(vec![Request::Group {
            name: name_,
            gid: id(o.get("--gid")),
            pick: Pick::Highest,
        }]);
    }
    let group = match o.get("--gid") {
        Some(g) => UserGroup::Named(g.clone()),
        None if o.contains_key("--no-user-group") => UserGroup::Named("100".into()),
        None => UserGroup::Own,
    };
    Some(vec![Request::User {
        home: o
            .get("--home-dir")
            .cloned()
            .unwrap_or_else(|| format!("/home/{name_}")),
        name: name_,
        uid: id(o.get("--uid")),
        group,
        gecos: o.get("--comment").cloned().unwrap_or_default(),
        shell: o
            .get("--shell")
            .cloned()
            .unwrap_or_else(|| "/bin/sh".into()),
        groups: o
            .get("--groups")
            .map(|g| g.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        pick: Pick::Highest,
    }])
}

/// `chown`, `chgrp`, `chmod` and `dpkg-statoverride --add`.
fn ownership(name: &str, args: &[String]) -> Option<Vec<Request>> {
    const FLAGS: [&str; 9] = [
        "-R",
        "--recursive",
        "-f",
        "--silent",
        "--quiet",
        "-v",
        "--verbose",
        "-c",
        "--changes",
    ];
    let recursive = args.iter().any(|a| a == "-R" || a == "--recursive");
    // A mode may start with `-` (`chmod -x`): only the flags are options.
    let words: Vec<&String> = args
        .iter()
        .filter(|a| !FLAGS.contains(&a.as_str()) && !a.starts_with("--"))
        .collect();
    let absolute = |paths: &[&String]| -> Option<Vec<String>> {
        (!paths.is_empty() && paths.iter().all(|p| p.starts_with('/')))
            .then(|| paths.iter().map(|p| p.to_string()).collect())
    };
    let named = |s: &str| (!s.is_empty()).then(|| s.to_string());
    match (name, words.as_slice()) {
        ("chown", [spec, paths @ ..]) => {
            let (user, group) = match spec.split_once([':', '.']) {
                Some((u, g)) => (named(u), named(g)),
                None => (named(spec), None),
            };
            Some(vec![Request::Own {
                user,
                group,
                paths: absolute(paths)?,
                recursive,
            }])
        }
        ("chgrp", [group, paths @ ..]) => Some(vec![Request::Own {
            user: None,
            group: named(group),
            paths: absolute(paths)?,
            recursive,
        }]),
        ("chmod", [mode, paths @ ..]) => Some(vec![Request::Mode {
            mode: ModeChange::parse(mode)?,
            paths: absolute(paths)?,
            recursive,
        }]),
        ("dpkg-statoverride", [user, group, mode, path]) if args.iter().any(|a| a == "--add") => {
            let paths = absolute(&[path])?;
            Some(vec![
                Request::Own {
                    user: named(user),
                    group: named(group),
                    paths: paths.clone(),
                    recursive: false,
                },
                Request::Mode {
                    mode: ModeChange::Set(
                        u32::from_str_radix(mode, 8).ok().filter(|m| *m <= 0o7777)?,
                    ),
                    paths,
                    recursive: false,
                },
            ])
        }
        // `dpkg-statoverride --list` and the like change nothing.
        ("dpkg-statoverride", _) => Some(Vec::new()),
        _ => None,
    }
}

/// What a maintainer script's account and ownership commands ask for.
pub fn requests(script: &str) -> Found {
    let joined = script.replace("\\\n", " ");
    let mut found = Found::default();
    for line in joined.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some(words) = shell_words(line) else {
            continue;
        };
        let Some((name, args)) = command(&words) else {
            continue;
        };
        let read = if args.iter().all(|a| literal(a)) {
            match name {
                "adduser" | "addgroup" => adduser(name, &args),
                "useradd" | "groupadd" => useradd(name, &args),
                _ => ownership(name, &args),
            }
        } else {
            None
        };
        match read {
            Some(r) => found.requests.extend(r),
            None => found.unread.push(format!("{name} {}", args.join(" "))),
        }
    }
    found
}

/// The `u`, `g` and `m` lines of a `sysusers.d` file (`r` ranges and
/// paths as ids are taken as "any free id").
pub fn sysusers(conf: &str) -> Found {
    let mut found = Found::default();
    for line in conf.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(words) = shell_words(line) else {
            found.unread.push(line.to_string());
            continue;
        };
        let field = |i: usize| words.get(i).filter(|w| w.as_str() != "-").cloned();
        if !matches!(words[0].as_str(), "u" | "u!" | "g" | "m") {
            continue;
        }
        let (Some(kind), Some(name)) = (field(0), field(1)) else {
            found.unread.push(line.to_string());
            continue;
        };
        let ids = field(2).unwrap_or_default();
        match kind.as_str() {
            "g" => found.requests.push(Request::Group {
                name,
                gid: ids.parse().ok(),
                pick: Pick::Highest,
            }),
            "u" | "u!" => {
                let (uid, group) = match ids.split_once(':') {
                    Some((u, g)) => (u.parse().ok(), UserGroup::Named(g.to_string())),
                    None => (ids.parse().ok(), UserGroup::Own),
                };
                found.requests.push(Request::User {
                    name,
                    uid,
                    group,
                    gecos: field(3).unwrap_or_default(),
                    home: field(4).unwrap_or_else(|| "/".into()),
                    shell: field(5).unwrap_or_else(|| "/usr/sbin/nologin".into()),
                    groups: Vec::new(),
                    pick: Pick::Highest,
                });
            }
            "m" => match field(2) {
                Some(group) => found.requests.push(Request::Member { user: name, group }),
                None => found.unread.push(line.to_string()),
            },
            _ => {}
        }
    }
    found
}

/// One line of `/etc/passwd` or `/etc/group`, split at its colons.
#[derive(Debug, Clone)]
struct Line(Vec<String>);

impl Line {
    fn parse(text: &str, fields: usize) -> Vec<Line> {
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let mut f: Vec<String> = l.split(':').map(str::to_string).collect();
                f.resize(fields.max(f.len()), String::new());
                Line(f)
            })
            .collect()
    }

    fn name(&self) -> &str {
        &self.0[0]
    }

    fn id(&self) -> Option<u32> {
        self.0[2].parse().ok()
    }
}

fn render(lines: &[Line]) -> Vec<u8> {
    lines
        .iter()
        .map(|l| l.0.join(":") + "\n")
        .collect::<String>()
        .into_bytes()
}

/// The layer's account tables while requests are applied.
struct Tables {
    passwd: Vec<Line>,
    group: Vec<Line>,
    /// Shadow lines added (`/etc/shadow` and `/etc/gshadow`, if the layer
    /// has them).
    shadow: Vec<String>,
    gshadow: Vec<String>,
}

impl Tables {
    fn user(&self, name: &str) -> Option<&Line> {
        self.passwd.iter().find(|l| l.name() == name)
    }

    fn group(&self, name: &str) -> Option<&Line> {
        self.group.iter().find(|l| l.name() == name)
    }

    /// A group's id by name, or the number itself.
    fn gid(&self, group: &str) -> Option<u32> {
        group
            .parse()
            .ok()
            .or_else(|| self.group(group).and_then(Line::id))
    }

    fn uid(&self, user: &str) -> Option<u32> {
        user.parse()
            .ok()
            .or_else(|| self.user(user).and_then(Line::id))
    }

    fn free(lines: &[Line], id: u32) -> bool {
        lines.iter().all(|l| l.id() != Some(id))
    }

    /// `want` if free, else a free system id picked `pick`'s way; for a
    /// user with its own group, one free in both tables.
    fn pick(&self, want: Option<u32>, pick: Pick, users: bool, groups: bool) -> Option<u32> {
        let ok = |id: u32| {
            (!users || Self::free(&self.passwd, id)) && (!groups || Self::free(&self.group, id))
        };
        if let Some(id) = want.filter(|id| ok(*id)) {
            return Some(id);
        }
        match pick {
            Pick::Lowest => SYSTEM_IDS.into_iter().find(|id| ok(*id)),
            Pick::Highest => SYSTEM_IDS.rev().find(|id| ok(*id)),
        }
    }

    fn add_group(&mut self, name: &str, gid: u32) {
        self.group.push(Line(vec![
            name.into(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]));
        self.gshadow.push(format!("{name}:!::"));
    }

    /// Applies one account request: what it made (none for an account
    /// that exists, or a request on paths), or why it could not.
    fn apply(&mut self, request: &Request, days: u64) -> Result<Option<String>, String> {
        match request {
            Request::Group { name, gid, pick } => {
                if self.group(name).is_some() {
                    return Ok(None);
                }
                let gid = self
                    .pick(*gid, *pick, false, true)
                    .ok_or("no free system group id")?;
                self.add_group(name, gid);
                Ok(Some(format!("group {name} ({gid})")))
            }
            Request::User {
                name,
                uid,
                group,
                gecos,
                home,
                shell,
                groups,
                pick,
            } => {
                if self.user(name).is_some() {
                    return Ok(None);
                }
                let gid = match group {
                    UserGroup::Named(g) => self
                        .gid(g)
                        .ok_or_else(|| format!("user {name}: no group {g}"))?,
                    UserGroup::Own => match self.group(name).and_then(Line::id) {
                        Some(gid) => gid,
                        None => {
                            let same = self.pick(*uid, *pick, true, true);
                            let gid = same
                                .or_else(|| self.pick(None, *pick, false, true))
                                .ok_or("no free system group id")?;
                            self.add_group(name, gid);
                            gid
                        }
                    },
                };
                let want = uid.or((*group == UserGroup::Own).then_some(gid));
                let uid = self
                    .pick(want, *pick, true, false)
                    .ok_or("no free system user id")?;
                self.passwd.push(Line(vec![
                    name.clone(),
                    "x".into(),
                    uid.to_string(),
                    gid.to_string(),
                    gecos.clone(),
                    home.clone(),
                    shell.clone(),
                ]));
                self.shadow.push(format!("{name}:!*:{days}::::::"));
                for g in groups {
                    self.join(name, g)?;
                }
                Ok(Some(format!("user {name} ({uid}:{gid})")))
            }
            Request::Member { user, group } => {
                self.join(user, group)?;
                Ok(Some(format!("{user} in group {group}")))
            }
            Request::Own { .. } | Request::Mode { .. } => Ok(None),
        }
    }

    fn join(&mut self, user: &str, group: &str) -> Result<(), String> {
        if self.user(user).is_none() {
            return Err(format!("no user {user} to put in group {group}"));
        }
        let line = self
            .group
            .iter_mut()
            .find(|l| l.name() == group)
            .ok_or_else(|| format!("no group {group} for {user}"))?;
        let members = &mut line.0[3];
        if !members.split(',').any(|m| m == user) {
            if !members.is_empty() {
                members.push(',');
            }
            members.push_str(user);
        }
        Ok(())
    }
}

/// What [`apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Accounts made and memberships added (`user uuidd (100:100)`).
    pub made: Vec<String>,
    /// Paths given an owner or a mode.
    pub changed: usize,
    /// Requests that could not be carried out, and why.
    pub failed: Vec<String>,
}

/// The paths `paths` (absolute) and, if `recursive`, what is below them,
/// that `tree` holds.
fn targets(tree: &Tree, paths: &[String], recursive: bool) -> Vec<String> {
    let mut out = Vec::new();
    for p in paths {
        let rel = p.trim_start_matches('/').trim_end_matches('/');
        if tree.get(rel).is_none() {
            continue;
        }
        out.push(rel.to_string());
        if recursive {
            out.extend(tree.under(rel).map(|(k, _)| k.to_string()));
        }
    }
    out
}

/// Carries out `requests` (in order) on `tree`'s `/etc/passwd` and
/// `/etc/group` (and `/etc/shadow` and `/etc/gshadow` where the layer has
/// them, new accounts locked), then the ownership requests; every path a
/// package's archive gave to a named owner gets that name's number from
/// the finished tables, as dpkg does. Written files are stamped `mtime`.
pub fn apply(tree: &mut Tree, requests: &[Request], mtime: u64) -> Result<Report, TreeError> {
    let read = |tree: &Tree, path: &str| {
        tree.file(path)
            .map(|d| String::from_utf8_lossy(&d).into_owned())
    };
    let mut t = Tables {
        passwd: Line::parse(&read(tree, "etc/passwd").unwrap_or_default(), 7),
        group: Line::parse(&read(tree, "etc/group").unwrap_or_default(), 4),
        shadow: Vec::new(),
        gshadow: Vec::new(),
    };
    let days = mtime / 86_400;
    let mut report = Report::default();
    for r in requests {
        match t.apply(r, days) {
            Ok(None) => {}
            Ok(Some(done)) => report.made.push(done),
            Err(why) => report.failed.push(why),
        }
    }
    if !report.made.is_empty() {
        tree.add_file("etc/passwd", render(&t.passwd), 0o644, mtime)?;
        tree.add_file("etc/group", render(&t.group), 0o644, mtime)?;
        for (path, added, mode) in [
            ("etc/shadow", &t.shadow, 0o640),
            ("etc/gshadow", &t.gshadow, 0o640),
        ] {
            if let Some(old) = read(tree, path) {
                let text = old + &added.iter().map(|l| format!("{l}\n")).collect::<String>();
                tree.add_file(path, text.into_bytes(), mode, mtime)?;
                let group = if t.group("shadow").is_some() {
                    "shadow"
                } else {
                    "root"
                };
                tree.set_owner(path, owner(&t, "root", group));
            }
        }
    }
    for r in requests {
        match r {
            Request::Own {
                user,
                group,
                paths,
                recursive,
            } => {
                for path in targets(tree, paths, *recursive) {
                    let old = tree.owner(&path).cloned().unwrap_or(Owner {
                        user: "root".into(),
                        uid: 0,
                        group: "root".into(),
                        gid: 0,
                    });
                    let user = user.as_deref().unwrap_or(&old.user);
                    let group = group.as_deref().unwrap_or(&old.group);
                    if t.uid(user).is_none() || t.gid(group).is_none() {
                        report
                            .failed
                            .push(format!("chown {user}:{group} /{path}: no such account"));
                        continue;
                    }
                    tree.set_owner(&path, owner(&t, user, group));
                    report.changed += 1;
                }
            }
            Request::Mode {
                mode,
                paths,
                recursive,
            } => {
                for path in targets(tree, paths, *recursive) {
                    let Some(entry) = tree.get(&path) else {
                        continue;
                    };
                    if matches!(entry.node, Node::Symlink(_)) {
                        continue;
                    }
                    let new = mode.apply(entry.mode, entry.node == Node::Dir);
                    tree.set_mode(&path, new);
                    report.changed += 1;
                }
            }
            _ => {}
        }
    }
    // The archives' owners, by name where the tables know it.
    let owned: Vec<(String, Owner)> = tree
        .owners()
        .map(|(p, o)| (p.to_string(), o.clone()))
        .collect();
    for (path, o) in owned {
        let uid = t.uid(&o.user).unwrap_or(o.uid);
        let gid = t.gid(&o.group).unwrap_or(o.gid);
        tree.set_owner(&path, Owner { uid, gid, ..o });
    }
    Ok(report)
}

/// `user:group` with the tables' numbers.
fn owner(t: &Tables, user: &str, group: &str) -> Owner {
    Owner {
        user: user.to_string(),
        uid: t.uid(user).unwrap_or(0),
        group: group.to_string(),
        gid: t.gid(group).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Excerpts of bookworm's scripts, as they are written.
    const UUID_RUNTIME: &str = "#!/bin/sh\nset -e\n\
        if ! getent group uuidd >/dev/null; then\n\
        \taddgroup --system uuidd\nfi\n\
        if ! getent passwd uuidd >/dev/null; then\n\
        \tadduser --system --quiet --ingroup uuidd \\\n\
        \t\t--home /run/uuidd --no-create-home \\\n\t\tuuidd\nfi\n\
        chown uuidd:uuidd /var/lib/libuuid\nchmod 2775 /var/lib/libuuid\n";
    const CHRONY: &str = "        adduser --force-badname \\\n\
        \x20               --system \\\n                --group \\\n\
        \x20               --quiet \\\n                --gecos \"Chrony daemon\" \\\n\
        \x20               --home /var/lib/chrony \\\n\
        \x20               --no-create-home _chrony\n";
    const DNSMASQ: &str = "  if [ -z \"`id -u dnsmasq 2> /dev/null`\" ]; then\n\
        \x20   useradd --system \\\n            --gid nogroup \\\n\
        \x20           --comment dnsmasq \\\n\
        \x20           --home-dir /var/lib/misc --no-create-home \\\n\
        \x20           --shell /usr/sbin/nologin \\\n            dnsmasq\n  fi\n";
    const AVAHI: &str = "    adduser --disabled-password  --quiet --system \\\n\
        \x20     --home /run/avahi-daemon --no-create-home \\\n\
        \x20     --gecos \"Avahi mDNS daemon\" --group avahi\n\
        \x20   addgroup --quiet --system netdev || true\n\
        \x20   adduser --quiet avahi netdev >/dev/null 2>&1\n\
        \x20   adduser --system --home $HOME_DIR somebody\n\
        \x20   groupadd -g 42 shadow\n    useradd -m someone\n";

    fn base() -> Tree {
        let mut tree = Tree::new();
        tree.add_file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_vec(),
            0o644,
            1,
        )
        .unwrap();
        tree.add_file(
            "etc/group",
            b"root:x:0:\nstaff:x:50:\nusers:x:100:\nnogroup:x:65534:\n".to_vec(),
            0o644,
            1,
        )
        .unwrap();
        tree
    }

    fn text(tree: &Tree, path: &str) -> String {
        String::from_utf8(tree.file(path).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn scripts_are_read_as_the_tools_would_run_them() {
        let found = requests(UUID_RUNTIME);
        assert!(found.unread.is_empty(), "{:?}", found.unread);
        assert_eq!(found.requests.len(), 4);
        assert_eq!(
            found.requests[0],
            Request::Group {
                name: "uuidd".into(),
                gid: None,
                pick: Pick::Lowest
            }
        );
        let Request::User {
            ref group,
            ref home,
            ref shell,
            ..
        } = found.requests[1]
        else {
            panic!("{:?}", found.requests[1]);
        };
        assert_eq!(
            (group, home.as_str(), shell.as_str()),
            (
                &UserGroup::Named("uuidd".into()),
                "/run/uuidd",
                "/usr/sbin/nologin"
            )
        );
        let Request::User {
            ref gecos,
            ref group,
            ..
        } = requests(CHRONY).requests[0]
        else {
            panic!()
        };
        assert_eq!((gecos.as_str(), group), ("Chrony daemon", &UserGroup::Own));
        let dnsmasq = requests(DNSMASQ);
        assert_eq!(dnsmasq.requests.len(), 1, "`id` in a test is no command");
        let Request::User {
            ref group, pick, ..
        } = dnsmasq.requests[0]
        else {
            panic!()
        };
        assert_eq!(
            (group, pick),
            (&UserGroup::Named("nogroup".into()), Pick::Highest)
        );
        let avahi = requests(AVAHI);
        assert_eq!(avahi.requests.len(), 4);
        assert_eq!(
            avahi.requests[3],
            Request::Group {
                name: "shadow".into(),
                gid: Some(42),
                pick: Pick::Highest
            }
        );
        assert_eq!(
            avahi.requests[2],
            Request::Member {
                user: "avahi".into(),
                group: "netdev".into()
            }
        );
        assert_eq!(
            avahi.unread,
            [
                "adduser --system --home $HOME_DIR somebody",
                "useradd -m someone"
            ]
        );
    }

    #[test]
    fn modes_change_as_chmod_changes_them() {
        let m =
            |text: &str, old: u32, dir: bool| ModeChange::parse(text).map(|c| c.apply(old, dir));
        assert_eq!(m("2775", 0o644, true), Some(0o2775));
        assert_eq!(m("+x", 0o644, false), Some(0o755));
        assert_eq!(
            m("+w", 0o444, false),
            Some(0o644),
            "the umask keeps g and o"
        );
        assert_eq!(m("a+w", 0o444, false), Some(0o666));
        assert_eq!(m("u+s", 0o755, false), Some(0o4755));
        assert_eq!(m("g+s,o-rwx", 0o775, true), Some(0o2770));
        assert_eq!(m("+t", 0o777, true), Some(0o1777));
        assert_eq!(m("go=rX", 0o700, true), Some(0o755));
        assert_eq!(m("go=rX", 0o600, false), Some(0o644), "X: no x anywhere");
        assert_eq!(m("-x", 0o755, false), Some(0o644));
        assert_eq!(m("u=rw,g=r,o=", 0o777, false), Some(0o640));
        for bad in ["g=u", "u+q", "8", "17777", "u", ""] {
            assert_eq!(ModeChange::parse(bad), None, "{bad}");
        }
        let found = requests("chmod +x /etc/init.d/uuidd\nchmod -R g-w /srv/x\n");
        assert!(found.unread.is_empty(), "{:?}", found.unread);
        assert_eq!(
            found.requests[1],
            Request::Mode {
                mode: ModeChange::Symbolic("g-w".into()),
                paths: vec!["/srv/x".into()],
                recursive: true
            }
        );
    }

    #[test]
    fn sysusers_lines_make_users_groups_and_members() {
        let found = sysusers(
            "# comment\nu systemd-timesync - \"systemd Time Synchronization\"\n\
             g render 990\nu polkitd 123:render \"polkit\" /nonexistent\n\
             m polkitd staff\nr - 500-900\n",
        );
        assert!(found.unread.is_empty());
        let mut tree = base();
        let report = apply(&mut tree, &found.requests, 86_400 * 3).unwrap();
        assert!(report.failed.is_empty(), "{report:?}");
        let passwd = text(&tree, "etc/passwd");
        assert!(
            passwd.contains(
                "systemd-timesync:x:999:999:systemd Time Synchronization:/:/usr/sbin/nologin\n"
            ),
            "{passwd}"
        );
        assert!(passwd.contains("polkitd:x:123:990:polkit:/nonexistent:/usr/sbin/nologin\n"));
        let group = text(&tree, "etc/group");
        assert!(group.contains("systemd-timesync:x:999:\n"), "{group}");
        assert!(group.contains("render:x:990:\n"));
        assert!(group.contains("staff:x:50:polkitd\n"));
    }

    #[test]
    fn accounts_get_free_ids_owners_and_modes_follow() {
        let mut tree = base();
        tree.mkdir_p("var/lib/libuuid", 0o755, 1).unwrap();
        tree.add_file("var/lib/libuuid/clock.txt", vec![1], 0o644, 1)
            .unwrap();
        tree.mkdir_p("var/local", 0o2775, 1).unwrap();
        tree.set_owner(
            "var/local",
            Owner {
                user: "root".into(),
                uid: 0,
                group: "staff".into(),
                gid: 4242,
            },
        );
        tree.add_file(
            "etc/shadow",
            b"root:*:19000:0:99999:7:::\n".to_vec(),
            0o640,
            1,
        )
        .unwrap();
        let mut all = requests(UUID_RUNTIME).requests;
        all.extend(requests(CHRONY).requests);
        all.extend(requests(DNSMASQ).requests);
        all.extend(requests(AVAHI).requests);
        // Asked again (a second package's guard): nothing changes.
        all.extend(requests(UUID_RUNTIME).requests);
        all.push(Request::Own {
            user: Some("nobody-here".into()),
            group: None,
            paths: vec!["/var/lib/libuuid".into()],
            recursive: false,
        });
        let report = apply(&mut tree, &all, 86_400 * 7).unwrap();
        assert_eq!(
            report.made,
            [
                "group uuidd (101)",
                "user uuidd (100:101)",
                "user _chrony (102:102)",
                "user dnsmasq (999:65534)",
                "user avahi (103:103)",
                "group netdev (104)",
                "avahi in group netdev",
                "group shadow (42)",
            ],
            "users is gid 100, so uuidd's group takes 101"
        );
        assert_eq!(
            report.failed,
            ["chown nobody-here:uuidd /var/lib/libuuid: no such account"]
        );
        let libuuid = tree.get("var/lib/libuuid").unwrap();
        assert_eq!(libuuid.mode, 0o2775);
        assert_eq!(
            tree.owner("var/lib/libuuid").map(|o| (o.uid, o.gid)),
            Some((100, 101))
        );
        assert_eq!(
            tree.owner("var/lib/libuuid/clock.txt"),
            None,
            "not recursive"
        );
        assert_eq!(
            tree.owner("var/local").map(|o| o.gid),
            Some(50),
            "the archive's group by its name, not its number"
        );
        let shadow = text(&tree, "etc/shadow");
        assert!(shadow.ends_with("avahi:!*:7::::::\n"), "{shadow}");
        assert_eq!(
            tree.owner("etc/shadow").map(|o| o.gid),
            Some(42),
            "root:shadow"
        );
        assert!(
            tree.get("etc/gshadow").is_none(),
            "only where the layer has one"
        );
    }
}
