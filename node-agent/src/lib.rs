//! omnode: the node's init, the cluster agent and the tools' shared code.

pub mod init;
