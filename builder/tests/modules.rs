//! Kernel module selection and the kmod index files, on synthetic modules.

use std::collections::{BTreeMap, BTreeSet};

use builder::modules::{glob_match, modinfo, select, ModuleError};
use expect_test::expect;

use crate::util::fake_module;

fn kernel() -> BTreeMap<String, Vec<u8>> {
    let m = |info: &[&str]| fake_module(info);
    BTreeMap::from([
        (
            "kernel/drivers/net/ethernet/intel/e1000/e1000.ko".into(),
            m(&[
                "alias=pci:v00008086d0000100Esv*sd*bc*sc*i*",
                "depends=",
                "name=e1000",
            ]),
        ),
        (
            "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko".into(),
            m(&[
                "alias=pci:v00008086d000010D3sv*sd*bc*sc*i*",
                "depends=ptp",
                "name=e1000e",
            ]),
        ),
        (
            "kernel/drivers/ptp/ptp.ko".into(),
            m(&["depends=pps_core", "name=ptp"]),
        ),
        (
            "kernel/drivers/pps/pps_core.ko".into(),
            m(&["depends=", "name=pps_core"]),
        ),
        (
            "kernel/drivers/virtio/virtio_pci.ko".into(),
            m(&[
                "alias=pci:v00001AF4d*sv*sd*bc*sc*i*",
                "depends=virtio_pci_modern_dev",
                "name=virtio_pci",
            ]),
        ),
        (
            "kernel/drivers/virtio/virtio_pci_modern_dev.ko".into(),
            m(&["depends=", "name=virtio_pci_modern_dev"]),
        ),
        (
            "kernel/drivers/char/hw_random/virtio-rng.ko".into(),
            m(&[
                "alias=virtio:d00000004v*",
                "depends=virtio_pci",
                "name=virtio_rng",
            ]),
        ),
        (
            "kernel/fs/isofs/isofs.ko".into(),
            m(&["alias=fs-iso9660", "depends=cdrom_builtin", "name=isofs"]),
        ),
        (
            "kernel/fs/nfs/nfs.ko".into(),
            m(&["depends=sunrpc", "name=nfs"]),
        ),
    ])
}

fn check(patterns: &[&str], expect_dep: expect_test::Expect, expect_alias: expect_test::Expect) {
    let k = kernel();
    let avail: BTreeMap<String, &[u8]> = k.iter().map(|(p, d)| (p.clone(), d.as_slice())).collect();
    let builtin = BTreeSet::from(["cdrom_builtin".to_string()]);
    let pats: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
    let sel = select(&avail, &pats, &builtin).unwrap();
    expect_dep.assert_eq(&sel.dep);
    expect_alias.assert_eq(&sel.alias);
}

#[test]
fn closure_follows_depends_transitively_in_modprobe_order() {
    check(
        &["e1000e", "virtio-rng"],
        expect![[r#"
            kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio_pci.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko
            kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko kernel/drivers/pps/pps_core.ko
            kernel/drivers/pps/pps_core.ko:
            kernel/drivers/ptp/ptp.ko: kernel/drivers/pps/pps_core.ko
            kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko
            kernel/drivers/virtio/virtio_pci_modern_dev.ko:
        "#]],
        expect![[r#"
            alias virtio:d00000004v* virtio_rng
            alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
            alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
        "#]],
    );
}

#[test]
fn path_globs_and_builtin_dependencies() {
    check(
        &["kernel/drivers/net/ethernet/**", "isofs"],
        expect![[r#"
            kernel/drivers/net/ethernet/intel/e1000/e1000.ko:
            kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko: kernel/drivers/ptp/ptp.ko kernel/drivers/pps/pps_core.ko
            kernel/drivers/pps/pps_core.ko:
            kernel/drivers/ptp/ptp.ko: kernel/drivers/pps/pps_core.ko
            kernel/fs/isofs/isofs.ko:
        "#]],
        expect![[r#"
            alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
            alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e
            alias fs-iso9660 isofs
        "#]],
    );
}

#[test]
fn missing_dependency_and_unmatched_pattern_are_errors() {
    let k = kernel();
    let avail: BTreeMap<String, &[u8]> = k.iter().map(|(p, d)| (p.clone(), d.as_slice())).collect();
    let err = select(&avail, &["nfs".into()], &BTreeSet::new()).unwrap_err();
    assert_eq!(
        err,
        ModuleError::MissingDependency {
            module: "nfs".into(),
            missing: "sunrpc".into()
        }
    );
    let err = select(&avail, &["e1001".into()], &BTreeSet::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "module pattern \"e1001\" matches no module of this kernel"
    );
    let err = select(
        &BTreeMap::from([("kernel/x.ko".to_string(), &b"junk"[..])]),
        &["x".into()],
        &BTreeSet::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel module kernel/x.ko: not an ELF file"
    );
}

#[test]
fn globs() {
    assert!(glob_match(
        "kernel/drivers/net/**",
        "kernel/drivers/net/a/b/c.ko"
    ));
    assert!(!glob_match(
        "kernel/drivers/net/*.ko",
        "kernel/drivers/net/a/c.ko"
    ));
    assert!(glob_match(
        "kernel/drivers/net/*.ko",
        "kernel/drivers/net/c.ko"
    ));
    assert!(glob_match("e1000?", "e1000e"));
    assert!(!glob_match("e1000?", "e1000"));
}

#[test]
fn modinfo_reads_key_values() {
    let m = fake_module(&["license=GPL", "depends=a,b"]);
    let info = modinfo("m.ko", &m).unwrap();
    assert_eq!(
        info,
        [
            ("license".to_string(), "GPL".to_string()),
            ("depends".into(), "a,b".into())
        ]
    );
}
