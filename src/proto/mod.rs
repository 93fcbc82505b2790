//! Sans-IO protocol codecs: nothing here touches a socket or reads a clock.
//!
//! Time is always an argument, so every codec is tested deterministically and fuzzed.
#![forbid(unsafe_code)]

pub mod time;
