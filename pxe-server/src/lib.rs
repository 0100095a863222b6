//! omboot: the head node's boot server.
//!
//! Modules (each opens with its own `//!` doc):
//! - [`config`]: TOML wire config and the validated settings the server runs on.
//! - [`admission`]: who gets the cluster key (auto or manual), remembered
//!   in the state directory.
//! - [`boot`]: the boot decision table (client architecture, iPXE detection → file or URL).
//! - [`dhcp`]: DHCP and ProxyDHCP protocol core (pure) and its socket shell.
//! - [`leases`]: the persistent lease store.
//! - [`tftp`]: read-only TFTP server (RFC 1350/2347/2348/2349/7440).
//! - [`http`]: HTTP boot scripts, static image files and the JSON API.
//! - [`nodes`]: registry of nodes seen and the boot stage each reached.
//! - [`image`]: the image directory written by `ombuild image`.
//! - [`share`]: the shared tree at `/cluster` (`--share`): nfs-ganesha's
//!   configuration and its supervision.
//! - [`announce`]: the head's multicast announcement, for machines booted
//!   from the ISO or a USB stick.
//! - [`serve`]: wires everything together for `omboot serve`.

pub mod admission;
pub mod announce;
pub mod boot;
pub mod config;
pub mod dhcp;
pub mod http;
pub mod image;
pub mod leases;
pub mod nodes;
pub mod serve;
pub mod share;
pub mod tftp;
