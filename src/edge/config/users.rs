//! `[[users]]` as written in the file, and its conversion to [`UserConfig`].

use regex::Regex;
use serde::Deserialize;

use super::{EntryError, EntryLocation};
use crate::edge::users::{Action, IpRange, Permission, UserConfig, ANY_USER};
use crate::proto::auth::AuthMethod;
use crate::server::StoredPassword;

/// One `[[users]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    name: String,
    password: Option<String>,
    ips: Option<Vec<String>>,
    #[serde(default)]
    permissions: Vec<RawPermission>,
}

/// One `{ action = ..., path = ... }` of a user's `permissions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPermission {
    action: Action,
    path: Option<String>,
}

impl RawUser {
    /// The user's name, for error messages and duplicate checks.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// The typed entry; `auth_methods` are the server's, which decide whether a hashed password
    /// can ever be checked.
    pub(super) fn parse(self, at: &EntryLocation, auth_methods: &[AuthMethod]) -> Result<UserConfig, EntryError> {
        let error = |key: &'static str, reason: String| EntryError {
            entry: at.clone(),
            key,
            reason,
        };
        if self.name.is_empty() {
            return Err(error("name", "a user needs a name".to_owned()));
        }
        let password = match (self.name == ANY_USER, self.password) {
            (true, Some(_)) => {
                return Err(error(
                    "password",
                    format!("user {ANY_USER:?} stands for unauthenticated clients and takes no password"),
                ))
            }
            (true, None) => None,
            (false, None) => return Err(error("password", "a named user needs a password".to_owned())),
            (false, Some(text)) => {
                let password = StoredPassword::parse(&text).map_err(|e| error("password", e.to_string()))?;
                if password.is_hashed() && !auth_methods.contains(&AuthMethod::Basic) {
                    return Err(error(
                        "password",
                        "a sha256: password can only check Basic credentials, and [server] auth_methods \
                         does not offer basic (Digest needs the plain password)"
                            .to_owned(),
                    ));
                }
                Some(password)
            }
        };
        let ips = self
            .ips
            .unwrap_or_default()
            .iter()
            .map(|text| text.parse::<IpRange>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error("ips", e.to_string()))?;
        let permissions = self
            .permissions
            .into_iter()
            .map(|p| {
                let path = p
                    .path
                    .map(|re| Regex::new(&re).map_err(|e| error("permissions", format!("invalid path regex: {e}"))))
                    .transpose()?;
                Ok(Permission { action: p.action, path })
            })
            .collect::<Result<Vec<_>, EntryError>>()?;
        Ok(UserConfig {
            name: self.name,
            password,
            ips,
            permissions,
        })
    }
}
