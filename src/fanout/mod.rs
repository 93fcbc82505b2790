//! The data plane: per-stream broadcast rings read by every core.

pub mod ring;
