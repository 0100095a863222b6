//! End-to-end tests: the three programs together, under qemu, on a virtual LAN.
//!
//! - `head`: the ISO's head entry serves the netboot from its own medium;
//!   a second machine netboots from it and joins.
//! - `join`: a workstation joins with a token, in network namespaces.
//! - `media`: the built ISO boots the image from CD and USB, BIOS and UEFI.
//! - `netboot`: `ombuild image` → `omboot serve` → three firmware paths
//!   netboot, join and share the awk batch.
//! - `package`: the Debian package installs, upgrades and purges in a
//!   clean Debian 12 chroot; its units pass `systemd-analyze verify`.
//! - `migrate`: live migration between those netbooted machines (called
//!   from `netboot`'s test, which boots them once).
//! - `balance`: automatic rebalancing, the knobs and `omctl shell` on the
//!   same machines (called from `netboot`'s test too).
//! - `web`: the web view in a browser on the same machines: a job dragged
//!   onto another node in the migration monitor moves (called from
//!   `netboot`'s test too).
//! - `system`: the render image's system layer: a 1 GiB machine netboots
//!   it and runs POV-Ray, ffmpeg, Python and Blender through `omctl run`.

mod balance;
mod head;
mod join;
mod media;
mod migrate;
mod netboot;
mod package;
mod system;
mod web;
