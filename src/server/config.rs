//! [`ServerConfig`]: everything a server needs before it binds a socket, and the rules that make it valid.
//!
//! The rules follow DESIGN.md §2 "Config validation": a server refuses to start with a clear message
//! rather than run with a setting it cannot honour.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::proto::auth::AuthMethod;

/// The largest UDP payload that fits an Ethernet MTU of 1500 without IP fragmentation.
pub const MAX_UDP_PAYLOAD: usize = 1472;

/// The smallest max packet size we accept: an RTP fixed header plus a useful payload.
pub const MIN_PACKET_SIZE: usize = 64;

/// Configuration of an RTSP server; build it with [`ServerConfig::new`] and set fields directly.
///
/// ```
/// use shardcast::server::ServerConfig;
///
/// let mut config = ServerConfig::new("127.0.0.1:0".parse()?);
/// config.rtp_address = Some("127.0.0.1:8000".parse()?);
/// config.rtcp_address = Some("127.0.0.1:8001".parse()?);
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address of the RTSP (TCP) listener; port 0 picks a free port, see `Server::local_addr`.
    pub rtsp_address: SocketAddr,
    /// UDP RTP address for unicast UDP transport; set with `rtcp_address` or not at all.
    pub rtp_address: Option<SocketAddr>,
    /// UDP RTCP address: the RTP port + 1.
    pub rtcp_address: Option<SocketAddr>,
    /// Multicast groups are allocated from this range; set with both multicast ports or not at all.
    pub multicast_ip_range: Option<MulticastRange>,
    /// Multicast RTP port (even).
    pub multicast_rtp_port: Option<u16>,
    /// Multicast RTCP port: the RTP port + 1.
    pub multicast_rtcp_port: Option<u16>,
    /// A publisher that sends nothing (RTP, RTCP or request) for this long is closed.
    pub read_timeout: Duration,
    /// A write that cannot complete within this long closes its connection or reader.
    pub write_timeout: Duration,
    /// A connection or UDP play session with no request (or RTCP) for this long is closed.
    pub idle_timeout: Duration,
    /// Kernel receive buffer for the UDP sockets, in bytes; `None` keeps the OS default.
    /// A size the OS clamps is a start-up error rather than a silent downgrade.
    pub udp_read_buffer_size: Option<usize>,
    /// Packets queued per reader before that reader starts losing packets; a power of two.
    pub write_queue_size: usize,
    /// Largest RTP/RTCP packet accepted or sent over UDP, in bytes.
    pub max_packet_size: usize,
    /// Do not send RTCP sender reports to readers.
    pub disable_rtcp_sender_reports: bool,
    /// CPUs to run one executor on each; `None` uses every CPU this process may run on.
    pub cpus: Option<Vec<usize>>,
    /// Authentication methods offered in 401 challenges and accepted by
    /// [`ServerConn::verify_credentials`](super::ServerConn::verify_credentials), one challenge each.
    /// The default is Basic and Digest MD5: ffmpeg gives up on SHA-256 challenges.
    pub auth_methods: Vec<AuthMethod>,
    /// TLS for RTSPS (see [`TlsConfig::from_pem_files`]). Without `rtsps_address`, the
    /// `rtsp_address` listener speaks TLS only (gortsplib's semantics); with it, `rtsp_address`
    /// stays plain RTSP and `rtsps_address` speaks TLS.
    pub tls: Option<TlsConfig>,
    /// Address of a second, RTSPS listener beside the plain one, serving the same streams;
    /// requires `tls`. Port 0 picks a free port, see `Server::rtsps_local_addr`.
    pub rtsps_address: Option<SocketAddr>,
    /// Makes the RTSP listeners instead of binding them (tests, socket activation); `None` binds
    /// one SO_REUSEPORT listener per core on `rtsp_address`.
    pub listener_factory: Option<ListenerFactory>,
}

/// A rustls server configuration for RTSPS; two compare equal when they are the same `Arc`.
#[derive(Clone)]
pub struct TlsConfig(pub Arc<rustls::ServerConfig>);

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig(..)")
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TlsConfig {}

/// Makes `count` listening sockets for `address`, one per core, instead of the server binding them.
#[derive(Clone)]
pub struct ListenerFactory(pub Arc<ListenFn>);

/// The function a [`ListenerFactory`] wraps.
pub type ListenFn = dyn Fn(SocketAddr, usize) -> std::io::Result<Vec<std::net::TcpListener>> + Send + Sync;

impl ListenerFactory {
    /// Wraps a function that returns `count` listeners for an address.
    pub fn new(
        make: impl Fn(SocketAddr, usize) -> std::io::Result<Vec<std::net::TcpListener>> + Send + Sync + 'static,
    ) -> Self {
        ListenerFactory(Arc::new(make))
    }
}

impl fmt::Debug for ListenerFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ListenerFactory(..)")
    }
}

impl PartialEq for ListenerFactory {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ListenerFactory {}

impl ServerConfig {
    /// A configuration with gortsplib's defaults, listening for RTSP on `rtsp_address`, TCP transport only.
    pub fn new(rtsp_address: SocketAddr) -> Self {
        ServerConfig {
            rtsp_address,
            rtp_address: None,
            rtcp_address: None,
            multicast_ip_range: None,
            multicast_rtp_port: None,
            multicast_rtcp_port: None,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            udp_read_buffer_size: None,
            write_queue_size: 256,
            max_packet_size: MAX_UDP_PAYLOAD,
            disable_rtcp_sender_reports: false,
            cpus: None,
            auth_methods: vec![AuthMethod::Basic, AuthMethod::DigestMd5],
            tls: None,
            rtsps_address: None,
            listener_factory: None,
        }
    }

    /// Checks every rule that does not need the OS; the server calls this before binding anything.
    pub fn validate(&self) -> Result<(), ServerConfigError> {
        match (self.rtp_address, self.rtcp_address) {
            (Some(rtp), Some(rtcp)) => check_port_pair("rtp_address", rtp.port(), "rtcp_address", rtcp.port())?,
            (Some(_), None) => return Err(incomplete("rtp_address", "rtcp_address")),
            (None, Some(_)) => return Err(incomplete("rtcp_address", "rtp_address")),
            (None, None) => {}
        }
        let multicast = [
            ("multicast_ip_range", self.multicast_ip_range.is_some()),
            ("multicast_rtp_port", self.multicast_rtp_port.is_some()),
            ("multicast_rtcp_port", self.multicast_rtcp_port.is_some()),
        ];
        let present = multicast.iter().find(|(_, set)| *set);
        let missing = multicast.iter().find(|(_, set)| !*set);
        if let (Some((present, _)), Some((missing, _))) = (present, missing) {
            return Err(incomplete(present, missing));
        }
        if let (Some(rtp), Some(rtcp)) = (self.multicast_rtp_port, self.multicast_rtcp_port) {
            check_port_pair("multicast_rtp_port", rtp, "multicast_rtcp_port", rtcp)?;
        }
        for (key, value) in [
            ("read_timeout", self.read_timeout),
            ("write_timeout", self.write_timeout),
            ("idle_timeout", self.idle_timeout),
        ] {
            if value.is_zero() {
                return Err(ServerConfigError::ZeroTimeout { key });
            }
        }
        if !self.write_queue_size.is_power_of_two() {
            return Err(ServerConfigError::WriteQueueNotPowerOfTwo(self.write_queue_size));
        }
        if !(MIN_PACKET_SIZE..=MAX_UDP_PAYLOAD).contains(&self.max_packet_size) {
            return Err(ServerConfigError::MaxPacketSize(self.max_packet_size));
        }
        if self.udp_read_buffer_size == Some(0) {
            return Err(ServerConfigError::ZeroUdpReadBuffer);
        }
        if self.auth_methods.is_empty() {
            return Err(ServerConfigError::NoAuthMethods);
        }
        if self.rtsps_address.is_some() && self.tls.is_none() {
            return Err(ServerConfigError::RtspsWithoutTls);
        }
        if let Some(cpus) = &self.cpus {
            if cpus.is_empty() {
                return Err(ServerConfigError::NoCpus);
            }
            let mut sorted = cpus.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(ServerConfigError::DuplicateCpu(pair[0]));
            }
        }
        Ok(())
    }

    /// Whether unicast UDP transport is enabled.
    pub fn udp_enabled(&self) -> bool {
        self.rtp_address.is_some()
    }

    /// Whether multicast transport is enabled.
    pub fn multicast_enabled(&self) -> bool {
        self.multicast_ip_range.is_some()
    }

    /// The `timeout=` a SETUP response advertises: idle timeout minus 5 s, at least 1 s,
    /// so that a client that honours it keeps the session alive with margin.
    pub fn session_timeout_secs(&self) -> u64 {
        self.idle_timeout.as_secs().saturating_sub(5).max(1)
    }
}

fn incomplete(present: &'static str, missing: &'static str) -> ServerConfigError {
    ServerConfigError::Incomplete { present, missing }
}

fn check_port_pair(
    rtp_key: &'static str,
    rtp: u16,
    rtcp_key: &'static str,
    rtcp: u16,
) -> Result<(), ServerConfigError> {
    if rtp == 0 && rtcp == 0 {
        // Both 0: the server picks a free even/odd pair (tests, ephemeral servers).
        return Ok(());
    }
    if rtp % 2 != 0 {
        return Err(ServerConfigError::OddRtpPort {
            key: rtp_key,
            port: rtp,
        });
    }
    if u32::from(rtcp) != u32::from(rtp) + 1 {
        return Err(ServerConfigError::RtcpNotNextToRtp {
            key: rtcp_key,
            rtcp,
            expected: u32::from(rtp) + 1,
        });
    }
    Ok(())
}

/// Why a [`ServerConfig`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerConfigError {
    /// Only some of a group of settings that go together were given.
    #[error("{present} is set but {missing} is not: set both or neither")]
    Incomplete {
        /// A key that was set.
        present: &'static str,
        /// A key of the same group that is missing.
        missing: &'static str,
    },
    /// An RTP port must be even (RFC 3550 §11).
    #[error("{key} = {port}: the RTP port must be even")]
    OddRtpPort {
        /// The offending key.
        key: &'static str,
        /// The configured port.
        port: u16,
    },
    /// The RTCP port must be the RTP port plus one.
    #[error("{key} = {rtcp}: the RTCP port must be the RTP port + 1 ({expected})")]
    RtcpNotNextToRtp {
        /// The offending key.
        key: &'static str,
        /// The configured RTCP port.
        rtcp: u16,
        /// RTP port + 1.
        expected: u32,
    },
    /// A timeout of zero would close every connection at once.
    #[error("{key} must be greater than zero")]
    ZeroTimeout {
        /// The offending key.
        key: &'static str,
    },
    /// The write queue is a ring indexed by masking.
    #[error("write_queue_size = {0}: must be a power of two")]
    WriteQueueNotPowerOfTwo(usize),
    /// Packets must fit one unfragmented UDP datagram.
    #[error("max_packet_size = {0}: must be between {MIN_PACKET_SIZE} and {MAX_UDP_PAYLOAD}")]
    MaxPacketSize(usize),
    /// A zero receive buffer would drop every packet.
    #[error("udp_read_buffer_size must be greater than zero (leave it unset for the OS default)")]
    ZeroUdpReadBuffer,
    /// An empty CPU set would run nothing.
    #[error("cpus is empty: give at least one CPU or leave it unset")]
    NoCpus,
    /// With no method, no client could ever authenticate.
    #[error("auth_methods is empty: enable at least one of basic, digest_md5, digest_sha256")]
    NoAuthMethods,
    /// An RTSPS listener cannot speak TLS without a certificate.
    #[error("rtsps_address is set but tls is not: RTSPS needs a certificate and key")]
    RtspsWithoutTls,
    /// Two executors pinned to one CPU would fight over it.
    #[error("cpus lists CPU {0} twice")]
    DuplicateCpu(usize),
}

/// An IPv4 multicast range in CIDR form, such as `224.1.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastRange {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl MulticastRange {
    /// The first address of the range.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix_len));
        u32::from(ip) & mask == u32::from(self.network)
    }
}

impl fmt::Display for MulticastRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

/// Why a string is not an IPv4 multicast range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("multicast range {value:?}: {why}")]
pub struct MulticastRangeError {
    /// The text that was given.
    pub value: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for MulticastRange {
    type Err = MulticastRangeError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = |why| MulticastRangeError {
            value: value.to_owned(),
            why,
        };
        let (ip, len) = value.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
        let network: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
        let prefix_len: u8 = len.parse().map_err(|_| bad("prefix length is not a number"))?;
        // Below /4 the range would leave 224.0.0.0/4; /32 is a single group, which is fine.
        if !(4..=32).contains(&prefix_len) {
            return Err(bad("prefix length must be between 4 and 32"));
        }
        if !network.is_multicast() {
            return Err(bad("not in 224.0.0.0/4"));
        }
        let mask = u32::MAX << (32 - u32::from(prefix_len));
        if u32::from(network) & !mask != 0 {
            return Err(bad("host bits are set below the prefix"));
        }
        Ok(MulticastRange { network, prefix_len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ServerConfig {
        ServerConfig::new("127.0.0.1:0".parse().unwrap())
    }

    #[test]
    fn defaults_match_gortsplib_and_validate() {
        let c = base();
        assert_eq!(c.read_timeout, Duration::from_secs(10));
        assert_eq!(c.write_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!((c.write_queue_size, c.max_packet_size), (256, 1472));
        assert_eq!(c.session_timeout_secs(), 55);
        c.validate().unwrap();
    }

    #[test]
    fn rtp_without_rtcp_is_refused() {
        let mut c = base();
        c.rtp_address = Some("127.0.0.1:8000".parse().unwrap());
        assert_eq!(c.validate(), Err(incomplete("rtp_address", "rtcp_address")));
    }

    #[test]
    fn odd_rtp_port_and_misplaced_rtcp_port_are_refused() {
        let mut c = base();
        c.rtp_address = Some("127.0.0.1:8001".parse().unwrap());
        c.rtcp_address = Some("127.0.0.1:8002".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(ServerConfigError::OddRtpPort { port: 8001, .. })
        ));
        c.rtp_address = Some("127.0.0.1:8000".parse().unwrap());
        c.rtcp_address = Some("127.0.0.1:8003".parse().unwrap());
        assert!(matches!(
            c.validate(),
            Err(ServerConfigError::RtcpNotNextToRtp { rtcp: 8003, .. })
        ));
    }

    #[test]
    fn multicast_settings_are_all_or_none_with_port_parity() {
        let mut c = base();
        c.multicast_rtp_port = Some(8002);
        assert_eq!(
            c.validate(),
            Err(incomplete("multicast_rtp_port", "multicast_ip_range"))
        );
        c.multicast_ip_range = Some("224.1.0.0/16".parse().unwrap());
        c.multicast_rtcp_port = Some(8004);
        assert!(matches!(
            c.validate(),
            Err(ServerConfigError::RtcpNotNextToRtp { rtcp: 8004, .. })
        ));
        c.multicast_rtcp_port = Some(8003);
        c.validate().unwrap();
    }

    #[test]
    fn write_queue_size_must_be_a_power_of_two() {
        let mut c = base();
        c.write_queue_size = 300;
        assert_eq!(c.validate(), Err(ServerConfigError::WriteQueueNotPowerOfTwo(300)));
    }

    #[test]
    fn max_packet_size_above_udp_mtu_is_refused() {
        let mut c = base();
        c.max_packet_size = 1473;
        assert_eq!(c.validate(), Err(ServerConfigError::MaxPacketSize(1473)));
    }

    #[test]
    fn zero_timeouts_and_bad_cpu_sets_are_refused() {
        let mut c = base();
        c.idle_timeout = Duration::ZERO;
        assert_eq!(
            c.validate(),
            Err(ServerConfigError::ZeroTimeout { key: "idle_timeout" })
        );
        let mut c = base();
        c.cpus = Some(vec![0, 1, 0]);
        assert_eq!(c.validate(), Err(ServerConfigError::DuplicateCpu(0)));
        c.cpus = Some(vec![]);
        assert_eq!(c.validate(), Err(ServerConfigError::NoCpus));
        c.cpus = None;
        c.auth_methods.clear();
        assert_eq!(c.validate(), Err(ServerConfigError::NoAuthMethods));
    }

    #[test]
    fn multicast_range_parses_cidr_and_refuses_unicast_or_host_bits() {
        let r: MulticastRange = "239.0.0.0/8".parse().unwrap();
        assert!(r.contains("239.1.2.3".parse().unwrap()));
        assert!(!r.contains("238.1.2.3".parse().unwrap()));
        assert_eq!(r.to_string(), "239.0.0.0/8");
        assert!("10.0.0.0/8".parse::<MulticastRange>().is_err());
        assert!("224.1.0.1/16".parse::<MulticastRange>().is_err());
        assert!("224.1.0.0".parse::<MulticastRange>().is_err());
        assert!("224.0.0.0/3".parse::<MulticastRange>().is_err());
    }
}
