//! `[[paths]]` entries: which request paths they serve, where their stream comes from, and who
//! may use them. The first entry that matches a path, in file order, serves it.

use std::fmt;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::users::Action;

/// Which request paths an entry serves.
#[derive(Debug, Clone)]
pub enum PathMatcher {
    /// Exactly this path (without leading or trailing slash).
    Exact(String),
    /// Paths the regex matches, as written (anchor it with `^...$` to match whole paths).
    Pattern(Regex),
}

impl PartialEq for PathMatcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (PathMatcher::Exact(a), PathMatcher::Exact(b)) => a == b,
            (PathMatcher::Pattern(a), PathMatcher::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Eq for PathMatcher {}

impl fmt::Display for PathMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathMatcher::Exact(name) => write!(f, "name {name:?}"),
            PathMatcher::Pattern(re) => write!(f, "pattern {:?}", re.as_str()),
        }
    }
}

impl PathMatcher {
    /// The captures of `path` if it matches: index 0 is the whole path, then each group of a
    /// pattern (an unmatched group is empty).
    pub fn captures(&self, path: &str) -> Option<Vec<String>> {
        match self {
            PathMatcher::Exact(name) => (name == path).then(|| vec![path.to_owned()]),
            PathMatcher::Pattern(re) => {
                let caps = re.captures(path)?;
                let mut out = vec![path.to_owned()];
                out.extend((1..caps.len()).map(|i| caps.get(i).map_or("", |m| m.as_str()).to_owned()));
                Some(out)
            }
        }
    }

    /// How many `$N` references a source URL may use: `$0` always, `$1`... for a pattern's groups.
    pub fn capture_count(&self) -> usize {
        match self {
            PathMatcher::Exact(_) => 1,
            PathMatcher::Pattern(re) => re.captures_len(),
        }
    }
}

/// An origin URL in which `$0` (the whole path) and `$1`, `$2`... (a pattern's groups) are
/// replaced by the request path's captures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceUrl {
    template: String,
}

/// Why a source could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Neither `publisher` nor an `rtsp://` URL.
    #[error("{0:?} is neither \"publisher\" nor an rtsp:// URL")]
    NotRtsp(String),
    /// An `rtsps://` origin: the puller's client speaks plain RTSP only.
    #[error("{0:?}: pulling from an rtsps:// origin is not supported; pull over rtsp:// (inside the CDN) and serve RTSPS to players")]
    TlsOrigin(String),
    /// A `$N` names a capture group the entry does not have.
    #[error("{template:?} uses ${group} but the entry has only {available} capture(s) ($0 is the whole path)")]
    NoSuchGroup {
        /// The URL as written.
        template: String,
        /// The group named.
        group: usize,
        /// How many captures exist, `$0` included.
        available: usize,
    },
}

impl SourceUrl {
    /// Checks an origin URL template against the captures its entry provides.
    pub fn parse(template: &str, capture_count: usize) -> Result<SourceUrl, SourceError> {
        if template.starts_with("rtsps://") {
            return Err(SourceError::TlsOrigin(template.to_owned()));
        }
        if !template.starts_with("rtsp://") {
            return Err(SourceError::NotRtsp(template.to_owned()));
        }
        for (group, _) in references(template) {
            if group >= capture_count {
                return Err(SourceError::NoSuchGroup {
                    template: template.to_owned(),
                    group,
                    available: capture_count,
                });
            }
        }
        Ok(SourceUrl {
            template: template.to_owned(),
        })
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.template
    }

    /// The URL with every `$N` replaced by capture N.
    pub fn expand(&self, captures: &[String]) -> String {
        let mut out = String::with_capacity(self.template.len());
        let mut last = 0;
        for (group, range) in references(&self.template) {
            out.push_str(&self.template[last..range.start]);
            out.push_str(captures.get(group).map_or("", String::as_str));
            last = range.end;
        }
        out.push_str(&self.template[last..]);
        out
    }
}

/// The `$N` references in a template: group number and byte range.
fn references(template: &str) -> Vec<(usize, std::ops::Range<usize>)> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits = bytes[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits > 0 {
                let end = i + 1 + digits;
                // Many digits saturate to a group no entry has, which validation refuses.
                let group = template[i + 1..end].parse().unwrap_or(usize::MAX);
                out.push((group, i..end));
                i = end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Where a path's stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSource {
    /// A client publishes it (ANNOUNCE + RECORD).
    Publisher,
    /// The server pulls it from an origin server.
    Origin(SourceUrl),
}

/// How a pulled stream travels from its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceTransport {
    /// RTP interleaved in the RTSP connection.
    #[default]
    Tcp,
    /// RTP over UDP.
    Udp,
}

/// One `[[paths]]` entry, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathConfig {
    /// Which paths it serves.
    pub matcher: PathMatcher,
    /// Where their streams come from.
    pub source: PathSource,
    /// How a pulled stream travels.
    pub source_transport: SourceTransport,
    /// Pull only while someone reads (`true`), or from start, always (`false`).
    pub on_demand: bool,
    /// How long a reader waits for a pulled stream to start.
    pub start_timeout: Duration,
    /// How long a pulled stream is kept once its last reader left.
    pub close_after_idle: Duration,
    /// Readers allowed at once on one path; 0 means no limit.
    pub max_readers: usize,
    /// Users allowed to publish (on top of their own permissions); `None` means no restriction.
    pub publish_users: Option<Vec<String>>,
    /// Users allowed to read (on top of their own permissions); `None` means no restriction.
    pub read_users: Option<Vec<String>>,
}

/// Default `start_timeout` and `close_after_idle` of a `[[paths]]` entry.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(10);

impl PathConfig {
    /// Every path, published by a client, with the defaults: what a file without `[[paths]]` serves.
    pub fn any_published() -> PathConfig {
        PathConfig {
            // A constant pattern, covered by the tests.
            matcher: PathMatcher::Pattern(Regex::new("^.+$").expect("a valid constant regex")),
            source: PathSource::Publisher,
            source_transport: SourceTransport::Tcp,
            on_demand: true,
            start_timeout: DEFAULT_PULL_TIMEOUT,
            close_after_idle: DEFAULT_PULL_TIMEOUT,
            max_readers: 0,
            publish_users: None,
            read_users: None,
        }
    }

    /// Whether the entry's own user lists let `user` (or [`ANY_USER`](super::users::ANY_USER)) do `action`.
    pub fn lets(&self, action: Action, user: &str) -> bool {
        let list = match action {
            Action::Publish => &self.publish_users,
            Action::Read => &self.read_users,
            Action::Metrics => &None,
        };
        list.as_ref().is_none_or(|names| names.iter().any(|n| n == user))
    }

    /// What identifies the stream this entry serves: sessions of an entry whose identity changed
    /// on reload are closed.
    pub fn identity(&self) -> (String, PathSource) {
        (self.matcher.to_string(), self.source.clone())
    }
}

/// The entry serving a request path, and the path's captures.
#[derive(Debug, Clone)]
pub struct PathMatch<'a> {
    /// The entry's position in the file.
    pub index: usize,
    /// The entry.
    pub entry: &'a PathConfig,
    /// `$0` (the path) and the pattern's groups.
    pub captures: Vec<String>,
}

impl PathMatch<'_> {
    /// The origin URL for this path, captures substituted; `None` for published paths.
    pub fn source_url(&self) -> Option<String> {
        match &self.entry.source {
            PathSource::Publisher => None,
            PathSource::Origin(url) => Some(url.expand(&self.captures)),
        }
    }
}

/// The first entry, in file order, that serves `path`.
pub fn find<'a>(paths: &'a [PathConfig], path: &str) -> Option<PathMatch<'a>> {
    paths.iter().enumerate().find_map(|(index, entry)| {
        entry
            .matcher
            .captures(path)
            .map(|captures| PathMatch { index, entry, captures })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::users::ANY_USER;

    fn entry(matcher: PathMatcher, source: PathSource) -> PathConfig {
        PathConfig {
            matcher,
            source,
            ..PathConfig::any_published()
        }
    }

    #[test]
    fn first_matching_entry_wins_and_captures_fill_the_source_url() {
        let cams = Regex::new(r"^cams/(\w+)/(\w+)$").unwrap();
        let url = SourceUrl::parse("rtsp://origin:554/$1/live?ch=$2&p=$0", 3).unwrap();
        let paths = vec![
            entry(PathMatcher::Exact("cams/a/b".into()), PathSource::Publisher),
            entry(PathMatcher::Pattern(cams), PathSource::Origin(url)),
        ];
        let exact = find(&paths, "cams/a/b").unwrap();
        assert_eq!((exact.index, exact.source_url()), (0, None));
        let pulled = find(&paths, "cams/lobby/2").unwrap();
        assert_eq!(pulled.index, 1);
        assert_eq!(
            pulled.source_url().as_deref(),
            Some("rtsp://origin:554/lobby/live?ch=2&p=cams/lobby/2")
        );
        assert!(find(&paths, "cams/lobby").is_none());
    }

    #[test]
    fn source_urls_must_be_rtsp_and_name_existing_groups() {
        assert!(matches!(
            SourceUrl::parse("http://x/$0", 1),
            Err(SourceError::NotRtsp(_))
        ));
        assert!(matches!(
            SourceUrl::parse("rtsp://x/$2", 2),
            Err(SourceError::NoSuchGroup { group: 2, .. })
        ));
        assert!(matches!(
            SourceUrl::parse("rtsps://x/$1", 2),
            Err(SourceError::TlsOrigin(_))
        ));
        let dollar_alone = SourceUrl::parse("rtsp://x/a$b$", 1).unwrap();
        assert_eq!(dollar_alone.expand(&["p".into()]), "rtsp://x/a$b$");
    }

    #[test]
    fn entry_user_lists_restrict_only_their_action() {
        let mut e = entry(PathMatcher::Exact("x".into()), PathSource::Publisher);
        e.publish_users = Some(vec!["cam".into()]);
        assert!(e.lets(Action::Publish, "cam"));
        assert!(!e.lets(Action::Publish, ANY_USER));
        assert!(e.lets(Action::Read, ANY_USER));
    }
}
