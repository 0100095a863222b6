//! The builder's one integration-test binary; topic modules below.

mod util;

mod cpio;
mod image;
mod initramfs;
mod iso;
mod iso_qemu;
mod modules;
mod recipe;
mod resolve;
