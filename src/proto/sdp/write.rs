//! Writing SDP, and the description served in DESCRIBE responses.

use std::fmt;
use std::net::IpAddr;

use super::{
    media_rank, session_rank, Attribute, MediaDescription, SessionDescription, DEFAULT_ORIGIN, DEFAULT_SESSION_NAME,
    DEFAULT_TIMING,
};

/// Writes `value` without any CR or LF, so no value can end its line early.
pub(super) fn clean(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    value.split(['\r', '\n']).try_for_each(|piece| f.write_str(piece))
}

/// Writes `<kind>=<value>` and CRLF.
fn line(f: &mut fmt::Formatter<'_>, kind: char, value: &str) -> fmt::Result {
    write!(f, "{kind}=")?;
    clean(f, value)?;
    f.write_str("\r\n")
}

/// Whether an other line of type `kind` can be written without changing the structure
/// (`v=` and `m=` would start a new description or section).
fn writable(kind: char) -> bool {
    kind.is_ascii_lowercase() && kind != 'v' && kind != 'm'
}

/// Lines to write, as (type, value).
type Lines<'a> = Vec<(char, &'a str)>;

/// The other lines in RFC 4566 order by `rank`, split at `split` (lines ranked below it first).
fn ordered<'a>(
    lines: &'a [(char, String)],
    extra: Option<(char, &'a str)>,
    rank: fn(char) -> u8,
    split: u8,
) -> (Lines<'a>, Lines<'a>) {
    let mut all: Lines<'a> = extra.into_iter().collect();
    all.extend(
        lines
            .iter()
            .filter(|(kind, _)| writable(*kind))
            .map(|(kind, value)| (*kind, value.as_str())),
    );
    all.sort_by_key(|(kind, _)| rank(*kind));
    all.into_iter().partition(|(kind, _)| rank(*kind) < split)
}

/// SDP text with CRLF line endings: `v=0`, `o=`, `s=`, the other session lines, `c=` and `t=` in
/// RFC 4566 order (`t=0 0` when there is no `t=`), the session attributes, then each media.
/// Missing origin and session name are written as [`DEFAULT_ORIGIN`] and [`DEFAULT_SESSION_NAME`].
impl fmt::Display for SessionDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        line(f, 'v', "0")?;
        line(f, 'o', self.origin.as_deref().unwrap_or(DEFAULT_ORIGIN))?;
        line(f, 's', self.session_name.as_deref().unwrap_or(DEFAULT_SESSION_NAME))?;
        let has_timing = self.other_lines.iter().any(|(kind, _)| *kind == 't');
        let timing = (!has_timing).then_some(('t', DEFAULT_TIMING));
        let (before, after) = ordered(&self.other_lines, timing, session_rank, session_rank('c'));
        for (kind, value) in before {
            line(f, kind, value)?;
        }
        if let Some(connection) = &self.connection {
            line(f, 'c', connection)?;
        }
        for (kind, value) in after {
            line(f, kind, value)?;
        }
        for attribute in &self.attributes {
            writeln_attribute(f, attribute)?;
        }
        self.medias.iter().try_for_each(|media| media.fmt(f))
    }
}

fn writeln_attribute(f: &mut fmt::Formatter<'_>, attribute: &Attribute) -> fmt::Result {
    write!(f, "a={attribute}\r\n")
}

/// One `m=` section with CRLF line endings: the `m=` line, `i=`, `c=`, `b=`, the other lines,
/// then the attributes.
impl fmt::Display for MediaDescription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("m=")?;
        clean(f, &self.media_type)?;
        write!(f, " {}", self.port)?;
        if let Some(count) = self.port_count {
            write!(f, "/{count}")?;
        }
        f.write_str(" ")?;
        clean(f, &self.protocol)?;
        for format in &self.formats {
            f.write_str(" ")?;
            clean(f, format)?;
        }
        f.write_str("\r\n")?;
        let (before, after) = ordered(&self.other_lines, None, media_rank, media_rank('c'));
        for (kind, value) in before {
            line(f, kind, value)?;
        }
        if let Some(connection) = &self.connection {
            line(f, 'c', connection)?;
        }
        for bandwidth in &self.bandwidths {
            line(f, 'b', bandwidth)?;
        }
        for (kind, value) in after {
            line(f, kind, value)?;
        }
        self.attributes
            .iter()
            .try_for_each(|attribute| writeln_attribute(f, attribute))
    }
}

/// The description served to readers in a DESCRIBE response, made from a publisher's.
///
/// - `o=- 0 0 IN IP4 <server_ip>` (`IP6` for an IPv6 address; an IPv4-mapped one counts as IPv4);
/// - the session name is kept (or [`DEFAULT_SESSION_NAME`] when missing or blank);
/// - `c=IN IP4 0.0.0.0` (or `c=IN IP6 ::`) at session level and `t=0 0` (other `t=`/`r=` dropped);
/// - the session's `a=control` and `a=range` are dropped and `a=control:*` added;
/// - every media gets port 0, loses its `c=` lines, and gets `a=control:trackID=<index>` in place
///   of the publisher's control (`streamid=0` from ffmpeg, `stream=0` from GStreamer, ...).
///
/// Everything else (other session lines, attributes, bandwidths, formats) is kept.
pub fn for_describe(description: &SessionDescription, server_ip: IpAddr) -> SessionDescription {
    let server_ip = server_ip.to_canonical();
    let (family, unspecified) = match server_ip {
        IpAddr::V4(_) => ("IP4", "0.0.0.0"),
        IpAddr::V6(_) => ("IP6", "::"),
    };
    let session_name = match description.session_name.as_deref() {
        Some(name) if !name.trim().is_empty() => name.to_owned(),
        _ => DEFAULT_SESSION_NAME.to_owned(),
    };
    let mut other_lines: Vec<(char, String)> = vec![('t', DEFAULT_TIMING.to_owned())];
    other_lines.extend(
        description
            .other_lines
            .iter()
            .filter(|(kind, _)| !matches!(kind, 'v' | 'o' | 's' | 'c' | 't' | 'r' | 'm'))
            .cloned(),
    );
    other_lines.sort_by_key(|(kind, _)| session_rank(*kind));
    let mut attributes: Vec<Attribute> = description
        .attributes
        .iter()
        .filter(|a| !a.is("control") && !a.is("range"))
        .cloned()
        .collect();
    attributes.push(Attribute::new("control", "*"));
    let medias = description
        .medias
        .iter()
        .enumerate()
        .map(|(index, media)| {
            let mut media = media.clone();
            media.port = 0;
            media.port_count = None;
            media.connection = None;
            media.other_lines.retain(|(kind, _)| *kind != 'c');
            media.set_control(&format!("trackID={index}"));
            media
        })
        .collect();
    SessionDescription {
        origin: Some(format!("- 0 0 IN {family} {server_ip}")),
        session_name: Some(session_name),
        connection: Some(format!("IN {family} {unspecified}")),
        attributes,
        medias,
        other_lines,
    }
}
