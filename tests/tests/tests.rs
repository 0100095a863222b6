//! End-to-end tests: the three programs together, under qemu, on a virtual LAN.
//!
//! - `util`: static builds of the binaries, the image build, gating.
//! - `netboot`: `ombuild image` → `omboot serve` → three firmware paths
//!   netboot, join and share the awk batch.

mod netboot;
mod util;
