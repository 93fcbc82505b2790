//! A relay: publishers ANNOUNCE + RECORD a path, readers DESCRIBE + SETUP + PLAY it.
//! Uses only shardcast's public API; the `shardcast` binary serves with this handler too.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use shardcast::proto::rtsp::{Response, StatusCode};
use shardcast::proto::sdp::SessionDescription;
use shardcast::proto::Method;
use shardcast::server::{
    Handler, RequestContext, ServerContext, ServerSession, ServerStream, SessionCloseReason, SetupTransport,
};

/// Streams being published, by path; shared by the handlers of every core.
#[derive(Clone, Default)]
pub struct Paths {
    streams: Arc<Mutex<HashMap<String, Published>>>,
    lost: Arc<AtomicU64>,
}

#[derive(Clone)]
struct Published {
    stream: ServerStream,
    publisher: String,
}

impl Paths {
    /// Packets publishers lost on the way to this server, as the server reported them.
    pub fn packets_lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn get(&self, path: &str) -> Option<ServerStream> {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        streams.get(path).map(|p| p.stream.clone())
    }
}

/// One core's relay handler.
pub struct Relay {
    context: ServerContext,
    paths: Paths,
    credentials: Option<(String, String)>,
}

impl Relay {
    /// A handler for one core, sharing `paths` with the others.
    pub fn new(context: &ServerContext, paths: Paths) -> Relay {
        Relay {
            context: context.clone(),
            paths,
            credentials: None,
        }
    }

    /// Requires every client to authenticate as `user` with `password`.
    pub fn with_credentials(mut self, user: &str, password: &str) -> Relay {
        self.credentials = Some((user.to_owned(), password.to_owned()));
        self
    }

    /// `Err(401)` unless the request carries the expected credentials; the server adds the
    /// challenges, and slows down and closes connections that sent wrong ones.
    fn authorize(&self, ctx: &RequestContext<'_>) -> Result<(), Response> {
        match &self.credentials {
            Some((user, password)) => ctx
                .conn
                .verify_credentials(ctx.request, user, password)
                .map_err(|_| status(StatusCode::UNAUTHORIZED)),
            None => Ok(()),
        }
    }
}

fn status(code: StatusCode) -> Response {
    Response::new(code)
}

impl Handler for Relay {
    fn supported_methods(&self) -> &[Method] {
        &[
            Method::Describe,
            Method::Announce,
            Method::Setup,
            Method::Play,
            Method::Record,
            Method::Pause,
        ]
    }

    async fn on_describe(&self, ctx: &RequestContext<'_>) -> (Response, Option<ServerStream>) {
        if let Err(refused) = self.authorize(ctx) {
            return (refused, None);
        }
        match self.paths.get(ctx.path) {
            Some(stream) => (status(StatusCode::OK), Some(stream)),
            None => (status(StatusCode::NOT_FOUND), None),
        }
    }

    async fn on_announce(&self, ctx: &RequestContext<'_>, description: &SessionDescription) -> Response {
        if let Err(refused) = self.authorize(ctx) {
            return refused;
        }
        let Some(session) = ctx.session else {
            return status(StatusCode::BAD_REQUEST);
        };
        let mut streams = self.paths.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if streams.contains_key(ctx.path) {
            return status(StatusCode::BAD_REQUEST); // someone is already publishing here
        }
        match ServerStream::new(&self.context, description.clone()) {
            Ok(stream) => {
                let publisher = session.id().to_owned();
                streams.insert(ctx.path.to_owned(), Published { stream, publisher });
                status(StatusCode::OK)
            }
            Err(_) => status(StatusCode::BAD_REQUEST),
        }
    }

    async fn on_setup(&self, ctx: &RequestContext<'_>, transport: &SetupTransport) -> (Response, Option<ServerStream>) {
        if let Err(refused) = self.authorize(ctx) {
            return (refused, None);
        }
        if transport.record {
            return (status(StatusCode::OK), None);
        }
        match self.paths.get(ctx.path) {
            Some(stream) => (status(StatusCode::OK), Some(stream)),
            None => (status(StatusCode::NOT_FOUND), None),
        }
    }

    async fn on_play(&self, _ctx: &RequestContext<'_>) -> Response {
        status(StatusCode::OK)
    }

    async fn on_record(&self, ctx: &RequestContext<'_>) -> Response {
        let (Some(session), Some(stream)) = (ctx.session, self.paths.get(ctx.path)) else {
            return status(StatusCode::BAD_REQUEST);
        };
        session.on_packet(move |packet| {
            // A packet the stream refuses (invalid RTP, too large) is dropped; the stream counts it.
            let _ = stream.write_packet(packet.track, packet.is_rtcp, packet.data);
        });
        status(StatusCode::OK)
    }

    async fn on_pause(&self, _ctx: &RequestContext<'_>) -> Response {
        status(StatusCode::OK)
    }

    fn on_packets_lost(&self, session: &ServerSession, lost: u64) {
        if session.state() == shardcast::session::SessionState::Record {
            self.paths.lost.fetch_add(lost, Ordering::Relaxed);
        }
    }

    fn on_session_close(&self, session: &ServerSession, _reason: &SessionCloseReason) {
        let mut streams = self.paths.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let path = session.path();
        if streams.get(&path).is_some_and(|p| p.publisher == session.id()) {
            if let Some(published) = streams.remove(&path) {
                published.stream.close();
            }
        }
    }
}
