//! The integration tests of `pxe-server`, one module per topic (the shared
//! fixtures are the `lab` crate's).

mod cli;
mod dhcp;
mod http;
mod netlan;
mod running;
mod share;
mod tftp;
