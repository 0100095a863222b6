//! Shared fixtures for the node-init integration tests.

#![allow(dead_code)]

use std::process::{Command, Stdio};

/// Whether root/netns tests are enabled (`OM_NETNS_TESTS=1` or `CI=true`).
/// Under CI a missing prerequisite fails the test instead of skipping it.
pub fn netns_tests() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let on = ci || std::env::var("OM_NETNS_TESTS").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set OM_NETNS_TESTS=1 (needs root and iproute2)");
        return false;
    }
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root".to_string());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("the `ip` command (iproute2)".to_string());
    }
    if !missing.is_empty() {
        if ci {
            panic!("netns tests need {}", missing.join(", "));
        }
        eprintln!("skipped: netns tests need {}", missing.join(", "));
        return false;
    }
    true
}

/// Runs `ip` with arguments; panics with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Like [`ip`] but ignores failure (cleanup).
pub fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
