//! The kernel module index in the initramfs: the kmod text formats under
//! `/lib/modules/<kver>/` that `ombuild` writes for the modules it chose and
//! `omnode init` reads to load drivers for the machine's devices (busybox
//! `modprobe` understands them too).
//!
//! - `modules.dep`: one [`DepLine`] per module, `path/to/mod.ko: dep1.ko
//!   dep2.ko`, paths relative to that directory, a module's users before the
//!   modules they use.
//! - `modules.alias`: one [`AliasLine`] per alias, `alias <pattern> <name>`.
//! - `modules.builtin`: the modules compiled into the kernel, one path a
//!   line ([`parse_builtin`]).
//!
//! Module names are [`module_name`]'s: the file's base name without `.ko`
//! and its compression suffix, `-` written `_`, as the kernel does. Pure
//! printing and parsing; reading the files is the callers' business.
//!
//! [`CRIU`] is a list both sides know: `ombuild`'s `criu` module set puts
//! those modules in the image and `omnode init` loads them at boot, since
//! no device asks for them.

use std::collections::BTreeSet;
use std::fmt;

/// The modules CRIU's dump and restore need on Debian's kernel, in load
/// order: its feature probe makes an nftables table, and it reads sockets
/// through the `*_diag` netlink families. `crc32c_generic` comes first
/// because `libcrc32c` (which `nf_tables` needs) finds no crc32c without it:
/// a soft dependency the kernel would ask modprobe for.
pub const CRIU: &[&str] = &[
    "crc32c_generic",
    "libcrc32c",
    "nfnetlink",
    "nf_tables",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "raw_diag",
    "unix_diag",
    "netlink_diag",
    "af_packet_diag",
];

/// The suffixes of a module file: plain and the compressions kmod reads.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// The module name kmod uses for a file: the base name without `.ko` (or
/// `.ko.xz`, `.ko.zst`, `.ko.gz`), with `-` turned into `_`
/// (`…/virtio-rng.ko.xz` → `virtio_rng`).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = MODULE_SUFFIXES
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// Whether `path` names a module file (one of [`MODULE_SUFFIXES`]).
pub fn is_module_path(path: &str) -> bool {
    MODULE_SUFFIXES.iter().any(|s| path.ends_with(s))
}

/// A line of `modules.dep` that is not `path.ko: deps…`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("modules.dep line {line}: expected `path.ko: deps…`, got {text:?}")]
pub struct BadDepLine {
    /// The 1-based line number.
    pub line: usize,
    /// The line.
    pub text: String,
}

/// One line of `modules.dep`: a module and every module it needs,
/// transitively, in the order `modprobe` loads them from the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepLine {
    /// The module file, relative to `/lib/modules/<kver>/`.
    pub path: String,
    /// The files of the modules it needs.
    pub deps: Vec<String>,
}

impl fmt::Display for DepLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.path)?;
        for d in &self.deps {
            write!(f, " {d}")?;
        }
        Ok(())
    }
}

/// One line of `modules.alias`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AliasLine {
    /// The modalias glob (`pci:v00008086d0000100Esv*sd*bc*sc*i*`).
    pub pattern: String,
    /// The module's name (with `_`).
    pub module: String,
}

impl fmt::Display for AliasLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "alias {} {}", self.pattern, self.module)
    }
}

/// Reads `modules.dep`; blank lines and `#` comments are skipped.
pub fn parse_dep(text: &str) -> Result<Vec<DepLine>, BadDepLine> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || BadDepLine {
            line: n + 1,
            text: line.to_string(),
        };
        let (path, deps) = line.split_once(':').ok_or_else(bad)?;
        let path = path.trim();
        if path.is_empty() || !path.contains(".ko") {
            return Err(bad());
        }
        out.push(DepLine {
            path: path.to_string(),
            deps: deps.split_whitespace().map(str::to_string).collect(),
        });
    }
    Ok(out)
}

/// Reads `modules.alias`: the `alias PATTERN MODULE` lines (module names
/// with `-` read as `_`); anything else is skipped.
pub fn parse_alias(text: &str) -> Vec<AliasLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("alias") {
            continue;
        }
        if let (Some(pattern), Some(module)) = (words.next(), words.next()) {
            out.push(AliasLine {
                pattern: pattern.to_string(),
                module: module.replace('-', "_"),
            });
        }
    }
    out
}

/// The module names in a `modules.builtin` text (`kernel/…/foo.ko` per line).
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(module_name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn module_names_for_every_suffix() {
        for (path, name) in [
            ("kernel/drivers/scsi/scsi-common.ko", "scsi_common"),
            ("kernel/drivers/cdrom/cdrom.ko.xz", "cdrom"),
            ("kernel/drivers/net/virtio-net.ko.zst", "virtio_net"),
            ("kernel/fs/isofs/isofs.ko.gz", "isofs"),
            ("e1000.ko", "e1000"),
            ("e1000", "e1000"),
        ] {
            assert_eq!(module_name(path), name, "{path}");
        }
        assert!(is_module_path("a/b.ko.zst") && !is_module_path("a/b.kox"));
    }

    #[test]
    fn dep_lines_round_trip() {
        let text = "kernel/a.ko: kernel/b.ko.xz kernel/c.ko\nkernel/b.ko.xz:\nkernel/c.ko:\n";
        let lines = parse_dep(text).unwrap();
        let printed: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(printed, text);
        let alias = "# comment\nalias pci:v*d*sv*sd*bc0Csc03i30* xhci-pci\nalias virtio:d00000001v* virtio_net\n";
        let aliases = parse_alias(alias);
        let printed: String = aliases.iter().map(|l| format!("{l}\n")).collect();
        expect![[r#"
            alias pci:v*d*sv*sd*bc0Csc03i30* xhci_pci
            alias virtio:d00000001v* virtio_net
        "#]]
        .assert_eq(&printed);
        assert_eq!(parse_alias(&printed), aliases);
    }

    #[test]
    fn bad_dep_lines_are_named() {
        expect![[r#"modules.dep line 2: expected `path.ko: deps…`, got "garbage""#]]
            .assert_eq(&parse_dep("a.ko:\ngarbage\n").unwrap_err().to_string());
        expect![[r#"modules.dep line 1: expected `path.ko: deps…`, got "notamodule: a.ko""#]]
            .assert_eq(&parse_dep("notamodule: a.ko").unwrap_err().to_string());
    }

    #[test]
    fn builtin_names() {
        let b = parse_builtin("kernel/drivers/usb/host/xhci-pci.ko\n\n kernel/x.ko.xz \n");
        assert_eq!(b.into_iter().collect::<Vec<_>>(), vec!["x", "xhci_pci"]);
    }
}
