//! The `shardcast` binary's configuration file: typed, validated at load.
//!
//! Validation follows DESIGN.md §2: RTP ports even, RTCP = RTP + 1, both or neither;
//! multicast range and ports all or none, with the same parity rule.

use std::net::{Ipv4Addr, SocketAddr};

use serde::Deserialize;

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
    pub multicast_ip_range: Option<String>,
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

/// A multicast range parsed from CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastRange {
    /// First address of the range.
    pub network: Ipv4Addr,
    /// Prefix length in bits.
    pub prefix_len: u8,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not match the schema; the message names the key and line.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// Only one of a pair of settings that go together was given.
    #[error("{present} is set but {missing} is not: set both or neither")]
    Incomplete {
        /// The key that was set.
        present: &'static str,
        /// The key that is missing.
        missing: &'static str,
    },
    /// An RTP port must be even.
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
    /// The multicast range is not a valid IPv4 multicast CIDR.
    #[error("multicast_ip_range = {value:?}: {why}")]
    BadMulticastRange {
        /// The configured value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Config {
    /// Parses and validates a configuration from TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.server.validate()?;
        Ok(config)
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        // The embedded default is covered by a unit test, so failure here is a build defect.
        Self::from_toml(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }
}

impl ServerSection {
    /// Checks the rules that span several keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match (self.rtp_address, self.rtcp_address) {
            (Some(rtp), Some(rtcp)) => check_port_pair("rtp_address", rtp.port(), "rtcp_address", rtcp.port())?,
            (Some(_), None) => {
                return Err(ConfigError::Incomplete {
                    present: "rtp_address",
                    missing: "rtcp_address",
                })
            }
            (None, Some(_)) => {
                return Err(ConfigError::Incomplete {
                    present: "rtcp_address",
                    missing: "rtp_address",
                })
            }
            (None, None) => {}
        }
        let keys = [
            ("multicast_ip_range", self.multicast_ip_range.is_some()),
            ("multicast_rtp_port", self.multicast_rtp_port.is_some()),
            ("multicast_rtcp_port", self.multicast_rtcp_port.is_some()),
        ];
        if let (Some(present), Some(missing)) = (
            keys.iter().find(|k| k.1).map(|k| k.0),
            keys.iter().find(|k| !k.1).map(|k| k.0),
        ) {
            return Err(ConfigError::Incomplete { present, missing });
        }
        if let (Some(range), Some(rtp), Some(rtcp)) = (
            &self.multicast_ip_range,
            self.multicast_rtp_port,
            self.multicast_rtcp_port,
        ) {
            parse_multicast_range(range)?;
            check_port_pair("multicast_rtp_port", rtp, "multicast_rtcp_port", rtcp)?;
        }
        Ok(())
    }

    /// The multicast range, if configured and valid.
    pub fn multicast_range(&self) -> Option<MulticastRange> {
        self.multicast_ip_range
            .as_deref()
            .and_then(|r| parse_multicast_range(r).ok())
    }
}

fn check_port_pair(rtp_key: &'static str, rtp: u16, rtcp_key: &'static str, rtcp: u16) -> Result<(), ConfigError> {
    if rtp % 2 != 0 {
        return Err(ConfigError::OddRtpPort {
            key: rtp_key,
            port: rtp,
        });
    }
    if u32::from(rtcp) != u32::from(rtp) + 1 {
        return Err(ConfigError::RtcpNotNextToRtp {
            key: rtcp_key,
            rtcp,
            expected: u32::from(rtp) + 1,
        });
    }
    Ok(())
}

/// Parses an IPv4 multicast range in CIDR form, such as `224.1.0.0/16`.
pub fn parse_multicast_range(value: &str) -> Result<MulticastRange, ConfigError> {
    let bad = |why| ConfigError::BadMulticastRange {
        value: value.to_owned(),
        why,
    };
    let (ip, len) = value.split_once('/').ok_or_else(|| bad("expected ADDRESS/PREFIX"))?;
    let network: Ipv4Addr = ip.parse().map_err(|_| bad("not an IPv4 address"))?;
    let prefix_len: u8 = len.parse().map_err(|_| bad("prefix length is not a number"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_is_valid_and_listens_on_8554() {
        let c = Config::from_toml(EMBEDDED_DEFAULT).unwrap();
        assert_eq!(c.server.rtsp_address.port(), 8554);
        assert_eq!(c.server.rtp_address.map(|a| a.port()), Some(8000));
        assert_eq!(c.server.multicast_range().map(|r| r.prefix_len), Some(16));
    }

    #[test]
    fn odd_rtp_port_is_refused() {
        let e = Config::from_toml(
            "[server]\nrtsp_address='0.0.0.0:1'\nrtp_address='0.0.0.0:8001'\nrtcp_address='0.0.0.0:8002'",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::OddRtpPort { port: 8001, .. }), "{e}");
    }

    #[test]
    fn rtcp_port_must_follow_rtp_port() {
        let e = Config::from_toml(
            "[server]\nrtsp_address='0.0.0.0:1'\nrtp_address='0.0.0.0:8000'\nrtcp_address='0.0.0.0:8003'",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::RtcpNotNextToRtp { rtcp: 8003, .. }), "{e}");
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
    fn unicast_range_is_not_a_multicast_range() {
        assert!(parse_multicast_range("10.0.0.0/8").is_err());
        assert!(parse_multicast_range("224.1.0.1/16").is_err());
        assert!(parse_multicast_range("239.0.0.0/8").is_ok());
    }
}
