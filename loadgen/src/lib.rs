//! The parts of loadgen that other programs must share to the byte: the synthetic stream
//! ([`synth`]: its shape, packets and timestamp trailer) and the parsers of its command-line
//! quantities ([`units`]). The benchmark harness's bare fan-out program sends exactly this stream,
//! so that its limit and a server under loadgen are measured with the same load.
//!
//! The `loadgen` binary itself (src/main.rs) is built on this library.

pub mod synth;
pub mod units;
