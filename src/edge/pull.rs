//! [`OnDemandPull`]: one path pulled from an origin RTSP server while an edge has readers for it.
//!
//! A puller owns at most one upstream session (DESCRIBE, SETUP, PLAY with
//! [`Client`](crate::client::Client)) and one [`ServerStream`] built from the origin's description;
//! readers on every core of the edge play that stream, so a thousand readers cost the origin one
//! reader. The upstream session runs on a thread of its own with a small glommio executor, started
//! when the pull starts and ended when it stops: an idle puller has no thread.
//!
//! Lifecycle:
//!
//! - [`OnDemandPull::acquire`] starts the pull when it is idle and waits, without blocking the
//!   calling executor, until the stream is ready. Concurrent acquires wait for the same start.
//! - Readers report themselves with [`OnDemandPull::reader_added`] and
//!   [`OnDemandPull::reader_removed`]. When there are no readers and no acquire is waiting for
//!   [`PullConfig::close_after_idle`], the upstream session is torn down and the stream closed.
//! - When the origin closes the connection or sends nothing for a few seconds, the pull reconnects
//!   with exponential backoff. The stream stays the same when the new description has as many
//!   medias, so readers stay connected and resume when packets flow again; a changed layout closes
//!   the old stream (its readers are disconnected) and makes a new one.
//! - A start that fails (404, origin unreachable) is retried with the same backoff until the pull
//!   has been idle for `close_after_idle`; an acquire arriving meanwhile triggers the next attempt
//!   at once (after at least `backoff_min`).
//! - [`OnDemandPull::close`] (or dropping the last clone) stops the pull for good.
//!
//! # Example
//!
//! A handler's DESCRIBE answered from the pull:
//!
//! ```no_run
//! use std::time::Duration;
//! use shardcast::edge::pull::{OnDemandPull, PullConfig};
//! use shardcast::proto::rtsp::{Response, StatusCode};
//! use shardcast::server::{ServerContext, ServerStream};
//!
//! fn make_pull(context: ServerContext) -> OnDemandPull {
//!     let mut config = PullConfig::new("rtsp://user:pass@10.0.0.1:8554/cam");
//!     config.close_after_idle = Duration::from_secs(5);
//!     OnDemandPull::new(context, config)
//! }
//!
//! async fn describe(pull: &OnDemandPull) -> (Response, Option<ServerStream>) {
//!     match pull.acquire().await {
//!         Ok(stream) => (Response::new(StatusCode::OK), Some(stream)),
//!         Err(e) => (Response::new(e.status()), None),
//!     }
//! }
//! ```

mod state;
mod worker;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use event_listener::Event;
use futures_lite::future;

use crate::client::ClientTransport;
use crate::proto::rtsp::StatusCode;
use crate::server::{ServerContext, ServerStream};
use state::PullInner;

/// What to pull and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullConfig {
    /// The origin's stream: `rtsp://[user:password@]host:port/path`. Credentials answer the origin's
    /// 401 and never appear in logs or errors.
    pub url: String,
    /// How media travels from the origin (TCP interleaved or UDP).
    pub transport: ClientTransport,
    /// How long [`OnDemandPull::acquire`] waits for the stream to become ready.
    pub start_timeout: Duration,
    /// How long the pull goes on after the last reader left; a reader arriving meanwhile reuses it.
    pub close_after_idle: Duration,
    /// `false`: pull from [`OnDemandPull::new`] on, readers or not, until the puller is closed.
    pub on_demand: bool,
    /// The first delay before reconnecting after a failure.
    pub backoff_min: Duration,
    /// The longest delay between reconnection attempts; delays double from `backoff_min` up to it.
    pub backoff_max: Duration,
}

impl PullConfig {
    /// A configuration pulling `url` over TCP on demand, with a 10 s start timeout, 10 s close after
    /// idle, and reconnection delays from 1 s to 30 s.
    pub fn new(url: impl Into<String>) -> PullConfig {
        PullConfig {
            url: url.into(),
            transport: ClientTransport::Tcp,
            start_timeout: Duration::from_secs(10),
            close_after_idle: Duration::from_secs(10),
            on_demand: true,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Where a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullState {
    /// Not pulling: no upstream session, no stream, no thread.
    Idle,
    /// Connecting to the origin for the first time since the pull started (or retrying that).
    Starting,
    /// Playing: packets from the origin go to the stream.
    Ready,
    /// The upstream session was lost; reconnecting while readers stay on the same stream.
    Reconnecting,
}

/// Counters of a puller since it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PullStats {
    /// Readers currently using the stream (as reported with `reader_added`/`reader_removed`).
    pub readers: usize,
    /// Upstream sessions that reached PLAY: the first of each pull and every reconnection.
    pub upstream_sessions: u64,
    /// Upstream attempts that failed and sessions that were lost.
    pub upstream_failures: u64,
    /// RTP and RTCP packets received from the origin.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Packets the stream refused (not RTP, too large); they were dropped.
    pub dropped: u64,
}

/// Why a stream could not be acquired. Messages carry the URL without credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullError {
    /// The origin answered 404: it has no stream at this path.
    #[error("the origin has no stream at {url}")]
    NotFound {
        /// The origin URL, without credentials.
        url: String,
    },
    /// The stream was not ready within the start timeout.
    #[error("the origin at {url} was not ready within {after:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    Timeout {
        /// The origin URL, without credentials.
        url: String,
        /// The start timeout.
        after: Duration,
        /// Why the last attempt failed, if one failed while waiting.
        last_error: Option<String>,
    },
    /// The origin refused the pull for good (401, 403, another 4xx, an unusable description), or
    /// the pull thread could not be started.
    #[error("pulling {url} failed: {reason}")]
    Upstream {
        /// The origin URL, without credentials.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The puller was closed.
    #[error("the pull of {url} is closed")]
    Closed {
        /// The origin URL, without credentials.
        url: String,
    },
}

impl PullError {
    /// The status to answer a reader with: 404 when the origin (or the edge, once closed) has no
    /// such stream, 503 when the origin is unavailable.
    pub fn status(&self) -> StatusCode {
        match self {
            PullError::NotFound { .. } | PullError::Closed { .. } => StatusCode::NOT_FOUND,
            PullError::Timeout { .. } | PullError::Upstream { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One path pulled from an origin on demand, shared by every reader of an edge.
///
/// Clone it freely (clones share one pull); it is `Send + Sync`. Dropping the last clone closes it.
#[derive(Clone)]
pub struct OnDemandPull {
    handle: Arc<PullHandle>,
}

impl std::fmt::Debug for OnDemandPull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemandPull")
            .field("url", &self.handle.shared.url)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// Closes the pull when the last [`OnDemandPull`] clone goes; the worker thread holds only the
/// shared part, so it cannot keep the pull alive by itself.
struct PullHandle {
    shared: Arc<PullShared>,
}

impl Drop for PullHandle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// What the puller's handles and its worker thread share.
pub(super) struct PullShared {
    context: ServerContext,
    config: PullConfig,
    /// The origin URL without credentials, for logs and errors.
    url: String,
    inner: Mutex<PullInner>,
    /// Wakes waiting acquires: the stream became ready, an attempt failed, the pull closed.
    progress: Event,
    /// Wakes the worker: readers or waiting acquires changed, the pull closed.
    control: Event,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    upstream_sessions: AtomicU64,
    upstream_failures: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    dropped: AtomicU64,
}

impl PullShared {
    fn lock(&self) -> MutexGuard<'_, PullInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a worker thread for a new run of the pull; the caller holds the lock.
    fn start_worker(self: &Arc<Self>, inner: &mut PullInner) -> Result<(), PullError> {
        let generation = inner.begin_run();
        tracing::info!(url = %self.url, "pull starting");
        if let Err(reason) = worker::spawn(self.clone(), generation) {
            inner.end_run();
            tracing::error!(url = %self.url, error = %reason, "cannot start the pull thread");
            return Err(PullError::Upstream {
                url: self.url.clone(),
                reason: format!("cannot start the pull thread: {reason}"),
            });
        }
        Ok(())
    }

    /// Stops the pull for good: readers of the stream are disconnected, the worker tears down.
    fn close(&self) {
        let was_running = {
            let mut inner = self.lock();
            if inner.closed {
                return;
            }
            inner.closed = true;
            let running = inner.running;
            inner.end_run();
            running
        };
        if was_running {
            tracing::info!(url = %self.url, "pull closed");
        }
        self.control.notify(usize::MAX);
        self.progress.notify(usize::MAX);
    }

    /// Applies a change of readers or waiting acquires and wakes the worker to re-check idleness.
    fn change_users(&self, change: impl FnOnce(&mut PullInner)) {
        {
            let mut inner = self.lock();
            change(&mut inner);
            inner.update_idle(Instant::now());
        }
        self.control.notify(usize::MAX);
    }
}

/// Counts an acquire as waiting (so the pull does not stop under it) until dropped.
struct Waiting<'a> {
    shared: &'a PullShared,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared
            .change_users(|inner| inner.waiting = inner.waiting.saturating_sub(1));
    }
}

impl OnDemandPull {
    /// A puller of `config.url` whose stream is served by the server of `context`. With
    /// `config.on_demand` false, the pull starts now.
    pub fn new(context: ServerContext, config: PullConfig) -> OnDemandPull {
        let url = without_credentials(&config.url);
        let on_demand = config.on_demand;
        let shared = Arc::new(PullShared {
            context,
            config,
            url,
            inner: Mutex::new(PullInner::default()),
            progress: Event::new(),
            control: Event::new(),
            counters: Counters::default(),
        });
        if !on_demand {
            let mut inner = shared.lock();
            // A failure was logged; the next acquire tries again.
            let _ = shared.start_worker(&mut inner);
        }
        OnDemandPull {
            handle: Arc::new(PullHandle { shared }),
        }
    }

    /// The stream, once the upstream session plays: starts the pull if it is idle and waits for it,
    /// without blocking the calling glommio executor (it must run on one), at most
    /// [`PullConfig::start_timeout`].
    ///
    /// Errors: [`PullError::NotFound`] when the origin answers 404, [`PullError::Upstream`] when it
    /// refuses otherwise for good, [`PullError::Timeout`] when it is unreachable or not ready in
    /// time, [`PullError::Closed`] after [`Self::close`].
    pub async fn acquire(&self) -> Result<ServerStream, PullError> {
        let shared = &self.handle.shared;
        let deadline = Instant::now() + shared.config.start_timeout;
        let seen_failures = {
            let mut inner = shared.lock();
            if inner.closed {
                return Err(PullError::Closed {
                    url: shared.url.clone(),
                });
            }
            if let Some(stream) = inner.ready_stream() {
                return Ok(stream);
            }
            if inner.running {
                // The worker may be waiting out a backoff: a reader is here, try now.
                inner.retry_now = true;
            } else {
                shared.start_worker(&mut inner)?;
            }
            inner.waiting += 1;
            inner.update_idle(Instant::now());
            inner.failures
        };
        let _waiting = Waiting { shared };
        shared.control.notify(usize::MAX);
        loop {
            let listener = shared.progress.listen();
            let last_error = {
                let inner = shared.lock();
                if let Some(stream) = inner.ready_stream() {
                    return Ok(stream);
                }
                let last_error = match &inner.last_failure {
                    Some(failure) if inner.failures > seen_failures => {
                        if failure.definitive {
                            return Err(failure.error.clone());
                        }
                        Some(failure.error.to_string())
                    }
                    _ => None,
                };
                // Only a close ends a run while an acquire waits.
                if inner.closed || !inner.running {
                    return Err(PullError::Closed {
                        url: shared.url.clone(),
                    });
                }
                last_error
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(PullError::Timeout {
                    url: shared.url.clone(),
                    after: shared.config.start_timeout,
                    last_error,
                });
            }
            future::or(listener, glommio::timer::sleep(deadline - now)).await;
        }
    }

    /// A reader session started using the stream.
    pub fn reader_added(&self) {
        self.handle.shared.change_users(|inner| inner.readers += 1);
    }

    /// A reader session stopped using the stream; at zero readers the idle timer starts.
    pub fn reader_removed(&self) {
        self.handle
            .shared
            .change_users(|inner| inner.readers = inner.readers.saturating_sub(1));
    }

    /// Where the pull stands.
    pub fn state(&self) -> PullState {
        self.handle.shared.lock().state
    }

    /// Readers now, and counters since the puller was made.
    pub fn stats(&self) -> PullStats {
        let shared = &self.handle.shared;
        let counters = &shared.counters;
        PullStats {
            readers: shared.lock().readers,
            upstream_sessions: counters.upstream_sessions.load(Ordering::Relaxed),
            upstream_failures: counters.upstream_failures.load(Ordering::Relaxed),
            packets: counters.packets.load(Ordering::Relaxed),
            bytes: counters.bytes.load(Ordering::Relaxed),
            dropped: counters.dropped.load(Ordering::Relaxed),
        }
    }

    /// The origin URL without credentials.
    pub fn url(&self) -> &str {
        &self.handle.shared.url
    }

    /// Stops for good (the path was removed, the server shuts down): the upstream session is torn
    /// down, the stream closed (its readers are disconnected), and later acquires fail with
    /// [`PullError::Closed`]. Does not block.
    pub fn close(&self) {
        self.handle.shared.close();
    }
}

/// `url` without the `user:password@` part, for logs and errors.
fn without_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}{}", &url[..scheme_end], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_removed_from_urls_for_logs() {
        assert_eq!(
            without_credentials("rtsp://user:p@ss@10.0.0.1:554/cam/a@b"),
            "rtsp://10.0.0.1:554/cam/a@b"
        );
        assert_eq!(without_credentials("rtsp://10.0.0.1/cam"), "rtsp://10.0.0.1/cam");
        assert_eq!(without_credentials("rtsp://u@host?x=@"), "rtsp://host?x=@");
        assert_eq!(without_credentials("not a url"), "not a url");
    }

    #[test]
    fn errors_map_to_the_statuses_readers_get() {
        let url = String::from("rtsp://origin/cam");
        assert_eq!(PullError::NotFound { url: url.clone() }.status(), StatusCode::NOT_FOUND);
        assert_eq!(PullError::Closed { url: url.clone() }.status(), StatusCode::NOT_FOUND);
        let timeout = PullError::Timeout {
            url: url.clone(),
            after: Duration::from_secs(1),
            last_error: Some("refused".into()),
        };
        assert_eq!(timeout.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(timeout.to_string().contains("last error: refused"), "{timeout}");
        let upstream = PullError::Upstream {
            url,
            reason: "401".into(),
        };
        assert_eq!(upstream.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
