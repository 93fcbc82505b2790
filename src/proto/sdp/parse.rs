//! The lenient SDP parser.

use super::{
    media_rank, session_rank, Attribute, MediaDescription, SdpError, SessionDescription, DEFAULT_ORIGIN,
    DEFAULT_SESSION_NAME, DEFAULT_TIMING, MAX_ATTRIBUTES, MAX_INPUT_LEN, MAX_MEDIAS,
};

/// Parses an SDP session description, leniently (see the [module docs](super)).
///
/// The result is normalised: it has an origin, a session name and a `t=` line (the defaults
/// when the input has none), and its `other_lines` are in RFC 4566 order. Written back with
/// [`Display`](std::fmt::Display), it parses again to the same value.
///
/// # Errors
///
/// [`SdpError`] says what is wrong and, where it is one line, which (counting from 1).
pub fn parse(input: &[u8]) -> Result<SessionDescription, SdpError> {
    if input.len() > MAX_INPUT_LEN {
        return Err(SdpError::TooLarge);
    }
    let mut session = SessionDescription::default();
    let mut version_seen = false;
    // An upper bound on the length of the description once written (CRLF endings, defaults added),
    // kept within the limit so that whatever parses, parses again once written.
    let mut written_len = 0;
    for (index, raw) in input.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let text = std::str::from_utf8(raw).map_err(|_| SdpError::NotUtf8 { line: number })?;
        let text = if index == 0 {
            text.trim_start_matches('\u{feff}')
        } else {
            text
        };
        let text = text.trim_end();
        if text.is_empty() {
            continue;
        }
        written_len += text.len() + 2;
        let (kind, value) = split_line(text).ok_or(SdpError::MalformedLine { line: number })?;
        match kind {
            'v' => {
                if value.trim() != "0" {
                    return Err(SdpError::BadVersion { line: number });
                }
                version_seen = true;
            }
            'm' => {
                if !version_seen {
                    return Err(SdpError::MissingVersion);
                }
                if session.medias.len() >= MAX_MEDIAS {
                    return Err(SdpError::TooManyMedias);
                }
                let media = media_line(value).ok_or(SdpError::BadMediaLine { line: number })?;
                session.medias.push(media);
            }
            _ => match session.medias.last_mut() {
                Some(media) => media_level(media, kind, value)?,
                None => session_level(&mut session, kind, value)?,
            },
        }
    }
    if !version_seen {
        return Err(SdpError::MissingVersion);
    }
    if written_len + defaults_len(&session) > MAX_INPUT_LEN {
        return Err(SdpError::TooLarge);
    }
    normalise(&mut session);
    Ok(session)
}

/// Splits `<letter>=<value>`; `None` if the line is not of that form or holds control characters.
fn split_line(text: &str) -> Option<(char, &str)> {
    let bytes = text.as_bytes();
    let (&kind, &equals) = (bytes.first()?, bytes.get(1)?);
    if !kind.is_ascii_lowercase() || equals != b'=' {
        return None;
    }
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    Some((char::from(kind), text.get(2..)?))
}

/// A session-level line other than `v=` and `m=`.
fn session_level(session: &mut SessionDescription, kind: char, value: &str) -> Result<(), SdpError> {
    match kind {
        'o' if session.origin.is_none() => session.origin = Some(value.to_owned()),
        's' if session.session_name.is_none() => session.session_name = Some(value.to_owned()),
        'c' if session.connection.is_none() => session.connection = Some(value.to_owned()),
        'a' => push_attribute(&mut session.attributes, value)?,
        _ => session.other_lines.push((kind, value.to_owned())),
    }
    Ok(())
}

/// A line inside an `m=` section other than `v=` and `m=`.
fn media_level(media: &mut MediaDescription, kind: char, value: &str) -> Result<(), SdpError> {
    match kind {
        'c' if media.connection.is_none() => media.connection = Some(value.to_owned()),
        'b' => media.bandwidths.push(value.to_owned()),
        'a' => push_attribute(&mut media.attributes, value)?,
        _ => media.other_lines.push((kind, value.to_owned())),
    }
    Ok(())
}

fn push_attribute(attributes: &mut Vec<Attribute>, value: &str) -> Result<(), SdpError> {
    if attributes.len() >= MAX_ATTRIBUTES {
        return Err(SdpError::TooLarge);
    }
    attributes.push(match value.split_once(':') {
        Some((name, value)) => Attribute::new(name, value),
        None => Attribute::flag(value),
    });
    Ok(())
}

/// Reads `<media> <port>[/<count>] <proto> <fmt>...`.
fn media_line(value: &str) -> Option<MediaDescription> {
    let mut words = value.split_whitespace();
    let media_type = words.next()?;
    let port_word = words.next()?;
    let (port, count) = port_word
        .split_once('/')
        .map_or((port_word, None), |(p, c)| (p, Some(c)));
    let port = port.parse().ok()?;
    let port_count = match count {
        Some(count) => Some(count.parse().ok()?),
        None => None,
    };
    let protocol = words.next()?;
    let mut media = MediaDescription::new(media_type, port, protocol, words.map(str::to_owned).collect());
    media.port_count = port_count;
    Some(media)
}

/// The length of the lines [`normalise`] will add, with their CRLF.
fn defaults_len(session: &SessionDescription) -> usize {
    let origin = if session.origin.is_none() {
        DEFAULT_ORIGIN.len() + 4
    } else {
        0
    };
    let name = if session.session_name.is_none() {
        DEFAULT_SESSION_NAME.len() + 4
    } else {
        0
    };
    let timing = if session.other_lines.iter().any(|(kind, _)| *kind == 't') {
        0
    } else {
        DEFAULT_TIMING.len() + 4
    };
    origin + name + timing
}

/// Adds the default origin, session name and timing where missing, and puts the other lines in
/// RFC 4566 order (stably, so the order within one type is kept).
fn normalise(session: &mut SessionDescription) {
    session.origin.get_or_insert_with(|| DEFAULT_ORIGIN.to_owned());
    session
        .session_name
        .get_or_insert_with(|| DEFAULT_SESSION_NAME.to_owned());
    if !session.other_lines.iter().any(|(kind, _)| *kind == 't') {
        session.other_lines.insert(0, ('t', DEFAULT_TIMING.to_owned()));
    }
    session.other_lines.sort_by_key(|(kind, _)| session_rank(*kind));
    for media in &mut session.medias {
        media.other_lines.sort_by_key(|(kind, _)| media_rank(*kind));
    }
}
