//! The server side of authentication: challenges on 401, credential checks, the brute-force brake.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

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

/// A password as a user table stores it: in clear, or as its SHA-256 digest.
///
/// A digest can only check Basic credentials: Digest authentication needs the clear password
/// on the server side to compute the expected response.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredPassword {
    /// The password itself.
    Plain(String),
    /// SHA-256 of the password.
    Sha256([u8; 32]),
}

impl fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredPassword::Plain(_) => f.write_str("Plain(<hidden>)"),
            StoredPassword::Sha256(_) => f.write_str("Sha256(<hidden>)"),
        }
    }
}

/// Why a stored password could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredPasswordError {
    /// The text after `sha256:` is not base64.
    #[error("the text after `sha256:` is not valid base64")]
    BadBase64,
    /// The decoded digest is not 32 bytes long.
    #[error("the digest after `sha256:` is {0} bytes long, a SHA-256 digest has 32")]
    WrongLength(usize),
}

impl StoredPassword {
    /// Reads `sha256:<base64 of the SHA-256 of the password>` (as mediamtx writes it) or, for any
    /// other text, the password in clear.
    pub fn parse(text: &str) -> Result<StoredPassword, StoredPasswordError> {
        let Some(encoded) = text.strip_prefix("sha256:") else {
            return Ok(StoredPassword::Plain(text.to_owned()));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| StoredPasswordError::BadBase64)?;
        let digest: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| StoredPasswordError::WrongLength(bytes.len()))?;
        Ok(StoredPassword::Sha256(digest))
    }

    /// Whether `password`, received in clear (Basic authentication), is this password; the
    /// comparison takes the same time wherever the first difference is.
    pub fn matches_clear(&self, password: &str) -> bool {
        match self {
            StoredPassword::Plain(expected) => constant_time_eq(expected.as_bytes(), password.as_bytes()),
            StoredPassword::Sha256(digest) => constant_time_eq(&Sha256::digest(password.as_bytes()), digest),
        }
    }

    /// Whether this is a digest, which only Basic authentication can check.
    pub fn is_hashed(&self) -> bool {
        matches!(self, StoredPassword::Sha256(_))
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
        let stored = StoredPassword::Plain(password.to_owned());
        self.verify_credentials_with(request, |name| (name == username).then(|| stored.clone()))
            .map(drop)
    }

    /// Checks a request's credentials against a user table: `lookup` returns the stored password
    /// of the user the client names (`None`: no such user). A hashed password accepts only Basic
    /// credentials.
    ///
    /// On success the user is remembered on the connection ([`ServerConn::user`]) and returned.
    /// On failure a handler answers 401, and the server applies the same brake as for
    /// [`ServerConn::verify_credentials`]: a random delay, then the connection closes.
    pub fn verify_credentials_with(
        &self,
        request: &Request,
        lookup: impl Fn(&str) -> Option<StoredPassword>,
    ) -> Result<String, CredentialsError> {
        let value = request.headers.get("Authorization").ok_or(CredentialsError::Missing)?;
        let authorization = Authorization::parse(value).map_err(|e| CredentialsError::Malformed(e.to_string()))?;
        let username = match &authorization {
            Authorization::Basic { username, .. } => username.clone(),
            Authorization::Digest(d) => d.username.clone(),
        };
        let ok = match (lookup(&username), &authorization) {
            (Some(StoredPassword::Plain(password)), _) => auth::verify(
                &authorization,
                &self.shared.auth_methods,
                request.method.as_str(),
                &request.url,
                REALM,
                &self.shared.nonce,
                &Credentials {
                    username: &username,
                    password: &password,
                },
            ),
            (Some(stored @ StoredPassword::Sha256(_)), Authorization::Basic { password, .. }) => {
                self.shared.auth_methods.contains(&auth::AuthMethod::Basic) & stored.matches_clear(password)
            }
            (Some(StoredPassword::Sha256(_)), Authorization::Digest(_)) | (None, _) => false,
        };
        if !ok {
            return Err(CredentialsError::Wrong);
        }
        *self.shared.user.borrow_mut() = Some(username.clone());
        Ok(username)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_password_reads_clear_text_and_sha256_digests() {
        assert_eq!(
            StoredPassword::parse("secret"),
            Ok(StoredPassword::Plain("secret".to_owned()))
        );
        // echo -n secret | openssl dgst -binary -sha256 | openssl base64
        let hashed = StoredPassword::parse("sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=").unwrap();
        assert_eq!(hashed, StoredPassword::Sha256(Sha256::digest(b"secret").into()));
        assert!(hashed.is_hashed());
        assert_eq!(StoredPassword::parse("sha256:!!"), Err(StoredPasswordError::BadBase64));
        assert_eq!(
            StoredPassword::parse("sha256:AAAA"),
            Err(StoredPasswordError::WrongLength(3))
        );
    }

    #[test]
    fn a_clear_password_matches_plain_and_hashed_stored_passwords() {
        let plain = StoredPassword::Plain("secret".to_owned());
        let hashed = StoredPassword::parse("sha256:K7gNU3sdo+OL0wNhqoVWhr3g6s1xYv72ol/pe/Unols=").unwrap();
        for stored in [plain, hashed] {
            assert!(stored.matches_clear("secret"), "{stored:?}");
            assert!(!stored.matches_clear("secreT"), "{stored:?}");
            assert!(!stored.matches_clear(""), "{stored:?}");
        }
    }

    #[test]
    fn stored_password_debug_hides_the_secret() {
        let text = format!("{:?}", StoredPassword::Plain("hunter2".to_owned()));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
