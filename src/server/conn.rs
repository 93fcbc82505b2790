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
use super::metrics::ConnectionGauge;
use super::requests::{handle_frame, handle_request, Next};
use super::signal::CloseSignal;
use crate::fanout::outbox::Outbox;
use crate::proto::rtsp::{Decoder, Limits, Message};
use crate::runtime::tcp::{drain_outbox, split, TcpReadHalf, TcpWriteHalf};

/// A connection whose reads bring interleaved frames this often keeps its read buffer between
/// reads (a publisher: no allocation per packet); any other connection lets it go once everything
/// read was handled, so an idle reader holds no read buffer at all.
const KEEP_READ_BUFFER_WITHIN: Duration = Duration::from_secs(1);

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
    /// The connection moved to another core, which owns the session its request named; the
    /// handler of that core sees it open again.
    #[error("moved to core {0}, which owns its session")]
    MovedToCore(usize),
}

/// A connection arriving from another core: what it had buffered and the request to handle first.
pub(crate) struct Arrival {
    pub(crate) buffered: BytesMut,
    pub(crate) request: crate::proto::rtsp::Request,
    pub(crate) nonce: String,
    pub(crate) user: Option<String>,
}

/// How a connection's reading loop ended.
enum LoopEnd {
    /// The connection closes, for this reason if one is given.
    Close(Option<CloseReason>),
    /// The connection moves to `core`, which owns the session `request` names.
    Move {
        core: usize,
        request: crate::proto::rtsp::Request,
        buffered: BytesMut,
    },
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
    /// When bytes last arrived, for the watchdog's read and idle timeouts.
    pub(crate) last_read: Cell<Instant>,
    /// Set while the connection moves to another core: its socket must not be shut down.
    pub(crate) moving: Cell<bool>,
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

/// A connection's client and server addresses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnAddrs {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
}

/// Serves one accepted connection until it closes. `addrs` overrides the stream's own addresses:
/// an RTSPS connection is served on one end of a local socket pair, and a moved connection keeps
/// the addresses it had.
pub(crate) async fn serve_connection<H: Handler>(
    state: Rc<CoreState<H>>,
    stream: TcpStream,
    arrival: Option<Box<Arrival>>,
    addrs: Option<ConnAddrs>,
) {
    let (remote_addr, local_addr) = match addrs {
        Some(addrs) => (addrs.remote, addrs.local),
        None => match (stream.peer_addr(), stream.local_addr()) {
            (Ok(r), Ok(l)) => (r, l),
            (r, l) => {
                tracing::debug!(remote = ?r.err(), local = ?l.err(), "accepted connection has no address; dropping it");
                return;
            }
        },
    };
    // Counted open until this function returns; counted as accepted unless it moved from another core.
    let _gauge = ConnectionGauge::open(state.context.counters().clone(), state.core, arrival.is_none());
    let config = state.context.config();
    let data_plane_counters = state.context.counters().core(state.core).data_plane.clone();
    let outbox = Rc::new(Outbox::counted(config.write_queue_size, data_plane_counters));
    let shared = Rc::new(ConnShared {
        id: state.next_conn_id(),
        remote_addr,
        local_addr,
        outbox: outbox.clone(),
        closing: CloseSignal::default(),
        close_reason: RefCell::new(None),
        nonce: arrival
            .as_ref()
            .map_or_else(|| super::random_hex(16), |a| a.nonce.clone()),
        auth_methods: config.auth_methods.clone(),
        user: RefCell::new(arrival.as_ref().and_then(|a| a.user.clone())),
        tcp_session: RefCell::new(None),
        last_request: Cell::new(Instant::now()),
        last_read: Cell::new(Instant::now()),
        moving: Cell::new(false),
    });
    let conn = ServerConn { shared: shared.clone() };
    state.conns.borrow_mut().insert(shared.id, shared.clone());
    tracing::debug!(conn = shared.id, remote = %remote_addr, "connection opened");
    state.handler.on_conn_open(&conn);

    let (read, write) = split(stream);
    let write_timeout = config.write_timeout;
    let Some(writer) = start_writer(&state, &shared, write, write_timeout) else {
        shared.close_with(CloseReason::Io("cannot start the connection's writer".to_owned()));
        return forget_connection(&state, &shared, &conn);
    };
    // Awaited where it is made: a future kept in a variable of this function would take room in
    // this connection's task for as long as the connection lives, even once moved.
    let moving = match read_until_closed(&state, &conn, &read, arrival).await {
        LoopEnd::Close(Some(reason)) => {
            shared.close_with(reason);
            None
        }
        LoopEnd::Close(None) => None,
        LoopEnd::Move {
            core,
            request,
            buffered,
        } => match read.try_clone_fd() {
            Ok(fd) => {
                shared.moving.set(true);
                shared.close_with(CloseReason::MovedToCore(core));
                let moved = Box::new(super::migrate::MovingConn {
                    fd,
                    addrs: ConnAddrs {
                        remote: remote_addr,
                        local: local_addr,
                    },
                    buffered,
                    request,
                    nonce: shared.nonce.clone(),
                    user: shared.user.borrow().clone(),
                });
                Some((core, moved))
            }
            Err(e) => {
                shared.close_with(CloseReason::Io(e.to_string()));
                None
            }
        },
    };
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
    if let Some((core, conn)) = moving {
        // Earlier responses are flushed: the other core may write now.
        if state.context.sessions().send(core, conn).is_err() {
            tracing::warn!(
                conn = shared.id,
                core,
                "the owning core's mailbox is full; closing the connection"
            );
        }
    }
    forget_connection(&state, &shared, &conn);
}

/// Ends a connection's life on this core: its sessions learn it closed, the core forgets it, and
/// the handler hears why.
fn forget_connection<H: Handler>(state: &Rc<CoreState<H>>, shared: &Rc<ConnShared>, conn: &ServerConn) {
    state.sessions.connection_closed(state, shared);
    state.conns.borrow_mut().remove(&shared.id);
    let reason = shared
        .close_reason
        .borrow()
        .clone()
        .unwrap_or(CloseReason::ServerClosed);
    tracing::debug!(conn = shared.id, remote = %shared.remote_addr, %reason, "connection closed");
    state.handler.on_conn_close(conn, &reason);
}

/// Starts the task that writes the connection's outbox to its socket, in the data-plane queue
/// beside the fan-out that feeds it; `None` (and a log line) if it cannot start.
fn start_writer<H: Handler>(
    state: &CoreState<H>,
    shared: &Rc<ConnShared>,
    write: TcpWriteHalf,
    write_timeout: Duration,
) -> Option<glommio::Task<()>> {
    let writer_shared = shared.clone();
    let writer = async move {
        if let Err(e) = drain_outbox(&writer_shared.outbox, &write, write_timeout).await {
            writer_shared.close_with(CloseReason::WriteFailed(e.to_string()));
        }
        if !writer_shared.moving.get() {
            write.shutdown().await;
        }
    };
    match glommio::spawn_local_into(writer, state.data_plane) {
        Ok(task) => Some(task),
        Err(e) => {
            tracing::error!(conn = shared.id, error = %e, "cannot start the connection's writer");
            None
        }
    }
}

/// Runs the reading loop until it ends, the watchdog times the connection out, or something
/// closes it.
async fn read_until_closed<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    read: &TcpReadHalf,
    arrival: Option<Box<Arrival>>,
) -> LoopEnd {
    futures_lite::future::or(
        futures_lite::future::or(read_loop(state, conn, read, arrival), async {
            watchdog(state, conn).await;
            LoopEnd::Close(None)
        }),
        async {
            conn.shared.closing.closed().await;
            LoopEnd::Close(None)
        },
    )
    .await
}

/// Reads and handles messages until the connection must close (or move to another core).
async fn read_loop<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    read: &TcpReadHalf,
    arrival: Option<Box<Arrival>>,
) -> LoopEnd {
    let mut decoder = Decoder::new(Limits::default());
    // Allocated when bytes arrive (the socket is read through a buffer its thread shares), and
    // released again when they are all handled: see `KEEP_READ_BUFFER_WITHIN`.
    let mut buf = BytesMut::new();
    if let Some(arrival) = arrival {
        let Arrival { buffered, request, .. } = *arrival;
        buf = buffered;
        conn.shared.last_request.set(Instant::now());
        if Box::pin(handle_request(state, conn, request)).await == Next::Close {
            return LoopEnd::Close(None);
        }
    }
    // When the previous read came, and whether the bytes read since brought a frame.
    let mut previous_read = Instant::now();
    let mut frames_read = false;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Message::Request(request))) => {
                    if let Some(core) = owner_elsewhere(state, conn, &request) {
                        return LoopEnd::Move {
                            core,
                            request,
                            buffered: buf,
                        };
                    }
                    conn.shared.last_request.set(Instant::now());
                    // Boxed: the request's future (the handler's included) is large, and inline it
                    // would make every connection's task that large for as long as it lives.
                    if Box::pin(handle_request(state, conn, request)).await == Next::Close {
                        return LoopEnd::Close(None);
                    }
                }
                Ok(Some(Message::Frame(frame))) => {
                    frames_read = true;
                    if handle_frame(state, conn, frame) == Next::Close {
                        return LoopEnd::Close(None);
                    }
                }
                Ok(Some(Message::Response(_))) => {
                    return LoopEnd::Close(Some(CloseReason::Protocol("the client sent a response".into())));
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::info!(conn = conn.id(), remote = %conn.remote_addr(), error = %e, "malformed RTSP input");
                    return LoopEnd::Close(Some(CloseReason::Protocol(e.to_string())));
                }
            }
        }
        let now = Instant::now();
        let streaming = frames_read && now.duration_since(previous_read) < KEEP_READ_BUFFER_WITHIN;
        if buf.is_empty() && !streaming && buf.capacity() > 0 {
            buf = BytesMut::new();
        }
        frames_read = false;
        previous_read = now;
        // No timer per read (it would allocate for every read of a publisher's socket): the
        // connection's watchdog enforces the read and idle timeouts.
        let n = read.read_into(&mut buf).await;
        conn.shared.last_read.set(Instant::now());
        let reason = match n {
            Ok(0) => CloseReason::ClientClosed,
            Ok(_) => continue,
            Err(e) => CloseReason::Io(e.to_string()),
        };
        return LoopEnd::Close(Some(reason));
    }
}

/// Closes the connection when nothing arrived for its current timeout (none while it carries a
/// TCP reader, the read timeout for a TCP publisher, the idle timeout otherwise). One timer per
/// timeout period, not per read.
async fn watchdog<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn) {
    loop {
        let wait = match super::requests::read_timeout(state, conn) {
            Some(timeout) => {
                let silent = conn.shared.last_read.get().elapsed();
                if silent >= timeout {
                    conn.shared.close_with(CloseReason::Timeout(timeout));
                    return;
                }
                timeout - silent
            }
            // Readers need send nothing; look again in a while in case the session changes.
            None => Duration::from_secs(1),
        };
        glommio::timer::sleep(wait).await;
    }
}

/// The other core that owns the session a request names, when this connection should move there:
/// it carries no TCP session of its own here, and the session is not on this core.
fn owner_elsewhere<H>(state: &CoreState<H>, conn: &ServerConn, request: &crate::proto::rtsp::Request) -> Option<usize> {
    use crate::proto::headers::{SessionHeader, TypedHeader};
    let id = SessionHeader::parse(request.headers.get("Session")?).ok()?.id;
    if conn.shared.tcp_session.borrow().is_some() || state.sessions.get(&id).is_some() {
        return None;
    }
    state.context.sessions().owner(&id).filter(|core| *core != state.core)
}
