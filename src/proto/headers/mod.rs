//! Typed RTSP headers: each parses from and encodes to a header value.
//!
//! Parsing is lenient where real clients differ (spacing, case, parameter order, unknown
//! parameters) and strict where a wrong value would mislead the server (numbers, ranges).

mod range;
mod rtp_info;
mod simple;
#[cfg(test)]
mod tests;
mod transport;

pub use range::{NptTime, Range};
pub use rtp_info::{RtpInfo, RtpInfoEntry};
pub use simple::{
    AuthorizationHeader, CSeq, ContentBase, ContentLength, ContentType, Public, SessionHeader, WwwAuthenticate,
};
pub use transport::{Delivery, LowerTransport, Profile, Transport, TransportMode, Transports};

/// Why a header value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} header: {problem}")]
pub struct HeaderError {
    /// The header's name.
    pub header: &'static str,
    /// What was wrong.
    pub problem: String,
}

impl HeaderError {
    pub(crate) fn new(header: &'static str, problem: impl Into<String>) -> Self {
        HeaderError {
            header,
            problem: problem.into(),
        }
    }
}

/// A header with a typed value.
pub trait TypedHeader: Sized {
    /// The header's name as sent.
    const NAME: &'static str;
    /// Parses a header value.
    fn parse(value: &str) -> Result<Self, HeaderError>;
    /// Encodes the value.
    fn encode(&self) -> String;
}

/// Splits `key=value` (value may be absent) with surrounding spaces trimmed.
pub(crate) fn key_value(param: &str) -> (&str, Option<&str>) {
    match param.split_once('=') {
        Some((k, v)) => (k.trim(), Some(v.trim())),
        None => (param.trim(), None),
    }
}

/// Removes one pair of surrounding double quotes.
pub(crate) fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}
