//! The `RTP-Info` header of PLAY responses (RFC 2326 §12.33).

use super::{key_value, HeaderError, TypedHeader};

const NAME: &str = "RTP-Info";

/// Where one track's stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpInfoEntry {
    /// The track's URL.
    pub url: String,
    /// The sequence number of the first packet.
    pub seq: Option<u16>,
    /// The RTP timestamp matching the start of the range.
    pub rtptime: Option<u32>,
}

/// `RTP-Info`: one entry per track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpInfo(pub Vec<RtpInfoEntry>);

impl TypedHeader for RtpInfo {
    const NAME: &'static str = NAME;
    fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut entries = Vec::new();
        for entry in value.split(',').filter(|e| !e.trim().is_empty()) {
            let mut e = RtpInfoEntry {
                url: String::new(),
                seq: None,
                rtptime: None,
            };
            for param in entry.split(';') {
                match key_value(param) {
                    ("url", Some(v)) => e.url = v.to_owned(),
                    ("seq", Some(v)) => {
                        e.seq = Some(v.parse().map_err(|_| HeaderError::new(NAME, format!("seq={v:?}")))?)
                    }
                    ("rtptime", Some(v)) => {
                        e.rtptime = Some(
                            v.parse()
                                .map_err(|_| HeaderError::new(NAME, format!("rtptime={v:?}")))?,
                        )
                    }
                    _ => {}
                }
            }
            if e.url.is_empty() {
                return Err(HeaderError::new(NAME, "entry without url"));
            }
            entries.push(e);
        }
        if entries.is_empty() {
            return Err(HeaderError::new(NAME, "empty"));
        }
        Ok(RtpInfo(entries))
    }
    fn encode(&self) -> String {
        let entries: Vec<String> = self
            .0
            .iter()
            .map(|e| {
                let mut s = format!("url={}", e.url);
                if let Some(seq) = e.seq {
                    s.push_str(&format!(";seq={seq}"));
                }
                if let Some(ts) = e.rtptime {
                    s.push_str(&format!(";rtptime={ts}"));
                }
                s
            })
            .collect();
        entries.join(",")
    }
}
