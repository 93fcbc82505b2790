//! The public server API, modelled on gortsplib's `Server`.
//!
//! [`Server::start`] validates a [`ServerConfig`], binds one SO_REUSEPORT listener per core and runs a
//! pinned executor on each, with its own [`Handler`]. Readers play [`ServerStream`]s, which any core
//! or thread can write to.

mod auth;
mod config;
mod conn;
mod core;
mod handler;
mod lifecycle;
mod metrics;
mod migrate;
mod multicast;
mod receiver;
mod requests;
mod rtcp;
mod session;
mod signal;
mod stream;
mod tls;
mod transport;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;

pub use auth::{CredentialsError, StoredPassword, StoredPasswordError, REALM};
pub use config::{
    ListenFn, ListenerFactory, MulticastRange, MulticastRangeError, ServerConfig, ServerConfigError, TlsConfig,
    MAX_UDP_PAYLOAD, MIN_PACKET_SIZE,
};
pub use conn::{CloseReason, ServerConn};
pub use handler::{status_response, Handler, RequestContext};
pub use lifecycle::{Server, StartError};
pub use metrics::{ServerMetrics, SessionCounts, SESSION_STATES, SESSION_TRANSPORTS};
pub use multicast::MULTICAST_TTL;
pub use session::{PublishedPacket, ReaderLagged, ServerSession, SessionCloseReason};
pub use stream::{ServerStream, StreamError, StreamStats, StreamWriteError};
pub use tls::TlsConfigError;
pub use transport::SetupTransport;
pub use udp::OversizedDatagram;

use crate::fanout::stream::CoreBells;

/// What every core and every stream of one server share; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct ServerContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    config: ServerConfig,
    local_addr: SocketAddr,
    bells: Arc<CoreBells>,
    udp: Option<Arc<udp::UdpShared>>,
    multicast: Option<multicast::MulticastShared>,
    sessions: migrate::SessionDirectory,
    counters: Arc<metrics::ServerCounters>,
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerContext {
    pub(crate) fn new(
        config: ServerConfig,
        local_addr: SocketAddr,
        bells: Arc<CoreBells>,
        udp: Option<Arc<udp::UdpShared>>,
        sessions: migrate::SessionDirectory,
        multicast_rtcp: Option<std::os::fd::OwnedFd>,
    ) -> ServerContext {
        let multicast = match (
            &config.multicast_ip_range,
            config.multicast_rtp_port,
            config.multicast_rtcp_port,
        ) {
            (Some(range), Some(rtp), Some(rtcp)) => {
                Some(multicast::MulticastShared::new(*range, (rtp, rtcp), multicast_rtcp))
            }
            _ => None,
        };
        let counters = Arc::new(metrics::ServerCounters::new(bells.len()));
        ServerContext {
            inner: Arc::new(ContextInner {
                counters,
                config,
                local_addr,
                bells,
                udp,
                multicast,
                sessions,
            }),
        }
    }

    pub(crate) fn sessions(&self) -> &migrate::SessionDirectory {
        &self.inner.sessions
    }

    pub(crate) fn multicast(&self) -> Option<&multicast::MulticastShared> {
        self.inner.multicast.as_ref()
    }

    /// The server's UDP (RTP, RTCP) ports, when UDP transport is enabled.
    pub fn udp_server_ports(&self) -> Option<(u16, u16)> {
        self.inner.udp.as_ref().map(|u| u.server_ports)
    }

    /// UDP datagrams from publishers dropped because the core owning their session fell behind.
    pub fn udp_ingress_dropped(&self) -> u64 {
        self.inner.udp.as_ref().map_or(0, |u| u.dropped())
    }

    /// A snapshot of the server's counters, summed over its cores: connections, sessions by state
    /// and transport, packets and bytes in and out, losses and drops, per-core busy time. Cheap
    /// enough to call on every scrape; never blocks the cores.
    pub fn metrics(&self) -> ServerMetrics {
        let mut metrics = self.inner.counters.snapshot();
        metrics.udp_ingress_dropped = self.udp_ingress_dropped();
        metrics
    }

    /// Every core's counters.
    pub(crate) fn counters(&self) -> &Arc<metrics::ServerCounters> {
        &self.inner.counters
    }

    pub(crate) fn udp(&self) -> Option<&Arc<udp::UdpShared>> {
        self.inner.udp.as_ref()
    }

    /// The server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The RTSP listener's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    pub(crate) fn bells(&self) -> Arc<CoreBells> {
        self.inner.bells.clone()
    }
}

/// `bytes` random bytes from the OS, as lower-case hex: session ids and Digest nonces, which must not
/// be guessable by another client.
pub(crate) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    if let Err(e) = getrandom::getrandom(&mut buf) {
        // The kernel's CSPRNG does not fail once the system is up; if it does, refuse loudly rather
        // than hand out predictable ids.
        panic!("the OS random number generator failed: {e}");
    }
    hex::encode(buf)
}
