//! ISOLINUX configuration (`isolinux/isolinux.cfg`): the BIOS boot menu.
//!
//! No menu module: `isolinux/boot.msg` lists the entries on the screen
//! above a `boot:` prompt (the prompt is also on the first serial port);
//! typing an entry's label picks it, after 3 s the first entry boots. The kernel and initrd are read from ISO 9660.

use super::BootEntry;

/// Path in the ISO tree of the text shown above the `boot:` prompt.
pub const MESSAGE: &str = "isolinux/boot.msg";

/// The text shown on screen above the `boot:` prompt: the entries and how
/// to pick one.
pub fn message(entries: &[BootEntry]) -> String {
    let mut m = String::from("\nomcluster boot entries:\n");
    for (i, e) in entries.iter().enumerate() {
        let note = if i == 0 { " (default, in 3 s)" } else { "" };
        m.push_str(&format!("  {:<10} {}{note}\n", e.label, e.title));
    }
    m.push_str("Type an entry's name and Enter at the boot: prompt.\n");
    m
}

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
    c.push_str(&format!("DISPLAY /{MESSAGE}\n"));
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
    fn message_lists_the_entries() {
        let entries = vec![
            BootEntry {
                label: "compute".into(),
                title: "compute node".into(),
                cmdline: String::new(),
            },
            BootEntry {
                label: "head".into(),
                title: "head node".into(),
                cmdline: String::new(),
            },
        ];
        expect![[r#"

            omcluster boot entries:
              compute    compute node (default, in 3 s)
              head       head node
            Type an entry's name and Enter at the boot: prompt.
        "#]]
        .assert_eq(&message(&entries));
    }

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
            DISPLAY /isolinux/boot.msg

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
