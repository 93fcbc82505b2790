//! One RTSP connection: its reading loop, its writer task, and the public [`ServerConn`] handle.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use glommio::net::TcpStream;

use super::core::CoreState;
use super::handler::Handler;
use super::requests::{handle_frame, handle_request, Next};
use super::signal::CloseSignal;
use crate::fanout::outbox::Outbox;
use crate::proto::rtsp::{Decoder, Limits, Message};
use crate::runtime::tcp::{drain_outbox, split, TcpReadHalf};

/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 * 1024;

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloseReason {
    /// The client closed its side.
    #[error("closed by the client")]
    ClientClosed,
    /// The server is shutting down, or the application closed the connection.
    #[error("closed by the server")]
    ServerClosed,
    /// Nothing arrived for the idle (or, for a TCP publisher, read) timeout.
    #[error("timed out after {0:?} without data")]
    Timeout(Duration),
    /// A write could not complete within the write timeout: the client stopped reading.
    #[error("write timed out or failed: {0}")]
    WriteFailed(String),
    /// The client broke the protocol (malformed or oversized message, a response, a frame out of
    /// place, a missing CSeq, ...); the text says what.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The client sent wrong credentials.
    #[error("authentication failed")]
    AuthFailed,
    /// A socket error.
    #[error("I/O error: {0}")]
    Io(String),
}

/// State of one connection shared by its tasks, its sessions and the core.
pub(crate) struct ConnShared {
    pub(crate) id: u64,
    pub(crate) remote_addr: SocketAddr,
    pub(crate) local_addr: SocketAddr,
    pub(crate) outbox: Rc<Outbox>,
    pub(crate) closing: CloseSignal,
    /// Set when a request closes the connection (after its response is written).
    pub(crate) close_reason: RefCell<Option<CloseReason>>,
    /// Random per connection; Digest challenges use it.
    pub(crate) nonce: String,
    /// The server's enabled auth methods (a copy, so verification needs no context).
    pub(crate) auth_methods: Vec<crate::proto::auth::AuthMethod>,
    /// The user whose credentials were verified on this connection, if any.
    pub(crate) user: RefCell<Option<String>>,
    /// The TCP session bound to this connection (at most one streams over it).
    pub(crate) tcp_session: RefCell<Option<String>>,
    pub(crate) last_request: Cell<Instant>,
}

impl ConnShared {
    /// Asks the connection to close; its tasks notice at their next await.
    pub(crate) fn close(&self) {
        self.close_with(CloseReason::ServerClosed);
    }

    /// Closes with a specific reason (the first reason given wins).
    pub(crate) fn close_with(&self, reason: CloseReason) {
        self.close_reason.borrow_mut().get_or_insert(reason);
        self.closing.set();
    }
}

/// A connection, as the [`Handler`] sees it. Cheap to clone; only valid on its own core.
#[derive(Clone)]
pub struct ServerConn {
    pub(crate) shared: Rc<ConnShared>,
}

impl fmt::Debug for ServerConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConn")
            .field("id", &self.shared.id)
            .field("remote_addr", &self.shared.remote_addr)
            .finish_non_exhaustive()
    }
}

impl ServerConn {
    /// An id unique among this server's connections.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The client's address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.shared.remote_addr
    }

    /// The server address the client connected to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// The user authenticated on this connection by `verify_credentials`, if any.
    pub fn user(&self) -> Option<String> {
        self.shared.user.borrow().clone()
    }

    /// Closes the connection (and the TCP session it carries).
    pub fn close(&self) {
        self.shared.close();
    }
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve_connection<H: Handler>(state: Rc<CoreState<H>>, stream: TcpStream) {
    let (remote_addr, local_addr) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(r), Ok(l)) => (r, l),
        (r, l) => {
            tracing::debug!(remote = ?r.err(), local = ?l.err(), "accepted connection has no address; dropping it");
            return;
        }
    };
    let config = state.context.config();
    let outbox = Rc::new(Outbox::new(config.write_queue_size));
    let shared = Rc::new(ConnShared {
        id: state.next_conn_id(),
        remote_addr,
        local_addr,
        outbox: outbox.clone(),
        closing: CloseSignal::default(),
        close_reason: RefCell::new(None),
        nonce: super::random_hex(16),
        auth_methods: config.auth_methods.clone(),
        user: RefCell::new(None),
        tcp_session: RefCell::new(None),
        last_request: Cell::new(Instant::now()),
    });
    let conn = ServerConn { shared: shared.clone() };
    state.conns.borrow_mut().insert(shared.id, shared.clone());
    tracing::debug!(conn = shared.id, remote = %remote_addr, "connection opened");
    state.handler.on_conn_open(&conn);

    let (read, write) = split(stream);
    let write_timeout = config.write_timeout;
    let writer = glommio::spawn_local({
        let shared = shared.clone();
        async move {
            if let Err(e) = drain_outbox(&shared.outbox, &write, write_timeout).await {
                shared.close_with(CloseReason::WriteFailed(e.to_string()));
            }
            write.shutdown().await;
        }
    });

    let ended = futures_lite::future::or(read_loop(&state, &conn, &read), async {
        shared.closing.closed().await;
        None
    })
    .await;
    if let Some(reason) = ended {
        shared.close_with(reason);
    }
    // Let queued responses (such as a final 400) reach the client, within the write timeout.
    outbox.close();
    let flushed = futures_lite::future::or(
        async {
            writer.await;
            true
        },
        async {
            glommio::timer::sleep(write_timeout).await;
            false
        },
    )
    .await;
    if !flushed {
        tracing::debug!(conn = shared.id, "dropping unflushed output at close");
    }
    state.sessions.connection_closed(&state, &shared);
    state.conns.borrow_mut().remove(&shared.id);
    let reason = shared
        .close_reason
        .borrow()
        .clone()
        .unwrap_or(CloseReason::ServerClosed);
    tracing::debug!(conn = shared.id, remote = %remote_addr, %reason, "connection closed");
    state.handler.on_conn_close(&conn, &reason);
}

/// Reads and handles messages until the connection must close; returns why.
async fn read_loop<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, read: &TcpReadHalf) -> Option<CloseReason> {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Request(request))) => {
                    conn.shared.last_request.set(Instant::now());
                    if handle_request(state, conn, request).await == Next::Close {
                        return None;
                    }
                }
                Ok(Some(Message::Frame(frame))) => {
                    if handle_frame(state, conn, frame) == Next::Close {
                        return None;
                    }
                }
                Ok(Some(Message::Response(_))) => {
                    return Some(CloseReason::Protocol("the client sent a response".into()));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(conn = conn.id(), remote = %conn.remote_addr(), error = %e, "malformed RTSP input");
                    return Some(CloseReason::Protocol(e.to_string()));
                }
            }
        }
        let timeout = super::requests::read_timeout(state, conn);
        let n = match timeout {
            Some(t) => {
                let read = read.read(&mut chunk);
                let expire = async {
                    glommio::timer::sleep(t).await;
                    Err(std::io::ErrorKind::TimedOut.into())
                };
                futures_lite::future::or(read, expire).await
            }
            None => read.read(&mut chunk).await,
        };
        match n {
            Ok(0) => return Some(CloseReason::ClientClosed),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                return Some(CloseReason::Timeout(timeout.unwrap_or_default()))
            }
            Err(e) => return Some(CloseReason::Io(e.to_string())),
        }
    }
}
