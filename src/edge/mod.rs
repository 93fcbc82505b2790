//! The `shardcast` binary's application, as a library: its configuration (paths, users,
//! permissions, environment overrides, logs) and the handler that serves it.
//!
//! `src/main.rs` only parses arguments, installs signals and wires these together.

pub mod config;
pub mod handler;
pub mod host_checks;
pub mod paths;
pub mod state;
pub mod users;
