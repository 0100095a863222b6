//! The node-agent integration tests (one binary; topics in modules).

mod agent;
mod init;
mod init_qemu;
mod util;
