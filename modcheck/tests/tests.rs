//! The modcheck integration tests (one binary; topics in modules).

mod fixtures;
mod workspace;
