//! The control protocol between `omctl` and its agent (`omnode agent`), and
//! the client `omctl` is built on. Both programs depend on this crate; neither
//! depends on the other.
//!
//! - [`model`]: what an agent reports and is asked: the load vector, the
//!   cluster and job views, a job to run and how it ended, a finished
//!   migration, `omctl`'s exit statuses.
//! - [`knobs`]: the admin knobs with openMosix's `mosctl` names.
//! - [`steer`]: orders for one running job: a signal, a nice value.
//! - [`cpu`]: the CPU features a moved job may rely on (carried in the load
//!   vector), and the rule comparing two nodes'.
//! - [`framing`]: length-prefixed frames on a byte stream (the agents'
//!   sealed exec streams use it too).
//! - [`protocol`]: [`ControlRequest`], [`ControlReply`] and the versioned
//!   hello that opens every connection.
//! - [`client`]: connect, greet, ask.

pub mod client;
pub mod cpu;
pub mod framing;
pub mod knobs;
pub mod model;
pub mod protocol;
pub mod steer;

pub use model::{
    ClusterStatus, ExitInfo, JobInfo, LoadVector, MigrateDone, NodeStatus, RunRequest, ShareView,
    EXIT_CANNOT_RUN, EXIT_NODE_LOST, EXIT_NO_AGENT, EXIT_NO_PERMISSION,
};
pub use protocol::{ControlReply, ControlRequest};
