//! `omctl`: cluster control tool.
fn main() {}
