//! The `shardcast` binary's application, as a library: its configuration (paths, users,
//! permissions, environment overrides, logs), the handler that serves it, the Prometheus metrics
//! exporter and the host checks logged at start-up.
//!
//! `src/main.rs` only parses arguments, installs signals and wires these together.

pub mod config;
pub mod exporter;
pub mod handler;
pub mod host_checks;
pub mod metrics;
pub mod metrics_http;
pub mod paths;
pub mod pull;
pub mod state;
pub mod users;
