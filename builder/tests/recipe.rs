//! Recipe parsing and its errors.

use std::path::{Path, PathBuf};

use builder::recipe::{Architecture, Compression, Recipe};

fn parse(text: &str) -> Result<Recipe, String> {
    Recipe::parse(Path::new("r.toml"), text, PathBuf::new()).map_err(|e| e.to_string())
}

const MINIMAL: &str = "name = \"n\"\nsuite = \"bookworm\"\narchitecture = \"x86_64\"\n";

#[test]
fn the_shipped_recipe_parses() {
    let r = Recipe::load(&crate::util::workspace().join("images/node.toml")).unwrap();
    assert_eq!(r.architecture, Architecture::X86_64);
    assert_eq!(r.architecture.debian(), "amd64");
    assert_eq!(r.kernel_package, "linux-image-amd64");
    assert_eq!(r.compression, Compression::Zstd);
    for p in [
        "busybox",
        "ipxe",
        "isolinux",
        "syslinux-common",
        "systemd-boot-efi",
    ] {
        assert!(
            r.roots().iter().any(|x| x == p),
            "{p} missing from the recipe"
        );
    }
}

#[test]
fn defaults() {
    let r = parse(MINIMAL).unwrap();
    assert_eq!(r.kernel_package, "linux-image-amd64");
    assert_eq!(r.components, ["main"]);
    assert_eq!(r.cmdline, builder::recipe::DEFAULT_CMDLINE);
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let err = parse(&format!(
        "{MINIMAL}\n[kernel]\npackage = \"x\"\nmodule_set = []\n"
    ))
    .unwrap_err();
    assert!(
        err.starts_with("r.toml:7: unknown field `module_set`"),
        "{err}"
    );
    let err = parse(&format!("{MINIMAL}colour = 1\n")).unwrap_err();
    assert!(err.starts_with("r.toml:4: unknown field `colour`"), "{err}");
}

#[test]
fn bad_values_are_named_with_key_and_line() {
    let err = parse("name = \"n\"\nsuite = \"bookworm\"\narchitecture = \"sparc\"\n").unwrap_err();
    assert_eq!(
        err,
        "r.toml:3: key architecture: unknown architecture \"sparc\" (x86_64, aarch64)"
    );
    let err = parse(&format!("{MINIMAL}compression = \"lz4\"\n")).unwrap_err();
    assert_eq!(
        err,
        "r.toml:4: key compression: unknown compression \"lz4\" (zstd, gzip)"
    );
    let err = parse(&format!("{MINIMAL}[kernel]\nmodule_sets = [\"wifi\"]\n")).unwrap_err();
    assert!(
        err.starts_with("r.toml:5: key kernel.module_sets: unknown module set \"wifi\""),
        "{err}"
    );
    let err = parse(&format!(
        "{MINIMAL}[[files]]\npath = \"etc/x\"\ntext = \"\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("must be an absolute path"), "{err}");
    let err = parse("name = \"n\"\narchitecture = \"x86_64\"\n").unwrap_err();
    assert!(err.contains("missing field `suite`"), "{err}");
    let err = parse(&format!("{MINIMAL}epoch = \"yesterday\"\n")).unwrap_err();
    assert!(err.starts_with("r.toml:4: invalid type"), "{err}");
}
