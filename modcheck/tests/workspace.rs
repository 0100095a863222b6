//! modcheck on this workspace: ARCHITECTURE.md's "no import cycles"
//! invariant, checked on every test run (CI's nextest run included).

use std::path::Path;

#[test]
fn the_workspace_has_no_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let report = modcheck::check(root).unwrap_or_else(|e| panic!("modcheck: {e:#}"));
    assert!(
        report.cycles.is_empty(),
        "import cycles between modules (ARCHITECTURE.md: modules form a tree); \
         break each by moving what both sides need below or above them:\n{report}"
    );
}
