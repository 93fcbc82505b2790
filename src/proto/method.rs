//! RTSP request methods.

use std::fmt;

/// The longest method name accepted (DESIGN.md §2).
pub const MAX_METHOD_LEN: usize = 64;

/// An RTSP/1.0 request method (RFC 2326 §10), or an extension method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `OPTIONS`
    Options,
    /// `DESCRIBE`
    Describe,
    /// `ANNOUNCE`
    Announce,
    /// `SETUP`
    Setup,
    /// `PLAY`
    Play,
    /// `PAUSE`
    Pause,
    /// `RECORD`
    Record,
    /// `TEARDOWN`
    Teardown,
    /// `GET_PARAMETER`
    GetParameter,
    /// `SET_PARAMETER`
    SetParameter,
    /// `REDIRECT`
    Redirect,
    /// Any other token: kept so the server can answer 501 Not Implemented.
    Extension(String),
}

/// Why a method token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The method was empty.
    #[error("empty method")]
    Empty,
    /// The method was longer than [`MAX_METHOD_LEN`].
    #[error("method is {0} bytes, longer than the {MAX_METHOD_LEN}-byte limit")]
    TooLong(usize),
    /// The method contained a byte that is not an RFC 2616 token character.
    #[error("method contains a byte that is not a token character at offset {0}")]
    NotAToken(usize),
}

impl Method {
    /// Every standard method, in the order servers usually list them in `Public`.
    pub const STANDARD: [Method; 11] = [
        Method::Options,
        Method::Describe,
        Method::Announce,
        Method::Setup,
        Method::Play,
        Method::Pause,
        Method::Record,
        Method::Teardown,
        Method::GetParameter,
        Method::SetParameter,
        Method::Redirect,
    ];

    /// Parses a method token. Standard methods are matched case-sensitively, as RFC 2326 says.
    pub fn parse(token: &str) -> Result<Self, MethodError> {
        if token.is_empty() {
            return Err(MethodError::Empty);
        }
        if token.len() > MAX_METHOD_LEN {
            return Err(MethodError::TooLong(token.len()));
        }
        if let Some(at) = token.bytes().position(|b| !is_token_byte(b)) {
            return Err(MethodError::NotAToken(at));
        }
        Ok(Self::STANDARD
            .iter()
            .find(|m| m.as_str() == token)
            .cloned()
            .unwrap_or_else(|| Method::Extension(token.to_owned())))
    }

    /// The method's token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Options => "OPTIONS",
            Method::Describe => "DESCRIBE",
            Method::Announce => "ANNOUNCE",
            Method::Setup => "SETUP",
            Method::Play => "PLAY",
            Method::Pause => "PAUSE",
            Method::Record => "RECORD",
            Method::Teardown => "TEARDOWN",
            Method::GetParameter => "GET_PARAMETER",
            Method::SetParameter => "SET_PARAMETER",
            Method::Redirect => "REDIRECT",
            Method::Extension(s) => s,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True for RFC 2616 `token` characters: visible ASCII except separators.
pub fn is_token_byte(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_methods_round_trip() {
        for m in Method::STANDARD {
            assert_eq!(Method::parse(m.as_str()), Ok(m.clone()));
        }
    }

    #[test]
    fn lowercase_method_is_an_extension_not_play() {
        assert_eq!(Method::parse("play"), Ok(Method::Extension("play".into())));
    }

    #[test]
    fn method_limits_and_token_rules_are_enforced() {
        assert_eq!(Method::parse(""), Err(MethodError::Empty));
        assert_eq!(Method::parse(&"A".repeat(65)), Err(MethodError::TooLong(65)));
        assert!(Method::parse(&"A".repeat(64)).is_ok());
        assert_eq!(Method::parse("PL AY"), Err(MethodError::NotAToken(2)));
    }
}
