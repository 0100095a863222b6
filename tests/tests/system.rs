//! Real software on a node: the render image (`images/render.toml`, its
//! system layer holding POV-Ray, Blender, ffmpeg and Python) is built,
//! `omboot serve` serves it with the layer on its NFS export, and two
//! machines with 1 GiB of RAM netboot it. Each must say it runs from the
//! layer and join; the first runs through `omctl run`, in the shared tree:
//! POV-Ray rendering a small scene (the PNG lands on the head), ffmpeg
//! converting it, `python3 -c`, and `blender --background --version`. Its
//! memory after all that shows the layer was mapped, not copied: less is
//! in use than the compressed layer's size, let alone the 1.3 GB it unpacks
//! to. A Python job, its interpreter and libraries from the layer, then
//! moves to the second machine and back with every line once.

use std::process::Stdio;
use std::time::Duration;

use std::io::{BufRead, BufReader};

use anyhow::{ensure, Context, Result};
use contracts::image::SYSTEM_LAYER;
use lab::{ClusterLab, Firmware, LabConfig, LabMode};

use crate::migrate::find_job;

/// How long the machine may take to netboot, map the layer and join under
/// TCG on a busy 2-core machine (bounds a hang; speed lives in `bench/`).
const JOIN_TIMEOUT: Duration = Duration::from_secs(420);

/// The scene POV-Ray renders: a sphere on a checkered floor.
const SCENE: &str = "camera { location <0, 2, -3> look_at <0, 1, 2> }\n\
    light_source { <2, 4, -3> color rgb <1, 1, 1> }\n\
    sphere { <0, 1, 2>, 1 texture { pigment { color rgb <1, 0.5, 0> } } }\n\
    plane { y, 0 pigment { checker color rgb 1 color rgb 0 } }\n";

/// Runs `script` with `sh -c` on `node` through `omctl run`, from
/// `/cluster/render`; its exit code, stdout and stderr.
fn run_on(lab: &ClusterLab, node: &str, script: &str) -> Result<(Option<i32>, String, String)> {
    let output = lab
        .omctl_in("/cluster/render")
        .args(["run", "--node", node, "--", "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running omctl run {script}"))?;
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    eprintln!("{node}$ {script}\n{out}{err}");
    Ok((output.status.code(), out, err))
}

/// Like [`run_on`], failing unless the command exits with 0.
fn run_ok(lab: &ClusterLab, node: &str, script: &str) -> Result<String> {
    let (code, out, err) = run_on(lab, node, script)?;
    ensure!(code == Some(0), "{script}: exit {code:?}: {out}{err}");
    Ok(out)
}

/// A PNG's width and height (its IHDR chunk).
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != b"\x89PNG\r\n\x1a\n" {
        return None;
    }
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    Some((word(16), word(20)))
}

#[test]
fn qemu_render_image_runs_povray_blender_python_and_ffmpeg_from_its_layer() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    let bin_dir = lab::build::static_binaries()?;
    let image_dir = lab::build::render_image(&bin_dir)?;
    let layer_bytes = std::fs::metadata(image_dir.join(SYSTEM_LAYER))
        .context("the render image has no system layer")?
        .len();
    let work_dir = lab::build::workspace().join("target/e2e/om-e2e-system");
    let mut lab = ClusterLab::start(LabConfig {
        name: "om-e2e-system".into(),
        bin_dir,
        image_dir,
        work_dir,
        firmwares: vec![Firmware::BiosIpxe, Firmware::BiosIpxe],
        cluster: "e2e-render".into(),
        memory_mib: 1024,
        mode: LabMode::Dhcp,
        share: true,
        serial_input: false,
        capture: false,
    })?;
    for node in &mut lab.nodes {
        let line = node
            .wait_for("omnode: running from the system layer", JOIN_TIMEOUT)
            .with_context(|| format!("{} never ran from its layer", node.name()))?;
        eprintln!("{line}");
        ensure!(
            line.contains(&format!("nfs://{}/images/system.squashfs", lab::LAB_HEAD)),
            "the layer did not come from the head's export: {line}"
        );
        node.wait_for("joined cluster", JOIN_TIMEOUT)?;
    }
    let name = lab.nodes[0].node_name();
    let other = lab.nodes[1].node_name();

    let share = lab
        .share_dir()
        .context("the lab serves no tree")?
        .to_owned();
    let dir = share.join("render");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("scene.pov"), SCENE)?;

    // POV-Ray renders into the shared tree; the head sees the picture.
    run_ok(
        &lab,
        &name,
        "povray +Iscene.pov +Oscene.png +FN +W160 +H120 -D -V 2>&1 | tail -3",
    )?;
    let png = std::fs::read(dir.join("scene.png")).context("no scene.png on the head")?;
    ensure!(
        png_size(&png) == Some((160, 120)),
        "scene.png is not a 160x120 PNG ({} bytes)",
        png.len()
    );
    // ffmpeg reads it and writes another format.
    run_ok(
        &lab,
        &name,
        "ffmpeg -hide_banner -loglevel error -y -i scene.png scene.bmp && ffmpeg -version | head -1",
    )?;
    let bmp = std::fs::read(dir.join("scene.bmp")).context("no scene.bmp on the head")?;
    ensure!(bmp.starts_with(b"BM"), "scene.bmp is not a BMP");
    let out = run_ok(
        &lab,
        &name,
        "python3 -c 'import json, platform; print(json.dumps({\"answer\": 6 * 7}), platform.python_version())'",
    )?;
    ensure!(out.contains("{\"answer\": 42} 3."), "python3 said: {out}");
    let out = run_ok(&lab, &name, "blender --background --version")?;
    ensure!(out.starts_with("Blender 3."), "blender said: {out}");

    // The root is the overlay on the squashfs mapped from the head; the
    // initramfs's own programs are still there; and less memory is in use
    // than the compressed layer holds.
    let out = run_ok(
        &lab,
        &name,
        "grep -E '^[^ ]+ / |squashfs' /proc/mounts; cat /sys/block/loop*/loop/backing_file; \
         command -v omnode; ls /usr/sbin/criu /lib/modules; /sbin/ldconfig -p | head -1",
    )?;
    ensure!(
        out.contains(" / overlay "),
        "the root is not the overlay: {out}"
    );
    ensure!(
        out.contains("/run/omcluster/system/images/system.squashfs"),
        "the loop device is not backed by the export: {out}"
    );
    ensure!(
        out.contains("/bin/omnode") && out.contains("/usr/sbin/criu"),
        "the initramfs's programs are gone: {out}"
    );
    ensure!(
        out.contains("libs found in cache `/etc/ld.so.cache'"),
        "no library cache: {out}"
    );
    let (used, total) = lab.memory_in_use(&name)?;
    eprintln!(
        "memory: {} MiB in use of {} MiB; the layer is {} MiB compressed",
        used >> 20,
        total >> 20,
        layer_bytes >> 20
    );
    ensure!(
        used < layer_bytes,
        "{} MiB in use: the {} MiB layer may have been copied into RAM",
        used >> 20,
        layer_bytes >> 20
    );
    move_a_python_job(&lab, &name, &other)
}

/// A Python job (interpreter and libraries from the layer, the mappings
/// overlayfs shows on the squashfs) moves from `a` to `b` and back; its
/// output at home has every line once, in order.
fn move_a_python_job(lab: &ClusterLab, a: &str, b: &str) -> Result<()> {
    lab.wait_for_criu(&[a.to_string(), b.to_string()], Duration::from_secs(60))?;
    let marker = "om-layer-counter";
    let script = format!(
        "python3 -u -c 'import time  # {marker}\nfor i in range(1, 101):\n    print(i)\n    time.sleep(0.2)'"
    );
    let mut child = lab
        .omctl_in("/cluster/render")
        .args(["run", "--node", a, "--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let mut seen = Vec::new();
    let mut read_to = |n: usize, seen: &mut Vec<String>| -> Result<()> {
        while seen.len() < n {
            seen.push(lines.next().context("the job's output ended early")??);
        }
        Ok(())
    };
    read_to(5, &mut seen)?;
    let job = find_job(lab, marker)?;
    let id = job["job"]
        .as_str()
        .context("a job without an id")?
        .to_string();
    for (to, moves) in [(b, 1), (a, 2)] {
        let o = lab
            .omctl()
            .args(["migrate", &id, to])
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            o.status.success(),
            "omctl migrate {id} {to}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("{}", String::from_utf8_lossy(&o.stdout).trim());
        let j = find_job(lab, marker)?;
        ensure!(
            j["node"] == to && j["moves"] == moves,
            "after moving to {to}, ps shows {j}"
        );
        let n = seen.len();
        read_to(n + 5, &mut seen)?;
    }
    read_to(100, &mut seen)?;
    let status = child.wait()?;
    let expected: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    ensure!(
        seen == expected,
        "the Python job's output across two moves is not 1..100 once each: {seen:?}"
    );
    ensure!(status.success(), "the Python job ended with {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_sizes_come_from_the_header() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(160u32.to_be_bytes());
        png.extend(120u32.to_be_bytes());
        assert_eq!(png_size(&png), Some((160, 120)));
        assert_eq!(png_size(b"GIF89a"), None);
    }
}
