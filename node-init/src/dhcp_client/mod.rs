//! The node's DHCPv4 client: a pure state machine ([`Client`], in `client`)
//! and the socket shell that drives it ([`Shell`], in `shell`).
//!
//! The client follows RFC 2131's client states (INIT → SELECTING → REQUESTING →
//! BOUND → RENEWING → REBINDING). It is fed the current time and an [`Input`]
//! (start, timer, or a received DHCP payload) and answers with [`Action`]s:
//! packets to send (and to whom), a lease to configure, a lease lost, or a
//! notice worth a console line. It never touches a socket or a clock, so its
//! tests (`tests`) are scripts of inputs and expected actions.
//!
//! The shell sends and receives (an `AF_PACKET` socket until the interface
//! has an address, then UDP) and reports [`LeaseEvent`]s to its caller.
//!
//! Architecture Invariant: `shell` depends on `client`, never the other way;
//! `client` does no I/O.

mod client;
mod shell;
#[cfg(test)]
mod tests;

pub use self::client::{
    backoff, hostname_from_mac, valid_hostname, Action, Client, Destination, Input, Notice,
    CLIENT_PORT, SERVER_PORT,
};
pub use self::shell::{DhcpError, LeaseEvent, Shell};
pub use crate::address::Lease;
