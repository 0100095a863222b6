//! The built ISO boots the real image from every medium: SeaBIOS and OVMF,
//! as a CD and as a USB stick (the same file `dd`-ed to a disk), each until
//! `omnode init` (PID 1 of the image) reports its console shell, which it
//! does once it has mounted everything and taken the console.
//!
//! The machines sit on a LAN of their own with nothing else on it: they boot
//! from the medium, not the network (the medium has the first boot index).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use lab::qemu::{medium_args, Medium};
use lab::{Firmware, NodeSpec, QemuNode, VirtualLan};

/// What `omnode init` prints when the console shell is up.
const INIT_READY: &str = "omnode: root shell on";

#[test]
fn qemu_built_iso_boots_the_image_from_cd_and_usb_on_bios_and_uefi() -> Result<()> {
    if !lab::gate::qemu_tests() {
        return Ok(());
    }
    lab::check_prerequisites(&[Firmware::BiosIpxe, Firmware::UefiIpxe])?;
    let bin = lab::build::static_binaries()?;
    let image = lab::build::default_image(&bin)?;
    let iso = image.join("node.iso");
    anyhow::ensure!(iso.is_file(), "ombuild wrote no {}", iso.display());
    let work = lab::build::workspace().join("target/e2e/om-media");
    let _ = std::fs::remove_dir_all(&work);
    let mut lan = VirtualLan::create("om-media", Ipv4Addr::new(10, 78, 0, 1), 24)?;

    let boots = [
        ("seabios-cd", Firmware::BiosIpxe, Medium::Cd),
        ("ovmf-cd", Firmware::UefiIpxe, Medium::Cd),
        ("seabios-usb", Firmware::BiosIpxe, Medium::Usb),
        ("ovmf-usb", Firmware::UefiIpxe, Medium::Usb),
    ];
    // Two machines at a time: what two cores emulate without starving either.
    for pair in boots.chunks(2) {
        let mut machines = Vec::new();
        for (index, (name, firmware, medium)) in pair.iter().enumerate() {
            let spec = NodeSpec {
                name: name.to_string(),
                firmware: *firmware,
                mac: lab::lab_mac(0x40 + index as u8),
                memory_mib: 768,
                work_dir: work.clone(),
                extra_args: medium_args(*medium, &iso),
                serial_input: false,
            };
            machines.push(QemuNode::boot(&mut lan, spec)?);
        }
        for machine in &mut machines {
            let line = machine
                .wait_for(INIT_READY, Duration::from_secs(420))
                .with_context(|| format!("booting the ISO: {}", machine.name()))?;
            eprintln!("{}: {line}", machine.name());
        }
    }
    Ok(())
}
