//! The public server API, modelled on gortsplib's `Server`.

mod config;

pub use config::{
    MulticastRange, MulticastRangeError, ServerConfig, ServerConfigError, MAX_UDP_PAYLOAD, MIN_PACKET_SIZE,
};
