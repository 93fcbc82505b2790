//! The `shardcast` binary's configuration file: typed, validated at load.
//!
//! Validation follows DESIGN.md §2: RTP ports even, RTCP = RTP + 1, both or neither;
//! multicast range and ports all or none, with the same parity rule.

use std::net::SocketAddr;

use serde::Deserialize;

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
        config
    }
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
