//! `[[paths]]` as written in the file, and its conversion to [`PathConfig`].

use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::{EntryError, EntryLocation};
use crate::edge::paths::{PathConfig, PathMatcher, PathSource, SourceTransport, SourceUrl, DEFAULT_PULL_TIMEOUT};
use crate::edge::users::ANY_USER;

/// One `[[paths]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPath {
    name: Option<String>,
    pattern: Option<String>,
    source: Option<String>,
    #[serde(default)]
    source_transport: SourceTransport,
    on_demand: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    start_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    close_after_idle: Option<Duration>,
    #[serde(default)]
    max_readers: usize,
    publish_users: Option<Vec<String>>,
    read_users: Option<Vec<String>>,
}

impl RawPath {
    /// What the entry is called in error messages.
    pub(super) fn label(&self) -> String {
        match (&self.name, &self.pattern) {
            (Some(name), _) => format!("name {name:?}"),
            (None, Some(pattern)) => format!("pattern {pattern:?}"),
            (None, None) => "no name or pattern".to_owned(),
        }
    }

    /// The typed entry; `user_names` are the configured users, for the entry's user lists.
    pub(super) fn parse(self, at: &EntryLocation, user_names: &[&str]) -> Result<PathConfig, EntryError> {
        let error = |key: &'static str, reason: String| EntryError {
            entry: at.clone(),
            key,
            reason,
        };
        let matcher = match (self.name, self.pattern) {
            (Some(name), None) => PathMatcher::Exact(name.trim_matches('/').to_owned()),
            (None, Some(pattern)) => {
                PathMatcher::Pattern(Regex::new(&pattern).map_err(|e| error("pattern", format!("invalid regex: {e}")))?)
            }
            (Some(_), Some(_)) => return Err(error("name", "set `name` or `pattern`, not both".to_owned())),
            (None, None) => {
                return Err(error(
                    "name",
                    "set `name` (an exact path) or `pattern` (a regex)".to_owned(),
                ))
            }
        };
        let source = match self.source.as_deref() {
            None | Some("publisher") => PathSource::Publisher,
            Some(url) => PathSource::Origin(
                SourceUrl::parse(url, matcher.capture_count()).map_err(|e| error("source", e.to_string()))?,
            ),
        };
        let on_demand = self.on_demand.unwrap_or(true);
        if !on_demand && matches!(matcher, PathMatcher::Pattern(_)) {
            return Err(error(
                "on_demand",
                "`on_demand = false` pulls from start, which needs an exact `name`: a pattern names no path until a reader asks".to_owned(),
            ));
        }
        if !on_demand && source == PathSource::Publisher {
            return Err(error(
                "on_demand",
                "`on_demand` applies to paths pulled from an rtsp:// source".to_owned(),
            ));
        }
        for (key, list) in [("publish_users", &self.publish_users), ("read_users", &self.read_users)] {
            for name in list.iter().flatten() {
                if name != ANY_USER && !user_names.contains(&name.as_str()) {
                    return Err(error(key, format!("no [[users]] entry is named {name:?}")));
                }
            }
        }
        Ok(PathConfig {
            matcher,
            source,
            source_transport: self.source_transport,
            on_demand,
            start_timeout: self.start_timeout.unwrap_or(DEFAULT_PULL_TIMEOUT),
            close_after_idle: self.close_after_idle.unwrap_or(DEFAULT_PULL_TIMEOUT),
            max_readers: self.max_readers,
            publish_users: self.publish_users,
            read_users: self.read_users,
        })
    }
}
