//! Kernel module selection: the recipe's module sets and globs, closed over
//! each module's `depends=` (read from its `.modinfo` ELF section), and the
//! kmod text indexes `modules.dep` and `modules.alias` for the chosen ones.
//! Pure: module bytes in, a selection and index texts out. The index
//! formats and [`module_name`] are the contract [`contracts::modules`],
//! shared with `omnode init`, which reads them.
//!
//! Patterns with a `/` match a module's path below `lib/modules/<kver>/`
//! (`kernel/drivers/net/ethernet/**`); patterns without one match module
//! names (`e1000*`), with `-` and `_` treated alike as the kernel does.
//! `*` stays within a path component, `**` crosses them, `?` is one char.

use std::collections::{BTreeMap, BTreeSet};

pub use contracts::modules::{module_name, parse_builtin};
use contracts::modules::{AliasLine, DepLine};

use crate::elf;

/// The named module sets a recipe can pick.
pub const SETS: &[(&str, &[&str])] = &[
    (
        "network",
        &[
            "kernel/drivers/net/ethernet/**",
            "kernel/drivers/net/phy/**",
            "kernel/drivers/net/mdio/**",
            "kernel/drivers/net/mii.ko",
            "kernel/drivers/net/vmxnet3/**",
            "kernel/drivers/net/hyperv/**",
            "kernel/drivers/net/xen-netfront.ko",
        ],
    ),
    (
        "virtio",
        &[
            "kernel/drivers/virtio/**",
            "kernel/drivers/net/virtio_net.ko",
            "kernel/drivers/block/virtio_blk.ko",
            "kernel/drivers/scsi/virtio_scsi.ko",
            "kernel/drivers/char/hw_random/virtio-rng.ko",
            "kernel/drivers/char/virtio_console.ko",
        ],
    ),
    (
        "storage",
        &[
            "sr_mod",
            "cdrom",
            "sd_mod",
            "isofs",
            "ext4",
            "crc32c_generic",
            "ahci",
            "ata_piix",
            "ata_generic",
            "usb_storage",
            "uas",
            "xhci_pci",
            "xhci_hcd",
            "ehci_pci",
            "ehci_hcd",
            "ohci_pci",
            "ohci_hcd",
            "uhci_hcd",
            "nvme",
            "vfat",
            "nls_cp437",
            "nls_iso8859_1",
            "nls_utf8",
            "squashfs",
            "loop",
            "hid_generic",
            "usbhid",
        ],
    ),
    (
        "nfs",
        &[
            "nfs",
            "nfsv3",
            "nfsv4",
            "nfs_acl",
            "lockd",
            "sunrpc",
            "rpcsec_gss_krb5",
        ],
    ),
    ("overlay", &["overlay"]),
    // Loaded by omnode init at boot (no device asks for them).
    ("criu", contracts::modules::CRIU),
];

/// Errors from module selection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModuleError {
    /// A module's ELF could not be read.
    #[error("kernel module {path}: {source}")]
    Elf {
        /// The module path.
        path: String,
        /// The ELF error.
        source: elf::ElfError,
    },
    /// A module depends on one the kernel package does not ship.
    #[error(
        "kernel module {module} depends on {missing}, which is not among the kernel's modules"
    )]
    MissingDependency {
        /// The module.
        module: String,
        /// The dependency.
        missing: String,
    },
    /// A recipe pattern matched nothing (likely a typo).
    #[error("module pattern {0:?} matches no module of this kernel")]
    NoMatch(String),
}

/// The chosen modules and their indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selection {
    /// Chosen module paths (below `lib/modules/<kver>/`), sorted.
    pub modules: Vec<String>,
    /// `modules.dep` text.
    pub dep: String,
    /// `modules.alias` text.
    pub alias: String,
}

/// Match `text` against a glob with `*`, `**` and `?`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    fn rec(p: &[u8], t: &[u8]) -> bool {
        match p.first() {
            None => t.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = &p[2..];
                (0..=t.len()).any(|i| rec(rest, &t[i..]))
            }
            Some(b'*') => {
                let rest = &p[1..];
                for i in 0..=t.len() {
                    if rec(rest, &t[i..]) {
                        return true;
                    }
                    if t.get(i) == Some(&b'/') {
                        break;
                    }
                }
                false
            }
            Some(b'?') => !t.is_empty() && t[0] != b'/' && rec(&p[1..], &t[1..]),
            Some(&c) => t.first() == Some(&c) && rec(&p[1..], &t[1..]),
        }
    }
    rec(pattern.as_bytes(), text.as_bytes())
}

fn pattern_matches(pattern: &str, path: &str) -> bool {
    if pattern.contains('/') {
        glob_match(pattern, path)
    } else {
        glob_match(&pattern.replace('-', "_"), &module_name(path))
    }
}

/// `key=value` pairs of a module's `.modinfo`.
pub fn modinfo(path: &str, data: &[u8]) -> Result<Vec<(String, String)>, ModuleError> {
    let sec = elf::section(data, ".modinfo")
        .map_err(|source| ModuleError::Elf {
            path: path.to_string(),
            source,
        })?
        .unwrap_or_default();
    Ok(sec
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let s = std::str::from_utf8(kv).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// Select modules from `available` (path below `lib/modules/<kver>/` →
/// bytes) by the `patterns`, close over dependencies and write the indexes.
/// `builtin` lists the names of modules built into the kernel (from
/// `modules.builtin`): a dependency on one of them needs no file.
pub fn select(
    available: &BTreeMap<String, &[u8]>,
    patterns: &[String],
    builtin: &BTreeSet<String>,
) -> Result<Selection, ModuleError> {
    let by_name: BTreeMap<String, &str> = available
        .keys()
        .map(|p| (module_name(p), p.as_str()))
        .collect();
    let mut wanted: BTreeSet<&str> = BTreeSet::new();
    for pat in patterns {
        let before = wanted.len();
        let mut hit = false;
        for path in available.keys() {
            if pattern_matches(pat, path) {
                wanted.insert(path.as_str());
                hit = true;
            }
        }
        // A name pattern for a built-in module is satisfied by the kernel.
        if !hit
            && !pat.contains('/')
            && builtin
                .iter()
                .any(|b| glob_match(&pat.replace('-', "_"), b))
        {
            continue;
        }
        if !hit && wanted.len() == before {
            return Err(ModuleError::NoMatch(pat.clone()));
        }
    }
    // Close over depends=.
    let mut info: BTreeMap<&str, Vec<(String, String)>> = BTreeMap::new();
    let mut deps: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut stack: Vec<&str> = wanted.iter().copied().collect();
    while let Some(path) = stack.pop() {
        if info.contains_key(path) {
            continue;
        }
        let mi = modinfo(path, available[path])?;
        let mut ds = Vec::new();
        for (k, v) in &mi {
            if k != "depends" {
                continue;
            }
            for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
                let d = d.replace('-', "_");
                match by_name.get(&d) {
                    Some(&p) => {
                        ds.push(p);
                        stack.push(p);
                    }
                    None if builtin.contains(&d) => {}
                    None => {
                        return Err(ModuleError::MissingDependency {
                            module: module_name(path),
                            missing: d,
                        })
                    }
                }
            }
        }
        deps.insert(path, ds);
        info.insert(path, mi);
    }
    let mut sel = Selection {
        modules: info.keys().map(|p| p.to_string()).collect(),
        ..Default::default()
    };
    for &path in info.keys() {
        // Transitive dependencies in load order (a module after everything it
        // needs), then reversed: modules.dep lists a module's users before
        // the modules they use, and modprobe loads from the end.
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for &d in &deps[path] {
            postorder(d, &deps, &mut seen, &mut order);
        }
        order.reverse();
        let line = DepLine {
            path: path.to_string(),
            deps: order.into_iter().map(str::to_string).collect(),
        };
        sel.dep.push_str(&format!("{line}\n"));
        let name = module_name(path);
        for (k, v) in &info[path] {
            if k == "alias" {
                let line = AliasLine {
                    pattern: v.clone(),
                    module: name.clone(),
                };
                sel.alias.push_str(&format!("{line}\n"));
            }
        }
    }
    Ok(sel)
}

fn postorder<'a>(
    node: &'a str,
    deps: &BTreeMap<&'a str, Vec<&'a str>>,
    seen: &mut BTreeSet<&'a str>,
    out: &mut Vec<&'a str>,
) {
    if !seen.insert(node) {
        return;
    }
    for &d in deps.get(node).map(Vec::as_slice).unwrap_or_default() {
        postorder(d, deps, seen, out);
    }
    out.push(node);
}
