//! `omctl`, the cluster's command-line tools, over the control protocol's
//! client ([`agent_control::client`]); it knows nothing of the agent's
//! insides. The binary (`main.rs`) is the command line and its glue.
//!
//! - [`tools`]: the subcommands that show and use the cluster (`status`,
//!   `mon`, `top`, `ps`, `whois`, `df`, `run`), with the classic openMosix
//!   names.
//! - [`shell`]: `omctl shell`'s command shims, which make every command a
//!   job.
//! - [`join`]: a workstation joining with a token (`omctl join`).

pub mod join;
pub mod shell;
pub mod tools;
