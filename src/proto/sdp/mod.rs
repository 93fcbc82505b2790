//! SDP (RFC 4566 / RFC 8866) session descriptions: a lenient parser and the builder for DESCRIBE.
//!
//! Publishers send SDP in ANNOUNCE and readers receive it in DESCRIBE responses. Real encoders
//! (ffmpeg, GStreamer, IP cameras) bend the grammar, so [`parse()`] is lenient:
//!
//! - CRLF or LF line endings, blank lines and trailing whitespace are accepted;
//! - session-level lines may come in any order (`a=` before `s=`, no `t=`, ...), as long as a
//!   `v=0` comes before the first `m=`;
//! - unknown line types are kept (in `other_lines`) and written back, never interpreted;
//! - a line that is not of the form `<letter>=<value>` is an error, as is an `m=` line that
//!   cannot be read, non-UTF-8 text, and input over the [limits](MAX_INPUT_LEN).
//!
//! Parsing normalises: the result always has an origin, a session name and a `t=` line, and
//! `other_lines` are in RFC 4566 order. Writing ([`fmt::Display`]) produces exactly that form,
//! so `parse(description.to_string())` gives back a parsed description unchanged.
//!
//! [`for_describe`] turns a publisher's description into the one a reader gets: server origin,
//! `a=control:*`, port 0 and `a=control:trackID=N` on every media.
//!
//! The parser never panics and allocates at most a small multiple of its (bounded) input.
//! See `docs/decisions/0001-sdp-parser.md` for why this is not the `sdp` crate.

mod parse;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;

pub use parse::parse;
pub use write::for_describe;

/// Largest SDP accepted by [`parse()`], in bytes.
pub const MAX_INPUT_LEN: usize = 128 * 1024;
/// Most `m=` sections accepted by [`parse()`] (indices 0 to 127).
pub const MAX_MEDIAS: usize = 128;
/// Most `a=` lines accepted in one section (the session level or one media).
pub const MAX_ATTRIBUTES: usize = 256;

/// The origin written when a description has none.
pub const DEFAULT_ORIGIN: &str = "- 0 0 IN IP4 127.0.0.1";
/// The session name written when a description has none.
pub const DEFAULT_SESSION_NAME: &str = "Stream";
/// The timing written when a description has no `t=` line: a permanent session.
pub const DEFAULT_TIMING: &str = "0 0";

/// Why an SDP could not be parsed. Line numbers count from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// The input is larger than [`MAX_INPUT_LEN`] (or would be once written back with CRLF line
    /// endings and default lines added), or a section has more than [`MAX_ATTRIBUTES`] attributes.
    #[error("SDP too large")]
    TooLarge,
    /// There are more than [`MAX_MEDIAS`] `m=` lines.
    #[error("SDP has more than {MAX_MEDIAS} media descriptions")]
    TooManyMedias,
    /// A line is not valid UTF-8.
    #[error("SDP line {line} is not UTF-8")]
    NotUtf8 {
        /// The line at fault.
        line: usize,
    },
    /// A line is not of the form `<letter>=<value>`, or holds control characters.
    #[error("SDP line {line} is not of the form <type>=<value>")]
    MalformedLine {
        /// The line at fault.
        line: usize,
    },
    /// No `v=0` line comes before the first `m=` line (or at all).
    #[error("SDP has no v=0 line before its media descriptions")]
    MissingVersion,
    /// A `v=` line gives a version other than 0.
    #[error("SDP line {line} gives an unsupported version")]
    BadVersion {
        /// The line at fault.
        line: usize,
    },
    /// An `m=` line is not `<media> <port>[/<count>] <proto> <fmt>...`.
    #[error("SDP line {line} is not a valid m= line")]
    BadMediaLine {
        /// The line at fault.
        line: usize,
    },
}

/// A whole SDP session description.
///
/// [`parse()`] always fills `origin` and `session_name` (with [`DEFAULT_ORIGIN`] and
/// [`DEFAULT_SESSION_NAME`] when the input had none) and puts a `t=` line in `other_lines`;
/// `None` only occurs in descriptions built by hand, and is written as those defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SessionDescription {
    /// The `o=` value as sent, e.g. `- 0 0 IN IP4 127.0.0.1`.
    pub origin: Option<String>,
    /// The `s=` value.
    pub session_name: Option<String>,
    /// The session-level `c=` value as sent, e.g. `IN IP4 224.2.1.1/127`.
    pub connection: Option<String>,
    /// The session-level `a=` lines in order.
    pub attributes: Vec<Attribute>,
    /// The `m=` sections in order.
    pub medias: Vec<MediaDescription>,
    /// Every other session-level line (`i=`, `u=`, `e=`, `p=`, `b=`, `t=`, `r=`, `z=`, `k=`,
    /// unknown types, repeated `o=`/`s=`/`c=`) as (type, value), kept to be written back.
    pub other_lines: Vec<(char, String)>,
}

impl SessionDescription {
    /// The description written as SDP text with CRLF line endings (see its [`fmt::Display`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// An `a=` line: `a=<name>` (a flag) or `a=<name>:<value>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The part before the first `:`, e.g. `rtpmap`.
    pub name: String,
    /// The part after the first `:`, e.g. `96 H264/90000`; `None` for a flag like `recvonly`.
    pub value: Option<String>,
}

impl Attribute {
    /// An attribute with a value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: Some(value.into()),
        }
    }

    /// A flag attribute, without a value.
    pub fn flag(name: impl Into<String>) -> Self {
        Attribute {
            name: name.into(),
            value: None,
        }
    }

    /// Whether the name is `name`, ignoring ASCII case.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// One `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaDescription {
    /// `video`, `audio`, `application`, ...
    pub media_type: String,
    /// The port (0 in RTSP, where transport is negotiated by SETUP).
    pub port: u16,
    /// The `/<count>` after the port, for layered multicast.
    pub port_count: Option<u16>,
    /// The transport protocol, e.g. `RTP/AVP`.
    pub protocol: String,
    /// The formats: RTP payload types, as written.
    pub formats: Vec<String>,
    /// The first media-level `c=` value as sent.
    pub connection: Option<String>,
    /// The `b=` values as sent, e.g. `AS:200`.
    pub bandwidths: Vec<String>,
    /// The media-level `a=` lines in order.
    pub attributes: Vec<Attribute>,
    /// Every other media-level line (`i=`, `k=`, unknown types, repeated `c=`) as (type, value).
    pub other_lines: Vec<(char, String)>,
}

/// An `a=rtpmap:` attribute: `<payload type> <encoding>/<clock rate>[/<channels>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    /// The RTP payload type.
    pub payload_type: u8,
    /// The encoding name as written, e.g. `H264` or `MPEG4-GENERIC`.
    pub encoding: String,
    /// The RTP clock rate in Hz.
    pub clock_rate: u32,
    /// The number of audio channels, when given.
    pub channels: Option<u16>,
}

impl RtpMap {
    /// Reads an rtpmap value such as `97 MPEG4-GENERIC/44100/2`; `None` if it is not one.
    pub fn parse(value: &str) -> Option<RtpMap> {
        let mut words = value.split_whitespace();
        let payload_type = parse_payload_type(words.next()?)?;
        let mut parts = words.next()?.split('/');
        let encoding = parts.next().filter(|e| !e.is_empty())?.to_owned();
        let clock_rate = parts.next()?.parse().ok()?;
        let channels = match parts.next() {
            Some(c) => Some(c.parse().ok()?),
            None => None,
        };
        if parts.next().is_some() || words.next().is_some() {
            return None;
        }
        Some(RtpMap {
            payload_type,
            encoding,
            clock_rate,
            channels,
        })
    }
}

/// The RFC 3551 static payload type `payload_type`, for media that announce it without an rtpmap.
pub fn static_rtpmap(payload_type: u8) -> Option<RtpMap> {
    let (encoding, clock_rate, channels) = match payload_type {
        0 => ("PCMU", 8000, Some(1)),
        3 => ("GSM", 8000, Some(1)),
        4 => ("G723", 8000, Some(1)),
        5 => ("DVI4", 8000, Some(1)),
        6 => ("DVI4", 16000, Some(1)),
        7 => ("LPC", 8000, Some(1)),
        8 => ("PCMA", 8000, Some(1)),
        // G.722 samples at 16 kHz but its RTP clock runs at 8 kHz (RFC 3551 §4.5.2).
        9 => ("G722", 8000, Some(1)),
        10 => ("L16", 44100, Some(2)),
        11 => ("L16", 44100, Some(1)),
        12 => ("QCELP", 8000, Some(1)),
        13 => ("CN", 8000, Some(1)),
        14 => ("MPA", 90000, None),
        15 => ("G728", 8000, Some(1)),
        16 => ("DVI4", 11025, Some(1)),
        17 => ("DVI4", 22050, Some(1)),
        18 => ("G729", 8000, Some(1)),
        25 => ("CelB", 90000, None),
        26 => ("JPEG", 90000, None),
        28 => ("nv", 90000, None),
        31 => ("H261", 90000, None),
        32 => ("MPV", 90000, None),
        33 => ("MP2T", 90000, None),
        34 => ("H263", 90000, None),
        _ => return None,
    };
    Some(RtpMap {
        payload_type,
        encoding: encoding.to_owned(),
        clock_rate,
        channels,
    })
}

/// An RTP payload type (0 to 127) written in decimal.
fn parse_payload_type(s: &str) -> Option<u8> {
    s.parse::<u8>().ok().filter(|&pt| pt < 128)
}

impl MediaDescription {
    /// A media with no connection, bandwidth, attributes or other lines.
    pub fn new(media_type: impl Into<String>, port: u16, protocol: impl Into<String>, formats: Vec<String>) -> Self {
        MediaDescription {
            media_type: media_type.into(),
            port,
            port_count: None,
            protocol: protocol.into(),
            formats,
            connection: None,
            bandwidths: Vec::new(),
            attributes: Vec::new(),
            other_lines: Vec::new(),
        }
    }

    /// The value of the first attribute called `name` (ASCII case ignored); `Some("")` for a flag.
    pub fn attribute(&self, name: &str) -> Option<&str> {
        let attribute = self.attributes.iter().find(|a| a.is(name))?;
        Some(attribute.value.as_deref().unwrap_or(""))
    }

    /// The `a=control:` value: the URL (relative or absolute) SETUP uses for this media.
    pub fn control(&self) -> Option<&str> {
        self.attribute("control")
    }

    /// Sets `a=control:` to `control`, replacing the first control attribute (and dropping any
    /// further ones), or adding one at the end when there is none.
    pub fn set_control(&mut self, control: &str) {
        let mut seen = false;
        self.attributes.retain_mut(|a| {
            if !a.is("control") {
                return true;
            }
            if seen {
                return false;
            }
            seen = true;
            *a = Attribute::new("control", control);
            true
        });
        if !seen {
            self.attributes.push(Attribute::new("control", control));
        }
    }

    /// The first well-formed `a=rtpmap:` for `payload_type`.
    pub fn rtpmap(&self, payload_type: u8) -> Option<RtpMap> {
        self.attributes_named("rtpmap")
            .filter_map(RtpMap::parse)
            .find(|map| map.payload_type == payload_type)
    }

    /// The first format as an RTP payload type (0 to 127).
    pub fn payload_type(&self) -> Option<u8> {
        parse_payload_type(self.formats.first()?)
    }

    /// The RTP clock rate of the first format: from its rtpmap, or else from the RFC 3551 table
    /// of static payload types ([`static_rtpmap`]).
    pub fn clock_rate(&self) -> Option<u32> {
        let payload_type = self.payload_type()?;
        self.rtpmap(payload_type)
            .or_else(|| static_rtpmap(payload_type))
            .map(|map| map.clock_rate)
    }

    /// The parameters of the first `a=fmtp:` for `payload_type` (the text after the payload type,
    /// e.g. `packetization-mode=1;profile-level-id=42c01f`).
    pub fn fmtp(&self, payload_type: u8) -> Option<&str> {
        self.attributes_named("fmtp").find_map(|value| {
            let value = value.trim_start();
            let (pt, params) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
            (parse_payload_type(pt)? == payload_type).then(|| params.trim_start())
        })
    }

    /// The values of the attributes called `name` (ASCII case ignored) that have one.
    fn attributes_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes
            .iter()
            .filter(move |a| a.is(name))
            .filter_map(|a| a.value.as_deref())
    }
}

/// Where a session-level line goes in RFC 4566 order (`v o s i u e p c b t r z k a m`).
/// `c=` is rank 5; `t=` and `r=` share a rank so repeat times stay after their timing.
fn session_rank(kind: char) -> u8 {
    match kind {
        'i' => 1,
        'u' => 2,
        'e' => 3,
        'p' => 4,
        'c' => 5,
        'b' => 6,
        't' | 'r' => 7,
        'z' => 8,
        'k' => 9,
        _ => 10,
    }
}

/// Where a media-level line goes in RFC 4566 order (`m i c b k a`); `c=` is rank 2.
fn media_rank(kind: char) -> u8 {
    match kind {
        'i' => 1,
        'c' => 2,
        'k' => 4,
        _ => 5,
    }
}

impl fmt::Display for Attribute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write::clean(f, &self.name)?;
        if let Some(value) = &self.value {
            f.write_str(":")?;
            write::clean(f, value)?;
        }
        Ok(())
    }
}
