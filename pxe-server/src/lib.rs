//! omboot: the head node's boot server.
