//! The `[server]`, `[metrics]` and `[log]` tables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::proto::auth::AuthMethod;
use crate::server::{MulticastRange, ServerConfig};

/// The `[server]` table: every library [`ServerConfig`] setting, plus RTSPS.
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
    /// Address of the RTSPS (RTSP over TLS) listener; requires the certificate and key.
    pub rtsps_address: Option<SocketAddr>,
    /// PEM certificate chain for RTSPS; set with `tls_key_file`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for RTSPS; set with `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
}

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the HTTP listener serving `/metrics`.
    pub address: SocketAddr,
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// An `EnvFilter` directive such as `info` or `shardcast=debug,warn`; `RUST_LOG` wins if set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// How log lines are written.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines with `key=value` fields.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Why the RTSPS settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsSettingsError {
    /// Only one of the certificate and key files is set.
    #[error("tls_cert_file and tls_key_file must be set together")]
    CertWithoutKey,
    /// An RTSPS listener needs a certificate and key.
    #[error("rtsps_address needs tls_cert_file and tls_key_file")]
    RtspsWithoutCertificate,
}

impl ServerSection {
    /// The library's server configuration these settings describe; defaults fill what the file
    /// leaves out. RTSPS is not part of it yet: the listener is wired where the server supports it.
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

    /// The authentication methods offered, defaults included.
    pub fn effective_auth_methods(&self) -> Vec<AuthMethod> {
        self.to_server_config().auth_methods
    }

    /// Checks that the RTSPS settings come together.
    pub fn validate_tls(&self) -> Result<(), TlsSettingsError> {
        match (&self.tls_cert_file, &self.tls_key_file, self.rtsps_address) {
            (Some(_), None, _) | (None, Some(_), _) => Err(TlsSettingsError::CertWithoutKey),
            (None, None, Some(_)) => Err(TlsSettingsError::RtspsWithoutCertificate),
            _ => Ok(()),
        }
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
