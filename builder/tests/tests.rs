//! The builder's one integration-test binary; topic modules below.

mod util;

mod iso;
mod iso_qemu;
