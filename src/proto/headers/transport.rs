//! The `Transport` header (RFC 2326 §12.39): a list of alternatives the client offers, or the
//! one the server chose.

use super::{key_value, unquote, HeaderError, TypedHeader};

const NAME: &str = "Transport";

/// The RTP profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `RTP/AVP`: plain RTP.
    Avp,
    /// `RTP/SAVP`: SRTP.
    Savp,
}

/// The transport RTP runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LowerTransport {
    /// UDP (the default when none is named).
    Udp,
    /// Interleaved in the RTSP TCP connection.
    Tcp,
}

/// Unicast or multicast delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// `unicast`
    Unicast,
    /// `multicast`
    Multicast,
}

/// The `mode` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportMode {
    /// `PLAY` (the default).
    Play,
    /// `RECORD` (some clients send `receive`).
    Record,
}

/// One transport specification.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Transport {
    /// RTP profile.
    pub profile: Option<Profile>,
    /// Lower transport; `None` means UDP was implied.
    pub lower: Option<LowerTransport>,
    /// `unicast` or `multicast`, when given.
    pub delivery: Option<Delivery>,
    /// `destination=`: the address packets go to.
    pub destination: Option<String>,
    /// `source=`: the address packets come from.
    pub source: Option<String>,
    /// `interleaved=a-b`: TCP channels for RTP and RTCP.
    pub interleaved: Option<(u8, u8)>,
    /// `ttl=`: multicast time to live.
    pub ttl: Option<u8>,
    /// `port=a-b`: multicast ports.
    pub port: Option<(u16, u16)>,
    /// `client_port=a-b`: the client's RTP and RTCP ports.
    pub client_port: Option<(u16, u16)>,
    /// `server_port=a-b`: the server's RTP and RTCP ports.
    pub server_port: Option<(u16, u16)>,
    /// `ssrc=`: the sender's SSRC (hex).
    pub ssrc: Option<u32>,
    /// `mode=`.
    pub mode: Option<TransportMode>,
}

impl Transport {
    /// The profile, RTP/AVP when the spec named none (never for a parsed value).
    pub fn profile(&self) -> Profile {
        self.profile.unwrap_or(Profile::Avp)
    }

    /// The lower transport, UDP when not named.
    pub fn lower_transport(&self) -> LowerTransport {
        self.lower.unwrap_or(LowerTransport::Udp)
    }

    /// Whether the client asked for multicast.
    pub fn is_multicast(&self) -> bool {
        self.delivery == Some(Delivery::Multicast)
    }

    /// Whether the client asked to record.
    pub fn is_record(&self) -> bool {
        self.mode == Some(TransportMode::Record)
    }
}

fn invalid(problem: impl Into<String>) -> HeaderError {
    HeaderError::new(NAME, problem)
}

/// Parses `a-b` or `a` (then b = a + 1).
fn pair<T: std::str::FromStr + Copy>(
    name: &str,
    value: &str,
    next: impl Fn(T) -> Option<T>,
) -> Result<(T, T), HeaderError> {
    let bad = || invalid(format!("{name}={value:?} is not a number or a-b range"));
    match value.split_once('-') {
        Some((a, b)) => Ok((
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        )),
        None => {
            let a: T = value.trim().parse().map_err(|_| bad())?;
            Ok((a, next(a).ok_or_else(bad)?))
        }
    }
}

fn parse_spec(spec: &str) -> Result<Option<Transport>, HeaderError> {
    let mut params = spec.split(';');
    let protocol = params.next().unwrap_or_default().trim();
    let mut parts = protocol.split('/').map(|p| p.trim().to_ascii_uppercase());
    let (Some(rtp), Some(profile)) = (parts.next(), parts.next()) else {
        return Err(invalid(format!("{protocol:?} is not a transport protocol")));
    };
    let lower = parts.next();
    if rtp != "RTP" || parts.next().is_some() {
        return Ok(None);
    }
    let profile = match profile.as_str() {
        "AVP" => Profile::Avp,
        "SAVP" => Profile::Savp,
        _ => return Ok(None),
    };
    let lower = match lower.as_deref() {
        None => None,
        Some("UDP") => Some(LowerTransport::Udp),
        Some("TCP") => Some(LowerTransport::Tcp),
        Some(_) => return Ok(None),
    };
    let mut t = Transport {
        profile: Some(profile),
        lower,
        ..Transport::default()
    };
    for param in params {
        let (key, value) = key_value(param);
        let value = value.map(unquote);
        match (key.to_ascii_lowercase().as_str(), value) {
            ("", None) => {}
            ("unicast", None) => t.delivery = Some(Delivery::Unicast),
            ("multicast", None) => t.delivery = Some(Delivery::Multicast),
            ("destination", Some(v)) => t.destination = Some(v.to_owned()),
            ("source", Some(v)) => t.source = Some(v.to_owned()),
            ("interleaved", Some(v)) => t.interleaved = Some(pair(key, v, |a: u8| a.checked_add(1))?),
            ("ttl", Some(v)) => t.ttl = Some(v.parse().map_err(|_| invalid(format!("ttl={v:?} is not 0-255")))?),
            ("port", Some(v)) => t.port = Some(pair(key, v, |a: u16| a.checked_add(1))?),
            ("client_port", Some(v)) => t.client_port = Some(pair(key, v, |a: u16| a.checked_add(1))?),
            ("server_port", Some(v)) => t.server_port = Some(pair(key, v, |a: u16| a.checked_add(1))?),
            ("ssrc", Some(v)) => {
                // Some servers pad the SSRC with leading spaces or send fewer than 8 digits.
                let v = v.trim();
                if v.is_empty() || v.len() > 8 {
                    return Err(invalid(format!("ssrc={v:?} is not 1-8 hex digits")));
                }
                t.ssrc = Some(u32::from_str_radix(v, 16).map_err(|_| invalid(format!("ssrc={v:?} is not hex")))?);
            }
            ("mode", Some(v)) => {
                t.mode = Some(match v.to_ascii_lowercase().as_str() {
                    "play" => TransportMode::Play,
                    "record" | "receive" => TransportMode::Record,
                    _ => return Err(invalid(format!("unknown mode {v:?}"))),
                })
            }
            // Parameters we do not use (append, layers, ...) are allowed.
            _ => {}
        }
    }
    Ok(Some(t))
}

impl TypedHeader for Transport {
    const NAME: &'static str = NAME;

    /// Parses one transport spec; alternatives in a profile this server cannot speak are an error.
    fn parse(value: &str) -> Result<Self, HeaderError> {
        parse_spec(value)?.ok_or_else(|| invalid(format!("unsupported transport {:?}", value.trim())))
    }

    fn encode(&self) -> String {
        let mut out = String::from(match self.profile() {
            Profile::Avp => "RTP/AVP",
            Profile::Savp => "RTP/SAVP",
        });
        match self.lower {
            Some(LowerTransport::Tcp) => out.push_str("/TCP"),
            Some(LowerTransport::Udp) => out.push_str("/UDP"),
            None => {}
        }
        match self.delivery {
            Some(Delivery::Unicast) => out.push_str(";unicast"),
            Some(Delivery::Multicast) => out.push_str(";multicast"),
            None => {}
        }
        if let Some(d) = &self.destination {
            out.push_str(&format!(";destination={d}"));
        }
        if let Some(s) = &self.source {
            out.push_str(&format!(";source={s}"));
        }
        if let Some((a, b)) = self.interleaved {
            out.push_str(&format!(";interleaved={a}-{b}"));
        }
        if let Some(ttl) = self.ttl {
            out.push_str(&format!(";ttl={ttl}"));
        }
        for (name, ports) in [
            ("port", self.port),
            ("client_port", self.client_port),
            ("server_port", self.server_port),
        ] {
            if let Some((a, b)) = ports {
                out.push_str(&format!(";{name}={a}-{b}"));
            }
        }
        if let Some(ssrc) = self.ssrc {
            out.push_str(&format!(";ssrc={ssrc:08X}"));
        }
        match self.mode {
            Some(TransportMode::Play) => out.push_str(";mode=play"),
            Some(TransportMode::Record) => out.push_str(";mode=record"),
            None => {}
        }
        out
    }
}

/// The comma-separated alternatives a client offers, in its order of preference.
///
/// Alternatives in profiles this server does not know (e.g. `RAW/RAW/UDP`) are skipped;
/// a malformed parameter in a known one, or no usable alternative at all, is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transports(pub Vec<Transport>);

impl TypedHeader for Transports {
    const NAME: &'static str = NAME;

    fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut out = Vec::new();
        for spec in value.split(',').filter(|s| !s.trim().is_empty()) {
            if let Some(t) = parse_spec(spec)? {
                out.push(t);
            }
        }
        if out.is_empty() {
            return Err(invalid("no RTP transport offered"));
        }
        Ok(Transports(out))
    }

    fn encode(&self) -> String {
        self.0.iter().map(Transport::encode).collect::<Vec<_>>().join(",")
    }
}
