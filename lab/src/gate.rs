//! The switches of the slow and privileged tests, one function per gate.
//!
//! A gated test runs when its variable is `1` or under `CI=true`:
//! [`netns_tests`] (`OM_NETNS_TESTS`: root and network namespaces),
//! [`qemu_tests`] (`OM_QEMU_TESTS`: virtual machines) and [`net_tests`]
//! (`OM_NET_TESTS`: the Debian mirror). A test checks what else it needs
//! with [`require`] (or [`tool`] for one host tool). Outside CI a test
//! whose gate is off or whose prerequisite is missing says so on stderr and
//! is skipped; under `CI=true` every gate is on and a missing prerequisite
//! fails the test, never skips it.

use std::path::{Path, PathBuf};

use crate::process::which;

/// Whether this is a CI run (`CI=true`), where a missing prerequisite fails.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Something a gated test needs on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need<'a> {
    /// Running as root.
    Root,
    /// A program on PATH, and the Debian package that has it.
    Tool(&'a str, &'a str),
    /// A file, and the Debian package that has it.
    File(&'a str, &'a str),
}

impl Need<'_> {
    /// What is missing, or `None` when the need is met.
    fn missing(&self) -> Option<String> {
        match *self {
            Need::Root => (!nix::unistd::geteuid().is_root()).then(|| "root".to_string()),
            Need::Tool(program, package) => which(program)
                .is_none()
                .then(|| format!("{program} (package {package})")),
            Need::File(path, package) => {
                (!Path::new(path).exists()).then(|| format!("{path} (package {package})"))
            }
        }
    }
}

/// Whether the namespace tests run: `OM_NETNS_TESTS=1` or `CI=true`, as
/// root with iproute2.
pub fn netns_tests() -> bool {
    gate("OM_NETNS_TESTS", "namespace tests")
        && require(&[Need::Root, Need::Tool("ip", "iproute2")])
}

/// Whether the qemu tests run: `OM_QEMU_TESTS=1` or `CI=true`.
pub fn qemu_tests() -> bool {
    gate("OM_QEMU_TESTS", "qemu tests")
}

/// Whether the tests that download from the Debian mirror run:
/// `OM_NET_TESTS=1` or `CI=true`.
pub fn net_tests() -> bool {
    gate("OM_NET_TESTS", "network tests")
}

/// How many rounds a benchmark runs: `OM_BENCH_ROUNDS`, else `default`;
/// at least one. A value that is not a number is an error naming it.
pub fn bench_rounds(default: usize) -> Result<usize, String> {
    match std::env::var("OM_BENCH_ROUNDS") {
        Ok(r) => r
            .trim()
            .parse::<usize>()
            .map(|n| n.max(1))
            .map_err(|_| format!("OM_BENCH_ROUNDS={r:?} is not a number")),
        Err(_) => Ok(default.max(1)),
    }
}

fn gate(var: &str, what: &str) -> bool {
    let on = ci() || std::env::var(var).is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set {var}=1 to run the {what}");
    }
    on
}

/// Whether everything in `needs` is here. Outside CI a missing one is named
/// on stderr and the caller skips; under `CI=true` it fails the test.
pub fn require(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs.iter().filter_map(Need::missing).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!("this test needs {}", missing.join(", "));
    assert!(!ci(), "{message} (required under CI=true)");
    eprintln!("skipped: {message}");
    false
}

/// A host tool an ungated test needs: its path, or `None` to skip outside
/// CI (under `CI=true` a missing tool fails the test).
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = which(name);
    if found.is_none() {
        assert!(
            !ci(),
            "{name} is not installed (required under CI=true; install its Debian package)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}
