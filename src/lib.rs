//! shardcast: a thread-per-core RTSP media server.
//!
//! The crate is layered so that each layer can be read alone:
//!
//! - [`proto`]: sans-IO codecs (RTSP, SDP, RTP/RTCP, auth, time). No sockets, no clocks.
//!
//! - [`fanout`]: the per-stream broadcast ring readers on every core share.
//! - `runtime` (private): pinned glommio executors, SO_REUSEPORT sockets; the only `unsafe`.
//! - [`server`]: the public server API, modelled on gortsplib's `Server`.
//! - [`client`]: an RTSP client (play and record over TCP, UDP, multicast) for edge pull and loadgen.
//!
//! # Example
//!
//! Converting a wall-clock instant to the NTP timestamp carried in RTCP sender reports:
//!
//! ```
//! use std::time::Duration;
//! use shardcast::proto::time::NtpTime;
//!
//! let unix = Duration::from_secs(1_700_000_000);
//! let ntp = NtpTime::from_unix(unix);
//! assert_eq!(ntp.to_unix(), unix);
//! ```
#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod edge;
pub mod fanout;
pub mod proto;
// The server uses the runtime from the next commits on; until then parts of it are only tested.
#[allow(dead_code, unused_imports)]
pub(crate) mod runtime;
pub mod server;
pub mod session;
