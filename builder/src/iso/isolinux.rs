//! ISOLINUX configuration (`isolinux/isolinux.cfg`): the BIOS boot menu.
//!
//! No menu module: a `boot:` prompt on the screen and on the first serial
//! port, where typing an entry's label picks it; after 3 s the first entry
//! boots. The kernel and initrd are read from ISO 9660.

use super::BootEntry;

/// The config text for `entries` (default first), booting `kernel` and
/// `initrd` (paths in the ISO tree).
pub fn config(entries: &[BootEntry], kernel: &str, initrd: &str) -> String {
    let kernel = kernel.trim_start_matches('/');
    let initrd = initrd.trim_start_matches('/');
    let mut c = String::new();
    c.push_str("SERIAL 0 115200\n");
    if let Some(first) = entries.first() {
        c.push_str(&format!("DEFAULT {}\n", first.label));
    }
    c.push_str("PROMPT 1\nTIMEOUT 30\n");
    let labels: Vec<&str> = entries.iter().map(|e| e.label.as_str()).collect();
    c.push_str(&format!(
        "SAY omcluster boot entries: {} (default {})\n",
        labels.join(", "),
        labels.first().unwrap_or(&"")
    ));
    for e in entries {
        c.push_str(&format!(
            "\nLABEL {}\n  MENU LABEL {}\n  LINUX /{kernel}\n  INITRD /{initrd}\n  APPEND {}\n",
            e.label, e.title, e.cmdline
        ));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn two_entries() {
        let entries = vec![
            BootEntry {
                label: "compute".into(),
                title: "compute node".into(),
                cmdline: "quiet".into(),
            },
            BootEntry {
                label: "head".into(),
                title: "head node".into(),
                cmdline: "quiet om.role=head".into(),
            },
        ];
        expect![[r#"
            SERIAL 0 115200
            DEFAULT compute
            PROMPT 1
            TIMEOUT 30
            SAY omcluster boot entries: compute, head (default compute)

            LABEL compute
              MENU LABEL compute node
              LINUX /vmlinuz
              INITRD /initrd.img
              APPEND quiet

            LABEL head
              MENU LABEL head node
              LINUX /vmlinuz
              INITRD /initrd.img
              APPEND quiet om.role=head
        "#]]
        .assert_eq(&config(&entries, "/vmlinuz", "initrd.img"));
    }
}
