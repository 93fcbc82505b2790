//! RTSP URLs as servers see them: which path a request is for, its query, and which track
//! (`a=control`) a SETUP names.
//!
//! Clients put the track control in two places: ffmpeg appends it after the query
//! (`/path?q=1/trackID=0`), GStreamer before it (`/path/trackID=0?q=1`). Both, an empty path
//! and a trailing slash resolve to the same [`PathParts`].

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Neither `rtsp://`, `rtsps://` nor an absolute path.
    #[error("not an rtsp:// or rtsps:// URL or an absolute path")]
    NotRtsp,
    /// `rtsp://` with no host.
    #[error("URL has no host")]
    EmptyHost,
    /// A `%` not followed by two hex digits, or an escape that is not UTF-8.
    #[error("bad percent-encoding at byte {position}")]
    BadPercentEncoding {
        /// Byte offset in the URL.
        position: usize,
    },
}

/// A request URL split into what a server routes on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathParts {
    /// The path without leading or trailing slashes, percent-decoded (`""` for the root).
    pub path: String,
    /// The raw query without `?`, when there is one.
    pub query: Option<String>,
    /// The track control (`trackID=0`, `streamid=1`, `stream=0`), when the URL names one.
    pub control: Option<String>,
}

/// Whether a path segment has the `name=number` form of the track controls ffmpeg, GStreamer
/// and this server's DESCRIBE use.
fn looks_like_control(segment: &str) -> bool {
    match segment.split_once('=') {
        Some((name, number)) => {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// The path-and-query part of a URL: everything after the authority.
fn path_and_query(url: &str) -> Result<&str, UrlError> {
    if url.starts_with('/') {
        return Ok(url);
    }
    let lower_prefix = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower_prefix.starts_with("rtsp://") {
        &url[7..]
    } else if lower_prefix.starts_with("rtsps://") {
        &url[8..]
    } else {
        return Err(UrlError::NotRtsp);
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(UrlError::EmptyHost);
    }
    Ok(&rest[end..])
}

/// Splits a request URL into path, query and track control.
///
/// ```
/// use shardcast::proto::url::path_and_control;
///
/// let ffmpeg = path_and_control("rtsp://h:8554/live/cam?key=1/trackID=0").unwrap();
/// let gstreamer = path_and_control("rtsp://h:8554/live/cam/trackID=0?key=1").unwrap();
/// assert_eq!(ffmpeg, gstreamer);
/// assert_eq!(ffmpeg.path, "live/cam");
/// assert_eq!(ffmpeg.query.as_deref(), Some("key=1"));
/// assert_eq!(ffmpeg.control.as_deref(), Some("trackID=0"));
/// ```
pub fn path_and_control(url: &str) -> Result<PathParts, UrlError> {
    let rest = path_and_query(url)?;
    let offset = url.len() - rest.len();
    let (raw_path, mut query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut path = raw_path.trim_end_matches('/');
    let mut control = None;
    if let Some(q) = query {
        if let Some((before, last)) = q.trim_end_matches('/').rsplit_once('/') {
            if looks_like_control(last) {
                control = Some(last);
                query = Some(before);
            }
        }
    }
    if control.is_none() {
        if let Some((before, last)) = path.rsplit_once('/') {
            if looks_like_control(last) {
                control = Some(last);
                path = before;
            }
        }
    }
    let leading = path.len() - path.trim_start_matches('/').len();
    let path = percent_decode(path.trim_matches('/'), offset + leading)?;
    Ok(PathParts {
        path,
        query: query.filter(|q| !q.is_empty()).map(str::to_owned),
        control: control.map(str::to_owned),
    })
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn percent_decode(s: &str, offset: usize) -> Result<String, UrlError> {
    if !s.contains('%') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let bad = UrlError::BadPercentEncoding { position: offset + i };
            let hi = bytes.get(i + 1).copied().and_then(hex_value).ok_or(bad.clone())?;
            let lo = bytes.get(i + 2).copied().and_then(hex_value).ok_or(bad)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| UrlError::BadPercentEncoding {
        position: offset + e.utf8_error().valid_up_to(),
    })
}

/// The URL a client uses for a media: `control` resolved against the content base (RFC 2326
/// §C.1.1): absolute controls are kept, `*` means the base itself, anything else is appended.
pub fn join_control(base: &str, control: &str) -> String {
    let lower = control.get(..8).unwrap_or(control).to_ascii_lowercase();
    if lower.starts_with("rtsp://") || lower.starts_with("rtsps://") {
        return control.to_owned();
    }
    if control == "*" || control.is_empty() {
        return base.to_owned();
    }
    if base.ends_with('/') {
        format!("{base}{control}")
    } else {
        format!("{base}/{control}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(url: &str) -> PathParts {
        path_and_control(url).unwrap()
    }

    #[test]
    fn ffmpeg_and_gstreamer_dialects_resolve_the_same() {
        let expected = PathParts {
            path: "p".into(),
            query: Some("q=1".into()),
            control: Some("trackID=0".into()),
        };
        assert_eq!(parts("rtsp://127.0.0.1:8554/p?q=1/trackID=0"), expected);
        assert_eq!(parts("rtsp://127.0.0.1:8554/p/trackID=0?q=1"), expected);
    }

    #[test]
    fn trailing_slash_and_relative_form_do_not_change_the_path() {
        assert_eq!(parts("rtsp://h/live/cam/").path, "live/cam");
        assert_eq!(parts("rtsp://h/live/cam"), parts("/live/cam/"));
        assert_eq!(
            parts("rtsp://user:pw@h:554/live/cam/streamid=1").control.as_deref(),
            Some("streamid=1")
        );
    }

    #[test]
    fn empty_path_is_the_root() {
        for url in ["rtsp://h", "rtsp://h/", "rtsp://h:8554", "rtsp://h/trackID=1"] {
            assert_eq!(parts(url).path, "", "{url}");
        }
        assert_eq!(parts("rtsp://h/trackID=1").control.as_deref(), Some("trackID=1"));
        assert_eq!(parts("rtsp://h?x=1").query.as_deref(), Some("x=1"));
    }

    #[test]
    fn segments_that_are_not_controls_stay_in_the_path() {
        assert_eq!(parts("rtsp://h/a/b=c").path, "a/b=c");
        assert_eq!(parts("rtsp://h/a/video").path, "a/video");
        assert_eq!(parts("rtsp://h/a?token=x/y").query.as_deref(), Some("token=x/y"));
    }

    #[test]
    fn percent_escapes_in_the_path_are_decoded() {
        assert_eq!(parts("rtsp://h/my%20cam").path, "my cam");
        assert_eq!(
            path_and_control("rtsp://h/bad%2"),
            Err(UrlError::BadPercentEncoding { position: 12 })
        );
        assert!(path_and_control("rtsp://h/%ff").is_err());
    }

    #[test]
    fn urls_that_are_not_rtsp_are_refused() {
        assert_eq!(path_and_control("http://h/p"), Err(UrlError::NotRtsp));
        assert_eq!(path_and_control("*"), Err(UrlError::NotRtsp));
        assert_eq!(path_and_control("rtsp:///p"), Err(UrlError::EmptyHost));
        assert_eq!(path_and_control("rtsp://u@:1/p"), Err(UrlError::EmptyHost));
        assert!(path_and_control("RTSPS://H/P").is_ok());
    }

    #[test]
    fn controls_join_onto_the_content_base() {
        assert_eq!(join_control("rtsp://h/p/", "trackID=0"), "rtsp://h/p/trackID=0");
        assert_eq!(join_control("rtsp://h/p", "trackID=0"), "rtsp://h/p/trackID=0");
        assert_eq!(join_control("rtsp://h/p/", "rtsp://o/x"), "rtsp://o/x");
        assert_eq!(join_control("rtsp://h/p/", "*"), "rtsp://h/p/");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_urls_never_panic(url in "\\PC{0,80}") {
            let _ = path_and_control(&url);
        }
    }
}
