//! End-to-end tests of the omcluster appliance live in `tests/e2e.rs`.
