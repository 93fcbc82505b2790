//! Handling one request on a connection: the rules of DESIGN.md §2, then the handler.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::conn::{CloseReason, ServerConn};
use super::core::CoreState;
use super::handler::{Handler, RequestContext};
use super::session::{stop_reading, ServerSession, SessionCloseReason, SetupMedia};
use super::stream::ServerStream;
use super::transport::SetupTransport;
use std::net::SocketAddr;

use super::multicast::MULTICAST_TTL;
use super::udp::UdpClient;
use crate::fanout::core::{Reader, TcpReader, UdpReader};
use crate::proto::headers::{
    CSeq, ContentType, Delivery, Public, RtpInfo, RtpInfoEntry, SessionHeader, Transport, Transports, TypedHeader,
};
use crate::proto::rtp::SeqEvent;
use crate::proto::rtsp::{InterleavedFrame, Request, Response, StatusCode};
use crate::proto::sdp::{self, SessionDescription};
use crate::proto::url::{path_and_control, PathParts};
use crate::proto::Method;
use crate::session::transport::{negotiate, Chosen, NegotiateError, TransportSupport};
use crate::session::{Liveness, SessionState, TransportKind};

/// The value of the `Server` header.
const SERVER_HEADER: &str = concat!("shardcast/", env!("CARGO_PKG_VERSION"));

/// Whether the connection goes on after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Continue,
    Close,
}

/// What to do once the response is queued.
enum After {
    Nothing,
    /// Start sending the session's stream (PLAY): only after the response, so no frame precedes it.
    StartReading(ServerSession),
    /// Close the connection (after the response is written).
    Close(CloseReason),
}

struct Reply {
    response: Response,
    after: After,
}

impl Reply {
    fn new(response: Response) -> Reply {
        Reply {
            response,
            after: After::Nothing,
        }
    }

    fn status(status: StatusCode) -> Reply {
        Reply::new(Response::new(status))
    }

    fn close(status: StatusCode, why: &str) -> Reply {
        Reply {
            response: Response::new(status),
            after: After::Close(CloseReason::Protocol(why.to_owned())),
        }
    }
}

/// How long the connection may stay silent: none while it carries a TCP reader (readers need not
/// send anything), the read timeout for a TCP publisher, the idle timeout otherwise.
pub(crate) fn read_timeout<H>(state: &CoreState<H>, conn: &ServerConn) -> Option<Duration> {
    let config = state.context.config();
    // Borrowed, not cloned: this runs for every read of a publisher's socket.
    let session = conn
        .shared
        .tcp_session
        .borrow()
        .as_deref()
        .and_then(|id| state.sessions.get(id));
    match session.map(|s| s.state()) {
        Some(SessionState::Play) => None,
        Some(SessionState::Record) => Some(config.read_timeout),
        _ => Some(config.idle_timeout),
    }
}

/// Handles one request and queues its response; returns whether the connection goes on.
pub(crate) async fn handle_request<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: Request) -> Next {
    state.handler.on_request(conn, &request);
    let cseq = match request.headers.count("CSeq") {
        1 => request.headers.get("CSeq").and_then(|v| CSeq::parse(v).ok()),
        _ => None,
    };
    let Some(cseq) = cseq else {
        let reply = Reply::close(StatusCode::BAD_REQUEST, "missing, invalid or duplicate CSeq");
        return finish(state, conn, &request, None, reply).await;
    };
    let reply = if request.url == "*" && request.method != Method::Options {
        Reply::close(StatusCode::BAD_REQUEST, "`*` URL on a method other than OPTIONS")
    } else {
        dispatch(state, conn, &request).await
    };
    finish(state, conn, &request, Some(cseq), reply).await
}

async fn finish<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    request: &Request,
    cseq: Option<CSeq>,
    mut reply: Reply,
) -> Next {
    let response = &mut reply.response;
    if let Some(cseq) = cseq {
        response.headers.set("CSeq", &cseq.encode());
    }
    response.headers.set("Server", SERVER_HEADER);
    if response.status == StatusCode::UNAUTHORIZED {
        super::auth::add_challenges(state.context.config(), &conn.shared.nonce, response);
        if request.headers.get("Authorization").is_some() {
            // Wrong credentials: slow down guessing, then close (DESIGN.md §2).
            glommio::timer::sleep(super::auth::failure_delay()).await;
            reply.after = After::Close(CloseReason::AuthFailed);
        }
    }
    state.handler.on_response(conn, &reply.response);
    let mut out = BytesMut::new();
    reply.response.encode(&mut out);
    if conn.shared.outbox.push_message(out.freeze()).is_err() {
        return Next::Close;
    }
    match reply.after {
        After::Nothing => Next::Continue,
        After::StartReading(session) => {
            start_reading(state, conn, &session);
            Next::Continue
        }
        After::Close(reason) => {
            conn.shared.close_with(reason);
            Next::Close
        }
    }
}

async fn dispatch<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let supported = |m: &Method| state.handler.supported_methods().contains(m);
    match &request.method {
        Method::Options => options(state, conn, request),
        Method::Describe if supported(&Method::Describe) => describe(state, conn, request).await,
        Method::Announce if supported(&Method::Announce) => announce(state, conn, request).await,
        Method::Setup if supported(&Method::Setup) => setup(state, conn, request).await,
        Method::Play if supported(&Method::Play) => play(state, conn, request).await,
        Method::Record if supported(&Method::Record) => record(state, conn, request).await,
        Method::Pause if supported(&Method::Pause) => pause(state, conn, request).await,
        Method::Teardown => teardown(state, conn, request),
        Method::GetParameter => get_parameter(state, conn, request).await,
        Method::SetParameter if supported(&Method::SetParameter) => {
            with_optional_session(state, conn, request, Parameter::Set).await
        }
        _ => Reply::status(StatusCode::NOT_IMPLEMENTED),
    }
}

fn options<H: Handler>(state: &CoreState<H>, conn: &ServerConn, request: &Request) -> Reply {
    if request.headers.get("Session").is_some() {
        // Some clients keep sessions alive with OPTIONS: refresh it (an unknown one is not an error
        // for OPTIONS, which needs no session).
        let _ = existing_session(state, conn, request);
    }
    let handled = state.handler.supported_methods();
    let methods: Vec<Method> = Method::STANDARD
        .iter()
        .filter(|m| matches!(m, Method::Options | Method::GetParameter | Method::Teardown) || handled.contains(m))
        .cloned()
        .collect();
    let mut response = Response::new(StatusCode::OK);
    response.headers.set(Public::NAME, &Public(methods).encode());
    Reply::new(response)
}

fn parse_path(request: &Request) -> Result<PathParts, Reply> {
    path_and_control(&request.url).map_err(|_| Reply::status(StatusCode::BAD_REQUEST))
}

async fn describe<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let parts = match parse_path(request) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let ctx = RequestContext {
        conn,
        session: None,
        request,
        path: &parts.path,
        query: parts.query.as_deref(),
    };
    let (mut response, stream) = state.handler.on_describe(&ctx).await;
    if response.status == StatusCode::OK {
        let Some(stream) = stream else {
            tracing::error!(path = %parts.path, "DESCRIBE handler answered 200 without a stream");
            return Reply::status(StatusCode::INTERNAL_SERVER_ERROR);
        };
        let sdp = sdp::for_describe(&stream.description(), conn.local_addr().ip());
        response.body = Bytes::from(sdp.to_string());
        response.headers.set("Content-Type", "application/sdp");
        let base = request.url.trim_end_matches('/');
        response.headers.set("Content-Base", &format!("{base}/"));
    }
    Reply::new(response)
}

async fn announce<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let parts = match parse_path(request) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let content_type_ok = request.headers.count("Content-Type") == 1
        && request
            .headers
            .get("Content-Type")
            .and_then(|v| ContentType::parse(v).ok())
            .is_some_and(|c| c.is_sdp());
    if !content_type_ok {
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    let description = match sdp::parse(&request.body) {
        Ok(d) if !d.medias.is_empty() && d.medias.len() <= 127 => d,
        Ok(_) => return Reply::status(StatusCode::BAD_REQUEST),
        Err(e) => {
            tracing::info!(conn = conn.id(), error = %e, "ANNOUNCE with an invalid SDP");
            return Reply::status(StatusCode::BAD_REQUEST);
        }
    };
    if request.headers.get("Session").is_some() {
        // ANNOUNCE creates a session; an existing one cannot announce again.
        return Reply::status(StatusCode::METHOD_NOT_VALID_IN_THIS_STATE);
    }
    let session = new_session(state, conn);
    let ctx = RequestContext {
        conn,
        session: Some(&session),
        request,
        path: &parts.path,
        query: parts.query.as_deref(),
    };
    let mut response = state.handler.on_announce(&ctx, &description).await;
    if response.status != StatusCode::OK {
        state.sessions.close(state, &session, SessionCloseReason::Teardown);
        return Reply::new(response);
    }
    session.shared.set_state(SessionState::PreRecord);
    *session.shared.path.borrow_mut() = parts.path;
    *session.shared.query.borrow_mut() = parts.query;
    *session.shared.announced.borrow_mut() = Some(description);
    set_session_header(state, &mut response, &session);
    Reply::new(response)
}

fn new_session<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn) -> ServerSession {
    let config = state.context.config();
    let session = state.sessions.create(
        &conn.shared,
        Liveness::new(Instant::now(), config.idle_timeout),
        state.context.counters().clone(),
        state.core,
    );
    state.context.sessions().insert(session.id(), state.core);
    state.handler.on_session_open(&session, conn);
    session
}

fn set_session_header<H>(state: &CoreState<H>, response: &mut Response, session: &ServerSession) {
    let header = SessionHeader {
        id: session.id().to_owned(),
        timeout: Some(state.context.config().session_timeout_secs() as u32),
    };
    response.headers.set(SessionHeader::NAME, &header.encode());
}

/// Finds the session named by the request: 454 when the header is missing (see
/// docs/decisions/0003-status-codes.md) or unknown, 400 when it belongs to another client or another
/// connection (TCP sessions are bound to theirs).
fn existing_session<H: Handler>(
    state: &CoreState<H>,
    conn: &ServerConn,
    request: &Request,
) -> Result<ServerSession, Reply> {
    let header = request
        .headers
        .get("Session")
        .and_then(|v| SessionHeader::parse(v).ok())
        .ok_or_else(|| Reply::status(StatusCode::SESSION_NOT_FOUND))?;
    let session = state
        .sessions
        .get(&header.id)
        .ok_or_else(|| Reply::status(StatusCode::SESSION_NOT_FOUND))?;
    check_owner(conn, &session)?;
    session.shared.liveness.set({
        let mut l = session.shared.liveness.get();
        l.touch(Instant::now());
        l
    });
    Ok(session)
}

fn check_owner(conn: &ServerConn, session: &ServerSession) -> Result<(), Reply> {
    if session.shared.creator_ip != conn.remote_addr().ip() {
        return Err(Reply::status(StatusCode::BAD_REQUEST));
    }
    let owner = session.shared.conn.borrow().upgrade();
    if let Some(owner) = owner {
        if !Rc::ptr_eq(&owner, &conn.shared) {
            return Err(Reply::status(StatusCode::BAD_REQUEST));
        }
    }
    Ok(())
}

async fn setup<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let parts = match parse_path(request) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let offers = match request.headers.get("Transport").map(Transports::parse) {
        Some(Ok(t)) if !t.0.is_empty() => t.0,
        _ => return Reply::status(StatusCode::BAD_REQUEST),
    };
    let (session, created) = if request.headers.get("Session").is_some() {
        match existing_session(state, conn, request) {
            Ok(s) => (s, false),
            Err(reply) => return reply,
        }
    } else {
        (new_session(state, conn), true)
    };
    let reply = setup_in_session(state, conn, request, &parts, &offers, &session).await;
    if created && reply.response.status != StatusCode::OK {
        state.sessions.close(state, &session, SessionCloseReason::Teardown);
    }
    reply
}

async fn setup_in_session<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    request: &Request,
    parts: &PathParts,
    offers: &[Transport],
    session: &ServerSession,
) -> Reply {
    let next_state = match session.state().setup() {
        Ok(s) => s,
        Err(_) => return Reply::status(StatusCode::METHOD_NOT_VALID_IN_THIS_STATE),
    };
    let recording = session.state() == SessionState::PreRecord;
    let config = state.context.config();
    let support = TransportSupport {
        udp: state.udp.is_some(),
        multicast: state.context.multicast().is_some(),
    };
    let used_channels: Vec<u8> = session
        .shared
        .medias
        .borrow()
        .iter()
        .filter(|m| m.client_ports.is_none())
        .flat_map(|m| [m.rtp_channel, m.rtp_channel.wrapping_add(1)])
        .collect();
    let (chosen, offer) = match negotiate(offers, support, recording, |c| used_channels.contains(&c)) {
        Ok(c) => c,
        Err(NegotiateError::Unsupported) => return Reply::status(StatusCode::UNSUPPORTED_TRANSPORT),
        Err(NegotiateError::Invalid(why)) => {
            tracing::debug!(conn = conn.id(), why, "SETUP refused");
            return Reply::status(StatusCode::BAD_REQUEST);
        }
    };
    let (kind, rtp_channel, client_ports) = match chosen {
        Chosen::Tcp { rtp_channel } => (TransportKind::Tcp, rtp_channel, None),
        Chosen::Udp { client_ports } => (TransportKind::Udp, 0, Some(client_ports)),
        Chosen::Multicast => (TransportKind::Multicast, 0, None),
    };
    if session.transport().is_some_and(|current| current != kind) {
        // One transport per session: medias cannot mix TCP and UDP.
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    // A TCP session is bound to this connection, and a connection carries one streaming session.
    if kind == TransportKind::Tcp {
        if let Some(other) = conn.shared.tcp_session.borrow().as_deref() {
            if other != session.id() {
                return Reply::status(StatusCode::BAD_REQUEST);
            }
        }
    }
    if !recording && !session.path().is_empty() && session.path() != parts.path {
        // All medias of a reader session come from one path.
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    let track = if recording {
        let announced = session.shared.announced.borrow();
        match announced.as_ref().and_then(|d| find_announced_track(d, request, parts)) {
            Some(t) => t,
            None => return Reply::status(StatusCode::BAD_REQUEST),
        }
    } else {
        match reader_track(parts) {
            Some(t) => t,
            None => return Reply::status(StatusCode::BAD_REQUEST),
        }
    };
    if session.shared.medias.borrow().iter().any(|m| m.track == track) {
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    if kind == TransportKind::Multicast && session.shared.medias.borrow().iter().any(|m| m.track == track) {
        return Reply::status(StatusCode::BAD_REQUEST);
    }
    if let Some(ports) = client_ports {
        if !recording && udp_destination_taken(state, conn, session, ports) {
            // Two readers on the same IP and ports would receive each other's packets.
            return Reply::status(StatusCode::BAD_REQUEST);
        }
    }
    let transport = SetupTransport {
        kind,
        track,
        interleaved: client_ports
            .is_none()
            .then_some((rtp_channel, rtp_channel.wrapping_add(1))),
        client_ports,
        record: recording,
    };
    let ctx = RequestContext {
        conn,
        session: Some(session),
        request,
        path: &parts.path,
        query: parts.query.as_deref(),
    };
    let (mut response, stream) = state.handler.on_setup(&ctx, &transport).await;
    if response.status != StatusCode::OK {
        return Reply::new(response);
    }
    if !recording {
        let Some(stream) = stream else {
            tracing::error!(path = %parts.path, "SETUP handler answered 200 to a reader without a stream");
            return Reply::status(StatusCode::INTERNAL_SERVER_ERROR);
        };
        if track >= stream.track_count() {
            return Reply::status(StatusCode::NOT_FOUND);
        }
        let current = session.shared.stream.borrow().clone();
        match current {
            Some(current) if !current.same_as(&stream) => return Reply::status(StatusCode::BAD_REQUEST),
            Some(_) => {}
            None => *session.shared.stream.borrow_mut() = Some(stream),
        }
        *session.shared.path.borrow_mut() = parts.path.clone();
        *session.shared.query.borrow_mut() = parts.query.clone();
    }
    let multicast_group = match (kind, state.context.multicast(), session.stream()) {
        (TransportKind::Multicast, Some(multicast), Some(stream)) => match multicast.join(&stream, track) {
            Ok(group) => {
                if let Some(udp) = state.udp.as_ref() {
                    // Its receiver reports to the group keep the session alive (known by IP).
                    let client = UdpClient {
                        session: session.id().to_owned(),
                        track,
                        is_rtcp: true,
                    };
                    udp.register(state.core, SocketAddr::new(conn.remote_addr().ip(), 0), client);
                }
                Some(group)
            }
            Err(e) => {
                tracing::warn!(error = %e, "multicast SETUP refused");
                return Reply::status(StatusCode::SERVICE_UNAVAILABLE);
            }
        },
        _ => None,
    };
    session.shared.medias.borrow_mut().push(SetupMedia {
        track,
        rtp_channel,
        client_ports,
        multicast_group,
    });
    session.shared.set_transport(kind);
    session.shared.set_state(next_state);
    let mut answer = offer.clone();
    match client_ports {
        None if kind == TransportKind::Multicast => {
            *session.shared.conn.borrow_mut() = std::rc::Weak::new();
            let ports = state.context.multicast().map(|m| m.ports);
            answer.lower = None;
            answer.delivery = Some(Delivery::Multicast);
            answer.destination = multicast_group.map(|g| g.to_string());
            answer.port = ports;
            answer.ttl = Some(MULTICAST_TTL);
            answer.interleaved = None;
            answer.client_port = None;
            answer.server_port = None;
        }
        None => {
            *conn.shared.tcp_session.borrow_mut() = Some(session.id().to_owned());
            answer.interleaved = Some((rtp_channel, rtp_channel.wrapping_add(1)));
            answer.client_port = None;
            answer.server_port = None;
        }
        Some(ports) => {
            // A UDP session outlives its control connection (DESIGN.md §2): unbind it.
            *session.shared.conn.borrow_mut() = std::rc::Weak::new();
            answer.delivery = Some(Delivery::Unicast);
            answer.interleaved = None;
            answer.client_port = Some(ports);
            answer.server_port = state.context.udp_server_ports();
        }
    }
    response.headers.set(Transport::NAME, &answer.encode());
    set_session_header(state, &mut response, session);
    let _ = config;
    Reply::new(response)
}

/// Whether another reader session, on any core, already receives at `ports` of this client's IP;
/// if not, the destination is now this session's.
fn udp_destination_taken<H>(
    state: &CoreState<H>,
    conn: &ServerConn,
    session: &ServerSession,
    ports: (u16, u16),
) -> bool {
    let destination = SocketAddr::new(conn.remote_addr().ip(), ports.0);
    state
        .udp
        .as_ref()
        .is_some_and(|udp| !udp.shared.claim_destination(destination, session.id()))
}

/// The track a reader's SETUP URL names: `trackID=N` (our DESCRIBE's controls), or track 0 when the
/// URL has no control (single-media streams set up on the base URL).
fn reader_track(parts: &PathParts) -> Option<usize> {
    match parts.control.as_deref() {
        None => Some(0),
        Some(control) => control.strip_prefix("trackID=")?.parse().ok(),
    }
}

/// The announced media a publisher's SETUP URL names, by its `a=control` (relative or absolute).
fn find_announced_track(description: &SessionDescription, request: &Request, parts: &PathParts) -> Option<usize> {
    let url = request
        .url
        .split('?')
        .next()
        .unwrap_or(&request.url)
        .trim_end_matches('/');
    description.medias.iter().position(|media| match media.control() {
        Some(control) if control.contains("://") => control.trim_end_matches('/') == url || control == request.url,
        Some(control) => parts.control.as_deref() == Some(control) || url.ends_with(&format!("/{control}")),
        None => description.medias.len() == 1,
    })
}

/// PLAY, RECORD and PAUSE: each moves an existing session to a new state if the handler agrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streaming {
    Play,
    Record,
    Pause,
}

/// Finds the request's session, checks that `method` is valid in its state, and asks the handler.
/// Returns the session, the state it moves to on success, and the handler's response.
async fn call_streaming<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    request: &Request,
    method: Streaming,
) -> Result<(ServerSession, SessionState, Response), Reply> {
    let session = existing_session(state, conn, request)?;
    let current = session.state();
    let next = match method {
        Streaming::Play => current.play(),
        Streaming::Record => current.record(),
        Streaming::Pause => current.pause(),
    }
    .map_err(|_| Reply::status(StatusCode::METHOD_NOT_VALID_IN_THIS_STATE))?;
    if method == Streaming::Record {
        let announced = session.shared.announced.borrow().as_ref().map_or(0, |d| d.medias.len());
        if session.shared.medias.borrow().len() != announced {
            // Every announced media must be set up before recording.
            return Err(Reply::status(StatusCode::METHOD_NOT_VALID_IN_THIS_STATE));
        }
    }
    let path = session.path();
    let query = session.shared.query.borrow().clone();
    let ctx = RequestContext {
        conn,
        session: Some(&session),
        request,
        path: &path,
        query: query.as_deref(),
    };
    let response = match method {
        Streaming::Play => state.handler.on_play(&ctx).await,
        Streaming::Record => state.handler.on_record(&ctx).await,
        Streaming::Pause => state.handler.on_pause(&ctx).await,
    };
    Ok((session, next, response))
}

async fn play<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let (session, next, mut response) = match call_streaming(state, conn, request, Streaming::Play).await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if response.status != StatusCode::OK {
        return Reply::new(response);
    }
    let already_playing = session.state() == SessionState::Play;
    session.shared.set_state(next);
    if let Some(stream) = session.stream() {
        let base = request.url.trim_end_matches('/');
        let now = Instant::now();
        let entries: Vec<RtpInfoEntry> = session
            .shared
            .medias
            .borrow()
            .iter()
            .filter_map(|m| {
                let (seq, rtptime) = stream.rtp_info(m.track, now)?;
                Some(RtpInfoEntry {
                    url: format!("{base}/trackID={}", m.track),
                    seq: Some(seq),
                    rtptime: Some(rtptime),
                })
            })
            .collect();
        if !entries.is_empty() {
            response.headers.set(RtpInfo::NAME, &RtpInfo(entries).encode());
        }
    }
    response.headers.set("Range", "npt=0.000-");
    set_session_header(state, &mut response, &session);
    Reply {
        response,
        after: if already_playing {
            After::Nothing
        } else {
            After::StartReading(session)
        },
    }
}

/// Adds a playing session to this core's fan-out: for TCP, frames start after the PLAY response.
fn start_reading<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, session: &ServerSession) {
    let Some(stream) = session.stream() else { return };
    if session.transport() == Some(TransportKind::Multicast) {
        return; // the stream itself sends to the group
    }
    let medias = session.shared.medias.borrow();
    if session.transport() == Some(TransportKind::Udp) {
        let ip = session.shared.creator_ip;
        let mut destinations = vec![None; stream.track_count()];
        for media in medias.iter() {
            if let (Some(slot), Some((rtp, rtcp))) = (destinations.get_mut(media.track), media.client_ports) {
                *slot = Some((SocketAddr::new(ip, rtp), SocketAddr::new(ip, rtcp)));
                if let Some(udp) = state.udp.as_ref() {
                    // The reader's receiver reports keep its session alive.
                    let client = UdpClient {
                        session: session.id().to_owned(),
                        track: media.track,
                        is_rtcp: true,
                    };
                    udp.register(state.core, SocketAddr::new(ip, rtcp), client);
                }
            }
        }
        let reader = Rc::new(UdpReader::new(destinations));
        let id = state.fanout.add_udp_reader(stream.shared(), reader.clone());
        *session.shared.reader.borrow_mut() = Some((id, Reader::Udp(reader)));
        return;
    }
    let mut channels = vec![None; stream.track_count()];
    for media in medias.iter() {
        if let Some(slot) = channels.get_mut(media.track) {
            *slot = Some(media.rtp_channel);
        }
    }
    let reader = Rc::new(TcpReader::new(conn.shared.outbox.clone(), channels));
    let id = state.fanout.add_reader(stream.shared(), reader.clone());
    *session.shared.reader.borrow_mut() = Some((id, Reader::Tcp(reader)));
}

/// Routes a UDP publisher's datagrams to this core and opens NAT bindings towards it with one
/// RTP and one RTCP packet per media, as gortsplib does.
async fn start_udp_ingest<H: Handler>(state: &Rc<CoreState<H>>, session: &ServerSession) {
    let Some(udp) = state.udp.as_ref() else { return };
    let now = Instant::now();
    let clock_rates: Vec<u32> = session
        .shared
        .announced
        .borrow()
        .as_ref()
        .map(|d| d.medias.iter().map(|m| m.clock_rate().unwrap_or(90_000)).collect())
        .unwrap_or_default();
    *session.shared.receivers.borrow_mut() = clock_rates
        .into_iter()
        .map(|rate| super::receiver::TrackReceiver::new(rate, now))
        .collect();
    let ip = session.shared.creator_ip;
    let medias = session.shared.medias.borrow().clone();
    let mut punches: Vec<(SocketAddr, bool)> = Vec::new();
    for media in &medias {
        let Some((rtp, rtcp)) = media.client_ports else {
            continue;
        };
        for (port, is_rtcp) in [(rtp, false), (rtcp, true)] {
            let addr = SocketAddr::new(ip, port);
            let client = UdpClient {
                session: session.id().to_owned(),
                track: media.track,
                is_rtcp,
            };
            udp.register(state.core, addr, client);
            punches.push((addr, is_rtcp));
        }
    }
    let rtp_punch = [0x80u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let rtcp_punch = [0x80u8, 201, 0, 1, 0, 0, 0, 0];
    for (addr, is_rtcp) in punches {
        let (socket, packet) = if is_rtcp {
            (&udp.rtcp, &rtcp_punch[..])
        } else {
            (&udp.rtp, &rtp_punch[..])
        };
        let mut ignore = |_: usize, _: std::io::Error| {};
        let _ = socket.send_to_many(packet, &[addr], &mut ignore).await;
    }
}

async fn record<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let (session, next, mut response) = match call_streaming(state, conn, request, Streaming::Record).await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if response.status == StatusCode::OK {
        if session.transport() == Some(TransportKind::Udp) {
            start_udp_ingest(state, &session).await;
        }
        session.shared.set_state(next);
        let config = state.context.config();
        let mut liveness = session.shared.liveness.get();
        liveness.set_timeout(config.read_timeout);
        session.shared.liveness.set(liveness);
        set_session_header(state, &mut response, &session);
    }
    Reply::new(response)
}

async fn pause<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let (session, next, mut response) = match call_streaming(state, conn, request, Streaming::Pause).await {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    if response.status == StatusCode::OK {
        stop_reading(state, &session);
        session.shared.set_state(next);
        set_session_header(state, &mut response, &session);
    }
    Reply::new(response)
}

fn teardown<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    let session = match existing_session(state, conn, request) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    state.sessions.close(state, &session, SessionCloseReason::Teardown);
    let mut tcp = conn.shared.tcp_session.borrow_mut();
    if tcp.as_deref() == Some(session.id()) {
        *tcp = None;
    }
    Reply::status(StatusCode::OK)
}

async fn get_parameter<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, request: &Request) -> Reply {
    if state.handler.supported_methods().contains(&Method::GetParameter) {
        return with_optional_session(state, conn, request, Parameter::Get).await;
    }
    // The keepalive clients send: refreshes the session if there is one.
    if request.headers.get("Session").is_some() {
        if let Err(reply) = existing_session(state, conn, request) {
            return reply;
        }
    }
    let mut response = Response::new(StatusCode::OK);
    response.headers.set("Content-Type", "text/parameters");
    Reply::new(response)
}

/// Which parameter request a handler answers.
#[derive(Clone, Copy)]
enum Parameter {
    Get,
    Set,
}

async fn with_optional_session<H: Handler>(
    state: &Rc<CoreState<H>>,
    conn: &ServerConn,
    request: &Request,
    which: Parameter,
) -> Reply {
    let session = if request.headers.get("Session").is_some() {
        match existing_session(state, conn, request) {
            Ok(s) => Some(s),
            Err(reply) => return reply,
        }
    } else {
        None
    };
    let parts = match parse_path(request) {
        Ok(p) => p,
        Err(reply) => return reply,
    };
    let ctx = RequestContext {
        conn,
        session: session.as_ref(),
        request,
        path: &parts.path,
        query: parts.query.as_deref(),
    };
    let response = match which {
        Parameter::Get => state.handler.on_get_parameter(&ctx).await,
        Parameter::Set => state.handler.on_set_parameter(&ctx).await,
    };
    Reply::new(response)
}

/// Handles an interleaved frame from the client: a publisher's media, or a reader's RTCP.
pub(crate) fn handle_frame<H: Handler>(state: &Rc<CoreState<H>>, conn: &ServerConn, frame: InterleavedFrame) -> Next {
    // Borrowed, not cloned: this runs for every packet a publisher sends.
    let session = conn
        .shared
        .tcp_session
        .borrow()
        .as_deref()
        .and_then(|id| state.sessions.get(id));
    let Some(session) = session.filter(|s| s.state().is_streaming()) else {
        conn.shared
            .close_with(CloseReason::Protocol("interleaved frame before PLAY or RECORD".into()));
        return Next::Close;
    };
    let media = session
        .shared
        .medias
        .borrow()
        .iter()
        .find(|m| frame.channel & !1 == m.rtp_channel)
        .copied();
    let Some(media) = media else {
        // A frame on a channel that was not set up: ignore it, as a late packet from a torn-down media.
        return Next::Continue;
    };
    let is_rtcp = frame.channel & 1 == 1;
    let mut liveness = session.shared.liveness.get();
    liveness.touch(Instant::now());
    session.shared.liveness.set(liveness);
    if session.state() == SessionState::Record {
        // Per frame, but on this core's own cache line: frames arrive one decode at a time.
        let counters = &state.context.counters().core(state.core).data_plane;
        if !is_rtcp {
            match crate::proto::rtp::RtpView::parse(&frame.payload) {
                Ok(view) => {
                    let lost = {
                        let mut sequences = session.shared.sequences.borrow_mut();
                        if sequences.len() <= media.track {
                            sequences.resize_with(media.track + 1, Default::default);
                        }
                        sequences[media.track].observe(view.sequence_number())
                    };
                    if let SeqEvent::Lost(n) = lost {
                        counters.add_lost(u64::from(n));
                        state.handler.on_packets_lost(&session, u64::from(n));
                    }
                }
                Err(e) => {
                    state.handler.on_decode_error(&session, &e);
                    return Next::Continue;
                }
            }
        }
        counters.add_received(1, frame.payload.len() as u64);
        if let Some(callback) = session.shared.on_packet.borrow_mut().as_mut() {
            callback(super::session::PublishedPacket {
                track: media.track,
                is_rtcp,
                data: &frame.payload,
            });
        }
    }
    Next::Continue
}

impl ServerStream {
    /// Whether two handles refer to the same stream.
    pub(crate) fn same_as(&self, other: &ServerStream) -> bool {
        std::sync::Arc::ptr_eq(self.shared(), other.shared())
    }
}
