//! The RTSP control connection: URL and credentials, the read buffer shared with interleaved
//! media, request/response exchange with CSeq and Session, and the 401 retry.

use std::io::{self, IoSlice};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::future;

use super::error::{ClientError, Result};
use crate::proto::auth::{authorize, pick_strongest, Challenge, QopCounter};
use crate::proto::headers::{CSeq, Public, SessionHeader, TypedHeader};
use crate::proto::rtsp::{Decoder, Limits, Message, Request, Response, StatusCode};
use crate::proto::url::UrlError;
use crate::proto::Method;
use crate::runtime::connect::{connect_tcp, Alarm};
use crate::runtime::tcp::{TcpReadHalf, TcpWriteHalf};

/// The read buffer starts small: a loadgen runs thousands of clients per core.
const INITIAL_BUFFER: usize = 8 * 1024;
/// Reads get at least this much room (unless the buffer is smaller), so that a partial frame at the
/// end does not shrink them to a few bytes.
const MIN_READ_ROOM: usize = 2048;
/// The largest message or frame the buffer grows to hold.
const MAX_BUFFER: usize = 1 << 20;

/// An `rtsp://` URL split into what the client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedUrl {
    /// The URL without credentials: what request lines carry.
    pub(crate) url: String,
    /// `host:port` as written, for messages.
    pub(crate) authority: String,
    /// The host without brackets.
    pub(crate) host: String,
    /// The port (554 when absent).
    pub(crate) port: u16,
    /// Percent-decoded user name and password.
    pub(crate) credentials: Option<(String, String)>,
}

/// Parses `rtsp://[user[:password]@]host[:port][/path][?query]`.
pub(crate) fn parse_url(url: &str) -> Result<ParsedUrl> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("rtsp://") {
        &url[7..]
    } else if lower.starts_with("rtsps://") {
        return Err(ClientError::UnsupportedTransport);
    } else {
        return Err(UrlError::NotRtsp.into());
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    let bad_port = || ClientError::Connect {
        addr: host_port.to_owned(),
        io: io::Error::new(io::ErrorKind::InvalidInput, "invalid port"),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(UrlError::EmptyHost)?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse().map_err(|_| bad_port())?),
            None if after.is_empty() => (host, 554),
            None => return Err(bad_port()),
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, port.parse().map_err(|_| bad_port())?),
            None => (host_port, 554),
        }
    };
    if host.is_empty() {
        return Err(UrlError::EmptyHost.into());
    }
    let credentials = match userinfo {
        Some(info) => {
            let (user, password) = info.split_once(':').unwrap_or((info, ""));
            Some((percent_decode(user)?, percent_decode(password)?))
        }
        None => None,
    };
    Ok(ParsedUrl {
        url: format!("rtsp://{host_port}{path}"),
        authority: host_port.to_owned(),
        host: host.to_owned(),
        port,
        credentials,
    })
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = hex.ok_or(UrlError::BadPercentEncoding { position: i })?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| {
        UrlError::BadPercentEncoding {
            position: e.utf8_error().valid_up_to(),
        }
        .into()
    })
}

/// One item taken off the front of the read buffer.
pub(crate) enum Item {
    /// An interleaved frame; its payload is `TcpIo::bytes(range)` until the next fill.
    Frame { channel: u8, range: Range<usize> },
    /// A request or response.
    Message(Message),
}

/// The TCP connection and its reused read buffer.
pub(crate) struct TcpIo {
    read: TcpReadHalf,
    write: TcpWriteHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Bytes the item at the front needs in all, when known (frames); 0 otherwise.
    need: usize,
}

impl TcpIo {
    /// Bytes of the buffer, for the range of a frame just returned by [`Self::next_item`].
    pub(crate) fn bytes(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Takes the next complete frame or message off the buffer, `None` when more bytes are needed.
    pub(crate) fn next_item(&mut self) -> Result<Option<Item>> {
        while self.start < self.end && matches!(self.buf[self.start], b'\r' | b'\n') {
            self.start += 1;
        }
        let pending = &self.buf[self.start..self.end];
        self.need = 0;
        if pending.is_empty() {
            return Ok(None);
        }
        if pending[0] == b'$' {
            if pending.len() < 4 {
                self.need = 4;
                return Ok(None);
            }
            let len = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
            if pending.len() < 4 + len {
                self.need = 4 + len;
                return Ok(None);
            }
            let channel = pending[1];
            let range = self.start + 4..self.start + 4 + len;
            self.start = range.end;
            return Ok(Some(Item::Frame { channel, range }));
        }
        // Messages are rare (responses to our requests): decode a copy, then drop what it used.
        let mut copy = BytesMut::from(pending);
        match Decoder::new(Limits::default()).decode(&mut copy)? {
            Some(Message::Frame(_)) | None => Ok(None),
            Some(message) => {
                self.start += pending.len() - copy.len();
                Ok(Some(Item::Message(message)))
            }
        }
    }

    /// Reads once from the socket into the buffer; the server closing is [`ClientError::Closed`].
    pub(crate) async fn fill(&mut self) -> Result<()> {
        self.make_room()?;
        let n = self.read.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(ClientError::Closed);
        }
        self.end += n;
        Ok(())
    }

    fn make_room(&mut self) -> Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let pending = self.end - self.start;
        let wanted = self.need.max(pending + 1);
        if wanted > MAX_BUFFER {
            return Err(ClientError::Protocol(format!(
                "the server sent a message or frame larger than {MAX_BUFFER} bytes"
            )));
        }
        let room = self.buf.len() - self.end;
        if self.start > 0 && (self.start + wanted > self.buf.len() || room < MIN_READ_ROOM.min(self.buf.len() / 2)) {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        if wanted > self.buf.len() {
            self.buf.resize(wanted.next_power_of_two().min(MAX_BUFFER), 0);
        }
        Ok(())
    }

    /// Writes every byte of `slices`, failing if the socket stays full for `timeout`.
    pub(crate) async fn write_all(&self, slices: &mut [IoSlice<'_>], timeout: Duration) -> Result<()> {
        self.write
            .write_all_vectored(slices, timeout)
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::TimedOut => ClientError::Timeout {
                    what: "writing to the server".into(),
                },
                _ => ClientError::Io(e),
            })
    }
}

/// What the connection remembers between requests.
pub(crate) struct Connection {
    pub(crate) io: TcpIo,
    /// The one timer of the client: response deadlines here, media deadlines and schedules in `media`.
    pub(crate) alarm: Alarm,
    pub(crate) local_addr: SocketAddr,
    pub(crate) peer_addr: SocketAddr,
    /// The request URL given to `connect`, without credentials.
    pub(crate) url: String,
    credentials: Option<(String, String)>,
    /// The challenge answered on every request once a 401 asked for it.
    challenge: Option<Challenge>,
    /// For a challenge with `qop="auth"`: our client nonce and how many requests answered it.
    client_nonce: String,
    nonce_count: u32,
    cseq: u32,
    pub(crate) session: Option<String>,
    pub(crate) session_timeout: Option<Duration>,
    /// Whether the server's `Public` lists GET_PARAMETER; `None` before any `Public` was seen.
    get_parameter: Option<bool>,
    /// CSeq and method of the last keepalive, until its response is read.
    keepalive: Option<(u32, Method)>,
    user_agent: String,
    read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    out: BytesMut,
}

impl Connection {
    /// Resolves the URL's host and connects to the first address that answers within `timeout`.
    pub(crate) async fn open(
        url: ParsedUrl,
        user_agent: String,
        read_timeout: Duration,
        write_timeout: Duration,
    ) -> Result<Connection> {
        let connect_error = |io| ClientError::Connect {
            addr: url.authority.clone(),
            io,
        };
        let addrs: Vec<SocketAddr> = match url.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, url.port)],
            // getaddrinfo blocks: pass IP addresses where that matters.
            Err(_) => (url.host.as_str(), url.port)
                .to_socket_addrs()
                .map_err(connect_error)?
                .collect(),
        };
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
        for addr in addrs {
            match connect_tcp(addr, read_timeout).await {
                Ok((read, write, local_addr)) => {
                    return Ok(Connection {
                        io: TcpIo {
                            read,
                            write,
                            buf: vec![0; INITIAL_BUFFER],
                            start: 0,
                            end: 0,
                            need: 0,
                        },
                        alarm: Alarm::new(),
                        local_addr,
                        peer_addr: addr,
                        url: url.url,
                        credentials: url.credentials,
                        challenge: None,
                        client_nonce: String::new(),
                        nonce_count: 0,
                        cseq: 0,
                        session: None,
                        session_timeout: None,
                        get_parameter: None,
                        keepalive: None,
                        user_agent,
                        read_timeout,
                        write_timeout,
                        out: BytesMut::new(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(ClientError::Timeout {
                        what: format!("connecting to {}", url.authority),
                    })
                }
                Err(e) => last = e,
            }
        }
        Err(connect_error(last))
    }

    /// Sends a request and waits for its response, answering one 401 with credentials.
    ///
    /// A non-2xx final status is [`ClientError::Status`].
    pub(crate) async fn request(
        &mut self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response> {
        let mut retried = false;
        loop {
            let cseq = self.send(&method, url, headers, body).await?;
            let response = self.wait_response(cseq, &method).await?;
            if response.status == StatusCode::UNAUTHORIZED && !retried && self.accept_challenge(&response)? {
                retried = true;
                continue;
            }
            if !response.status.is_success() {
                return Err(ClientError::Status {
                    method,
                    status: response.status,
                    reason: response.reason,
                });
            }
            if let Some(value) = response.headers.get("Session") {
                let session = SessionHeader::parse(value).map_err(|e| ClientError::Protocol(e.to_string()))?;
                self.session_timeout = session.timeout.map(|t| Duration::from_secs(u64::from(t)));
                self.session = Some(session.id);
            }
            return Ok(response);
        }
    }

    /// Sends a request without waiting for the response (a keepalive); returns its CSeq.
    pub(crate) async fn send(
        &mut self,
        method: &Method,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<u32> {
        self.cseq += 1;
        let mut request = Request::new(method.clone(), url);
        request.headers.set("CSeq", &self.cseq.to_string());
        request.headers.set("User-Agent", &self.user_agent);
        if let Some(session) = &self.session {
            request.headers.set("Session", session);
        }
        if let (Some(challenge), Some((user, password))) = (&self.challenge, &self.credentials) {
            let qop = challenge.qop_auth.then(|| {
                self.nonce_count = self.nonce_count.wrapping_add(1);
                QopCounter {
                    cnonce: &self.client_nonce,
                    count: self.nonce_count,
                }
            });
            let value = authorize(challenge, user, password, method.as_str(), url, qop)
                .map_err(|e| ClientError::Auth(e.to_string()))?;
            request.headers.set("Authorization", &value);
        }
        for (name, value) in headers {
            request.headers.set(name, value);
        }
        request.body = bytes::Bytes::copy_from_slice(body);
        self.out.clear();
        request.encode(&mut self.out);
        let mut slices = [IoSlice::new(&self.out)];
        self.io.write_all(&mut slices, self.write_timeout).await?;
        Ok(self.cseq)
    }

    /// Whether a `Public` header told which keepalive the server takes.
    pub(crate) fn knows_keepalive(&self) -> bool {
        self.get_parameter.is_some()
    }

    /// Sends a keepalive request (GET_PARAMETER when the server's `Public` lists it, else OPTIONS)
    /// without waiting: [`Self::note_response`] checks its response when it arrives.
    pub(crate) async fn send_keepalive(&mut self, url: &str) -> Result<()> {
        let method = match self.get_parameter {
            Some(true) => Method::GetParameter,
            // Unknown: OPTIONS also tells the server's Public for the next one.
            _ => Method::Options,
        };
        let cseq = self.send(&method, url, &[], &[]).await?;
        self.keepalive = Some((cseq, method));
        Ok(())
    }

    /// Takes note of what a response read outside [`Self::request`] says: the server's `Public`
    /// methods, and whether it lost the session a keepalive was for (454, an error).
    pub(crate) fn note_response(&mut self, response: &Response) -> Result<()> {
        if let Some(public) = response.headers.get("Public").and_then(|v| Public::parse(v).ok()) {
            self.get_parameter = Some(public.0.contains(&Method::GetParameter));
        }
        let cseq = response.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok());
        let Some((_, method)) = self.keepalive.take_if(|(sent, _)| cseq == Some(CSeq(*sent))) else {
            return Ok(());
        };
        match response.status {
            StatusCode::SESSION_NOT_FOUND => Err(ClientError::Status {
                method,
                status: response.status,
                reason: response.reason.clone(),
            }),
            // Listed but refused: fall back to OPTIONS.
            status if !status.is_success() && method == Method::GetParameter => {
                self.get_parameter = Some(false);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Reads until the response with `cseq` arrives; frames, server requests and responses to
    /// earlier keepalives are consumed on the way.
    async fn wait_response(&mut self, cseq: u32, method: &Method) -> Result<Response> {
        let deadline = Instant::now() + self.read_timeout;
        self.alarm.set(deadline);
        loop {
            while let Some(item) = self.io.next_item()? {
                let Item::Message(Message::Response(response)) = item else {
                    continue;
                };
                self.note_response(&response)?;
                let theirs = response.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok());
                // A response without CSeq (a 400 to a request the server could not read) is ours.
                if theirs.is_none_or(|c| c.0 == cseq) {
                    return Ok(response);
                }
            }
            let Connection { io, alarm, .. } = &mut *self;
            let filled = future::or(async { Some(io.fill().await) }, async {
                alarm.wait().await;
                None
            })
            .await;
            match filled {
                Some(result) => result?,
                None if Instant::now() >= deadline => {
                    return Err(ClientError::Timeout {
                        what: format!("waiting for the {method} response"),
                    })
                }
                None => self.alarm.set(deadline),
            }
        }
    }

    /// Picks the strongest challenge of a 401 to answer from now on; `false` when there are no
    /// credentials to answer with.
    fn accept_challenge(&mut self, response: &Response) -> Result<bool> {
        if self.credentials.is_none() {
            return Ok(false);
        }
        let challenges: Vec<Challenge> = response
            .headers
            .get_all("WWW-Authenticate")
            .filter_map(|v| Challenge::parse(v).ok())
            .collect();
        let chosen = pick_strongest(&challenges)
            .ok_or_else(|| ClientError::Auth("the 401 carries no Basic or Digest challenge".into()))?;
        self.challenge = Some(chosen.clone());
        self.client_nonce = client_nonce();
        self.nonce_count = 0;
        Ok(true)
    }
}

/// A random client nonce for Digest `qop`: 16 hex digits.
fn client_nonce() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_err() {
        // Without the OS's randomness, a clock-derived nonce still differs per challenge.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos as u64).to_le_bytes();
    }
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_taken_out_of_the_url() {
        let u = parse_url("rtsp://alice:s3%40cret@127.0.0.1:8554/live/cam?x=1").unwrap();
        assert_eq!(u.url, "rtsp://127.0.0.1:8554/live/cam?x=1");
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8554));
        assert_eq!(u.credentials, Some(("alice".into(), "s3@cret".into())));
        let u = parse_url("RTSP://[::1]/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.credentials), ("::1", 554, None));
        assert!(matches!(
            parse_url("http://h/x"),
            Err(ClientError::Url(UrlError::NotRtsp))
        ));
        assert!(matches!(
            parse_url("rtsp:///x"),
            Err(ClientError::Url(UrlError::EmptyHost))
        ));
        assert!(matches!(
            parse_url("rtsp://h:99999/x"),
            Err(ClientError::Connect { .. })
        ));
        assert!(matches!(
            parse_url("rtsps://h/x"),
            Err(ClientError::UnsupportedTransport)
        ));
    }
}
