//! The `shardcast` binary's configuration file: typed, validated at load.
//!
//! Server rules follow DESIGN.md §2: RTP ports even, RTCP = RTP + 1, both or neither; multicast
//! range and ports all or none, with the same parity rule. Paths and users are checked too: regexes
//! compile, names are unique, a hashed password can be checked with the offered methods. Every
//! error names the key, and the line where the TOML parser or the entry's position gives one.

mod env;
mod paths;
mod server;
mod users;

use std::fmt;
use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

pub use env::{EnvError, PREFIX as ENV_PREFIX};
pub use server::{LogFormat, LogSection, MetricsSection, ServerSection, TlsSettingsError};

use super::paths::{find, PathConfig};
use super::users::{Action, UserConfig, ANY_USER};
use crate::server::ServerConfigError;

/// The configuration compiled into the binary, used when no file is given.
pub const EMBEDDED_DEFAULT: &str = include_str!("../default.toml");

/// A whole configuration, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// RTSP server settings.
    pub server: ServerSection,
    /// Prometheus metrics listener; absent disables metrics.
    pub metrics: Option<MetricsSection>,
    /// Log level and format.
    pub log: LogSection,
    /// The paths served, in file order (the first match wins).
    pub paths: Vec<PathConfig>,
    /// The users; empty means everyone may do everything.
    pub users: Vec<UserConfig>,
}

/// The file as written, before entries are typed.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: ServerSection,
    metrics: Option<MetricsSection>,
    #[serde(default)]
    log: LogSection,
    #[serde(default)]
    paths: Vec<Spanned<paths::RawPath>>,
    #[serde(default)]
    users: Vec<Spanned<users::RawUser>>,
}

/// Where a `[[paths]]` or `[[users]]` entry is, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLocation {
    /// `paths` or `users`.
    pub table: &'static str,
    /// Position in the array, from 0.
    pub index: usize,
    /// What the entry is called (its name or pattern).
    pub label: String,
    /// The line the entry starts on, when the error refers to the file as written.
    pub line: Option<usize>,
}

impl fmt::Display for EntryLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[[{}]] entry {} ({})", self.table, self.index, self.label)?;
        if let Some(line) = self.line {
            write!(f, " at line {line}")?;
        }
        Ok(())
    }
}

/// A `[[paths]]` or `[[users]]` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entry}, key `{key}`: {reason}")]
pub struct EntryError {
    /// The entry.
    pub entry: EntryLocation,
    /// The key at fault.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML did not parse or did not match the schema; the message names the key and line.
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    /// As [`ConfigError::Toml`], in the configuration with the environment overrides applied (so
    /// the line numbers refer to that rewritten text, not to the file).
    #[error("after applying SHARDCAST_* environment overrides: {0}")]
    TomlAfterEnv(toml::de::Error),
    /// An environment override was refused.
    #[error("environment: {0}")]
    Env(#[from] EnvError),
    /// The configuration with overrides applied could not be written back as TOML.
    #[error("environment overrides could not be applied: {0}")]
    EnvRewrite(#[from] toml::ser::Error),
    /// The values parsed but break a server rule (port parity, groups set together, ...).
    #[error("[server] {0}")]
    Server(#[from] ServerConfigError),
    /// The RTSPS settings do not come together.
    #[error("[server] {0}")]
    Tls(#[from] TlsSettingsError),
    /// `[log] level` is not a valid filter directive.
    #[error("[log] level {level:?} is not a valid filter directive: {reason}")]
    LogLevel {
        /// The directive.
        level: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A `[[paths]]` or `[[users]]` entry is invalid.
    #[error("{0}")]
    Entry(#[from] EntryError),
}

impl Config {
    /// Parses and validates a configuration from TOML text, without environment overrides.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::load(text, std::iter::empty())
    }

    /// Parses TOML text, applies the `SHARDCAST_*` variables among `vars` (such as
    /// `std::env::vars()`), and validates the result.
    pub fn load(text: &str, vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut root: toml::Table = text.parse()?;
        if env::apply(&mut root, vars)? == 0 {
            return Self::from_text(text, true);
        }
        let rewritten = toml::to_string(&root)?;
        Self::from_text(&rewritten, false).map_err(|e| match e {
            ConfigError::Toml(e) => ConfigError::TomlAfterEnv(e),
            other => other,
        })
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Self {
        // The embedded default is covered by a unit test, so failure here is a build defect.
        Self::from_toml(EMBEDDED_DEFAULT).expect("embedded default config is valid")
    }

    fn from_text(text: &str, lines_are_the_files: bool) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text)?;
        let line_of = |span: std::ops::Range<usize>| {
            lines_are_the_files.then(|| text.get(..span.start).map_or(0, |t| t.matches('\n').count()) + 1)
        };
        file.server.to_server_config().validate()?;
        file.server.validate_tls()?;
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&file.log.level) {
            return Err(ConfigError::LogLevel {
                level: file.log.level.clone(),
                reason: e.to_string(),
            });
        }
        let auth_methods = file.server.effective_auth_methods();
        let mut users: Vec<UserConfig> = Vec::with_capacity(file.users.len());
        for (index, raw) in file.users.into_iter().enumerate() {
            let span = raw.span();
            let raw = raw.into_inner();
            let at = EntryLocation {
                table: "users",
                index,
                label: format!("name {:?}", raw.name()),
                line: line_of(span),
            };
            if users.iter().any(|u| u.name == raw.name()) {
                return Err(EntryError {
                    entry: at,
                    key: "name",
                    reason: "another [[users]] entry has this name".to_owned(),
                }
                .into());
            }
            users.push(raw.parse(&at, &auth_methods)?);
        }
        let user_names: Vec<&str> = users.iter().map(|u| u.name.as_str()).collect();
        let mut paths = Vec::with_capacity(file.paths.len());
        for (index, raw) in file.paths.into_iter().enumerate() {
            let span = raw.span();
            let raw = raw.into_inner();
            let at = EntryLocation {
                table: "paths",
                index,
                label: raw.label(),
                line: line_of(span),
            };
            paths.push(raw.parse(&at, &user_names)?);
        }
        if paths.is_empty() {
            // As with users: nothing configured means nothing restricted, so a file with only a
            // `[server]` table relays any path, like the embedded default.
            paths.push(PathConfig::any_published());
        }
        Ok(Config {
            server: file.server,
            metrics: file.metrics,
            log: file.log,
            paths,
            users,
        })
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }

    /// Whether `user` (`None`: an unauthenticated client), connecting from `ip`, may do `action`
    /// on `path`: the user's own permissions and addresses, then the path entry's user lists.
    /// With no users configured, everyone may do everything the path entries allow.
    pub fn permits(&self, user: Option<&str>, ip: IpAddr, action: Action, path: &str) -> bool {
        let name = user.unwrap_or(ANY_USER);
        if !self.users.is_empty() && !self.user(name).is_some_and(|u| u.may(action, path, ip)) {
            return false;
        }
        match action {
            Action::Metrics => true,
            Action::Publish | Action::Read => find(&self.paths, path).is_none_or(|m| m.entry.lets(action, name)),
        }
    }
}

#[cfg(test)]
mod tests;
