//! `omnode`: init and agent.
fn main() {}
