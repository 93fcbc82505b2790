//! A small blocking HTTP/1.1 responder for side endpoints such as a metrics scrape.
//!
//! It runs on plain threads, away from the cores' executors, so nothing it does (a slow client, a
//! large response) can delay RTSP work. One thread accepts; each connection gets a thread of its
//! own, up to a cap, and serves exactly one request with `Connection: close`. A request head
//! larger than the limit, or malformed, is answered 400 and the connection closed; a client that
//! does not finish its head within the read timeout is dropped.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::proto::http::{head_length, HttpRequestHead};

/// Limits of an [`HttpServer`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    /// Largest request head (request line and headers) accepted, in bytes.
    pub(crate) max_head: usize,
    /// Time a client has to send its whole request head.
    pub(crate) read_timeout: Duration,
    /// Time the response may take to write.
    pub(crate) write_timeout: Duration,
    /// Connections served at once; more are closed at once.
    pub(crate) max_connections: usize,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpRequest {
    /// The method, as sent (methods are case-sensitive).
    pub(crate) method: String,
    /// The request target, as sent (path and query).
    pub(crate) target: String,
    /// Header names (lower-cased) and values (trimmed), in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The client's address.
    pub(crate) peer: SocketAddr,
}

impl HttpRequest {
    /// The first value of header `name` (lower-case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A response to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpResponse {
    /// Status code.
    pub(crate) status: u16,
    /// Extra headers (Content-Length and Connection are added).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The body; not written for HEAD requests, though its length is announced.
    pub(crate) body: Vec<u8>,
}

impl HttpResponse {
    /// A plain-text response with `status` and `body`.
    pub(crate) fn text(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("Content-Type", "text/plain; charset=utf-8".to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }
}

/// Produces the response to a request; called on the connection's thread.
pub(crate) type Respond = Arc<dyn Fn(&HttpRequest) -> HttpResponse + Send + Sync>;

/// A running responder; stops when closed or dropped.
pub(crate) struct HttpServer {
    local_addr: SocketAddr,
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    accepting: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `address` and serves requests with `respond`.
    pub(crate) fn start(address: SocketAddr, limits: HttpLimits, respond: Respond) -> io::Result<HttpServer> {
        let listener = Arc::new(TcpListener::bind(address)?);
        let local_addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let accepting = std::thread::Builder::new().name("http-accept".into()).spawn({
            let listener = listener.clone();
            let stopping = stopping.clone();
            move || accept_loop(&listener, &stopping, limits, respond)
        })?;
        Ok(HttpServer {
            local_addr,
            listener,
            stopping,
            accepting: Some(accepting),
        })
    }

    /// The address it listens on.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the accepting thread; connections being served finish on
    /// their own threads, within their timeouts. Calling it again does nothing.
    pub(crate) fn close(&mut self) {
        let Some(accepting) = self.accepting.take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        // On Linux, shutting a listening socket down wakes the thread blocked in accept().
        if let Err(e) = socket2::SockRef::from(&*self.listener).shutdown(Shutdown::Both) {
            tracing::debug!(error = %e, "shutdown of the HTTP listener");
        }
        if accepting.join().is_err() {
            tracing::warn!("the HTTP accept thread panicked");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.close();
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, limits: HttpLimits, respond: Respond) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP accept failed");
                // A full fd table must not spin this thread.
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= limits.max_connections {
            active.fetch_sub(1, Ordering::AcqRel);
            tracing::debug!(%peer, "too many HTTP connections; closing a new one");
            continue;
        }
        let respond = respond.clone();
        let done = active.clone();
        let spawned = std::thread::Builder::new().name("http-conn".into()).spawn(move || {
            serve(stream, peer, limits, &*respond);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(error = %e, "cannot start an HTTP connection thread");
        }
    }
}

/// Why a request head could not be read.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    /// The head is longer than the limit.
    #[error("request head longer than {0} bytes")]
    TooLarge(usize),
    /// The head is not HTTP/1.x.
    #[error("malformed request head: {0}")]
    Malformed(&'static str),
    /// The client closed, stalled past the read timeout, or the socket failed.
    #[error("reading the request head: {0}")]
    Io(#[from] io::Error),
}

fn serve(mut stream: TcpStream, peer: SocketAddr, limits: HttpLimits, respond: &dyn Fn(&HttpRequest) -> HttpResponse) {
    let (response, is_head) = match read_head(&mut stream, limits) {
        Ok(head) => match parse_head(&head, peer) {
            Ok(request) => (respond(&request), request.method == "HEAD"),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "bad HTTP request");
                (HttpResponse::text(400, "bad request\n"), false)
            }
        },
        Err(e @ (HeadError::TooLarge(_) | HeadError::Malformed(_))) => {
            tracing::debug!(%peer, error = %e, "bad HTTP request");
            (HttpResponse::text(400, "bad request\n"), false)
        }
        Err(HeadError::Io(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP client gone or too slow");
            return;
        }
    };
    if let Err(e) = write_response(&mut stream, &response, is_head, limits.write_timeout) {
        tracing::debug!(%peer, error = %e, "writing the HTTP response");
        return;
    }
    linger(&mut stream);
}

/// Reads until the blank line that ends a head, within the size limit and one deadline for the
/// whole head (not per read, so a client trickling bytes cannot hold the thread forever).
fn read_head(stream: &mut TcpStream, limits: HttpLimits) -> Result<Vec<u8>, HeadError> {
    let deadline = Instant::now() + limits.read_timeout;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        let searched_from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(end) = head_length(&head[searched_from..]) {
            let end = searched_from + end;
            if end > limits.max_head {
                return Err(HeadError::TooLarge(limits.max_head));
            }
            head.truncate(end);
            return Ok(head);
        }
        if head.len() > limits.max_head {
            return Err(HeadError::TooLarge(limits.max_head));
        }
    }
}

fn parse_head(head: &[u8], peer: SocketAddr) -> Result<HttpRequest, HeadError> {
    let head = HttpRequestHead::parse(head).map_err(|e| HeadError::Malformed(e.0))?;
    Ok(HttpRequest {
        method: head.method,
        target: head.target,
        headers: head.headers,
        peer,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(stream: &mut TcpStream, response: &HttpResponse, is_head: bool, timeout: Duration) -> io::Result<()> {
    stream.set_write_timeout(Some(timeout))?;
    let mut head = format!("HTTP/1.1 {} {}\r\n", response.status, reason(response.status));
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        response.body.len()
    ));
    stream.write_all(head.as_bytes())?;
    if !is_head {
        stream.write_all(&response.body)?;
    }
    stream.flush()
}

/// Ends the connection so the client reads the whole response: closing with unread input (the
/// rest of an oversized head) would send a reset that can discard it. Reads what is left for a
/// moment, then closes.
fn linger(stream: &mut TcpStream) {
    const LINGER: Duration = Duration::from_millis(500);
    const MAX_DISCARD: usize = 64 * 1024;
    if stream.shutdown(Shutdown::Write).is_err() || stream.set_read_timeout(Some(LINGER)).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0;
    let mut chunk = [0u8; 4096];
    while discarded < MAX_DISCARD && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parsed_head_keeps_the_peer_and_a_malformed_one_is_a_bad_request() {
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let request = parse_head(b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n", peer).unwrap();
        assert_eq!((request.target.as_str(), request.peer), ("/metrics", peer));
        assert_eq!(request.header("host"), Some("a"));
        assert!(matches!(
            parse_head(b"GET metrics HTTP/1.1\r\n\r\n", peer),
            Err(HeadError::Malformed("target is not a path"))
        ));
    }
}
