//! The `Range` header in normal play time (RFC 2326 §3.6).

use std::time::Duration;

use super::{HeaderError, TypedHeader};

const NAME: &str = "Range";

/// A point in normal play time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NptTime {
    /// `now`: the live edge.
    Now,
    /// An offset from the start, with millisecond precision on the wire.
    At(Duration),
}

/// `Range: npt=start-[end]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Where playback starts.
    pub start: NptTime,
    /// Where it ends, if bounded.
    pub end: Option<NptTime>,
}

fn parse_npt(s: &str) -> Result<NptTime, HeaderError> {
    let bad = || HeaderError::new(NAME, format!("{s:?} is not an npt time"));
    let s = s.trim();
    if s.eq_ignore_ascii_case("now") {
        return Ok(NptTime::Now);
    }
    // Either seconds ("12.5") or h:mm:ss(.fraction).
    let mut secs = 0f64;
    let fields: Vec<&str> = s.split(':').collect();
    if fields.len() > 3 {
        return Err(bad());
    }
    for (i, field) in fields.iter().enumerate() {
        let last = i + 1 == fields.len();
        let valid = !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit() || (last && b == b'.'));
        if !valid {
            return Err(bad());
        }
        let v: f64 = field.parse().map_err(|_| bad())?;
        secs = secs * 60.0 + v;
    }
    Duration::try_from_secs_f64(secs).map(NptTime::At).map_err(|_| bad())
}

fn encode_npt(t: NptTime) -> String {
    match t {
        NptTime::Now => "now".to_owned(),
        NptTime::At(d) => format!("{}.{:03}", d.as_secs(), d.subsec_millis()),
    }
}

impl TypedHeader for Range {
    const NAME: &'static str = NAME;
    fn parse(value: &str) -> Result<Self, HeaderError> {
        // A `;time=` parameter may follow; it is not used.
        let spec = value.split(';').next().unwrap_or_default().trim();
        let Some(npt) = spec.strip_prefix("npt=").or_else(|| spec.strip_prefix("npt =")) else {
            return Err(HeaderError::new(NAME, "only npt ranges are supported"));
        };
        let Some((start, end)) = npt.split_once('-') else {
            return Err(HeaderError::new(NAME, "missing '-'"));
        };
        let start = if start.trim().is_empty() {
            NptTime::At(Duration::ZERO)
        } else {
            parse_npt(start)?
        };
        let end = if end.trim().is_empty() {
            None
        } else {
            Some(parse_npt(end)?)
        };
        Ok(Range { start, end })
    }
    fn encode(&self) -> String {
        let end = self.end.map(encode_npt).unwrap_or_default();
        format!("npt={}-{end}", encode_npt(self.start))
    }
}
