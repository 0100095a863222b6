//! The dependency resolver on synthetic `Packages` indexes.

use builder::debian::parse_packages;
use builder::resolve::{resolve, Index, ResolveError};

const PACKAGES: &str = "\
Package: linux-image-amd64
Version: 6.1.99-1
Architecture: amd64
Depends: linux-image-6.1.0-30-amd64 (= 6.1.99-1)
Filename: pool/main/l/linux/linux-image-amd64_6.1.99-1_amd64.deb
Size: 100
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: linux-image-6.1.0-30-amd64
Version: 6.1.99-1
Architecture: amd64
Pre-Depends: debconf | debconf-2.0
Depends: kmod, linux-base (>= 4.3~), initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool
Filename: pool/main/l/linux/linux-image-6.1.0-30-amd64_6.1.99-1_amd64.deb
Size: 200
SHA256: 2222222222222222222222222222222222222222222222222222222222222222

Package: linux-image-6.1.0-30-amd64
Version: 6.1.98-1
Architecture: amd64
Filename: pool/main/l/linux/linux-image-6.1.0-30-amd64_6.1.98-1_amd64.deb
Size: 190
SHA256: 2222222222222222222222222222222222222222222222222222222222222220

Package: cdebconf
Version: 0.270
Architecture: amd64
Provides: debconf-2.0
Filename: pool/main/c/cdebconf/cdebconf_0.270_amd64.deb
Size: 300
SHA256: 3333333333333333333333333333333333333333333333333333333333333333

Package: kmod
Version: 30+20221128-1
Architecture: amd64
Depends: libc6 (>= 2.34)
Filename: pool/main/k/kmod/kmod_30+20221128-1_amd64.deb
Size: 400
SHA256: 4444444444444444444444444444444444444444444444444444444444444444

Package: libc6
Version: 2.36-9
Architecture: amd64
Filename: pool/main/g/glibc/libc6_2.36-9_amd64.deb
Size: 500
SHA256: 5555555555555555555555555555555555555555555555555555555555555555

Package: app
Version: 1.0
Architecture: amd64
Depends: libc6 (>= 2.40)
Filename: pool/main/a/app/app_1.0_amd64.deb
Size: 600
SHA256: 6666666666666666666666666666666666666666666666666666666666666666

Package: uses-vprov
Version: 1.0
Architecture: all
Depends: mail-transport-agent | missing-thing, libc6
Filename: pool/main/u/u/uses-vprov_1.0_all.deb
Size: 700
SHA256: 7777777777777777777777777777777777777777777777777777777777777777

Package: postfix
Version: 3.7
Architecture: amd64
Provides: mail-transport-agent
Depends: libc6 (>= 2.17)
Filename: pool/main/p/postfix/postfix_3.7_amd64.deb
Size: 800
SHA256: 8888888888888888888888888888888888888888888888888888888888888888
";

fn index() -> Index {
    Index::new(parse_packages(PACKAGES).unwrap())
}

fn names(sel: &std::collections::BTreeMap<String, builder::resolve::Selected>) -> Vec<String> {
    sel.values()
        .map(|s| {
            format!(
                "{}={} -> {:?}",
                s.package.name, s.package.version, s.depends
            )
        })
        .collect()
}

/// What the node recipe prunes from the kernel's dependencies.
fn kernel_prune() -> [String; 4] {
    [
        "kmod",
        "linux-base",
        "initramfs-tools",
        "linux-initramfs-tool",
    ]
    .map(String::from)
}

#[test]
fn pruned_packages_are_not_followed_and_virtual_deps_use_providers() {
    let prune = kernel_prune();
    let sel = resolve(&index(), &["linux-image-amd64".into()], &prune).unwrap();
    assert_eq!(
        names(&sel),
        [
            "cdebconf=0.270 -> {}",
            "linux-image-6.1.0-30-amd64=6.1.99-1 -> {\"cdebconf\"}",
            "linux-image-amd64=6.1.99-1 -> {\"linux-image-6.1.0-30-amd64\"}",
        ]
    );
}

/// A pruned package that is also a root (python3 for the system layer,
/// pruned from criu's dependencies in the initramfs) is selected with its
/// own dependencies, but no edge leads to it from the packages that merely
/// depend on it.
#[test]
fn a_pruned_root_is_selected_but_not_depended_on() {
    let prune = kernel_prune();
    let sel = resolve(
        &index(),
        &["linux-image-amd64".into(), "kmod".into()],
        &prune,
    )
    .unwrap();
    assert_eq!(
        names(&sel),
        [
            "cdebconf=0.270 -> {}",
            "kmod=30+20221128-1 -> {\"libc6\"}",
            "libc6=2.36-9 -> {}",
            "linux-image-6.1.0-30-amd64=6.1.99-1 -> {\"cdebconf\"}",
            "linux-image-amd64=6.1.99-1 -> {\"linux-image-6.1.0-30-amd64\"}",
        ]
    );
}

#[test]
fn without_pruning_the_full_closure_is_taken() {
    let sel = resolve(
        &index(),
        &["linux-image-amd64".into()],
        &["linux-base".into(), "initramfs-tools".into()],
    );
    let sel = sel.unwrap();
    assert!(
        sel.contains_key("kmod") && sel.contains_key("libc6"),
        "{:?}",
        names(&sel)
    );
}

#[test]
fn first_satisfiable_alternative_through_provides() {
    let sel = resolve(&index(), &["uses-vprov".into()], &[]).unwrap();
    assert_eq!(
        names(&sel),
        [
            "libc6=2.36-9 -> {}",
            "postfix=3.7 -> {\"libc6\"}",
            "uses-vprov=1.0 -> {\"libc6\", \"postfix\"}"
        ]
    );
}

#[test]
fn version_constraints_are_enforced() {
    let err = resolve(&index(), &["app".into()], &[]).unwrap_err();
    assert_eq!(
        err,
        ResolveError::Unsatisfiable {
            package: "app".into(),
            dependency: "libc6 (>= 2.40)".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "cannot satisfy dependency libc6 (>= 2.40) of app"
    );
}

#[test]
fn unknown_package_is_named() {
    let err = resolve(&index(), &["no-such-package".into()], &[]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "package no-such-package does not exist in the archive index"
    );
}

#[test]
fn essential_packages_are_listed_by_their_newest_version() {
    let text = "\
Package: dash
Version: 0.5.12-2
Architecture: amd64
Essential: yes
Filename: pool/main/d/dash/dash_0.5.12-2_amd64.deb
Size: 1
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: hello
Version: 2.10-3
Architecture: amd64
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 1
SHA256: 2222222222222222222222222222222222222222222222222222222222222222
";
    let index = Index::new(parse_packages(text).unwrap());
    assert_eq!(index.essential(), ["dash"]);
}
