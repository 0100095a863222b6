//! End-to-end tests: the three programs together, under qemu, on a virtual LAN.
//!
//! - `util`: static builds of the binaries, the image build, gating.
//! - `media`: the built ISO boots the image from CD and USB, BIOS and UEFI.
//! - `netboot`: `ombuild image` → `omboot serve` → three firmware paths
//!   netboot, join and share the awk batch.

mod media;
mod netboot;
mod util;
