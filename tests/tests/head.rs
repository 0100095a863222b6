//! The ClusterKnoppix experience: one ISO, boot the head from it, netboot
//! the rest. A qemu machine boots the built ISO's "head" entry with no
//! settings and decides by itself how to serve, from its own boot medium:
//!
//! - on an empty virtual LAN (SeaBIOS, the ISO as a CD, `head` typed at
//!   ISOLINUX's `boot:` prompt) it finds no DHCP server, takes the fallback
//!   address and serves DHCP, TFTP and HTTP;
//! - on a LAN with a router's DHCP server, dnsmasq (OVMF, the ISO as a USB
//!   stick, the head entry picked with cursor-down and Enter in
//!   systemd-boot's menu) it takes a lease from the router and serves as
//!   ProxyDHCP, handing out no address.
//!
//! Either way a second machine with OVMF's own PXE stack (so it fetches
//! iPXE over TFTP first) netboots from the head and joins its cluster, both
//! check in with the head's boot server, and `omctl status` typed on the
//! head's serial shell shows both alive.
//!
//! The head serves the shared tree `/cluster` and the node mounts it: on the
//! empty LAN the head has a virtio disk made with `mkfs.ext4 -L OMCLUSTER`
//! and keeps the tree there, so a file the node wrote is still there when
//! the head machine is powered off and booted again; beside the router it
//! has no disk and keeps the tree in tmpfs.
//!
//! Beside the router the ISO is the render image's (`images/render.toml`):
//! the head runs from the system layer on its own medium and serves the
//! same layer to the node, which maps it from the head's NFS export; both
//! run Python from it.
//!
//! The bridge carries an observer address (10.77.0.2, outside every pool) so
//! the test can ask the head's HTTP API what it saw.

use std::net::Ipv4Addr;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use lab::qemu::{medium_args, Medium};
use lab::{Firmware, LanRouter, NodeSpec, QemuNode, VirtualLan};

/// The address the head takes when no DHCP server answers it
/// (`node_init::head::FALLBACK_ADDRESS`).
const FALLBACK: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// The network the head boots on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lan {
    /// Nothing else on it: the head is the DHCP server.
    Dedicated,
    /// A router's dnsmasq hands out addresses: the head is ProxyDHCP.
    WithRouter,
}

#[test]
fn qemu_head_booted_from_the_iso_serves_dhcp_on_an_empty_lan_and_a_node_joins() -> Result<()> {
    head_from_the_iso(Lan::Dedicated)
}

#[test]
fn qemu_head_booted_from_the_iso_serves_proxydhcp_beside_a_router_and_a_node_joins() -> Result<()> {
    head_from_the_iso(Lan::WithRouter)
}

fn head_from_the_iso(kind: Lan) -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    lab::check_prerequisites(&[Firmware::BiosIpxe, Firmware::UefiIpxe, Firmware::UefiPxe])?;
    ensure!(
        node_init::head::FALLBACK_ADDRESS.address == FALLBACK,
        "the head's fallback address changed; update this test"
    );
    let bin = lab::build::static_binaries()?;
    let image = match kind {
        Lan::Dedicated => lab::build::default_image(&bin)?,
        Lan::WithRouter => lab::build::render_image(&bin)?,
    };
    // The ISO is named after the recipe (`name = "render"` → render.iso).
    let iso = match kind {
        Lan::Dedicated => image.join("node.iso"),
        Lan::WithRouter => image.join("render.iso"),
    };
    let name = match kind {
        Lan::Dedicated => "om-head",
        Lan::WithRouter => "om-headr",
    };
    let work = lab::build::workspace().join("target/e2e").join(name);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut lan = VirtualLan::create(name, Ipv4Addr::new(10, 77, 0, 2), 24)?;
    // Declared after the LAN so it is dropped first.
    let _router = match kind {
        Lan::Dedicated => None,
        Lan::WithRouter => Some(LanRouter::start(&lan, &work)?),
    };
    let router_pool = {
        let (low, high) = lab::LAB_ROUTER_POOL;
        low.parse::<Ipv4Addr>()?..=high.parse::<Ipv4Addr>()?
    };

    // Firmware, medium, the boot menu's prompt and the keys that pick the
    // head entry there.
    let (firmware, medium, prompt, keys) = match kind {
        Lan::Dedicated => (Firmware::BiosIpxe, Medium::Cd, "boot:", "head\r"),
        Lan::WithRouter => (Firmware::UefiIpxe, Medium::Usb, "Boot in", "\x1b[B\r"),
    };
    // On the empty LAN the head keeps the tree on a disk of its own.
    let tree_disk = match kind {
        Lan::Dedicated => Some(tree_disk(&work)?),
        Lan::WithRouter => None,
    };
    let head_spec = NodeSpec {
        name: "head".into(),
        firmware,
        mac: lab::lab_mac(0x50),
        memory_mib: 768,
        work_dir: work.clone(),
        extra_args: head_args(medium, &iso, tree_disk.as_deref()),
        serial_input: true,
    };
    let mut head = QemuNode::boot(&mut lan, head_spec.clone())?;
    head.wait_for(prompt, Duration::from_secs(240))
        .with_context(|| format!("the ISO's boot menu ({prompt:?})"))?;
    head.type_on_serial(keys)?;
    head.wait_for("omnode: role head", Duration::from_secs(240))
        .context("the head entry booting")?;
    let kept_on = match kind {
        Lan::Dedicated => "shared tree /cluster on /dev/vda (",
        Lan::WithRouter => "shared tree /cluster on tmpfs (",
    };
    let line = head
        .wait_for("shared tree /cluster on", Duration::from_secs(240))
        .context("the head choosing where it keeps /cluster")?;
    eprintln!("head: {line}");
    ensure!(line.contains(kept_on), "expected {kept_on:?}: {line}");
    if kind == Lan::WithRouter {
        let line = head
            .wait_for(
                "omnode: running from the system layer",
                Duration::from_secs(240),
            )
            .context("the head moving into the layer on its medium")?;
        eprintln!("head: {line}");
        ensure!(
            line.contains("/run/omcluster/media/system.squashfs"),
            "the head's layer should come from its medium: {line}"
        );
    }
    let (head_address, node_pool): (Ipv4Addr, RangeInclusive<Ipv4Addr>) = match kind {
        Lan::Dedicated => {
            let line = head
                .wait_for("no DHCP server answered", Duration::from_secs(180))
                .context("the head's DHCP probe")?;
            eprintln!("head: {line}");
            (
                FALLBACK,
                Ipv4Addr::new(10, 77, 0, 128)..=Ipv4Addr::new(10, 77, 0, 254),
            )
        }
        Lan::WithRouter => {
            let line = head
                .wait_for("eth0: DHCP lease", Duration::from_secs(180))
                .context("the head's lease from the LAN router")?;
            eprintln!("head: {line}");
            let address = lab::qemu::leased_address(&line)
                .with_context(|| format!("no address in {line:?}"))?;
            ensure!(
                router_pool.contains(&address),
                "the head's address {address} is not from the router's pool"
            );
            (address, router_pool.clone())
        }
    };
    let serving = head
        .wait_for(
            "omnode: starting /bin/omboot serve",
            Duration::from_secs(120),
        )
        .context("the head starting its boot server")?;
    eprintln!("head: {serving}");
    match kind {
        Lan::Dedicated => ensure!(
            serving.contains("--mode dhcp --pool 10.77.0.128-10.77.0.254"),
            "the head should serve DHCP for the upper half of its /24: {serving}"
        ),
        Lan::WithRouter => ensure!(
            serving.contains("--mode proxy") && !serving.contains("--pool"),
            "beside the router the head should be ProxyDHCP only: {serving}"
        ),
    }
    ensure!(
        serving.ends_with("--share /cluster"),
        "the head should serve its /cluster: {serving}"
    );

    let mut node = QemuNode::boot(
        &mut lan,
        NodeSpec {
            name: "node1".into(),
            firmware: Firmware::UefiPxe,
            mac: lab::lab_mac(0x51),
            memory_mib: 768,
            work_dir: work.clone(),
            extra_args: Vec::new(),
            serial_input: true,
        },
    )?;
    // Beside a LAN it does not own, the head admits nobody by itself: the
    // admin does, on the head's console.
    if kind == Lan::WithRouter {
        let pending = node
            .wait_for("admission pending", Duration::from_secs(420))
            .context("the node asking the head for admission")?;
        eprintln!("node1: {pending}");
        let said = head
            .shell(
                &format!("omctl admit {} 2>&1", node.spec().mac_text()),
                Duration::from_secs(60),
            )
            .context("omctl admit on the head")?;
        eprintln!("head: {said}");
        ensure!(said.contains("admitted"), "omctl admit: {said}");
    }
    let joined = node
        .wait_for("joined cluster omcluster", Duration::from_secs(420))
        .context("the node netbooting from the head")?;
    eprintln!("node1: {joined}");
    ensure!(
        joined.contains("(2 nodes)"),
        "the node should have joined the head's cluster of two: {joined}"
    );
    if kind == Lan::WithRouter {
        // The head serves the layer from its medium; the node maps it from
        // there, and both run the layer's programs.
        let line = node
            .wait_for(
                "omnode: running from the system layer",
                Duration::from_secs(10),
            )
            .context("the node moving into the layer the head serves")?;
        eprintln!("node1: {line}");
        ensure!(
            line.contains(&format!("nfs://{head_address}/images/system.squashfs")),
            "the node's layer should come from the head's export: {line}"
        );
        for (who, machine) in [("head", &mut head), ("node1", &mut node)] {
            let said = machine
                .shell("python3 -c 'print(6 * 7)'", Duration::from_secs(120))
                .with_context(|| format!("python3 on the {who}"))?;
            ensure!(said == "42", "python3 on the {who} said: {said}");
        }
    }

    // Both machines check in with the head's boot server.
    let start = Instant::now();
    let stages = loop {
        // Until omboot is listening, curl fails: keep asking.
        let stages = lab::boot_stages(&lan, head_address).unwrap_or_default();
        if lab::machines_at_stage(&stages, "agent") == 2 {
            break stages;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "the head and the node did not both check in with the head's omboot: {stages}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let node_address = stages
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["mac"] == node.spec().mac_text())
        .and_then(|n| n["address"].as_str().map(String::from))
        .context("the node is not in the head's nodes list")?;
    let node_ip: Ipv4Addr = node_address.parse()?;
    ensure!(
        node_pool.contains(&node_ip),
        "the node's address {node_ip} is not from {node_pool:?}"
    );

    // The node mounted the head's tree and writes to it as root, which the
    // head sees as root's file (no root squashing in the cluster).
    let mounted = node
        .wait_for("mounted /cluster from", Duration::from_secs(60))
        .context("the node mounting the head's /cluster")?;
    eprintln!("node1: {mounted}");
    ensure!(
        mounted.contains(&format!("nfs://{head_address}/cluster")),
        "the node should mount the head's tree: {mounted}"
    );
    // The shell expands the marker, so the typed line never matches it.
    node.shell(
        "echo persist:42 > /cluster/kept.txt",
        Duration::from_secs(30),
    )
    .context("the node writing to /cluster")?;
    let kept = head
        .shell(
            "until [ -s /cluster/kept.txt ]; do sleep 1; done; stat -c %u:%s /cluster/kept.txt; cat /cluster/kept.txt",
            Duration::from_secs(60),
        )
        .context("the head reading the node's file in /cluster")?;
    ensure!(
        kept == "0:11 persist:42",
        "the head should see the node's file, owned by root: {kept}"
    );

    // And the head's own omctl sees both alive, typed on its serial shell.
    head.type_on_serial("omctl status\r")?;
    let status = head
        .wait_for("nodes, 2 alive", Duration::from_secs(60))
        .context("omctl status on the head")?;
    eprintln!("head: {status}");

    // omboot logs to a file, not over the head's console shell: the node's
    // TFTP fetch of iPXE is there.
    head.type_on_serial(
        "echo \"tftp-lines=$(grep -c 'tftp transfer' /run/omboot.log)\" | tr = :\r",
    )?;
    let line = head
        .wait_for("tftp-lines:", Duration::from_secs(30))
        .context("reading the head's omboot log")?;
    let count: u32 = line
        .rsplit(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no count in {line:?}"))?;
    ensure!(
        count >= 1,
        "the head's /run/omboot.log has no TFTP transfer: {line}"
    );

    // The persistent tree: pull the head's plug, boot it again from the
    // same ISO and disk, and the node's file is still there.
    if tree_disk.is_some() {
        node.power_off();
        head.power_off();
        drop(head);
        let mut again = QemuNode::boot(
            &mut lan,
            NodeSpec {
                name: "head2".into(),
                ..head_spec
            },
        )?;
        again
            .wait_for(prompt, Duration::from_secs(240))
            .context("the ISO's boot menu, second boot")?;
        again.type_on_serial(keys)?;
        again
            .wait_for(kept_on, Duration::from_secs(300))
            .context("the head finding its OMCLUSTER disk again")?;
        let kept = again
            .shell("cat /cluster/kept.txt", Duration::from_secs(60))
            .context("the node's file after the head's reboot")?;
        ensure!(
            kept == "persist:42",
            "the file should survive the head's reboot: {kept}"
        );
    }
    Ok(())
}

/// A 64 MiB raw disk image holding an ext4 file system labelled
/// `OMCLUSTER`, the head's persistent tree.
fn tree_disk(work: &std::path::Path) -> Result<std::path::PathBuf> {
    let disk = work.join("omcluster.img");
    std::fs::File::create(&disk)?.set_len(64 << 20)?;
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "OMCLUSTER"])
        .arg(&disk)
        .output()
        .context("running mkfs.ext4 (e2fsprogs)")?;
    ensure!(
        out.status.success(),
        "mkfs.ext4 failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(disk)
}

/// The head's qemu arguments: its boot medium, and the tree's disk on
/// virtio when it has one.
fn head_args(medium: Medium, iso: &std::path::Path, disk: Option<&std::path::Path>) -> Vec<String> {
    let mut args = medium_args(medium, iso);
    if let Some(disk) = disk {
        args.extend([
            "-drive".into(),
            format!("if=none,id=tree,format=raw,file={}", disk.display()),
            "-device".into(),
            "virtio-blk-pci,drive=tree".into(),
        ]);
    }
    args
}
