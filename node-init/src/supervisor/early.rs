//! What PID 1 does before its loop, after the early mounts: the first
//! console lines, the `om.*` settings, and the modules CRIU needs (loaded
//! once, before anything can start a job).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{cmdline, kmod, mounts};

/// The first console lines: the version, the kernel and how the early
/// mounts went.
pub(super) fn say_hello(mount_failures: &[mounts::MountError]) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say!(
        "init {} starting on Linux {}",
        env!("CARGO_PKG_VERSION"),
        release.trim()
    );
    if mount_failures.is_empty() {
        let points: Vec<&str> = mounts::EARLY.iter().map(|m| m.target).collect();
        say!("mounted {}", points.join(" "));
    }
    for f in mount_failures {
        say!("{f}");
    }
}

/// Reads the `om.*` settings from the kernel command line in `path` (the
/// defaults if it cannot be read) and prints the problems and the result.
pub(super) fn read_settings(path: &Path) -> cmdline::Settings {
    let line = std::fs::read_to_string(path).unwrap_or_else(|e| {
        say!("cannot read {}: {e}; using defaults", path.display());
        String::new()
    });
    let (settings, problems) = cmdline::parse(&line);
    for p in &problems {
        say!("kernel command line: {p}");
    }
    say!(
        "role {}, cluster {}, server {}",
        match settings.role {
            cmdline::Role::Node => "node",
            cmdline::Role::Head => "head",
        },
        settings.cluster.as_deref().unwrap_or("(none)"),
        settings
            .server
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    settings
}

/// Loads the modules CRIU needs ([`contracts::modules::CRIU`]) once, before
/// anything can start a job, and says in one console line how it went. A
/// failure only means checkpoints fail.
pub(super) fn load_criu_modules() {
    let Some(dir) = kmod::modules_dir() else {
        say!("cannot read the kernel release; not loading the modules criu needs");
        return;
    };
    let started = Instant::now();
    match kmod::load_listed(&dir, contracts::modules::CRIU) {
        Ok(report) => say!("{}", criu_modules_line(&report, started.elapsed())),
        Err(e) => say!("not loading the modules criu needs: {e}"),
    }
}

/// The console line for the modules CRIU needs: what was loaded (in
/// `took`), what the image lacks and what failed.
fn criu_modules_line(report: &kmod::LoadReport, took: Duration) -> String {
    let mut line = if report.loaded.is_empty() {
        "modules for criu: none loaded".to_string()
    } else {
        format!(
            "modules for criu: loaded {} in {:.2}s",
            report.loaded.join(" "),
            took.as_secs_f64()
        )
    };
    let (mut missing, mut failed) = (Vec::new(), Vec::new());
    for e in &report.failed {
        match e {
            kmod::KmodError::Unknown(name) => missing.push(name.as_str()),
            e => failed.push(e.to_string()),
        }
    }
    if !missing.is_empty() {
        line.push_str(&format!("; not in this image: {}", missing.join(" ")));
    }
    if !failed.is_empty() {
        line.push_str(&format!("; failed: {}", failed.join("; ")));
    }
    if !report.failed.is_empty() {
        line.push_str(" (criu dump and restore may fail)");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn criu_modules_line_says_what_loaded_and_what_failed() {
        let took = Duration::from_millis(120);
        let mut report = kmod::LoadReport::default();
        expect!["modules for criu: none loaded"].assert_eq(&criu_modules_line(&report, took));
        report.loaded = vec!["crc32c_generic".into(), "libcrc32c".into()];
        expect!["modules for criu: loaded crc32c_generic libcrc32c in 0.12s"]
            .assert_eq(&criu_modules_line(&report, took));
        report
            .failed
            .push(kmod::KmodError::Unknown("nf_tables".into()));
        report
            .failed
            .push(kmod::KmodError::Unknown("raw_diag".into()));
        report.failed.push(kmod::KmodError::Load {
            name: "tcp_diag".into(),
            path: "/lib/modules/6.1.0-50-amd64/kernel/net/ipv4/tcp_diag.ko".into(),
            errno: nix::errno::Errno::ENOENT,
        });
        expect!["modules for criu: loaded crc32c_generic libcrc32c in 0.12s; not in this image: nf_tables raw_diag; failed: loading module tcp_diag (/lib/modules/6.1.0-50-amd64/kernel/net/ipv4/tcp_diag.ko) failed: ENOENT: No such file or directory (criu dump and restore may fail)"]
            .assert_eq(&criu_modules_line(&report, took));
    }
}
