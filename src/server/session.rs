//! Server-side RTSP sessions: the public [`ServerSession`] handle and each core's registry.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::rc::{Rc, Weak};

use super::conn::ConnShared;
use super::core::CoreState;
use super::handler::Handler;
use super::metrics::SessionGauge;
use super::stream::ServerStream;
use crate::fanout::core::{Reader, ReaderId};
use crate::proto::sdp::SessionDescription;
use crate::session::{Liveness, SessionState, TransportKind};

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionCloseReason {
    /// The client sent TEARDOWN.
    #[error("torn down by the client")]
    Teardown,
    /// The TCP connection carrying the session closed.
    #[error("its connection closed")]
    ConnectionClosed,
    /// No sign of life for the idle or read timeout.
    #[error("timed out")]
    Timeout,
    /// The stream it read was closed.
    #[error("its stream was closed")]
    StreamClosed,
    /// The server is shutting down.
    #[error("the server closed")]
    ServerClosed,
}

/// A packet a publisher sent, as delivered to [`ServerSession::on_packet`].
#[derive(Debug, Clone, Copy)]
pub struct PublishedPacket<'a> {
    /// Index of the media in the announced description.
    pub track: usize,
    /// RTCP rather than RTP.
    pub is_rtcp: bool,
    /// The packet, without any interleaving header.
    pub data: &'a [u8],
}

type PacketCallback = Box<dyn FnMut(PublishedPacket<'_>)>;

/// One media of a session that was set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetupMedia {
    pub(crate) track: usize,
    /// Interleaved RTP channel (TCP sessions).
    pub(crate) rtp_channel: u8,
    /// The client's (RTP, RTCP) ports (UDP sessions).
    pub(crate) client_ports: Option<(u16, u16)>,
    /// The group this media is sent to (multicast sessions).
    pub(crate) multicast_group: Option<std::net::Ipv4Addr>,
}

pub(crate) struct SessionShared {
    pub(crate) id: String,
    pub(crate) creator_ip: IpAddr,
    /// Read freely; changed through [`SessionShared::set_state`], which keeps the gauge right.
    pub(crate) state: Cell<SessionState>,
    pub(crate) path: RefCell<String>,
    pub(crate) query: RefCell<Option<String>>,
    /// Read freely; changed through [`SessionShared::set_transport`].
    pub(crate) transport: Cell<Option<TransportKind>>,
    /// Counts the session in its core's sessions-by-state-and-transport gauge.
    gauge: SessionGauge,
    /// The connection a TCP session is bound to.
    pub(crate) conn: RefCell<Weak<ConnShared>>,
    pub(crate) medias: RefCell<Vec<SetupMedia>>,
    pub(crate) announced: RefCell<Option<SessionDescription>>,
    pub(crate) stream: RefCell<Option<ServerStream>>,
    pub(crate) reader: RefCell<Option<(ReaderId, Reader)>>,
    /// Reader losses already reported to the handler.
    pub(crate) reported_lost: Cell<u64>,
    /// Per-track sequence tracking of a publisher's RTP, for loss reports.
    pub(crate) sequences: RefCell<Vec<crate::proto::rtp::SequenceTracker>>,
    /// Per-track receive state of a UDP publisher (reordering, receiver reports).
    pub(crate) receivers: RefCell<Vec<super::receiver::TrackReceiver>>,
    /// The SSRC the server uses in RTCP it sends for this session.
    pub(crate) server_ssrc: u32,
    /// When the next receiver report to a UDP publisher is due.
    pub(crate) next_receiver_report: Cell<Option<std::time::Instant>>,
    pub(crate) liveness: Cell<Liveness>,
    pub(crate) on_packet: RefCell<Option<PacketCallback>>,
}

impl SessionShared {
    /// Moves the session to `state`.
    pub(crate) fn set_state(&self, state: SessionState) {
        self.state.set(state);
        self.gauge.set(state, self.transport.get());
    }

    /// Records how the session's media travels.
    pub(crate) fn set_transport(&self, transport: TransportKind) {
        self.transport.set(Some(transport));
        self.gauge.set(self.state.get(), Some(transport));
    }
}

/// A session, as the handler sees it. Cheap to clone; only valid on its own core.
#[derive(Clone)]
pub struct ServerSession {
    pub(crate) shared: Rc<SessionShared>,
}

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession")
            .field("id", &self.shared.id)
            .field("state", &self.shared.state.get())
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// The session id sent in `Session` headers.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// Where the session stands.
    pub fn state(&self) -> SessionState {
        self.shared.state.get()
    }

    /// The path the session reads or publishes.
    pub fn path(&self) -> String {
        self.shared.path.borrow().clone()
    }

    /// How its media travels, once a SETUP succeeded.
    pub fn transport(&self) -> Option<TransportKind> {
        self.shared.transport.get()
    }

    /// The description a publisher announced.
    pub fn announced_description(&self) -> Option<SessionDescription> {
        self.shared.announced.borrow().clone()
    }

    /// The stream a reader was set up on.
    pub fn stream(&self) -> Option<ServerStream> {
        self.shared.stream.borrow().clone()
    }

    /// Sets the function that receives every packet a publisher sends (after RECORD).
    /// The relay case is one line: `session.on_packet(move |p| { let _ = stream.write_packet(p.track, p.is_rtcp, p.data); })`.
    pub fn on_packet(&self, callback: impl FnMut(PublishedPacket<'_>) + 'static) {
        *self.shared.on_packet.borrow_mut() = Some(Box::new(callback));
    }

    /// Packets a reader lost so far (queue full or behind the ring).
    pub fn packets_lost(&self) -> u64 {
        self.shared.reader.borrow().as_ref().map_or(0, |(_, r)| r.lost())
    }

    /// Closes the session. One carried by its TCP connection closes with that connection; a UDP or
    /// multicast session at the core's next housekeeping pass (within about a second), reported as
    /// [`SessionCloseReason::Timeout`].
    pub fn close(&self) {
        if let Some(conn) = self.shared.conn.borrow().upgrade() {
            conn.close();
        }
        // A zero timeout stays expired whatever the client sends next.
        let mut liveness = self.shared.liveness.get();
        liveness.set_timeout(std::time::Duration::ZERO);
        self.shared.liveness.set(liveness);
    }
}

/// The sessions owned by one core.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    sessions: RefCell<HashMap<String, Rc<SessionShared>>>,
}

impl SessionRegistry {
    /// Creates a session in the Initial state, counted in core `core`'s block of `counters` until it closes.
    pub(crate) fn create(
        &self,
        conn: &Rc<ConnShared>,
        liveness: Liveness,
        counters: std::sync::Arc<super::metrics::ServerCounters>,
        core: usize,
    ) -> ServerSession {
        let creator_ip = conn.remote_addr.ip();
        let id = loop {
            let id = super::random_hex(8);
            if !self.sessions.borrow().contains_key(&id) {
                break id;
            }
        };
        let shared = Rc::new(SessionShared {
            id: id.clone(),
            creator_ip,
            state: Cell::new(SessionState::Initial),
            path: RefCell::new(String::new()),
            query: RefCell::new(None),
            transport: Cell::new(None),
            gauge: SessionGauge::open(counters, core, SessionState::Initial),
            conn: RefCell::new(Rc::downgrade(conn)),
            medias: RefCell::new(Vec::new()),
            announced: RefCell::new(None),
            stream: RefCell::new(None),
            reader: RefCell::new(None),
            reported_lost: Cell::new(0),
            sequences: RefCell::new(Vec::new()),
            receivers: RefCell::new(Vec::new()),
            next_receiver_report: Cell::new(None),
            server_ssrc: u32::from_str_radix(&super::random_hex(4), 16).unwrap_or(0x5348_4344),
            liveness: Cell::new(liveness),
            on_packet: RefCell::new(None),
        });
        self.sessions.borrow_mut().insert(id, shared.clone());
        ServerSession { shared }
    }

    /// Looks a session up by id.
    pub(crate) fn get(&self, id: &str) -> Option<ServerSession> {
        self.sessions
            .borrow()
            .get(id)
            .map(|shared| ServerSession { shared: shared.clone() })
    }

    /// Ends a session: stops its reader, forgets it, tells the handler.
    pub(crate) fn close<H: Handler>(&self, state: &CoreState<H>, session: &ServerSession, reason: SessionCloseReason) {
        if self.sessions.borrow_mut().remove(&session.shared.id).is_none() {
            return;
        }
        state.context.sessions().remove(&session.shared.id);
        stop_reading(state, session);
        if let Some(udp) = state.udp.as_ref() {
            udp.forget_session(&session.shared.id);
        }
        leave_multicast(state, session);
        session.shared.gauge.release();
        session.shared.on_packet.borrow_mut().take();
        tracing::debug!(session = %session.shared.id, %reason, "session closed");
        state.handler.on_session_close(session, &reason);
    }

    /// Closes the sessions bound to a connection that closed. Every session is bound to its creating
    /// connection until a UDP SETUP unbinds it: UDP sessions outlive their control connection.
    pub(crate) fn connection_closed<H: Handler>(&self, state: &CoreState<H>, conn: &Rc<ConnShared>) {
        let bound: Vec<ServerSession> = self
            .sessions
            .borrow()
            .values()
            .filter(|s| s.conn.borrow().upgrade().is_some_and(|c| Rc::ptr_eq(&c, conn)))
            .map(|shared| ServerSession { shared: shared.clone() })
            .collect();
        for session in bound {
            self.close(state, &session, SessionCloseReason::ConnectionClosed);
        }
    }

    /// Reports packets each local reader lost since the last call: the stream-write-error and
    /// packets-lost events. Called by the core's housekeeping, not per packet.
    pub(crate) fn report_reader_losses<H: Handler>(&self, handler: &H) {
        let sessions: Vec<ServerSession> = self
            .sessions
            .borrow()
            .values()
            .map(|shared| ServerSession { shared: shared.clone() })
            .collect();
        for session in sessions {
            let lost = session.packets_lost();
            let new = lost.saturating_sub(session.shared.reported_lost.get());
            if new > 0 {
                session.shared.reported_lost.set(lost);
                tracing::debug!(session = %session.shared.id, dropped = new, "reader fell behind");
                handler.on_packets_lost(&session, new);
                handler.on_stream_write_error(&session, &ReaderLagged { dropped: new });
            }
        }
    }

    /// Every session of this core.
    pub(crate) fn all(&self) -> Vec<ServerSession> {
        self.sessions
            .borrow()
            .values()
            .map(|shared| ServerSession { shared: shared.clone() })
            .collect()
    }

    /// Closes sessions that showed no sign of life for their timeout. Sessions carried by a live
    /// TCP connection are left to the connection's own timeouts.
    pub(crate) fn close_expired<H: Handler>(&self, state: &CoreState<H>, now: std::time::Instant) {
        for session in self.all() {
            let carried_by_tcp =
                session.transport() == Some(TransportKind::Tcp) || session.shared.conn.borrow().upgrade().is_some();
            if !carried_by_tcp && session.shared.liveness.get().expired(now) {
                self.close(state, &session, SessionCloseReason::Timeout);
            }
        }
    }

    /// Closes every session (server shutdown).
    pub(crate) fn close_all<H: Handler>(&self, handler: &H, context: &super::ServerContext) {
        let all: Vec<Rc<SessionShared>> = self.sessions.borrow_mut().drain().map(|(_, s)| s).collect();
        for shared in all {
            context.sessions().remove(&shared.id);
            let session = ServerSession { shared };
            session.shared.gauge.release();
            session.shared.on_packet.borrow_mut().take();
            handler.on_session_close(&session, &SessionCloseReason::ServerClosed);
        }
    }
}

/// Packets were dropped for a reader that did not keep up (its write queue was full, or its
/// core fell behind the stream's ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("reader fell behind: {dropped} packets dropped")]
pub struct ReaderLagged {
    /// Packets dropped since the previous report.
    pub dropped: u64,
}

/// Releases the multicast groups a session's medias were counted in.
pub(crate) fn leave_multicast<H>(state: &CoreState<H>, session: &ServerSession) {
    let (Some(multicast), Some(stream)) = (state.context.multicast(), session.stream()) else {
        return;
    };
    for media in session.shared.medias.borrow_mut().iter_mut() {
        if media.multicast_group.take().is_some() {
            multicast.leave(&stream, media.track);
        }
    }
}

/// Removes a session's reader from the core's fan-out (PAUSE, TEARDOWN, close).
pub(crate) fn stop_reading<H: Handler>(state: &CoreState<H>, session: &ServerSession) {
    if let Some((id, _)) = session.shared.reader.borrow_mut().take() {
        state.fanout.remove_reader(id);
    }
}
