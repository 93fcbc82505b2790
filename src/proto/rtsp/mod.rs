//! RTSP/1.0 messages: requests, responses and `$`-interleaved binary frames.
//!
//! [`Decoder`] takes bytes as they arrive (split anywhere) and yields whole [`Message`]s,
//! enforcing the size [`Limits`] of DESIGN.md §2. Encoders append to a `BytesMut`.

#[cfg(test)]
mod client_fixtures;
mod decode;
mod encode;
mod headers;
mod status;
#[cfg(test)]
mod tests;

pub use decode::{DecodeError, DecodeErrorKind, Decoder, Limits};
pub use headers::Headers;
pub use status::StatusCode;

use bytes::Bytes;

use super::Method;

/// The protocol version every message carries.
pub const VERSION: &str = "RTSP/1.0";

/// An RTSP request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The request URL exactly as sent (`*`, an absolute `rtsp://` URL, or a path).
    pub url: String,
    /// The headers in the order they were received.
    pub headers: Headers,
    /// The body (`Content-Length` bytes); empty when there is none.
    pub body: Bytes,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Request {
            method,
            url: url.into(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }
}

/// An RTSP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: StatusCode,
    /// The reason phrase (the standard one unless set otherwise).
    pub reason: String,
    /// The headers in the order they were received or set.
    pub headers: Headers,
    /// The body; empty when there is none.
    pub body: Bytes,
}

impl Response {
    /// A response with the standard reason phrase, no headers and no body.
    pub fn new(status: StatusCode) -> Self {
        Response {
            status,
            reason: status.reason().to_owned(),
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }
}

/// A `$`-interleaved binary frame: RTP or RTCP carried on the RTSP connection (RFC 2326 §10.12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterleavedFrame {
    /// The channel number (even: RTP, odd: RTCP, by convention).
    pub channel: u8,
    /// The packet.
    pub payload: Bytes,
}

/// One item of an RTSP byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A request.
    Request(Request),
    /// A response.
    Response(Response),
    /// An interleaved binary frame.
    Frame(InterleavedFrame),
}
