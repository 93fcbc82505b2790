//! Benchmarks for shardcast.
//!
//! - `benches/proto.rs`: criterion micro-benchmarks of the parsers (`cargo bench -p shardcast-bench`).
//! - the `shardcast-bench` binary: the fan-out benchmark harness (docs/benchmarks.md). In one run it
//!   builds the server and loadgen, and for each scenario (transport × readers × bitrate) measures the
//!   bare `sendmmsg`/`writev` limit, shardcast under loadgen, and optionally a peer server; then the
//!   session set-up rate, memory per idle reader and the 1-core to 2-core scaling; and writes a table,
//!   JSON and a PNG plot.
//! - the `limit` binary: the bare fan-out program ([`limit`]).

pub mod harness;
pub mod limit;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod sample;
pub mod sys;
