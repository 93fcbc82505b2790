//! The RTSPS bridge: a rustls session on an accepted TCP socket, pumped to and from a local
//! socket pair whose other end the server serves as if it were a plain RTSP connection.
//!
//! Bridging keeps TLS out of the connection code: the batched `writev` writer, the watchdog and
//! the migration of a connection's socket to another core all work on the plaintext end
//! unchanged (docs/decisions/0005-rtsps-bridge.md). The price is one extra copy per byte and a
//! socket pair per RTSPS connection.
//!
//! Backpressure: each direction holds at most one chunk of plaintext and its ciphertext. While the
//! client's socket is full the bridge stops reading the plaintext end, so the pair fills and the
//! server's own write timeout closes slow readers; the bridge's writes to the client time out
//! after the same write timeout.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

/// Ciphertext read from the client per call, and plaintext read from the server end per call: one
/// TLS record's worth.
const CHUNK: usize = 16 * 1024;

/// How long the bridge waits to deliver a fatal alert to a client that broke TLS.
const ALERT_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a bridge ended other than by an orderly close.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsBridgeError {
    /// The client's bytes are not TLS, or broke the TLS protocol.
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    /// The client closed the connection before the handshake completed.
    #[error("the client closed the connection during the TLS handshake")]
    ClosedDuringHandshake,
    /// Reading or writing the client's socket or the plaintext end failed (or timed out).
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Makes a connected pair of local stream sockets as glommio streams on the calling executor:
/// the first end for the server's connection code, the second for the bridge.
pub(crate) fn plaintext_pair() -> io::Result<(TcpStream, TcpStream)> {
    let (server_end, bridge_end) = std::os::unix::net::UnixStream::pair()?;
    server_end.set_nonblocking(true)?;
    bridge_end.set_nonblocking(true)?;
    Ok((
        adopt_stream_socket(server_end.into()),
        adopt_stream_socket(bridge_end.into()),
    ))
}

fn adopt_stream_socket(fd: OwnedFd) -> TcpStream {
    // SAFETY: `fd` is an owned, open, connected, non-blocking stream socket; ownership moves into
    // the glommio stream, which closes it exactly once. glommio's stream only sends, receives,
    // polls and shuts down the descriptor, which a Unix stream socket supports like a TCP one;
    // the TCP-only calls (addresses, TCP_NODELAY) return errors on it, which callers handle.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

/// A glommio stream read by one task and written by another: the `RefCell` is borrowed only
/// inside a synchronous poll, never across an `.await`.
struct SharedStream(RefCell<TcpStream>);

impl SharedStream {
    async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)).await
    }

    /// Writes all of `bytes`; with a timeout, fails with `TimedOut` when the socket stays full
    /// for that long at any point.
    async fn write_all(&self, mut bytes: &[u8], timeout: Option<Duration>) -> io::Result<()> {
        let fd = self.0.borrow().as_raw_fd();
        while !bytes.is_empty() {
            match send_dontwait(fd, bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let n = self.write_when_writable(bytes, timeout).await?;
                    bytes = &bytes[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until the socket takes some of `bytes`, through glommio's wait for writability
    /// (it has no readiness API); the timer is armed only here, for writes that must wait.
    async fn write_when_writable(&self, bytes: &[u8], timeout: Option<Duration>) -> io::Result<usize> {
        let write = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, bytes));
        match timeout {
            None => write.await,
            Some(limit) => {
                let expire = async {
                    glommio::timer::sleep(limit).await;
                    Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
                };
                futures_lite::future::or(write, expire).await
            }
        }
    }

    /// Shuts down the sending side so the peer reads end of stream.
    async fn shutdown_write(&self) {
        let close = poll_fn(|cx| Pin::new(&mut *self.0.borrow_mut()).poll_close(cx));
        if let Err(e) = close.await {
            tracing::trace!(error = %e, "shutdown of a closed socket");
        }
    }
}

/// A client's TCP socket with an established rustls server session.
pub(crate) struct TlsBridge {
    socket: SharedStream,
    tls: RefCell<rustls::ServerConnection>,
    /// Held while ciphertext is taken from the session and written, so records of the two
    /// directions never interleave on the socket.
    write_turn: Semaphore,
    /// Ciphertext on its way to the socket; used by the holder of `write_turn`, kept between
    /// writes so that each chunk does not allocate.
    ciphertext: RefCell<Vec<u8>>,
    write_timeout: Duration,
    /// Plaintext that arrived with the end of the handshake, for the server end.
    early_plaintext: Vec<u8>,
}

impl TlsBridge {
    /// Runs the TLS handshake on an accepted socket. The caller bounds how long it may take.
    pub(crate) async fn accept(
        stream: TcpStream,
        config: Arc<rustls::ServerConfig>,
        write_timeout: Duration,
    ) -> Result<TlsBridge, TlsBridgeError> {
        // Interleaved frames are small: they must not wait for Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let mut bridge = TlsBridge {
            socket: SharedStream(RefCell::new(stream)),
            tls: RefCell::new(rustls::ServerConnection::new(config)?),
            write_turn: Semaphore::new(1),
            ciphertext: RefCell::new(Vec::new()),
            write_timeout,
            early_plaintext: Vec::new(),
        };
        let mut chunk = vec![0u8; CHUNK];
        let mut plaintext = Vec::new();
        loop {
            bridge.flush_tls().await?;
            if !bridge.tls.borrow().is_handshaking() {
                break;
            }
            let n = bridge.socket.read(&mut chunk).await?;
            if n == 0 {
                return Err(TlsBridgeError::ClosedDuringHandshake);
            }
            bridge.decrypt(&chunk[..n], &mut plaintext).await?;
        }
        bridge.early_plaintext = plaintext;
        Ok(bridge)
    }

    /// Pumps plaintext between the client and `plain` (the bridge end of [`plaintext_pair`])
    /// until either side closes. The client closing its side shuts down the plaintext end's
    /// sending side; the server closing the plaintext end ends the TLS session with a
    /// close_notify. Returns when the server end closed, or on the first error.
    pub(crate) async fn pump(self, plain: TcpStream) -> Result<(), TlsBridgeError> {
        let plain = SharedStream(RefCell::new(plain));
        let inbound = async {
            match self.client_to_server(&plain).await {
                // The client is done; the server closes the plaintext end in turn, which ends
                // the other direction.
                Ok(()) => std::future::pending().await,
                Err(e) => Err(e),
            }
        };
        futures_lite::future::or(inbound, self.server_to_client(&plain)).await
    }

    async fn client_to_server(&self, plain: &SharedStream) -> Result<(), TlsBridgeError> {
        plain.write_all(&self.early_plaintext, None).await?;
        let mut chunk = vec![0u8; CHUNK];
        let mut plaintext = Vec::with_capacity(CHUNK);
        loop {
            let n = self.socket.read(&mut chunk).await?;
            if n == 0 {
                plain.shutdown_write().await;
                return Ok(());
            }
            plaintext.clear();
            let closed = self.decrypt(&chunk[..n], &mut plaintext).await?;
            // No timeout: like a plain connection, a server busy with a request stops reading
            // and the client waits; the server closing the pair ends this write with an error.
            plain.write_all(&plaintext, None).await?;
            self.flush_tls().await?;
            if closed {
                plain.shutdown_write().await;
                return Ok(());
            }
        }
    }

    async fn server_to_client(&self, plain: &SharedStream) -> Result<(), TlsBridgeError> {
        let mut chunk = vec![0u8; CHUNK];
        loop {
            let n = plain.read(&mut chunk).await?;
            if n == 0 {
                self.tls.borrow_mut().send_close_notify();
                self.flush_tls().await?;
                self.socket.shutdown_write().await;
                return Ok(());
            }
            let mut pending = &chunk[..n];
            while !pending.is_empty() {
                // The session may take less than offered when its buffer limit is reached.
                let taken = self.tls.borrow_mut().writer().write(pending)?;
                self.flush_tls().await?;
                pending = &pending[taken..];
            }
        }
    }

    /// Feeds ciphertext to the session and appends what it decrypts to `plaintext`; returns
    /// whether the client sent close_notify. On a TLS error, tries to send the alert first.
    async fn decrypt(&self, mut ciphertext: &[u8], plaintext: &mut Vec<u8>) -> Result<bool, TlsBridgeError> {
        let mut closed = false;
        while !ciphertext.is_empty() {
            let processed = {
                let mut tls = self.tls.borrow_mut();
                // Never called with an empty slice, which rustls would take for end of stream.
                tls.read_tls(&mut ciphertext)?;
                tls.process_new_packets()
            };
            if let Err(e) = processed {
                let alert = self.flush_tls_within(ALERT_TIMEOUT);
                if let Err(send) = alert.await {
                    tracing::trace!(error = %send, "cannot send the TLS alert");
                }
                return Err(e.into());
            }
            closed |= drain_plaintext(&mut self.tls.borrow_mut(), plaintext)?;
        }
        Ok(closed)
    }

    /// Writes every byte of ciphertext the session has queued, within the write timeout.
    async fn flush_tls(&self) -> io::Result<()> {
        self.flush_tls_within(self.write_timeout).await
    }

    async fn flush_tls_within(&self, timeout: Duration) -> io::Result<()> {
        let _turn = self
            .write_turn
            .acquire_permit(1)
            .await
            .map_err(|e| io::Error::other(e.to_string()))?;
        // Taken out so that no borrow spans the write; a cancelled flush just loses the buffer.
        let mut ciphertext = self.ciphertext.take();
        loop {
            ciphertext.clear();
            {
                let mut tls = self.tls.borrow_mut();
                while tls.wants_write() {
                    tls.write_tls(&mut ciphertext)?;
                }
            }
            if ciphertext.is_empty() {
                break;
            }
            self.socket.write_all(&ciphertext, Some(timeout)).await?;
        }
        *self.ciphertext.borrow_mut() = ciphertext;
        Ok(())
    }
}

/// Moves the session's decrypted bytes to `out`; returns whether the client sent close_notify.
fn drain_plaintext(tls: &mut rustls::ServerConnection, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    loop {
        match tls.reader().read(&mut buf) {
            Ok(0) => return Ok(true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking send. `MSG_NOSIGNAL`: a peer that vanished must give EPIPE, not a SIGPIPE
/// that kills a process which did not ignore it.
fn send_dontwait(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for reads of `bytes.len()` bytes for the duration of the call, and
    // `fd` is open for as long as the stream that owns it, which the caller borrows.
    let sent = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}
