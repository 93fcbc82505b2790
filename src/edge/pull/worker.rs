//! One run of a pull: a thread with a small glommio executor that plays the origin's stream with
//! [`Client`] and writes every packet to the shared [`ServerStream`], reconnecting with backoff
//! until the run is told to stop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::{LocalExecutorBuilder, Placement};

use super::state::{next_backoff, Failure, StopCheck};
use super::{PullError, PullShared};
use crate::client::{Client, ClientConfig, ClientError};
use crate::proto::rtsp::StatusCode;
use crate::proto::sdp::SessionDescription;
use crate::server::ServerStream;

/// Memory the worker's executor registers with io_uring: it only does socket I/O, and the
/// machine's locked-memory limit is shared by every executor of the process.
const IO_MEMORY: usize = 64 * 1024;

/// The longest the origin may send nothing before the session is considered stalled (the
/// server's own read timeout when shorter).
const MAX_STALL: Duration = Duration::from_secs(5);

/// Starts the worker thread of run `generation`.
pub(super) fn spawn(shared: Arc<PullShared>, generation: u64) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("shardcast-pull".into())
        .spawn(move || {
            match LocalExecutorBuilder::new(Placement::Unbound)
                .io_memory(IO_MEMORY)
                .make()
            {
                Ok(executor) => executor.run(run(&shared, generation)),
                Err(e) => shared.executor_failed(generation, &e.to_string()),
            }
        })
        .map(drop)
}

/// Why the worker woke from waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// The run is over.
    Stop,
    /// An acquire is waiting: attempt now rather than after the backoff.
    RetryNow,
    /// The wait ran out.
    Elapsed,
}

/// What ended the packet loop.
enum PumpEnd {
    Stop,
    Lost(Failure),
}

/// The result of installing a new upstream session's description.
enum Installed {
    Playing(ServerStream),
    /// The run ended meanwhile.
    Superseded,
    Failed(Failure),
}

async fn run(shared: &PullShared, generation: u64) {
    let config = &shared.config;
    let mut delay = config.backoff_min;
    loop {
        let attempt = future::or(async { Some(start_session(shared).await) }, async {
            wait_for_control(shared, generation, false).await;
            None
        })
        .await;
        let failure = match attempt {
            // Dropping the half-made client closes its connection; the origin ends the session.
            None => return stopped(shared, None).await,
            Some(Err(failure)) => failure,
            Some(Ok((mut client, description))) => match shared.install(generation, description) {
                Installed::Superseded => return stopped(shared, Some(&mut client)).await,
                Installed::Failed(failure) => {
                    let _ = client.teardown().await;
                    failure
                }
                Installed::Playing(stream) => {
                    delay = config.backoff_min;
                    match pump(shared, generation, &mut client, &stream).await {
                        PumpEnd::Stop => return stopped(shared, Some(&mut client)).await,
                        PumpEnd::Lost(failure) => failure,
                    }
                }
            },
        };
        shared.record_failure(generation, failure, delay);
        if backoff(shared, generation, delay).await == Control::Stop {
            return stopped(shared, None).await;
        }
        delay = next_backoff(delay, config.backoff_min, config.backoff_max);
    }
}

/// Tears the upstream session down (best effort: the origin may be gone) and logs the stop.
async fn stopped(shared: &PullShared, client: Option<&mut Client>) {
    if let Some(client) = client {
        if let Err(e) = client.teardown().await {
            tracing::debug!(url = %shared.url, error = %e, "TEARDOWN of the upstream session failed");
        }
    }
    tracing::info!(url = %shared.url, "pull stopped");
}

/// Waits for the backoff delay; an acquire can cut it short once `backoff_min` has passed.
async fn backoff(shared: &PullShared, generation: u64, delay: Duration) -> Control {
    let min = shared.config.backoff_min.min(delay);
    let first = future::or(
        async {
            glommio::timer::sleep(min).await;
            Control::Elapsed
        },
        wait_for_control(shared, generation, false),
    )
    .await;
    if first == Control::Stop {
        return Control::Stop;
    }
    future::or(
        async {
            glommio::timer::sleep(delay.saturating_sub(min)).await;
            Control::Elapsed
        },
        wait_for_control(shared, generation, true),
    )
    .await
}

/// Returns when the run must stop (or, with `accept_retry`, when an acquire asks for an attempt
/// now); wakes on every change of readers or acquires, and at the idle deadline.
async fn wait_for_control(shared: &PullShared, generation: u64, accept_retry: bool) -> Control {
    loop {
        let listener = shared.control.listen();
        let now = Instant::now();
        let check = {
            let mut inner = shared.lock();
            let check = inner.stop_check(generation, now, shared.config.on_demand, shared.config.close_after_idle);
            if check != StopCheck::Stop && accept_retry && std::mem::take(&mut inner.retry_now) {
                return Control::RetryNow;
            }
            check
        };
        match check {
            StopCheck::Stop => {
                shared.progress.notify(usize::MAX);
                return Control::Stop;
            }
            StopCheck::Until(Some(at)) => {
                future::or(listener, glommio::timer::sleep(at.saturating_duration_since(now))).await;
            }
            StopCheck::Until(None) => listener.await,
        }
    }
}

/// Connects, DESCRIBEs, SETUPs every media and PLAYs.
async fn start_session(shared: &PullShared) -> Result<(Client, SessionDescription), Failure> {
    let stall = shared.context.config().read_timeout.min(MAX_STALL);
    let config = ClientConfig {
        transport: shared.config.transport,
        read_timeout: stall,
        write_timeout: stall,
        ..ClientConfig::default()
    };
    let mut client = Client::connect(&shared.config.url, config)
        .await
        .map_err(|e| failure(&shared.url, e))?;
    let played = async {
        let description = client.describe().await?;
        client.setup_all().await?;
        client.play().await?;
        Ok::<_, ClientError>(description)
    }
    .await;
    match played {
        Ok(description) => Ok((client, description)),
        Err(e) => {
            if client.session_id().is_some() {
                let _ = client.teardown().await;
            }
            Err(failure(&shared.url, e))
        }
    }
}

/// How a client error reaches waiting acquires: a refusal retrying cannot fix is definitive.
fn failure(url: &str, error: ClientError) -> Failure {
    let definitive = match &error {
        ClientError::Status { status, .. } => (400..500).contains(&status.0),
        ClientError::Auth(_) | ClientError::Url(_) | ClientError::Sdp(_) | ClientError::UnsupportedTransport => true,
        _ => false,
    };
    let error = match error {
        ClientError::Status {
            status: StatusCode::NOT_FOUND,
            ..
        } => PullError::NotFound { url: url.to_owned() },
        other => PullError::Upstream {
            url: url.to_owned(),
            reason: other.to_string(),
        },
    };
    Failure { error, definitive }
}

/// Moves the origin's packets to the stream until the session fails or the run must stop.
async fn pump(shared: &PullShared, generation: u64, client: &mut Client, stream: &ServerStream) -> PumpEnd {
    enum Next<T> {
        Packet(T),
        Stop,
    }
    // One stop watcher for the whole session, polled beside each read: no allocation per packet.
    let stop = wait_for_control(shared, generation, false);
    futures_lite::pin!(stop);
    let counters = &shared.counters;
    loop {
        let read = client.read_packet();
        let next = future::or(async move { Next::Packet(read.await) }, async {
            stop.as_mut().await;
            Next::Stop
        })
        .await;
        match next {
            Next::Stop => return PumpEnd::Stop,
            Next::Packet(Err(e)) => {
                return PumpEnd::Lost(Failure {
                    error: PullError::Upstream {
                        url: shared.url.clone(),
                        reason: e.to_string(),
                    },
                    definitive: false,
                })
            }
            Next::Packet(Ok(packet)) => {
                counters.packets.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(packet.data.len() as u64, Ordering::Relaxed);
                if let Err(e) = stream.write_packet(packet.track, packet.is_rtcp, packet.data) {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    tracing::trace!(url = %shared.url, error = %e, "packet from the origin dropped");
                }
            }
        }
    }
}

impl PullShared {
    /// Makes (or, with the same number of medias, keeps) the stream for a session that plays, and
    /// wakes the waiting acquires.
    fn install(&self, generation: u64, description: SessionDescription) -> Installed {
        let medias = description.medias.len();
        let mut inner = self.lock();
        if !inner.is_current(generation) {
            return Installed::Superseded;
        }
        let reconnected = inner.stream.is_some();
        let made = match inner.stream.take() {
            Some(stream) if stream.track_count() == medias => match stream.reload_description(description) {
                Ok(()) => Ok(stream),
                Err(e) => {
                    stream.close();
                    Err(e)
                }
            },
            old => {
                if let Some(old) = old {
                    tracing::info!(url = %self.url, medias, "the origin's track layout changed: readers are disconnected");
                    old.close();
                }
                ServerStream::new(&self.context, description)
            }
        };
        let stream = match made {
            Ok(stream) => stream,
            Err(e) => {
                return Installed::Failed(Failure {
                    error: PullError::Upstream {
                        url: self.url.clone(),
                        reason: format!("the origin's description is unusable: {e}"),
                    },
                    definitive: true,
                })
            }
        };
        inner.stream = Some(stream.clone());
        inner.state = super::PullState::Ready;
        inner.retry_now = false;
        drop(inner);
        self.counters.upstream_sessions.fetch_add(1, Ordering::Relaxed);
        self.progress.notify(usize::MAX);
        tracing::info!(url = %self.url, medias, reconnected, "pull ready");
        Installed::Playing(stream)
    }

    /// Counts and logs a failed attempt or lost session, and wakes the waiting acquires.
    fn record_failure(&self, generation: u64, failure: Failure, retry_in: Duration) {
        self.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
        let lost = {
            let mut inner = self.lock();
            let lost = inner.state == super::PullState::Ready;
            inner.record_failure(generation, failure.clone());
            lost
        };
        if lost {
            tracing::info!(url = %self.url, error = %failure.error, ?retry_in, "upstream session lost: reconnecting");
        } else {
            tracing::info!(url = %self.url, error = %failure.error, ?retry_in, "upstream attempt failed");
        }
        self.progress.notify(usize::MAX);
    }

    /// The worker thread could not make its executor: the run ends, waiting acquires fail.
    fn executor_failed(&self, generation: u64, reason: &str) {
        tracing::error!(url = %self.url, error = reason, "cannot start the pull executor");
        {
            let mut inner = self.lock();
            inner.record_failure(
                generation,
                Failure {
                    error: PullError::Upstream {
                        url: self.url.clone(),
                        reason: format!("cannot start the pull executor: {reason}"),
                    },
                    definitive: true,
                },
            );
            if inner.is_current(generation) {
                inner.end_run();
            }
        }
        self.progress.notify(usize::MAX);
    }
}
