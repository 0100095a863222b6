//! The Debian package (`scripts/package-deb`) in a clean Debian 12 chroot
//! (debootstrap minbase with systemd, from the host's apt mirror, cached
//! under `target/e2e`): it installs with `dpkg -i`, its programs run, its
//! units pass `systemd-analyze verify` against that root (no systemd runs
//! in the test to start them), a newer version upgrades it, and a purge
//! removes the binaries, the units and what `omctl join` wrote in
//! `/etc/omcluster`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, ensure, Context, Result};

fn run(command: &mut Command) -> Result<Output> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

fn chroot(root: &Path, args: &[&str]) -> Result<Output> {
    run(Command::new("chroot")
        .arg(root)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
}

/// A clean Debian 12 root at `dir`: extracted from the cached tarball, or
/// bootstrapped from the host's mirror (and cached) the first time.
fn debian_root(dir: &Path) -> Result<()> {
    let cache = lab::build::workspace().join("target/e2e/debian12-minbase-systemd.tar");
    if !cache.is_file() {
        let mirror = builder::mirror::pick(
            &builder::mirror::host_sources(Path::new("/etc/apt")),
            "bookworm",
        )
        .context("no plain-HTTP bookworm source in the host's apt sources")?;
        let fresh = dir.with_extension("bootstrap");
        let _ = std::fs::remove_dir_all(&fresh);
        eprintln!("bootstrapping Debian 12 (minbase + systemd) from {mirror}");
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd", "bookworm"])
            .arg(&fresh)
            .arg(&mirror))?;
        let tmp = cache.with_extension("part");
        run(Command::new("tar")
            .arg("-C")
            .arg(&fresh)
            .arg("-cf")
            .arg(&tmp)
            .arg("."))?;
        std::fs::rename(&tmp, &cache)?;
        let _ = std::fs::remove_dir_all(&fresh);
    }
    std::fs::create_dir_all(dir)?;
    run(Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-xf")
        .arg(&cache))?;
    Ok(())
}

fn package(version: &str, out: &Path) -> Result<PathBuf> {
    let o = run(
        Command::new(lab::build::workspace().join("scripts/package-deb"))
            .args(["--version", version, "--out"])
            .arg(out),
    )?;
    Ok(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
}

#[test]
fn the_deb_installs_upgrades_and_purges_in_a_clean_debian_root() -> Result<()> {
    if !lab::gate::net_tests() {
        return Ok(());
    }
    for tool in ["debootstrap", "dpkg-deb", "systemd-analyze", "chroot"] {
        if lab::process::which(tool).is_none() {
            bail!("{tool} is missing (scripts/install-packages installs it)");
        }
    }
    let work = lab::build::workspace().join("target/e2e/om-deb");
    let _ = std::fs::remove_dir_all(&work);
    let root = work.join("root");
    debian_root(&root)?;
    let first = package("0.1.0", &work)?;
    let second = package("0.1.1", &work)?;

    std::fs::copy(&first, root.join("tmp/first.deb"))?;
    std::fs::copy(&second, root.join("tmp/second.deb"))?;
    chroot(&root, &["dpkg", "-i", "/tmp/first.deb"])?;
    let version = chroot(&root, &["omctl", "--version"])?;
    eprintln!(
        "installed: {}",
        String::from_utf8_lossy(&version.stdout).trim()
    );
    for tool in ["mosmon", "mps", "omnode", "omboot", "ombuild"] {
        chroot(&root, &[tool, "--help"]).with_context(|| format!("{tool} in the chroot"))?;
    }
    let units = [
        "/lib/systemd/system/omnode-agent.service",
        "/lib/systemd/system/omboot.service",
    ];
    let mut verify = Command::new("systemd-analyze");
    verify
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units);
    let out = run(&mut verify)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(said.trim().is_empty(), "systemd-analyze verify: {said}");

    // A joined machine: what `omctl join` writes.
    std::fs::create_dir_all(root.join("etc/omcluster"))?;
    std::fs::write(
        root.join("etc/omcluster/cluster.key"),
        format!("{}\n", "ab".repeat(32)),
    )?;
    std::fs::write(
        root.join("etc/omcluster/agent.env"),
        "OM_AGENT_ARGS=--cluster x\n",
    )?;

    chroot(&root, &["dpkg", "-i", "/tmp/second.deb"])?;
    let v = chroot(&root, &["dpkg-query", "-W", "-f=${Version}", "omcluster"])?;
    ensure!(
        v.stdout == b"0.1.1",
        "after the upgrade: {:?}",
        String::from_utf8_lossy(&v.stdout)
    );
    ensure!(
        root.join("etc/omcluster/cluster.key").is_file(),
        "the upgrade removed the cluster key"
    );

    chroot(&root, &["dpkg", "--purge", "omcluster"])?;
    for gone in [
        "usr/bin/omctl",
        "usr/bin/mosmon",
        "lib/systemd/system/omnode-agent.service",
        "etc/omcluster",
    ] {
        ensure!(!root.join(gone).exists(), "/{gone} is left after the purge");
    }
    let listed = Command::new("chroot")
        .arg(&root)
        .args(["dpkg-query", "-W", "omcluster"])
        .output()?;
    ensure!(
        !listed.status.success(),
        "dpkg still knows omcluster after the purge"
    );
    Ok(())
}
