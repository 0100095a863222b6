//! Kernel modules for the machine's devices: modalias matching and loading.
//!
//! The pure half reads the image's kmod text files (`modules.dep`,
//! `modules.alias`, optionally `modules.builtin`) into a [`ModuleIndex`],
//! matches device modaliases against the alias globs ([`fnmatch`]) and puts
//! the wanted modules and their dependencies into load order
//! ([`ModuleIndex::load_order`]). The I/O half ([`scan_modaliases`],
//! [`loaded_modules`], [`load`]) reads sysfs and procfs and calls
//! `finit_module(2)`.
//!
//! The text formats and [`module_name`] are the contract
//! [`contracts::modules`], shared with the builder that writes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use contracts::modules;
pub use contracts::modules::module_name;

/// A problem with the module index or with loading a module.
#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    /// A module index file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of `modules.dep` is not `path.ko: dep.ko …`.
    #[error(transparent)]
    BadDepLine(#[from] modules::BadDepLine),
    /// A module that was asked for is in neither `modules.dep` nor `modules.builtin`.
    #[error("module {0} is not in modules.dep")]
    Unknown(String),
    /// `modules.dep` names a dependency cycle.
    #[error("modules.dep has a dependency cycle through {0}")]
    Cycle(String),
    /// Opening the module file failed.
    #[error("cannot open module {name} ({path}): {source}")]
    Open {
        /// The module name.
        name: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The kernel refused the module.
    #[error("loading module {name} ({path}) failed: {errno}")]
    Load {
        /// The module name.
        name: String,
        /// The file.
        path: PathBuf,
        /// What `finit_module` returned.
        errno: nix::errno::Errno,
    },
}

/// The module directory of the running kernel, `/lib/modules/<release>`.
pub fn modules_dir() -> Option<PathBuf> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    Some(Path::new("/lib/modules").join(release.trim()))
}

/// Shell-style glob matching as `fnmatch(3)` without flags does it, which is
/// what kmod uses for `modules.alias`: `*` any run, `?` one character,
/// `[...]` a class (with ranges and `!`/`^` negation), `\` escapes.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`: linear in
    // practice and no recursion on hostile patterns.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, next)) = match_class(&p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == '[' {
                        // An unterminated class is a literal '['.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                '\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[start] == '['`. Returns
/// whether it matched and the index after the closing `]`, or `None` when the
/// class is not terminated.
fn match_class(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&'-') && p.get(i + 2).is_some_and(|&e| e != ']') {
            let end = p[i + 2];
            if ch <= c && c <= end {
                matched = true;
            }
            i += 3;
        } else {
            if ch == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// One module in `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleEntry {
    /// The file, relative to `/lib/modules/<kver>/`.
    pub path: String,
    /// The names of the modules it needs, as listed.
    pub deps: Vec<String>,
}

/// The image's module index: what `modules.dep`, `modules.alias` and
/// `modules.builtin` say.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    /// Module name → file and dependencies.
    pub modules: BTreeMap<String, ModuleEntry>,
    /// `(pattern, module name)` in file order.
    pub aliases: Vec<(String, String)>,
    /// Modules compiled into the kernel (nothing to load).
    pub builtin: BTreeSet<String>,
}

impl ModuleIndex {
    /// Parses the text of the index files.
    pub fn parse(dep: &str, alias: &str, builtin: &str) -> Result<Self, KmodError> {
        let mut idx = ModuleIndex {
            builtin: modules::parse_builtin(builtin),
            ..Default::default()
        };
        for line in modules::parse_dep(dep)? {
            idx.modules.insert(
                module_name(&line.path),
                ModuleEntry {
                    deps: line.deps.iter().map(|d| module_name(d)).collect(),
                    path: line.path,
                },
            );
        }
        idx.aliases = modules::parse_alias(alias)
            .into_iter()
            .map(|a| (a.pattern, a.module))
            .collect();
        Ok(idx)
    }

    /// Reads `modules.dep`, `modules.alias` and (if present) `modules.builtin`
    /// from `dir` (normally `/lib/modules/<kver>`).
    pub fn load(dir: &Path) -> Result<Self, KmodError> {
        let read = |name: &str, optional: bool| -> Result<String, KmodError> {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(s) => Ok(s),
                Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(KmodError::Read { path, source }),
            }
        };
        Self::parse(
            &read("modules.dep", false)?,
            &read("modules.alias", true)?,
            &read("modules.builtin", true)?,
        )
    }

    /// The modules whose alias globs match `modalias`, in alias-file order,
    /// without duplicates.
    pub fn modules_for(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (pat, module) in &self.aliases {
            if !out.contains(module) && fnmatch(pat, modalias) {
                out.push(module.clone());
            }
        }
        out
    }

    /// The modules to load, dependencies first, for `wanted`, leaving out
    /// what is `loaded` or built in. Names use `_` (see [`module_name`]).
    pub fn load_order(
        &self,
        wanted: &[String],
        loaded: &BTreeSet<String>,
    ) -> Result<Vec<String>, KmodError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        fn visit(
            idx: &ModuleIndex,
            name: &str,
            loaded: &BTreeSet<String>,
            marks: &mut HashMap<String, Mark>,
            out: &mut Vec<String>,
        ) -> Result<(), KmodError> {
            if loaded.contains(name) || idx.builtin.contains(name) {
                return Ok(());
            }
            match marks.get(name) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => return Err(KmodError::Cycle(name.to_string())),
                None => {}
            }
            let entry = idx
                .modules
                .get(name)
                .ok_or_else(|| KmodError::Unknown(name.to_string()))?;
            marks.insert(name.to_string(), Mark::Visiting);
            for dep in &entry.deps {
                visit(idx, dep, loaded, marks, out)?;
            }
            marks.insert(name.to_string(), Mark::Done);
            out.push(name.to_string());
            Ok(())
        }
        let mut marks = HashMap::new();
        let mut out = Vec::new();
        for name in wanted {
            visit(self, &name.replace('-', "_"), loaded, &mut marks, &mut out)?;
        }
        Ok(out)
    }
}

/// Every device modalias under `sys/bus/*/devices/*/modalias` (normally
/// `sys` = `/sys`), sorted and without duplicates.
pub fn scan_modaliases(sys: &Path) -> Vec<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return Vec::new();
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(s) = std::fs::read_to_string(dev.path().join("modalias")) {
                let s = s.trim();
                if !s.is_empty() {
                    out.insert(s.to_string());
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The names of the loaded modules, from `/proc/modules`.
pub fn loaded_modules() -> BTreeSet<String> {
    std::fs::read_to_string("/proc/modules")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// `finit_module(2)` flag: the file is compressed and the kernel should
/// decompress it (Linux 6.4+; older kernels answer EINVAL).
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// Loads one module file into the kernel. Already loaded (EEXIST) counts as
/// success.
pub fn load(name: &str, path: &Path) -> Result<(), KmodError> {
    let file = File::open(path).map_err(|source| KmodError::Open {
        name: name.to_string(),
        path: path.to_path_buf(),
        source,
    })?;
    let compressed = path
        .extension()
        .is_some_and(|e| e == "xz" || e == "zst" || e == "gz");
    let flags = if compressed {
        MODULE_INIT_COMPRESSED_FILE
    } else {
        0
    };
    let params = c"";
    // SAFETY: the fd is open for the duration of the call and `params` is a
    // NUL-terminated string; finit_module reads both and keeps neither.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            flags,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    match nix::errno::Errno::last() {
        nix::errno::Errno::EEXIST => Ok(()),
        errno => Err(KmodError::Load {
            name: name.to_string(),
            path: path.to_path_buf(),
            errno,
        }),
    }
}

/// Loads the named modules (and their dependencies) from the index in
/// `dir`; returns the ones actually loaded. Used for file systems, which no
/// device modalias asks for.
pub fn load_named(dir: &Path, names: &[String]) -> Result<Vec<String>, KmodError> {
    let index = ModuleIndex::load(dir)?;
    let order = index.load_order(names, &loaded_modules())?;
    for name in &order {
        load(name, &dir.join(&index.modules[name].path))?;
    }
    Ok(order)
}

/// Loads `names` in the order given, each after the modules it needs, from
/// the index in `dir`, for modules no device asks for and whose order
/// matters beyond `modules.dep` (a soft dependency the kernel would ask
/// modprobe for). One that fails is reported and the rest are still tried;
/// a module whose dependency failed is not tried (the failure is reported
/// once). Only an unreadable index fails the whole call.
pub fn load_listed(dir: &Path, names: &[&str]) -> Result<LoadReport, KmodError> {
    let index = ModuleIndex::load(dir)?;
    let mut report = LoadReport::default();
    let mut broken: BTreeSet<String> = BTreeSet::new();
    for name in names {
        let order = match index.load_order(&[name.to_string()], &loaded_modules()) {
            Ok(order) => order,
            Err(e) => {
                report.failed.push(e);
                continue;
            }
        };
        for m in order {
            if broken.contains(&m) {
                break;
            }
            match load(&m, &dir.join(&index.modules[&m].path)) {
                Ok(()) => report.loaded.push(m),
                Err(e) => {
                    report.failed.push(e);
                    broken.insert(m);
                    break;
                }
            }
        }
    }
    Ok(report)
}

/// Whether the kernel knows file system `fs` (`/proc/filesystems`).
pub fn fs_available(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

/// Makes file system `fs` available, loading `module` (and what it needs)
/// when the kernel lacks it: PID 1 has no modprobe for the kernel to call.
/// Returns the modules loaded; the error is a console line.
pub fn ensure_filesystem(fs: &str, module: &str) -> Result<Vec<String>, String> {
    if fs_available(fs) {
        return Ok(Vec::new());
    }
    let dir =
        modules_dir().ok_or_else(|| format!("cannot read the kernel release to load {module}"))?;
    load_named(&dir, &[module.to_string()])
        .map_err(|e| format!("cannot load the {fs} file system: {e}"))
}

/// What one loading pass did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Modules loaded, in order.
    pub loaded: Vec<String>,
    /// Modules that failed (the error names module and errno).
    pub failed: Vec<KmodError>,
}

/// One pass: match every device modalias (plus `extra`) against the index
/// in `dir`, and load what is missing, dependencies first. A module that
/// fails is reported and its dependants are still tried (the kernel then
/// names the missing symbol). `tried` remembers modules already attempted so
/// later passes (after new devices appear) do not repeat failures.
pub fn load_for_machine(
    dir: &Path,
    sys: &Path,
    extra: &[String],
    tried: &mut BTreeSet<String>,
) -> Result<LoadReport, KmodError> {
    let index = ModuleIndex::load(dir)?;
    let mut wanted: Vec<String> = Vec::new();
    for alias in scan_modaliases(sys) {
        for m in index.modules_for(&alias) {
            if !wanted.contains(&m) {
                wanted.push(m);
            }
        }
    }
    for m in extra {
        let m = m.replace('-', "_");
        if !wanted.contains(&m) {
            wanted.push(m);
        }
    }
    let mut report = LoadReport::default();
    let loaded = loaded_modules();
    let mut order = Vec::new();
    for m in &wanted {
        // Resolve each wanted module on its own so one unknown name does
        // not stop the others.
        match index.load_order(std::slice::from_ref(m), &loaded) {
            Ok(mods) => {
                for x in mods {
                    if !order.contains(&x) {
                        order.push(x);
                    }
                }
            }
            Err(e) => {
                if tried.insert(m.clone()) {
                    report.failed.push(e);
                }
            }
        }
    }
    for name in order {
        if !tried.insert(name.clone()) {
            continue;
        }
        let entry = &index.modules[&name];
        match load(&name, &dir.join(&entry.path)) {
            Ok(()) => report.loaded.push(name),
            Err(e) => report.failed.push(e),
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn fnmatch_cases() {
        let cases = [
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00",
                false,
            ),
            (
                "pci:v*d*sv*sd*bc02sc00i*",
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                true,
            ),
            (
                "pci:v*d*sv*sd*bc02sc00i*",
                "pci:v00008086d0000100Esv00001AF4sd00001100bc03sc00i00",
                false,
            ),
            (
                "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
                "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00",
                true,
            ),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a[0-9]c", "a5c", true),
            ("a[!0-9]c", "a5c", false),
            ("a[^0-9]c", "axc", true),
            ("a[]x]c", "a]c", true),
            ("a[bc", "a[bc", true),
            ("a\\*c", "a*c", true),
            ("a\\*c", "abc", false),
            ("*", "", true),
            ("", "x", false),
            ("**a**b", "xxaxxb", true),
            ("acpi*:PNP0A08:*", "acpi:PNP0A08:PNP0A03:", true),
        ];
        for (pat, text, want) in cases {
            assert_eq!(fnmatch(pat, text), want, "fnmatch({pat:?}, {text:?})");
        }
    }

    fn index() -> ModuleIndex {
        ModuleIndex::parse(
            "kernel/drivers/net/ethernet/intel/e1000/e1000.ko:\n\
             kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/net/net_failover.ko\n\
             kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko\n\
             kernel/net/core/failover.ko:\n\
             kernel/drivers/scsi/sr_mod.ko.xz: kernel/drivers/cdrom/cdrom.ko.xz kernel/drivers/scsi/scsi-common.ko\n\
             kernel/drivers/cdrom/cdrom.ko.xz:\n\
             kernel/drivers/scsi/scsi-common.ko:\n\
             kernel/x/loop_a.ko: kernel/x/loop_b.ko\n\
             kernel/x/loop_b.ko: kernel/x/loop_a.ko\n",
            "# Aliases extracted from modules themselves.\n\
             alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000\n\
             alias pci:v00001AF4d00001000sv*sd*bc*sc*i* virtio_net\n\
             alias virtio:d00000001v* virtio_net\n\
             alias scsi:t-0x05* sr_mod\n\
             alias pci:v*d*sv*sd*bc0Csc03i30* xhci-pci\n",
            "kernel/drivers/usb/host/xhci-pci.ko\n",
        )
        .unwrap()
    }

    #[test]
    fn modalias_to_modules() {
        let idx = index();
        assert_eq!(
            idx.modules_for("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
            vec!["e1000"]
        );
        assert_eq!(
            idx.modules_for("virtio:d00000001v00001AF4"),
            vec!["virtio_net"]
        );
        assert_eq!(idx.modules_for("scsi:t-0x05"), vec!["sr_mod"]);
        assert!(idx
            .modules_for("pci:v00001234d00001111sv00001AF4sd00001100bc03sc00i00")
            .is_empty());
    }

    #[test]
    fn dependencies_come_first_and_loaded_ones_are_skipped() {
        let idx = index();
        let none = BTreeSet::new();
        let order = idx
            .load_order(
                &[
                    "virtio_net".into(),
                    "sr_mod".into(),
                    "e1000".into(),
                    "net-failover".into(),
                ],
                &none,
            )
            .unwrap();
        expect![[r#"["failover", "net_failover", "virtio_net", "cdrom", "scsi_common", "sr_mod", "e1000"]"#]]
            .assert_eq(&format!("{order:?}"));
        let loaded: BTreeSet<String> = ["failover".to_string(), "cdrom".into()].into();
        let order = idx
            .load_order(&["virtio_net".into(), "sr_mod".into()], &loaded)
            .unwrap();
        expect![[r#"["net_failover", "virtio_net", "scsi_common", "sr_mod"]"#]]
            .assert_eq(&format!("{order:?}"));
        // Built-in modules need nothing.
        assert!(idx
            .load_order(&["xhci_pci".into()], &none)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn index_errors_name_the_problem() {
        let idx = index();
        let none = BTreeSet::new();
        expect!["module nosuch is not in modules.dep"].assert_eq(
            &idx.load_order(&["nosuch".into()], &none)
                .unwrap_err()
                .to_string(),
        );
        expect!["modules.dep has a dependency cycle through loop_a"].assert_eq(
            &idx.load_order(&["loop_a".into()], &none)
                .unwrap_err()
                .to_string(),
        );
        expect![[r#"modules.dep line 2: expected `path.ko: deps…`, got "garbage""#]].assert_eq(
            &ModuleIndex::parse("a.ko:\ngarbage\n", "", "")
                .unwrap_err()
                .to_string(),
        );
    }

    #[test]
    fn listed_modules_go_on_past_failures() {
        // No module file exists, so each load fails at open(2), before the
        // kernel is asked: a module whose dependency failed is not tried.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("modules.dep"),
            "kernel/x/omt_a.ko:\nkernel/x/omt_b.ko: kernel/x/omt_a.ko\nkernel/x/omt_c.ko:\n",
        )
        .unwrap();
        let report = load_listed(dir.path(), &["omt_a", "omt_b", "omt_nosuch", "omt_c"]).unwrap();
        assert!(report.loaded.is_empty());
        let failed: Vec<String> = report
            .failed
            .iter()
            .map(|e| {
                e.to_string()
                    .replace(&dir.path().display().to_string(), "DIR")
            })
            .collect();
        expect![[r#"
            [
                "cannot open module omt_a (DIR/kernel/x/omt_a.ko): No such file or directory (os error 2)",
                "module omt_nosuch is not in modules.dep",
                "cannot open module omt_c (DIR/kernel/x/omt_c.ko): No such file or directory (os error 2)",
            ]
        "#]]
        .assert_debug_eq(&failed);
    }

    #[test]
    fn modaliases_are_read_from_every_bus() {
        let sys = tempfile::tempdir().unwrap();
        let dev = |bus: &str, name: &str, alias: Option<&str>| {
            let d = sys.path().join("bus").join(bus).join("devices").join(name);
            std::fs::create_dir_all(&d).unwrap();
            if let Some(a) = alias {
                std::fs::write(d.join("modalias"), format!("{a}\n")).unwrap();
            }
        };
        dev(
            "pci",
            "0000:00:03.0",
            Some("pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00"),
        );
        dev(
            "pci",
            "0000:00:01.0",
            Some("pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00"),
        );
        dev("virtio", "virtio0", Some("virtio:d00000001v00001AF4"));
        dev("platform", "serial8250", None);
        dev("acpi", "dup", Some("virtio:d00000001v00001AF4"));
        let found = scan_modaliases(sys.path());
        expect![[r#"
            [
                "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00",
                "pci:v00008086d00007000sv00001AF4sd00001100bc06sc01i00",
                "virtio:d00000001v00001AF4",
            ]
        "#]]
        .assert_debug_eq(&found);
        let idx = index();
        let wanted: Vec<String> = found.iter().flat_map(|a| idx.modules_for(a)).collect();
        assert_eq!(wanted, vec!["e1000", "virtio_net"]);
    }
}
