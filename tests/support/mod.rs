//! Helpers shared by integration tests.

pub mod broker;
pub mod server;
