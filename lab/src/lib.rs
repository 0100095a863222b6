//! The virtual cluster and the test harness of the omcluster workspace.
//!
//! It drives `omboot`, `omnode` and `omctl` as binaries and depends on no
//! workspace crate but `contracts` (for the MAC type), so every crate's tests
//! can use it as a dev-dependency (and `bench/`'s library as a dependency).
//! Nothing here ships on a real head.
//!
//! Modules (each opens with its own `//!` doc):
//! - [`cluster`]: [`ClusterLab`], a whole virtual cluster (the LAN, `omboot
//!   serve` and the head's agent in a namespace, qemu machines netbooting),
//!   and [`LanRouter`], an "existing LAN" DHCP server beside it.
//! - [`demo`]: `omlab demo`, a virtual cluster for a person to watch.
//! - [`forward`]: `omlab forward`, the host's way into the demo's web view.
//! - [`netns`]: network namespaces, bridges, veth pairs and taps.
//! - [`browser`]: a headless Chromium over WebDriver inside a namespace,
//!   for the web view's tests.
//! - [`qemu`]: qemu machines on three firmware paths, boot media.
//! - [`process`]: running host programs; children killed on drop.
//! - [`gate`]: the environment switches of the slow and privileged tests.
//! - [`build`]: the static release build of the binaries the image carries.
//! - [`kernel`]: Debian's kernel and modules, downloaded once for the tests.
//! - [`pattern`]: reproducible test data.
//! - [`error`]: the error type, [`LabError`].

pub mod browser;
pub mod build;
pub mod cluster;
pub mod demo;
pub mod error;
pub mod forward;
pub mod gate;
pub mod kernel;
pub mod netns;
pub mod pattern;
pub mod process;
pub mod qemu;

pub use cluster::{
    boot_stages, machines_at_stage, ClusterLab, LabConfig, LabMode, LanRouter, LAB_HEAD, LAB_POOL,
    LAB_ROUTER, LAB_ROUTER_POOL,
};
pub use error::LabError;
pub use netns::{remove_namespace, VirtualLan};
pub use qemu::{check_prerequisites, lab_mac, Firmware, Medium, NodeSpec, QemuNode};
