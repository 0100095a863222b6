//! The integration tests of `pxe-server`, one module per topic, sharing `util`.

mod util;

mod cli;
mod dhcp;
mod http;
mod tftp;
