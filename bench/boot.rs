//! Boot benchmark: what a system layer costs a netbooted node. The default
//! image (`images/node.toml`, the initramfs only) and the render image
//! (`images/render.toml`, the same initramfs plus a 366 MiB system layer
//! with POV-Ray, Blender, ffmpeg and Python, mapped from the head's NFS
//! export) boot in turn on the lab's LAN, one machine with 1 GiB of RAM
//! (SeaBIOS + iPXE) each round.
//!
//! Per boot: the seconds from powering on to the console's `joined cluster`
//! line, the seconds the layer took to mount (from the console), and the
//! memory in use once joined (`MemTotal - MemAvailable` of the node's
//! `/proc/meminfo`, read through `omctl run`; page cache that can be
//! dropped does not count). The table gives medians and the render image's
//! ratios to the default one.
//!
//! The machine is TCG-emulated, so absolute figures are the emulator's.
//! Needs root, qemu and the images' Debian packages
//! (`scripts/install-packages`); run with `bench/boot.sh`.
//! `OM_BENCH_ROUNDS` sets the rounds per image (default 2).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::{ClusterLab, Firmware, LabConfig, LabMode};

/// How long a boot may take before the round fails (bounds a hang).
const JOIN_TIMEOUT: Duration = Duration::from_secs(420);

/// One boot's figures.
struct Boot {
    joined_s: f64,
    layer_s: Option<f64>,
    used_mib: f64,
}

fn boot(name: &str, image_dir: &Path, bin_dir: &Path) -> Result<Boot> {
    let work_dir = lab::build::workspace().join("target/bench/boot").join(name);
    let _ = std::fs::remove_dir_all(&work_dir);
    let started = Instant::now();
    let mut lab = ClusterLab::start(LabConfig {
        name: "om-bboot".into(),
        bin_dir: bin_dir.to_path_buf(),
        image_dir: image_dir.to_path_buf(),
        work_dir,
        firmwares: vec![Firmware::BiosIpxe],
        cluster: "bench".into(),
        memory_mib: 1024,
        mode: LabMode::Dhcp,
        share: true,
        serial_input: false,
        capture: false,
    })?;
    let node = &mut lab.nodes[0];
    node.wait_for("joined cluster", JOIN_TIMEOUT)
        .with_context(|| format!("{name}: the node never joined"))?;
    let joined_s = started.elapsed().as_secs_f64();
    let layer_s = node
        .console()
        .lines()
        .find(|l| l.contains("omnode: system layer ") && l.contains(" mounted in "))
        .and_then(|l| {
            l.rsplit(" mounted in ")
                .next()?
                .trim_end_matches('s')
                .parse()
                .ok()
        });
    // Let the boot's last starts settle before reading the memory.
    std::thread::sleep(Duration::from_secs(10));
    let (used, _) = lab.memory_in_use(&lab.nodes[0].node_name())?;
    let used_mib = used as f64 / f64::from(1 << 20);
    Ok(Boot {
        joined_s,
        layer_s,
        used_mib,
    })
}

fn main() -> Result<()> {
    ensure!(
        lab::gate::qemu_tests(),
        "the boot benchmark boots qemu machines: run it as root with OM_QEMU_TESTS=1 (bench/boot.sh sets it)"
    );
    lab::check_prerequisites(&[Firmware::BiosIpxe])?;
    let rounds = lab::gate::bench_rounds(2).map_err(anyhow::Error::msg)?;
    let bin_dir = lab::build::static_binaries()?;
    let images = [
        ("node", lab::build::default_image(&bin_dir)?),
        ("render", lab::build::render_image(&bin_dir)?),
    ];
    let mut figures: Vec<Vec<Boot>> = vec![Vec::new(), Vec::new()];
    for round in 1..=rounds {
        for (i, (name, dir)) in images.iter().enumerate() {
            let b = boot(name, dir, &bin_dir)?;
            eprintln!(
                "boot bench: round {round} {name}: joined in {:.1}s, layer {}, {:.0} MiB in use",
                b.joined_s,
                b.layer_s
                    .map(|s| format!("mounted in {s:.1}s"))
                    .unwrap_or_else(|| "none".into()),
                b.used_mib
            );
            figures[i].push(b);
        }
    }
    let med = |i: usize, f: &dyn Fn(&Boot) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = figures[i].iter().filter_map(f).collect();
        (!v.is_empty()).then(|| omcluster_bench::median(&mut v))
    };
    let show = |v: Option<f64>, unit: &str| {
        v.map(|x| format!("{x:.1} {unit}"))
            .unwrap_or_else(|| "-".into())
    };
    println!("\nBoot of one 1 GiB machine (SeaBIOS + iPXE, TCG), median of {rounds} rounds");
    println!(
        "{:<28} {:>14} {:>14} {:>16}",
        "image", "to joined", "layer mount", "RAM in use"
    );
    for (i, (name, _)) in images.iter().enumerate() {
        println!(
            "{:<28} {:>14} {:>14} {:>16}",
            format!(
                "{name} ({})",
                if i == 0 {
                    "initramfs"
                } else {
                    "+ system layer"
                }
            ),
            show(med(i, &|b| Some(b.joined_s)), "s"),
            show(med(i, &|b| b.layer_s), "s"),
            show(med(i, &|b| Some(b.used_mib)), "MiB"),
        );
    }
    let ratio = |f: &dyn Fn(&Boot) -> Option<f64>| match (med(0, f), med(1, f)) {
        (Some(a), Some(b)) if a > 0.0 => format!("{:.2}x", b / a),
        _ => "-".into(),
    };
    println!(
        "{:<28} {:>14} {:>14} {:>16}",
        "render / node",
        ratio(&|b| Some(b.joined_s)),
        "",
        ratio(&|b| Some(b.used_mib)),
    );
    Ok(())
}
