//! What a handler learns about a SETUP's negotiated transport.

use crate::session::TransportKind;

/// The transport the server chose for one media in a SETUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupTransport {
    /// TCP, UDP or multicast.
    pub kind: TransportKind,
    /// Index of the media being set up, in the stream's (or announced) description.
    pub track: usize,
    /// Interleaved (RTP, RTCP) channels, for TCP.
    pub interleaved: Option<(u8, u8)>,
    /// The client's (RTP, RTCP) ports, for UDP.
    pub client_ports: Option<(u16, u16)>,
    /// The session publishes (mode=record) rather than reads.
    pub record: bool,
}
