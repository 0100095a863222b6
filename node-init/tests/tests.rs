//! The node-init integration tests (one binary; topics in modules).

mod dhcp;
mod qemu;
