//! Sans-IO protocol codecs: nothing here touches a socket or reads a clock.
//!
//! Time is always an argument, so every codec is tested deterministically and fuzzed.
//!
//! - [`rtsp`]: RTSP/1.0 messages and `$`-interleaved frames, incremental decoding, encoding.
//! - [`headers`]: typed RTSP headers (CSeq, Session, Transport, RTP-Info, Range, ...).
//! - [`url`]: RTSP URLs, path/query/track-control in the ffmpeg and GStreamer dialects.
//! - [`sdp`]: a lenient SDP parser and the SDP builder for DESCRIBE.
//! - [`rtp`]: a zero-copy RTP header view.
//! - [`rtcp`]: RTCP compound packets: SR, RR, SDES, BYE.
//! - [`http`]: HTTP/1.x request heads, for the metrics endpoint.
//! - [`auth`]: Basic and Digest (MD5, SHA-256) authentication, server and client side.
//! - [`time`]: NTP timestamps and RTP clock arithmetic.
#![forbid(unsafe_code)]

pub mod auth;
pub mod headers;
pub mod http;
pub mod method;
pub mod rtcp;
pub mod rtp;
pub mod rtsp;
pub mod sdp;
pub mod time;
pub mod url;

pub use method::Method;
