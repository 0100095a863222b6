//! `ombuild`: thin command-line shell over the `builder` library.
fn main() {}
