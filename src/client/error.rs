//! What can go wrong talking to a server, and where.

use std::io;

use crate::proto::rtsp::{DecodeError, StatusCode};
use crate::proto::sdp::SdpError;
use crate::proto::url::UrlError;
use crate::proto::Method;

/// A client failure. Messages never contain passwords.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TCP connection could not be made (refused, unreachable, unresolvable host).
    #[error("cannot connect to {addr}: {io}")]
    Connect {
        /// The `host:port` as given in the URL.
        addr: String,
        /// The cause.
        #[source]
        io: io::Error,
    },
    /// Nothing arrived (or a write stayed blocked) within the configured timeout.
    #[error("timed out {what}")]
    Timeout {
        /// What was being waited for, e.g. "waiting for the DESCRIBE response".
        what: String,
    },
    /// The server answered a request with a non-2xx status.
    #[error("{method} answered {} {reason}", status.0)]
    Status {
        /// The request's method.
        method: Method,
        /// The status code.
        status: StatusCode,
        /// The reason phrase the server sent.
        reason: String,
    },
    /// The server broke the protocol: a missing or malformed header, an unexpected answer.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server's byte stream could not be decoded; the connection is unusable.
    #[error("cannot decode the server's stream: {0}")]
    Decode(#[from] DecodeError),
    /// The URL is not an `rtsp://` URL with a host.
    #[error("invalid URL: {0}")]
    Url(#[from] UrlError),
    /// The session description is invalid.
    #[error("invalid session description: {0}")]
    Sdp(#[from] SdpError),
    /// The server asked for authentication the client cannot give (no credentials, or no
    /// challenge in a supported scheme).
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The server refused the transport (461), or the URL needs one this client lacks (`rtsps://`).
    #[error("transport not supported")]
    UnsupportedTransport,
    /// A socket operation failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
}

/// A client result.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;
