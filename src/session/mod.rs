//! Sans-IO state machines: RTSP session state, transport negotiation, timeouts.
//!
//! Nothing here touches a socket or reads a clock: `now` is an argument, so every rule is unit tested
//! deterministically. The server layer feeds these machines and carries out what they decide.
#![forbid(unsafe_code)]

pub mod reorder;
pub mod state;
pub mod timeout;
pub mod transport;

pub use reorder::{Pushed, Released, ReorderBuffer, REORDER_WINDOW};
pub use state::{SessionState, StateError};
pub use timeout::{Liveness, TransportKind};
pub use transport::{negotiate, Chosen, NegotiateError, TransportSupport};
