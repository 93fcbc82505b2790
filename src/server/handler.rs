//! [`Handler`]: the events a server reports and the requests it lets the application answer.
//!
//! A handler is made per core by the factory given to `Server::start` and is only ever called on that
//! core, so it needs no locks and its futures need not be `Send`. Calls from several connections of
//! one core may interleave at `.await` points, so methods take `&self`: keep mutable state in
//! `Cell`/`RefCell`, and state shared between cores (such as a path table) behind your own sync type.

use super::conn::{CloseReason, ServerConn};
use super::session::{ServerSession, SessionCloseReason};
use super::stream::ServerStream;
use super::transport::SetupTransport;
use crate::proto::rtsp::{Request, Response, StatusCode};
use crate::proto::sdp::SessionDescription;
use crate::proto::Method;

/// What a request handler sees: the connection, the session (if any), the request, and its path.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The connection the request arrived on.
    pub conn: &'a ServerConn,
    /// The session named by the request's `Session` header, or created by it (ANNOUNCE, SETUP).
    pub session: Option<&'a ServerSession>,
    /// The request itself.
    pub request: &'a Request,
    /// The stream path, without leading or trailing slash and without the track control
    /// (`rtsp://host/live/cam?x=1/trackID=0` and `rtsp://host/live/cam/trackID=0?x=1` both give `live/cam`).
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
}

/// A response with only a status line, for handler methods that refuse.
pub fn status_response(status: StatusCode) -> Response {
    Response::new(status)
}

/// The application side of a server.
///
/// Every method has a default: event methods do nothing, request methods answer
/// 501 Not Implemented. [`Handler::supported_methods`] is the one required method: OPTIONS
/// advertises exactly what it returns (plus OPTIONS, GET_PARAMETER and TEARDOWN, which the server
/// always answers), and the server answers 501 to the others without calling the handler.
// Handlers are per core: their futures are deliberately not `Send`, which is what the lint warns about.
#[allow(async_fn_in_trait)]
pub trait Handler: 'static {
    /// The methods this handler answers (DESCRIBE, ANNOUNCE, SETUP, PLAY, RECORD, PAUSE,
    /// GET_PARAMETER, SET_PARAMETER).
    fn supported_methods(&self) -> &[Method];

    /// A connection was accepted.
    fn on_conn_open(&self, _conn: &ServerConn) {}

    /// A connection closed; `reason` says why.
    fn on_conn_close(&self, _conn: &ServerConn, _reason: &CloseReason) {}

    /// A request arrived (before it is handled).
    fn on_request(&self, _conn: &ServerConn, _request: &Request) {}

    /// A response is about to be sent.
    fn on_response(&self, _conn: &ServerConn, _response: &Response) {}

    /// A session was created (by ANNOUNCE or the first SETUP).
    fn on_session_open(&self, _session: &ServerSession, _conn: &ServerConn) {}

    /// A session ended; `reason` says why.
    fn on_session_close(&self, _session: &ServerSession, _reason: &SessionCloseReason) {}

    /// DESCRIBE: return 200 and the stream to describe; the server writes its SDP, `Content-Base`
    /// and `Content-Type`.
    async fn on_describe(&self, _ctx: &RequestContext<'_>) -> (Response, Option<ServerStream>) {
        (status_response(StatusCode::NOT_IMPLEMENTED), None)
    }

    /// ANNOUNCE: a client wants to publish `description` at `ctx.path`. Its session is in PreRecord.
    async fn on_announce(&self, _ctx: &RequestContext<'_>, _description: &SessionDescription) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// SETUP: for a reader, return 200 and the stream it reads; for a publisher (after ANNOUNCE),
    /// return 200 and no stream.
    async fn on_setup(
        &self,
        _ctx: &RequestContext<'_>,
        _transport: &SetupTransport,
    ) -> (Response, Option<ServerStream>) {
        (status_response(StatusCode::NOT_IMPLEMENTED), None)
    }

    /// PLAY: return 200 to start sending the stream's packets to the session.
    async fn on_play(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// RECORD: return 200 to start receiving the publisher's packets; register a packet callback
    /// with `ServerSession::on_packet` to receive them.
    async fn on_record(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// PAUSE: return 200 to stop packets until the next PLAY or RECORD.
    async fn on_pause(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// GET_PARAMETER. Without it in [`Handler::supported_methods`], the server answers a request inside
    /// a session with 200 and an empty body: the keepalive clients send.
    async fn on_get_parameter(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// SET_PARAMETER.
    async fn on_set_parameter(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::NOT_IMPLEMENTED)
    }

    /// Called on each core about once a second, outside any request: periodic work such as
    /// applying a configuration reload to this core's sessions.
    fn on_housekeeping(&self) {}

    /// A publisher's packets were lost (a gap in sequence numbers), or a reader lost packets
    /// because it fell behind.
    fn on_packets_lost(&self, _session: &ServerSession, _lost: u64) {}

    /// A publisher sent a packet that is not valid RTP/RTCP; it was dropped.
    fn on_decode_error(&self, _session: &ServerSession, _error: &dyn std::error::Error) {}

    /// Packets could not be written to a reader (its queue was full, or a write failed).
    fn on_stream_write_error(&self, _session: &ServerSession, _error: &dyn std::error::Error) {}
}
