//! The ClusterKnoppix experience: one ISO, boot the head from it, netboot
//! the rest. A qemu machine boots the built ISO's "head" entry (typed at
//! ISOLINUX's `boot:` prompt) on an empty virtual LAN, finds no DHCP server,
//! takes the fallback address and serves DHCP, TFTP and HTTP from its own
//! boot medium; a second machine with OVMF's own PXE stack (so it fetches
//! iPXE over TFTP first) netboots from it and joins the head's cluster.
//!
//! The bridge carries an observer address (10.77.0.2, outside the head's
//! pool) so the test can ask the head's HTTP API what it saw.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use pxe_server::lab::{self, Firmware, NodeSpec, QemuNode, VirtualLan};

use crate::util::{self, medium_args, Medium};

/// The address the head takes when no DHCP server answers it
/// (`node_agent::init::head::FALLBACK_ADDRESS`).
const HEAD: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

#[test]
fn qemu_head_booted_from_the_iso_netboots_a_node_that_joins() -> Result<()> {
    if !util::qemu_tests_enabled("qemu_head_booted_from_the_iso_netboots_a_node_that_joins") {
        return Ok(());
    }
    lab::check_prerequisites(&[Firmware::BiosIpxe, Firmware::UefiPxe])?;
    ensure!(
        node_agent::init::head::FALLBACK_ADDRESS.address == HEAD,
        "the head's fallback address changed; update this test"
    );
    let bin = util::static_binaries()?;
    let image = util::default_image(&bin)?;
    let iso = image.join("node.iso");
    let work = util::workspace().join("target/e2e/om-head");
    let _ = std::fs::remove_dir_all(&work);
    let mut lan = VirtualLan::create("om-head", Ipv4Addr::new(10, 77, 0, 2), 24)?;

    let mut head = QemuNode::boot(
        &mut lan,
        NodeSpec {
            name: "head".into(),
            firmware: Firmware::BiosIpxe,
            mac: lab::lab_mac(0x50),
            memory_mib: 768,
            work_dir: work.clone(),
            extra_args: medium_args(Medium::Cd, &iso),
            serial_input: true,
        },
    )?;
    head.wait_for("boot:", Duration::from_secs(180))
        .context("the ISO's ISOLINUX prompt")?;
    head.type_on_serial("head\r")?;
    head.wait_for("omnode: role head", Duration::from_secs(240))
        .context("the head entry booting")?;
    let fallback = head
        .wait_for("no DHCP server answered", Duration::from_secs(180))
        .context("the head's DHCP probe")?;
    eprintln!("head: {fallback}");
    let serving = head
        .wait_for(
            "omnode: starting /bin/omboot serve",
            Duration::from_secs(120),
        )
        .context("the head starting its boot server")?;
    eprintln!("head: {serving}");
    ensure!(
        serving.contains("--mode dhcp") && serving.contains("--pool 10.77.0.128-10.77.0.254"),
        "the head should serve DHCP for the upper half of its /24: {serving}"
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
            serial_input: false,
        },
    )?;
    let joined = node
        .wait_for("joined cluster omcluster", Duration::from_secs(420))
        .context("the node netbooting from the head")?;
    eprintln!("node1: {joined}");
    ensure!(
        joined.contains("(2 nodes)"),
        "the node should have joined the head's cluster of two: {joined}"
    );

    // Both machines check in with the head's boot server.
    let start = Instant::now();
    let stages = loop {
        // Until omboot is listening, curl fails: keep asking.
        let stages = lab::boot_stages(&lan, HEAD).unwrap_or_default();
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
        (Ipv4Addr::new(10, 77, 0, 128)..=Ipv4Addr::new(10, 77, 0, 254)).contains(&node_ip),
        "the node's address {node_ip} is not from the head's pool"
    );

    // And the head's own omctl sees both alive, typed on its serial shell.
    head.type_on_serial("omctl status\r")?;
    let status = head
        .wait_for("nodes, 2 alive", Duration::from_secs(60))
        .context("omctl status on the head")?;
    eprintln!("head: {status}");
    Ok(())
}
