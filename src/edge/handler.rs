//! The edge [`Handler`]: publishers ANNOUNCE + RECORD a configured path, readers DESCRIBE +
//! SETUP + PLAY it, each checked against the users' permissions and the path's limits.
//!
//! Statuses: 401 when a client lacks a permission or sent wrong credentials (the server then
//! adds the challenges, and slows down and closes connections that sent wrong ones), 404 for a
//! path no `[[paths]]` entry serves or that nobody publishes, 503 when a path has `max_readers`
//! readers or its origin stream is not available, 403 for publishing to a pulled path, 400 for a
//! second publisher on one path (as the relay answers).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;

use super::paths::{find, PathMatch, PathSource};
use super::pull::OnDemandPull;
use super::state::{ActivePath, Edge};
use super::users::Action;
use crate::proto::rtsp::{Response, StatusCode};
use crate::proto::sdp::SessionDescription;
use crate::proto::Method;
use crate::server::{
    Handler, RequestContext, ServerContext, ServerSession, ServerStream, SessionCloseReason, SetupTransport,
};

/// A session this core admitted, re-checked when the configuration is reloaded.
struct Admitted {
    session: ServerSession,
    action: Action,
    path: String,
    user: Option<String>,
    ip: IpAddr,
    identity: (String, PathSource),
    /// The puller a reader of a pulled path counts itself in.
    pull: Option<OnDemandPull>,
}

/// One core's edge handler. Make one per core with [`Edge::handler`].
pub struct EdgeHandler {
    context: ServerContext,
    edge: Edge,
    /// The configuration generation this core's sessions were last checked against.
    checked_generation: Cell<u64>,
    /// Sessions admitted on this core, by id.
    admitted: RefCell<HashMap<String, Admitted>>,
}

fn status(code: StatusCode) -> Response {
    Response::new(code)
}

impl EdgeHandler {
    /// A handler for one core, sharing `edge` with the others.
    pub fn new(context: &ServerContext, edge: Edge) -> EdgeHandler {
        let checked_generation = Cell::new(edge.generation());
        EdgeHandler {
            context: context.clone(),
            edge,
            checked_generation,
            admitted: RefCell::new(HashMap::new()),
        }
    }

    /// The user a request acts as (`None`: anonymous), once it may do `action` on its path.
    ///
    /// Credentials in the request are checked against the users; without any, the user verified
    /// earlier on the connection, else the anonymous user. `Err` is the 401 to answer.
    fn authorize(&self, ctx: &RequestContext<'_>, action: Action) -> Result<Option<String>, Response> {
        let config = self.edge.config();
        let remote = ctx.conn.remote_addr();
        let has_credentials = ctx.request.headers.get("Authorization").is_some();
        let user = if has_credentials && !config.users.is_empty() {
            let lookup = |name: &str| config.user(name).and_then(|u| u.password.clone());
            match ctx.conn.verify_credentials_with(ctx.request, lookup) {
                Ok(name) => Some(name),
                Err(error) => {
                    tracing::info!(conn = ctx.conn.id(), %remote, path = ctx.path, %error, "authentication failed");
                    return Err(status(StatusCode::UNAUTHORIZED));
                }
            }
        } else {
            ctx.conn.user()
        };
        if config.permits(user.as_deref(), remote.ip(), action, ctx.path) {
            return Ok(user);
        }
        match &user {
            // The usual first try of a client that has credentials: the 401 asks for them.
            None => {
                tracing::debug!(conn = ctx.conn.id(), %remote, path = ctx.path, %action, "anonymous client not permitted; asking for credentials")
            }
            Some(name) => {
                tracing::info!(conn = ctx.conn.id(), %remote, path = ctx.path, user = %name, %action, "permission denied")
            }
        }
        Err(status(StatusCode::UNAUTHORIZED))
    }

    /// The stream a reader of `matched` plays, and the puller feeding it for a pulled path:
    /// the publisher's, or the origin's (waiting for the pull to start if it must).
    async fn readable_stream(
        &self,
        ctx: &RequestContext<'_>,
        matched: &PathMatch<'_>,
    ) -> Result<(ServerStream, Option<OnDemandPull>), Response> {
        if matched.entry.source == PathSource::Publisher {
            let paths = self.edge.paths();
            return paths
                .get(ctx.path)
                .and_then(|p| p.stream.clone())
                .map(|stream| (stream, None))
                .ok_or_else(|| status(StatusCode::NOT_FOUND));
        }
        let Some(pull) = self.edge.pull_for(ctx.path, matched) else {
            return Err(status(StatusCode::SERVICE_UNAVAILABLE));
        };
        match pull.acquire().await {
            Ok(stream) => Ok((stream, Some(pull))),
            Err(error) => {
                tracing::info!(conn = ctx.conn.id(), path = ctx.path, %error, "pulled stream not available");
                Err(status(error.status()))
            }
        }
    }

    /// Remembers a session admitted to read or publish, for reload checks.
    fn admit(
        &self,
        ctx: &RequestContext<'_>,
        session: &ServerSession,
        action: Action,
        user: Option<String>,
        matched: &PathMatch<'_>,
        pull: Option<OnDemandPull>,
    ) {
        if let Some(pull) = &pull {
            pull.reader_added();
        }
        self.admitted.borrow_mut().insert(
            session.id().to_owned(),
            Admitted {
                session: session.clone(),
                action,
                path: ctx.path.to_owned(),
                user,
                ip: ctx.conn.remote_addr().ip(),
                identity: matched.entry.identity(),
                pull,
            },
        );
    }

    /// Closes this core's sessions that the reloaded configuration no longer allows: their path
    /// entry vanished or changed source, or their user lost the permission they use.
    fn apply_reload(&self) {
        let config = self.edge.config();
        let mut closing = Vec::new();
        for (id, a) in self.admitted.borrow().iter() {
            let same_entry = find(&config.paths, &a.path).is_some_and(|m| m.entry.identity() == a.identity);
            let permitted = config.permits(a.user.as_deref(), a.ip, a.action, &a.path);
            if !(same_entry && permitted) {
                let why = if same_entry {
                    "its user lost the permission"
                } else {
                    "its path entry changed"
                };
                tracing::info!(session = %id, path = %a.path, user = a.user.as_deref().unwrap_or("any"), why, "closing a session after reload");
                closing.push(a.session.clone());
            }
        }
        for session in closing {
            session.close();
        }
    }
}

impl Handler for EdgeHandler {
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
        if let Err(refused) = self.authorize(ctx, Action::Read) {
            return (refused, None);
        }
        let config = self.edge.config();
        let Some(matched) = find(&config.paths, ctx.path) else {
            return (status(StatusCode::NOT_FOUND), None);
        };
        match self.readable_stream(ctx, &matched).await {
            Ok((stream, _)) => (status(StatusCode::OK), Some(stream)),
            Err(refused) => (refused, None),
        }
    }

    async fn on_announce(&self, ctx: &RequestContext<'_>, description: &SessionDescription) -> Response {
        let user = match self.authorize(ctx, Action::Publish) {
            Ok(user) => user,
            Err(refused) => return refused,
        };
        let Some(session) = ctx.session else {
            return status(StatusCode::BAD_REQUEST);
        };
        let config = self.edge.config();
        let Some(matched) = find(&config.paths, ctx.path) else {
            return status(StatusCode::NOT_FOUND);
        };
        if matched.entry.source != PathSource::Publisher {
            tracing::info!(
                conn = ctx.conn.id(),
                path = ctx.path,
                "refusing to publish to a path pulled from an origin"
            );
            return status(StatusCode::FORBIDDEN);
        }
        {
            let mut paths = self.edge.paths();
            let active = paths.entry(ctx.path.to_owned()).or_insert_with(|| ActivePath {
                stream: None,
                publisher: None,
                readers: 0,
                identity: matched.entry.identity(),
            });
            if active.stream.is_some() {
                return status(StatusCode::BAD_REQUEST); // someone is already publishing here
            }
            match ServerStream::new(&self.context, description.clone()) {
                Ok(stream) => {
                    active.stream = Some(stream);
                    active.publisher = Some(session.id().to_owned());
                    active.identity = matched.entry.identity();
                }
                Err(error) => {
                    tracing::info!(conn = ctx.conn.id(), path = ctx.path, %error, "announced description refused");
                    return status(StatusCode::BAD_REQUEST);
                }
            }
        }
        self.admit(ctx, session, Action::Publish, user, &matched, None);
        status(StatusCode::OK)
    }

    async fn on_setup(&self, ctx: &RequestContext<'_>, transport: &SetupTransport) -> (Response, Option<ServerStream>) {
        let action = if transport.record {
            Action::Publish
        } else {
            Action::Read
        };
        let user = match self.authorize(ctx, action) {
            Ok(user) => user,
            Err(refused) => return (refused, None),
        };
        if transport.record {
            return (status(StatusCode::OK), None);
        }
        let config = self.edge.config();
        let Some(matched) = find(&config.paths, ctx.path) else {
            return (status(StatusCode::NOT_FOUND), None);
        };
        let (stream, pull) = match self.readable_stream(ctx, &matched).await {
            Ok(found) => found,
            Err(refused) => return (refused, None),
        };
        let Some(session) = ctx.session else {
            return (status(StatusCode::BAD_REQUEST), None);
        };
        if !self.admitted.borrow().contains_key(session.id()) {
            let mut paths = self.edge.paths();
            // A pulled path is active while it has readers; its stream belongs to the puller.
            let active = match pull {
                Some(_) => paths.entry(ctx.path.to_owned()).or_insert_with(|| ActivePath {
                    stream: None,
                    publisher: None,
                    readers: 0,
                    identity: matched.entry.identity(),
                }),
                None => match paths.get_mut(ctx.path) {
                    Some(active) => active,
                    None => return (status(StatusCode::NOT_FOUND), None),
                },
            };
            let limit = matched.entry.max_readers;
            if limit > 0 && active.readers >= limit {
                tracing::info!(
                    conn = ctx.conn.id(),
                    path = ctx.path,
                    limit,
                    "refusing a reader: max_readers reached"
                );
                return (status(StatusCode::SERVICE_UNAVAILABLE), None);
            }
            active.readers += 1;
            drop(paths);
            self.admit(ctx, session, Action::Read, user, &matched, pull);
        }
        (status(StatusCode::OK), Some(stream))
    }

    async fn on_play(&self, ctx: &RequestContext<'_>) -> Response {
        match self.authorize(ctx, Action::Read) {
            Ok(_) => status(StatusCode::OK),
            Err(refused) => refused,
        }
    }

    async fn on_record(&self, ctx: &RequestContext<'_>) -> Response {
        if let Err(refused) = self.authorize(ctx, Action::Publish) {
            return refused;
        }
        let Some(session) = ctx.session else {
            return status(StatusCode::BAD_REQUEST);
        };
        let stream = {
            let paths = self.edge.paths();
            paths
                .get(ctx.path)
                .filter(|p| p.publisher.as_deref() == Some(session.id()))
                .and_then(|p| p.stream.clone())
        };
        let Some(stream) = stream else {
            return status(StatusCode::BAD_REQUEST);
        };
        session.on_packet(move |packet| {
            // A packet the stream refuses (invalid RTP, too large) is dropped; the stream counts it.
            let _ = stream.write_packet(packet.track, packet.is_rtcp, packet.data);
        });
        let user = ctx.conn.user();
        tracing::info!(conn = ctx.conn.id(), remote = %ctx.conn.remote_addr(), path = ctx.path, user = user.as_deref().unwrap_or("any"), "publishing");
        status(StatusCode::OK)
    }

    async fn on_pause(&self, _ctx: &RequestContext<'_>) -> Response {
        status(StatusCode::OK)
    }

    fn on_session_close(&self, session: &ServerSession, _reason: &SessionCloseReason) {
        let Some(admitted) = self.admitted.borrow_mut().remove(session.id()) else {
            return;
        };
        if let Some(pull) = &admitted.pull {
            pull.reader_removed();
        }
        let mut paths = self.edge.paths();
        let Some(active) = paths.get_mut(&admitted.path) else {
            return;
        };
        match admitted.action {
            Action::Read => active.readers = active.readers.saturating_sub(1),
            _ => {
                if active.publisher.as_deref() == Some(session.id()) {
                    tracing::info!(path = %admitted.path, session = session.id(), "publisher gone; the path's readers are closed");
                    active.publisher = None;
                    if let Some(stream) = active.stream.take() {
                        stream.close();
                    }
                }
            }
        }
        if active.stream.is_none() && active.readers == 0 {
            paths.remove(&admitted.path);
        }
    }

    fn on_housekeeping(&self) {
        self.edge.forget_idle_pulls();
        let generation = self.edge.generation();
        if generation != self.checked_generation.get() {
            self.checked_generation.set(generation);
            self.apply_reload();
        }
    }
}
