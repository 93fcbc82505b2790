//! Headers with small values: CSeq, Session, Public, Content-*, and the auth headers.

use super::{key_value, HeaderError, TypedHeader};
use crate::proto::auth::{Authorization, Challenge};
use crate::proto::Method;

/// `CSeq`: the request sequence number every response echoes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CSeq(pub u32);

/// Parses a plain decimal number (no sign, no inner spaces) for `header`.
fn decimal<T: std::str::FromStr>(header: &'static str, value: &str) -> Result<T, HeaderError> {
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::new(header, "not a decimal number"));
    }
    value.parse().map_err(|_| HeaderError::new(header, "too large"))
}

impl TypedHeader for CSeq {
    const NAME: &'static str = "CSeq";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        decimal(Self::NAME, value).map(CSeq)
    }
    fn encode(&self) -> String {
        self.0.to_string()
    }
}

/// The longest session id accepted.
pub const MAX_SESSION_ID_LEN: usize = 256;

/// `Session`: a session id and, in responses, the timeout in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionHeader {
    /// The session id.
    pub id: String,
    /// The `timeout` parameter in seconds.
    pub timeout: Option<u32>,
}

impl TypedHeader for SessionHeader {
    const NAME: &'static str = "Session";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut parts = value.split(';');
        let id = parts.next().unwrap_or_default().trim();
        if id.is_empty() {
            return Err(HeaderError::new(Self::NAME, "empty session id"));
        }
        if id.len() > MAX_SESSION_ID_LEN {
            return Err(HeaderError::new(Self::NAME, "session id too long"));
        }
        if !id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(HeaderError::new(
                Self::NAME,
                "session id contains a space or control byte",
            ));
        }
        let mut timeout = None;
        for param in parts {
            match key_value(param) {
                (k, Some(v)) if k.eq_ignore_ascii_case("timeout") => {
                    timeout = Some(
                        v.parse()
                            .map_err(|_| HeaderError::new(Self::NAME, "timeout is not a number"))?,
                    );
                }
                _ => {}
            }
        }
        Ok(SessionHeader {
            id: id.to_owned(),
            timeout,
        })
    }
    fn encode(&self) -> String {
        match self.timeout {
            Some(t) => format!("{};timeout={t}", self.id),
            None => self.id.clone(),
        }
    }
}

/// `Public`: the methods a server supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Public(pub Vec<Method>);

impl TypedHeader for Public {
    const NAME: &'static str = "Public";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        value
            .split(',')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| Method::parse(m).map_err(|e| HeaderError::new(Self::NAME, e.to_string())))
            .collect::<Result<_, _>>()
            .map(Public)
    }
    fn encode(&self) -> String {
        self.0.iter().map(Method::as_str).collect::<Vec<_>>().join(", ")
    }
}

/// `Content-Base`: the URL relative `a=control` attributes resolve against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentBase(pub String);

impl TypedHeader for ContentBase {
    const NAME: &'static str = "Content-Base";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(HeaderError::new(Self::NAME, "empty"));
        }
        Ok(ContentBase(value.to_owned()))
    }
    fn encode(&self) -> String {
        self.0.clone()
    }
}

/// `Content-Length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentLength(pub u64);

impl TypedHeader for ContentLength {
    const NAME: &'static str = "Content-Length";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        decimal(Self::NAME, value).map(ContentLength)
    }
    fn encode(&self) -> String {
        self.0.to_string()
    }
}

/// `Content-Type`: a media type (lower-cased) and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    /// `type/subtype`, lower-cased.
    pub media_type: String,
    /// Parameters such as `charset`, names lower-cased.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// Whether this is `application/sdp`.
    pub fn is_sdp(&self) -> bool {
        self.media_type == "application/sdp"
    }
}

impl TypedHeader for ContentType {
    const NAME: &'static str = "Content-Type";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        let mut parts = value.split(';');
        let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let valid = media_type.split_once('/').is_some_and(|(t, s)| {
            let token = |x: &str| !x.is_empty() && x.bytes().all(crate::proto::method::is_token_byte);
            token(t) && token(s)
        });
        if !valid {
            return Err(HeaderError::new(Self::NAME, "not a type/subtype media type"));
        }
        let params = parts
            .filter(|p| !p.trim().is_empty())
            .map(|p| {
                let (k, v) = key_value(p);
                (k.to_ascii_lowercase(), super::unquote(v.unwrap_or_default()).to_owned())
            })
            .collect();
        Ok(ContentType { media_type, params })
    }
    fn encode(&self) -> String {
        let mut out = self.media_type.clone();
        for (k, v) in &self.params {
            out.push_str(&format!("; {k}={v}"));
        }
        out
    }
}

/// `WWW-Authenticate`: one authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WwwAuthenticate(pub Challenge);

impl TypedHeader for WwwAuthenticate {
    const NAME: &'static str = "WWW-Authenticate";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        Challenge::parse(value)
            .map(WwwAuthenticate)
            .map_err(|e| HeaderError::new(Self::NAME, e.to_string()))
    }
    fn encode(&self) -> String {
        self.0.encode()
    }
}

/// `Authorization`: a client's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationHeader(pub Authorization);

impl TypedHeader for AuthorizationHeader {
    const NAME: &'static str = "Authorization";
    fn parse(value: &str) -> Result<Self, HeaderError> {
        Authorization::parse(value)
            .map(AuthorizationHeader)
            .map_err(|e| HeaderError::new(Self::NAME, e.to_string()))
    }
    fn encode(&self) -> String {
        self.0.encode()
    }
}
