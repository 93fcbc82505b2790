//! Incremental decoding of an RTSP byte stream in which requests, responses and
//! `$`-interleaved frames arrive mixed and split at any byte.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::{Headers, InterleavedFrame, Message, Request, Response, StatusCode, VERSION};
use crate::proto::method::{Method, MethodError};

/// Size limits on what a peer may send (DESIGN.md §2). Going over one is a [`DecodeError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest method token.
    pub max_method: usize,
    /// Longest request URL.
    pub max_url: usize,
    /// Most headers in one message.
    pub max_headers: usize,
    /// Longest header name.
    pub max_header_name: usize,
    /// Longest header value.
    pub max_header_value: usize,
    /// Largest body.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_method: 64,
            max_url: 2048,
            max_headers: 255,
            max_header_name: 512,
            max_header_value: 2048,
            max_body: 128 * 1024,
        }
    }
}

/// What was wrong with the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The method is longer than the limit.
    #[error("method longer than {limit} bytes")]
    MethodTooLong {
        /// The limit.
        limit: usize,
    },
    /// The method is not a valid token.
    #[error("invalid method: {0}")]
    InvalidMethod(MethodError),
    /// The URL is longer than the limit.
    #[error("URL longer than {limit} bytes")]
    UrlTooLong {
        /// The limit.
        limit: usize,
    },
    /// More headers than the limit.
    #[error("more than {limit} headers")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// A header name is longer than the limit.
    #[error("header name longer than {limit} bytes")]
    HeaderNameTooLong {
        /// The limit.
        limit: usize,
    },
    /// A header value is longer than the limit.
    #[error("header value longer than {limit} bytes")]
    HeaderValueTooLong {
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` is larger than the body limit.
    #[error("body of {length} bytes is larger than the {limit}-byte limit")]
    BodyTooLarge {
        /// The declared length.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// `Content-Length` is not a number, or two of them disagree.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// The request line is not `METHOD URL RTSP/1.0`.
    #[error("malformed request line")]
    MalformedRequestLine,
    /// The status line is not `RTSP/1.0 CODE REASON`.
    #[error("malformed status line")]
    MalformedStatusLine,
    /// The protocol version is not RTSP/1.0.
    #[error("unsupported protocol version")]
    UnsupportedVersion,
    /// A header line has no colon or an empty or invalid name.
    #[error("malformed header line")]
    MalformedHeader,
    /// A line is not UTF-8 or contains control characters.
    #[error("line is not valid UTF-8 text")]
    NotText,
}

/// A decoding error and the stream offset (bytes since the decoder started) where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The offset in the byte stream of the line or element at fault.
    pub offset: u64,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at byte {}", self.kind, self.offset)
    }
}

/// Progress through the head of the message at the front of the buffer, kept between calls
/// so that bytes arriving one at a time are scanned once.
#[derive(Debug, Default, Clone)]
struct Scan {
    /// Where the next unscanned line starts.
    pos: usize,
    /// Complete lines scanned so far (the start line counts).
    lines: usize,
    /// Length of the head including the blank line, once found.
    head_len: Option<usize>,
    /// Declared body length.
    content_length: Option<u64>,
}

/// An incremental RTSP stream decoder.
///
/// ```
/// use bytes::BytesMut;
/// use shardcast::proto::rtsp::{Decoder, Limits, Message};
///
/// let mut decoder = Decoder::new(Limits::default());
/// let mut buf = BytesMut::from(&b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\n"[..]);
/// assert!(decoder.decode(&mut buf).unwrap().is_none()); // needs more
/// buf.extend_from_slice(b"\r\n$\x00\x00\x01X");
/// assert!(matches!(decoder.decode(&mut buf).unwrap(), Some(Message::Request(_))));
/// assert!(matches!(decoder.decode(&mut buf).unwrap(), Some(Message::Frame(_))));
/// ```
#[derive(Debug, Clone)]
pub struct Decoder {
    limits: Limits,
    consumed: u64,
    scan: Scan,
}

impl Decoder {
    /// A decoder enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            consumed: 0,
            scan: Scan::default(),
        }
    }

    /// Bytes consumed from the stream so far.
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Takes the next whole message off the front of `buf`.
    ///
    /// `Ok(None)` means more bytes are needed; what was scanned is remembered. After an error
    /// the stream cannot be resynchronised and the connection should be closed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
        if self.scan.pos == 0 {
            // Some clients put a stray CRLF between messages.
            let blank = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            buf.advance(blank);
            self.consumed += blank as u64;
            if buf.is_empty() {
                return Ok(None);
            }
            if buf[0] == b'$' {
                return Ok(self.decode_frame(buf));
            }
        }
        let head_len = match self.scan.head_len {
            Some(len) => len,
            None => match self.scan_head(buf)? {
                Some(len) => len,
                None => return Ok(None),
            },
        };
        // scan_head bounds the length by the body limit, which fits in usize.
        let body_len = usize::try_from(self.scan.content_length.unwrap_or(0)).unwrap_or(usize::MAX);
        if buf.len() - head_len < body_len {
            return Ok(None);
        }
        let start = self.consumed;
        let head = buf.split_to(head_len);
        let body = buf.split_to(body_len).freeze();
        self.consumed += (head_len + body_len) as u64;
        self.scan = Scan::default();
        parse_head(&head, body, &self.limits, start).map(Some)
    }

    fn decode_frame(&mut self, buf: &mut BytesMut) -> Option<Message> {
        if buf.len() < 4 {
            return None;
        }
        let channel = buf[1];
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if buf.len() < 4 + len {
            return None;
        }
        buf.advance(4);
        let payload = buf.split_to(len).freeze();
        self.consumed += 4 + len as u64;
        Some(Message::Frame(InterleavedFrame { channel, payload }))
    }

    /// Scans complete lines of the head, checking limits as soon as a line (or the unfinished
    /// tail of one) shows it is too long. Returns the head length once the blank line is seen.
    fn scan_head(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        let limits = self.limits;
        loop {
            let rest = &buf[self.scan.pos..];
            let line_offset = self.consumed + self.scan.pos as u64;
            let err = |kind| DecodeError {
                kind,
                offset: line_offset,
            };
            let newline = rest.iter().position(|&b| b == b'\n');
            // An unfinished line's trailing CR may be the first half of its CRLF: leave it out,
            // so a limit check gives the same answer wherever the stream was split.
            let line = match newline {
                Some(n) => strip_cr(&rest[..n]),
                None => strip_cr(rest),
            };
            if newline.is_none() && line.is_empty() {
                // Nothing of the next line yet: whether it is a header, a continuation or the
                // blank line is not known, so no check may run on it.
                return Ok(None);
            }
            if self.scan.lines == 0 {
                check_start_line(line, &limits).map_err(err)?;
            } else if let (Some(n), true) = (newline, line.is_empty()) {
                let head_len = self.scan.pos + n + 1;
                self.scan.head_len = Some(head_len);
                return Ok(Some(head_len));
            } else if !line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if self.scan.lines > limits.max_headers {
                    return Err(err(DecodeErrorKind::TooManyHeaders {
                        limit: limits.max_headers,
                    }));
                }
                check_header_line(line, &limits).map_err(err)?;
                if newline.is_some() {
                    self.note_content_length(line, &limits).map_err(err)?;
                }
            } else if line.len() > limits.max_header_value {
                return Err(err(DecodeErrorKind::HeaderValueTooLong {
                    limit: limits.max_header_value,
                }));
            }
            match newline {
                Some(n) => {
                    self.scan.pos += n + 1;
                    self.scan.lines += 1;
                }
                None => return Ok(None),
            }
        }
    }

    fn note_content_length(&mut self, line: &[u8], limits: &Limits) -> Result<(), DecodeErrorKind> {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Ok(());
        };
        if !line[..colon].trim_ascii().eq_ignore_ascii_case(b"content-length") {
            return Ok(());
        }
        let value =
            std::str::from_utf8(line[colon + 1..].trim_ascii()).map_err(|_| DecodeErrorKind::InvalidContentLength)?;
        if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DecodeErrorKind::InvalidContentLength);
        }
        let length: u64 = value.parse().unwrap_or(u64::MAX);
        if length > limits.max_body as u64 {
            return Err(DecodeErrorKind::BodyTooLarge {
                length,
                limit: limits.max_body,
            });
        }
        match self.scan.content_length {
            Some(previous) if previous != length => Err(DecodeErrorKind::InvalidContentLength),
            _ => {
                self.scan.content_length = Some(length);
                Ok(())
            }
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Length checks on a (possibly unfinished) start line.
fn check_start_line(line: &[u8], limits: &Limits) -> Result<(), DecodeErrorKind> {
    let mut parts = line.splitn(3, |&b| b == b' ');
    let first = parts.next().unwrap_or_default();
    if first.starts_with(b"RTSP/") {
        // A status line: the reason phrase is bounded like a header value.
        return if line.len() > limits.max_header_value {
            Err(DecodeErrorKind::MalformedStatusLine)
        } else {
            Ok(())
        };
    }
    if first.len() > limits.max_method {
        return Err(DecodeErrorKind::MethodTooLong {
            limit: limits.max_method,
        });
    }
    if parts.next().is_some_and(|url| url.len() > limits.max_url) {
        return Err(DecodeErrorKind::UrlTooLong { limit: limits.max_url });
    }
    if parts.next().is_some_and(|version| version.len() > 16) {
        return Err(DecodeErrorKind::MalformedRequestLine);
    }
    Ok(())
}

/// Length checks on a (possibly unfinished) header line.
fn check_header_line(line: &[u8], limits: &Limits) -> Result<(), DecodeErrorKind> {
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            if colon > limits.max_header_name {
                return Err(DecodeErrorKind::HeaderNameTooLong {
                    limit: limits.max_header_name,
                });
            }
            if line[colon + 1..].trim_ascii().len() > limits.max_header_value {
                return Err(DecodeErrorKind::HeaderValueTooLong {
                    limit: limits.max_header_value,
                });
            }
            Ok(())
        }
        None if line.len() > limits.max_header_name => Err(DecodeErrorKind::HeaderNameTooLong {
            limit: limits.max_header_name,
        }),
        None => Ok(()),
    }
}

/// Parses a complete head (start line, headers, blank line) that passed the scan.
fn parse_head(head: &[u8], body: Bytes, limits: &Limits, start: u64) -> Result<Message, DecodeError> {
    let mut lines = Vec::new();
    let mut pos = 0;
    while pos < head.len() {
        let n = head[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(head.len(), |n| pos + n);
        let offset = start + pos as u64;
        let line = std::str::from_utf8(strip_cr(&head[pos..n])).map_err(|_| DecodeError {
            kind: DecodeErrorKind::NotText,
            offset,
        })?;
        if line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(DecodeError {
                kind: DecodeErrorKind::NotText,
                offset,
            });
        }
        lines.push((offset, line));
        pos = n + 1;
    }
    let Some(&(first_offset, first)) = lines.first() else {
        return Err(DecodeError {
            kind: DecodeErrorKind::MalformedRequestLine,
            offset: start,
        });
    };
    let headers = parse_headers(&lines[1..])?;
    let at = |kind| DecodeError {
        kind,
        offset: first_offset,
    };
    if let Some(status_line) = first.strip_prefix("RTSP/") {
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if version != "1.0" {
            return Err(at(DecodeErrorKind::UnsupportedVersion));
        }
        let code = parts.next().unwrap_or_default();
        if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(at(DecodeErrorKind::MalformedStatusLine));
        }
        let status = StatusCode(code.parse().map_err(|_| at(DecodeErrorKind::MalformedStatusLine))?);
        let reason = parts.next().unwrap_or_default().trim().to_owned();
        return Ok(Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }));
    }
    let mut parts = first.split(' ');
    let (Some(method), Some(url), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(at(DecodeErrorKind::MalformedRequestLine));
    };
    if version != VERSION {
        return Err(at(if version.starts_with("RTSP/") {
            DecodeErrorKind::UnsupportedVersion
        } else {
            DecodeErrorKind::MalformedRequestLine
        }));
    }
    if url.is_empty() {
        return Err(at(DecodeErrorKind::MalformedRequestLine));
    }
    if url.len() > limits.max_url {
        return Err(at(DecodeErrorKind::UrlTooLong { limit: limits.max_url }));
    }
    let method = Method::parse(method).map_err(|e| at(DecodeErrorKind::InvalidMethod(e)))?;
    Ok(Message::Request(Request {
        method,
        url: url.to_owned(),
        headers,
        body,
    }))
}

fn parse_headers(lines: &[(u64, &str)]) -> Result<Headers, DecodeError> {
    let mut headers: Vec<(String, String)> = Vec::with_capacity(lines.len());
    for &(offset, line) in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // An obsolete folded continuation of the previous header's value.
            let Some(last) = headers.last_mut() else {
                return Err(DecodeError {
                    kind: DecodeErrorKind::MalformedHeader,
                    offset,
                });
            };
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(DecodeError {
                kind: DecodeErrorKind::MalformedHeader,
                offset,
            });
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(crate::proto::method::is_token_byte) {
            return Err(DecodeError {
                kind: DecodeErrorKind::MalformedHeader,
                offset,
            });
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut out = Headers::new();
    for (name, value) in &headers {
        out.append(name, value);
    }
    Ok(out)
}
