//! omnode's cluster agent, the daemon `omctl` talks to over the control
//! socket ([`agent_control`]), and the job holder it starts for each job
//! (`omnode init`, PID 1, is the `node-init` crate; `omctl` is a crate of
//! its own).
//!
//! - [`key`]: cluster keys and derived sub-keys (re-exported from
//!   [`contracts::key`]); [`keys`]: the keys at run time, two during a
//!   rotation, over [`keystore`] (which also reads and writes the key
//!   file).
//! - [`crypto`]: sealing of datagrams (AEAD + replay window) and exec streams.
//! - [`wire`]: what agents say to each other in datagrams, and the framed
//!   messages of the control socket and exec streams.
//! - [`membership`]: SWIM membership via `foca`, pure.
//! - [`discovery`]: the multicast socket that finds peers with no configuration.
//! - [`load`]: the load vector and the speed calibration.
//! - [`cpu`]: the CPU features a moved job may rely on, compared before a
//!   job moves.
//! - [`share`]: the shared tree at `/cluster` as this node sees it (mounted,
//!   answering, size), carried in the load vector.
//! - [`placement`]: where a job should run, pure.
//! - [`balance`]: when a running job should move by itself, and where to, pure;
//!   the admin knobs (`block`, `stay`, `lstay`, `quiet`).
//! - [`cgroup`]: the CPU cap on cluster jobs (cgroup v2 `cpu.max`, or v1).
//! - [`exec`]: running a job on a remote node with streamed stdio and
//!   signals, and moving it while it runs.
//! - [`job`]: a job's processes on its node: the holder and the job init in
//!   a PID namespace of its own, stopping and resuming, CRIU.
//! - [`checkin`]: telling the boot server (`omboot`) that the agent has joined.
//! - [`agent`]: the daemon that wires all of the above together: the gossip
//!   loop, the exec listener and the control server, every task it starts
//!   owned and ended at shutdown.

pub mod agent;
pub mod balance;
pub mod cgroup;
pub mod checkin;
pub use agent_control::cpu;
pub mod crypto;
pub mod discovery;
pub mod exec;
pub mod job;
pub use contracts::key;
pub mod keys;
pub mod load;
pub mod membership;
pub mod placement;
pub mod share;
pub mod state;
pub mod stream;
pub mod wire;
