//! The initramfs: the tree a node boots into, assembled in memory.
//!
//! Layout (see `images/README.md`): busybox with an applet symlink for each
//! of its applets in `/bin` and `/sbin`; the agent as `/bin/omnode` with
//! `/init` a symlink to it; `omctl` and its tool names, `omboot` for the head
//! role; the chosen kernel modules with `modules.dep`/`modules.alias`;
//! `/etc` basics; `/dev/console` and `/dev/null` as device entries (a cpio
//! can carry them, no root needed); then the recipe's extra files. Every ELF
//! program is checked to be runnable there: static, or its interpreter and
//! libraries are present.

use std::io::Write;
use std::sync::Arc;

use crate::elf;
use crate::recipe::Compression;
use crate::tree::{Entry, Node, Tree, TreeError};

/// Errors from assembling the initramfs.
#[derive(Debug, thiserror::Error)]
pub enum InitramfsError {
    /// A program needs a library the image does not hold.
    #[error("{binary} needs {library}, which is not in the image")]
    MissingLibrary {
        /// The program's path in the image.
        binary: String,
        /// The missing soname or interpreter path.
        library: String,
    },
    /// A program given to the builder is not an ELF file.
    #[error("{what} ({path}) is not an ELF program: {source}")]
    NotElf {
        /// Its role (agent, omctl, omboot).
        what: String,
        /// Where it came from.
        path: String,
        /// The ELF error.
        source: elf::ElfError,
    },
    /// The initramfs packages hold no `/bin/busybox`.
    #[error("no bin/busybox in the initramfs packages (add busybox to packages.initramfs)")]
    NoBusybox,
    /// A path clash while building the tree.
    #[error(transparent)]
    Tree(#[from] TreeError),
    /// Compression failed.
    #[error("compressing the initramfs: {0}")]
    Compress(std::io::Error),
}

/// A program the builder adds (agent, omctl, omboot).
#[derive(Debug, Clone)]
pub struct Program {
    /// Where it was read from (for messages).
    pub source: String,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// Everything the initramfs is made of.
pub struct Parts<'a> {
    /// Files of the initramfs packages (busybox and friends).
    pub packages: &'a Tree,
    /// Kernel release (`6.1.0-NN-amd64`).
    pub kver: &'a str,
    /// Selected module files: path below `lib/modules/<kver>/` → bytes.
    pub modules: Vec<(String, Arc<Vec<u8>>)>,
    /// Index and list files for `lib/modules/<kver>/` (name → contents).
    pub module_indexes: Vec<(String, Vec<u8>)>,
    /// The node agent (`omnode`).
    pub agent: Program,
    /// `omctl`, if available.
    pub omctl: Option<Program>,
    /// `omboot`, if available.
    pub omboot: Option<Program>,
    /// Recipe extra files: (absolute path, contents, mode).
    pub extra: Vec<(String, Vec<u8>, u32)>,
    /// Multiarch tuple (`x86_64-linux-gnu`).
    pub multiarch: &'a str,
    /// Timestamp of generated entries.
    pub epoch: u64,
}

/// The names `omctl` also answers to (openMosix tool names).
pub const OMCTL_TOOLS: &[&str] = &["mosmon", "mtop", "mps", "mosctl", "mosrun"];

/// Applet names from a busybox binary's sorted applet name table.
pub fn busybox_applets(bin: &[u8]) -> Vec<String> {
    let Some(start) = bin.windows(5).position(|w| w == b"[\0[[\0") else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for name in bin[start..].split(|&b| b == 0) {
        let ok = !name.is_empty()
            && name.len() < 32
            && name
                .iter()
                .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"[-_.".contains(&c));
        let Ok(s) = std::str::from_utf8(name) else {
            break;
        };
        if !ok || out.last().is_some_and(|l| l.as_str() >= s) {
            break;
        }
        out.push(s.to_string());
    }
    out
}

/// Assemble the initramfs tree.
pub fn assemble(p: Parts<'_>) -> Result<Tree, InitramfsError> {
    let e = p.epoch;
    let mut t = p.packages.clone();
    for (dir, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("lib", 0o755),
        ("mnt", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("run", 0o755),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("var", 0o755),
    ] {
        t.mkdir_p(dir, mode, e)?;
    }
    t.insert(
        "dev/console",
        Entry {
            node: Node::CharDev(5, 1),
            mode: 0o600,
            mtime: e,
        },
    )?;
    t.insert(
        "dev/null",
        Entry {
            node: Node::CharDev(1, 3),
            mode: 0o666,
            mtime: e,
        },
    )?;

    let busybox = match t.get("bin/busybox") {
        Some(Entry {
            node: Node::File(d),
            ..
        }) => d.clone(),
        _ => return Err(InitramfsError::NoBusybox),
    };
    for applet in busybox_applets(&busybox) {
        if applet == "busybox" {
            continue;
        }
        for (dir, target) in [("bin", "busybox"), ("sbin", "../bin/busybox")] {
            let path = format!("{dir}/{applet}");
            if t.get(&path).is_none() {
                t.add_symlink(&path, target, e)?;
            }
        }
    }

    let mut programs = vec![("agent", "bin/omnode", &p.agent)];
    t.add_file("bin/omnode", p.agent.data.clone(), 0o755, e)?;
    t.add_symlink("init", "bin/omnode", e)?;
    if let Some(omctl) = &p.omctl {
        t.add_file("bin/omctl", omctl.data.clone(), 0o755, e)?;
        for tool in OMCTL_TOOLS {
            t.add_symlink(&format!("bin/{tool}"), "omctl", e)?;
        }
        programs.push(("omctl", "bin/omctl", omctl));
    }
    if let Some(omboot) = &p.omboot {
        t.add_file("bin/omboot", omboot.data.clone(), 0o755, e)?;
        programs.push(("omboot", "bin/omboot", omboot));
    }
    for (what, _, prog) in &programs {
        elf::needs(&prog.data).map_err(|source| InitramfsError::NotElf {
            what: what.to_string(),
            path: prog.source.clone(),
            source,
        })?;
    }

    t.add_file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
        e,
    )?;
    t.add_file("etc/group", b"root:x:0:\n".to_vec(), 0o644, e)?;
    t.add_file(
        "etc/hosts",
        b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n".to_vec(),
        0o644,
        e,
    )?;
    t.add_file(
        "etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec(),
        0o644,
        e,
    )?;
    // The mount table where getmntent(3) users (nfs-ganesha's VFS backend)
    // look for it, as on any Debian system.
    t.add_symlink("etc/mtab", "../proc/self/mounts", e)?;

    let mdir = format!("lib/modules/{}", p.kver);
    t.mkdir_p(&mdir, 0o755, e)?;
    for (path, data) in p.modules {
        t.insert(
            &format!("{mdir}/{path}"),
            Entry {
                node: Node::File(data),
                mode: 0o644,
                mtime: e,
            },
        )?;
    }
    for (name, data) in p.module_indexes {
        t.add_file(&format!("{mdir}/{name}"), data, 0o644, e)?;
    }

    for (path, data, mode) in p.extra {
        t.add_file(&path, data, mode, e)?;
    }
    check_runnable(&t, p.multiarch)?;
    Ok(t)
}

/// Check that every ELF program (a file with an execute bit) and shared
/// library (`*.so*`) in the tree is static or finds its interpreter and
/// libraries in the tree, so leaving files out (`packages.exclude`) cannot
/// break what stays.
pub fn check_runnable(t: &Tree, multiarch: &str) -> Result<(), InitramfsError> {
    let dirs = [
        format!("lib/{multiarch}"),
        format!("usr/lib/{multiarch}"),
        "lib".to_string(),
        "lib64".to_string(),
        "usr/lib".to_string(),
        "usr/lib64".to_string(),
    ];
    for (path, entry) in t.iter() {
        let Node::File(data) = &entry.node else {
            continue;
        };
        let file_name = path.rsplit('/').next().unwrap_or(path);
        let shared_object = file_name.contains(".so");
        if (entry.mode & 0o111 == 0 && !shared_object)
            || !data.starts_with(b"\x7fELF")
            || path.ends_with(".ko")
        {
            continue;
        }
        let Ok(needs) = elf::needs(data) else {
            continue;
        };
        if let Some(interp) = &needs.interpreter {
            if t.resolve(interp).is_none() {
                return Err(InitramfsError::MissingLibrary {
                    binary: format!("/{path}"),
                    library: interp.clone(),
                });
            }
        }
        // The program's own search path first, `$ORIGIN` being its folder.
        let origin = path.rsplit_once('/').map_or("", |(dir, _)| dir);
        let own: Vec<String> = needs
            .runpath
            .iter()
            .map(|d| {
                let d = d
                    .replace("${ORIGIN}", &format!("/{origin}"))
                    .replace("$ORIGIN", &format!("/{origin}"));
                crate::tree::resolve_dots(&d).unwrap_or_default()
            })
            .collect();
        for lib in &needs.libraries {
            if !own
                .iter()
                .chain(&dirs)
                .any(|d| t.resolve(&format!("{d}/{lib}")).is_some())
            {
                return Err(InitramfsError::MissingLibrary {
                    binary: format!("/{path}"),
                    library: lib.clone(),
                });
            }
        }
    }
    Ok(())
}

/// zstd level: 6 is within 5% of level 19's size here (13 vs 11 MB for the
/// node image) at a twentieth of the time, which keeps warm builds short.
const ZSTD_LEVEL: i32 = 6;

/// Compress a cpio archive reproducibly.
pub fn compress(cpio: &[u8], how: Compression) -> Result<Vec<u8>, InitramfsError> {
    match how {
        Compression::Zstd => {
            let mut enc = zstd::stream::Encoder::new(Vec::new(), ZSTD_LEVEL)
                .map_err(InitramfsError::Compress)?;
            // A fixed worker count: zstd's multi-threaded output depends on
            // the job layout, not on timing, so it stays reproducible.
            enc.multithread(2).map_err(InitramfsError::Compress)?;
            enc.include_checksum(true)
                .map_err(InitramfsError::Compress)?;
            enc.set_pledged_src_size(Some(cpio.len() as u64))
                .map_err(InitramfsError::Compress)?;
            enc.write_all(cpio).map_err(InitramfsError::Compress)?;
            enc.finish().map_err(InitramfsError::Compress)
        }
        Compression::Gzip => {
            // GzBuilder writes mtime 0 and no file name: reproducible.
            let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
            enc.write_all(cpio).map_err(InitramfsError::Compress)?;
            enc.finish().map_err(InitramfsError::Compress)
        }
    }
}
