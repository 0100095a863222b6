//! The `modcheck` binary on the crates in `tests/fixtures/`: what it
//! prints and how it exits.

use expect_test::{expect, Expect};
use std::path::Path;
use std::process::Command;

/// Runs `modcheck FIXTURE` from the fixtures' directory (so the paths it
/// prints are short) and compares its exit code and output.
fn check(fixture: &str, expect: Expect) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let out = Command::new(env!("CARGO_BIN_EXE_modcheck"))
        .arg(fixture)
        .current_dir(&dir)
        .output()
        .expect("modcheck runs");
    let text = format!(
        "exit {}\n{}{}",
        out.status
            .code()
            .map_or("by signal".to_string(), |c| c.to_string()),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    expect.assert_eq(&text);
}

#[test]
fn planted_cycles_are_found() {
    check(
        "cycle",
        expect![[r#"
            exit 1
            cycle: exec -> job -> exec (src/exec/mod.rs:12 uses crate::job::Holder; src/job/holder.rs:4 uses crate::exec::Frame)
            cycle: exec::migrate -> exec::target -> exec::migrate (src/exec/migrate.rs:4 uses super::target, and 1 more; src/exec/target.rs:5 uses crate::exec::migrate::Plan)
            cycle (bin tool): parse -> print -> parse (src/bin/tool.rs:5 uses crate::print::Style; src/bin/tool.rs:12 uses parse::Line)
        "#]],
    );
}

#[test]
fn a_tree_passes() {
    check(
        "clean",
        expect![[r#"
            exit 0
            modcheck: 1 crate, 6 modules, no import cycles
        "#]],
    );
}

#[test]
fn unreadable_input_is_an_error() {
    check(
        "broken",
        expect![[r#"
            exit 2
            modcheck: module `gone` declared at src/lib.rs:3 has no file (tried src/gone.rs and src/gone/mod.rs)
        "#]],
    );
    check(
        "nowhere",
        expect![[r#"
            exit 2
            modcheck: cannot read nowhere/Cargo.toml: No such file or directory (os error 2)
        "#]],
    );
}
