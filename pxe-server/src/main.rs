//! `omboot`: thin command-line shell over the `pxe_server` library.
fn main() {}
