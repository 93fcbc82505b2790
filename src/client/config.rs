//! How a client connects, which transport it asks for, and its timers.

use std::time::Duration;

/// How RTP and RTCP travel between the server and the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientTransport {
    /// Interleaved in the RTSP TCP connection (`RTP/AVP/TCP;interleaved=...`).
    #[default]
    Tcp,
    /// Unicast UDP to an even/odd port pair per track (`RTP/AVP;unicast;client_port=...`).
    Udp,
    /// UDP multicast to the group and ports the server picks (`RTP/AVP;multicast`); play only.
    UdpMulticast,
}

/// Client settings; [`ClientConfig::default`] matches common RTSP clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The transport asked for in SETUP.
    pub transport: ClientTransport,
    /// Longest wait for a connection, a response, or (in `read_packet`) the next packet.
    pub read_timeout: Duration,
    /// Longest a write may stay blocked on a full socket.
    pub write_timeout: Duration,
    /// Period of the keepalive request (`GET_PARAMETER` when the server's `Public` lists it, else
    /// `OPTIONS`) while playing or recording. Shortened to 2/3 of the session timeout the server
    /// announces when that is shorter.
    pub keepalive_interval: Duration,
    /// Period of the RTCP receiver reports sent to the server (UDP transports only).
    pub receiver_report_interval: Duration,
    /// The `User-Agent` header of every request.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            transport: ClientTransport::Tcp,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            receiver_report_interval: Duration::from_secs(5),
            user_agent: concat!("shardcast/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}
