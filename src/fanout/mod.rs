//! The data plane: per-stream broadcast rings read by every core, per-core fan-out to local readers.

// The server wires these in the next commits; until then they are exercised by their own tests.
#[allow(dead_code)]
pub(crate) mod core;
pub(crate) mod counters;
#[allow(dead_code)]
pub(crate) mod outbox;
pub mod ring;
#[allow(dead_code)]
pub(crate) mod stream;
