//! The server side of authentication: challenges on 401, credential checks, the brute-force brake.

use std::time::Duration;

use super::config::ServerConfig;
use super::conn::ServerConn;
use crate::proto::auth::{self, Authorization, Credentials};
use crate::proto::rtsp::{Request, Response};

/// The realm in every challenge.
pub const REALM: &str = "shardcast";

/// Adds one `WWW-Authenticate` challenge per enabled method to a 401 response.
pub(crate) fn add_challenges(config: &ServerConfig, nonce: &str, response: &mut Response) {
    response.headers.remove("WWW-Authenticate");
    for method in &config.auth_methods {
        response
            .headers
            .append("WWW-Authenticate", &auth::challenge(*method, REALM, nonce));
    }
}

/// How long to wait before answering wrong credentials: random between 0.5 and 1.5 s, so that
/// guessing is slow and timing says nothing.
pub(crate) fn failure_delay() -> Duration {
    let mut byte = [0u8; 2];
    let jitter = match getrandom::getrandom(&mut byte) {
        Ok(()) => u64::from(u16::from_le_bytes(byte)) % 1000,
        Err(_) => 500,
    };
    Duration::from_millis(500 + jitter)
}

/// Why credentials were not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The request has no `Authorization` header: answer 401 and the client will retry.
    #[error("no credentials")]
    Missing,
    /// The `Authorization` header could not be parsed.
    #[error("malformed Authorization header: {0}")]
    Malformed(String),
    /// The credentials are wrong, or use a method that is not enabled.
    #[error("wrong credentials")]
    Wrong,
}

impl ServerConn {
    /// Checks a request's credentials against the expected user and password with the
    /// configured methods (Basic, Digest MD5, Digest SHA-256).
    ///
    /// On success the user is remembered on the connection ([`ServerConn::user`]). On failure a
    /// handler answers 401: the server adds the challenges, and when the request carried wrong
    /// credentials it waits a random delay and closes the connection (DESIGN.md §2).
    pub fn verify_credentials(
        &self,
        request: &Request,
        username: &str,
        password: &str,
    ) -> Result<(), CredentialsError> {
        let value = request.headers.get("Authorization").ok_or(CredentialsError::Missing)?;
        let authorization = Authorization::parse(value).map_err(|e| CredentialsError::Malformed(e.to_string()))?;
        let expected = Credentials { username, password };
        let ok = auth::verify(
            &authorization,
            &self.shared.auth_methods,
            request.method.as_str(),
            &request.url,
            REALM,
            &self.shared.nonce,
            &expected,
        );
        if !ok {
            return Err(CredentialsError::Wrong);
        }
        *self.shared.user.borrow_mut() = Some(username.to_owned());
        Ok(())
    }
}
