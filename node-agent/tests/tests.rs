//! The node-agent integration tests (one binary; topics in modules).

mod agent;
mod util;
mod web;
