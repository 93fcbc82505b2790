//! The `shardcast` binary's configuration file: typed, validated at load.
//!
//! Validation follows DESIGN.md §2: RTP ports even, RTCP = RTP + 1, both or neither;
//! multicast range and ports all or none, with the same parity rule.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::proto::auth::AuthMethod;
use crate::server::{MulticastRange, ServerConfig, ServerConfigError};

/// The configuration compiled into the binary, used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("config/default.toml");

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// RTSP server settings.
    pub server: ServerSection,
    /// Prometheus metrics listener; absent disables metrics.
    pub metrics: Option<MetricsSection>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Address of the RTSP (TCP) listener.
    pub rtsp_address: SocketAddr,
    /// Address of the UDP RTP socket; requires `rtcp_address`.
    pub rtp_address: Option<SocketAddr>,
    /// Address of the UDP RTCP socket; requires `rtp_address`.
    pub rtcp_address: Option<SocketAddr>,
    /// Multicast group range in CIDR form, such as `224.1.0.0/16`.
    #[serde(default, deserialize_with = "de_multicast_range")]
    pub multicast_ip_range: Option<MulticastRange>,
    /// Multicast RTP port (even).
    pub multicast_rtp_port: Option<u16>,
    /// Multicast RTCP port (RTP + 1).
    pub multicast_rtcp_port: Option<u16>,
    /// How long a publisher may send nothing (`10s`).
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    /// How long a write may stay blocked (`10s`).
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    /// How long an idle connection or UDP reader lives without a sign of life (`60s`).
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    /// Receive buffer of each UDP socket in bytes; start fails if the OS would clamp it.
    pub udp_read_buffer_size: Option<usize>,
    /// Packets queued per TCP reader before it loses packets (a power of two).
    pub write_queue_size: Option<usize>,
    /// Largest RTP/RTCP packet in bytes (64..=1472).
    pub max_packet_size: Option<usize>,
    /// Do not send RTCP sender reports to readers.
    #[serde(default)]
    pub disable_rtcp_sender_reports: bool,
    /// CPUs to run one executor on each (default: every CPU the process may use).
    pub cpus: Option<Vec<usize>>,
    /// Authentication methods offered: `basic`, `digest_md5`, `digest_sha256`.
    #[serde(default, deserialize_with = "de_auth_methods")]
    pub auth_methods: Option<Vec<AuthMethod>>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the HTTP listener serving `/metrics`.
    pub address: SocketAddr,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not match the schema; the message names the key and line.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// The values parsed but break a server rule (port parity, groups set together, ...).
    #[error("[server] {0}")]
    Server(#[from] ServerConfigError),
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.server.to_server_config().validate()?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        // The embedded default is covered by a unit test, so failure here is a build defect.
        Self::from_toml(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }
}

impl ServerSection {
    /// The library's server configuration these settings describe; defaults fill what the file leaves out.
    pub fn to_server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::new(self.rtsp_address);
        config.rtp_address = self.rtp_address;
        config.rtcp_address = self.rtcp_address;
        config.multicast_ip_range = self.multicast_ip_range;
        config.multicast_rtp_port = self.multicast_rtp_port;
        config.multicast_rtcp_port = self.multicast_rtcp_port;
        if let Some(t) = self.read_timeout {
            config.read_timeout = t;
        }
        if let Some(t) = self.write_timeout {
            config.write_timeout = t;
        }
        if let Some(t) = self.idle_timeout {
            config.idle_timeout = t;
        }
        config.udp_read_buffer_size = self.udp_read_buffer_size;
        if let Some(n) = self.write_queue_size {
            config.write_queue_size = n;
        }
        if let Some(n) = self.max_packet_size {
            config.max_packet_size = n;
        }
        config.disable_rtcp_sender_reports = self.disable_rtcp_sender_reports;
        config.cpus = self.cpus.clone();
        if let Some(methods) = &self.auth_methods {
            config.auth_methods = methods.clone();
        }
        config
    }
}

fn de_auth_methods<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<AuthMethod>>, D::Error> {
    let names: Option<Vec<String>> = Option::deserialize(d)?;
    names
        .map(|names| {
            names
                .iter()
                .map(|n| n.parse().map_err(serde::de::Error::custom))
                .collect()
        })
        .transpose()
}

fn de_multicast_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MulticastRange>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    text.map(|t| t.parse().map_err(serde::de::Error::custom)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_listens_on_8554() {
        let c = Config::from_toml(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.server.rtsp_address.port(), 8554);
        assert_eq!(c.server.rtp_address.map(|a| a.port()), Some(8000));
        assert_eq!(c.server.multicast_ip_range.map(|r| r.prefix_len()), Some(16));
    }

    #[test]
    fn odd_rtp_port_is_refused() {
        let e = Config::from_toml(
            "[server]\nrtsp_address='0.0.0.0:1'\nrtp_address='0.0.0.0:8001'\nrtcp_address='0.0.0.0:8002'",
        )
        .unwrap_err();
        assert!(
            matches!(e, ConfigError::Server(ServerConfigError::OddRtpPort { port: 8001, .. })),
            "{e}"
        );
    }

    #[test]
    fn rtcp_port_must_follow_rtp_port() {
        let e = Config::from_toml(
            "[server]\nrtsp_address='0.0.0.0:1'\nrtp_address='0.0.0.0:8000'\nrtcp_address='0.0.0.0:8003'",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Server(ServerConfigError::RtcpNotNextToRtp { rtcp: 8003, .. })
            ),
            "{e}"
        );
    }

    #[test]
    fn every_library_setting_can_be_set_from_the_file() {
        let c = Config::from_toml(
            "[server]\nrtsp_address='0.0.0.0:1'\nread_timeout='5s'\nwrite_timeout='2s'\nidle_timeout='1m'\n\
             udp_read_buffer_size=1048576\nwrite_queue_size=512\nmax_packet_size=1200\n\
             disable_rtcp_sender_reports=true\ncpus=[0]\nauth_methods=['digest_sha256']",
        )
        .unwrap()
        .server
        .to_server_config();
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!(c.write_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(
            (c.udp_read_buffer_size, c.write_queue_size, c.max_packet_size),
            (Some(1 << 20), 512, 1200)
        );
        assert!(c.disable_rtcp_sender_reports);
        assert_eq!(c.cpus, Some(vec![0]));
        assert_eq!(c.auth_methods, vec![AuthMethod::DigestSha256]);
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nidle_timeout='soon'").unwrap_err();
        assert!(e.to_string().contains("idle_timeout"), "{e}");
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nauth_methods=['ntlm']").unwrap_err();
        assert!(e.to_string().contains("auth_methods"), "{e}");
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nwrite_queue_size=100").unwrap_err();
        assert!(e.to_string().contains("write_queue_size"), "{e}");
    }

    #[test]
    fn multicast_settings_are_all_or_none() {
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nmulticast_rtp_port=8002").unwrap_err();
        assert!(e.to_string().contains("multicast_ip_range"), "{e}");
    }

    #[test]
    fn unknown_key_error_names_key_and_line() {
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nrtsp_adress='x'\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("rtsp_adress") && msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn unicast_multicast_range_error_names_the_value() {
        let e = Config::from_toml("[server]\nrtsp_address='0.0.0.0:1'\nmulticast_ip_range='10.0.0.0/8'\n").unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/8"), "{e}");
    }
}
