//! What one core runs: its accept loop, its fan-out task, its connections, until shutdown.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use glommio::net::TcpListener;
use glommio::sync::Gate;
use glommio::{Latency, Shares, TaskQueueHandle};

use super::conn::{serve_connection, Arrival, ConnShared};
use super::handler::Handler;
use super::session::SessionRegistry;
use super::signal::CloseSignal;
use super::tls::serve_tls_connection;
use super::udp::{run_ingest, run_multicast_rtcp_receive, run_receive, send_fanout, CoreUdp};
use super::ServerContext;
use crate::fanout::core::{CoreFanout, Drained};
use crate::runtime::tcp::adopt_tcp_stream;
use crate::runtime::{adopt_tcp_listener, adopt_udp, AdoptedDoorbell, Doorbell};

/// What the lifecycle hands each core when it starts.
pub(crate) struct CoreStart {
    /// This core's SO_REUSEPORT listener.
    pub(crate) listener: OwnedFd,
    /// Whether `listener` speaks TLS (`tls` set without `rtsps_address`).
    pub(crate) listener_tls: bool,
    /// This core's RTSPS listener, when `rtsps_address` is set.
    pub(crate) rtsps_listener: Option<OwnedFd>,
    /// Rung by streams when they have new packets for this core's readers.
    pub(crate) fanout_bell: Doorbell,
    /// Ends (reads end-of-stream) when the server closes.
    pub(crate) shutdown_bell: Doorbell,
    /// Rung when a connection is moving onto this core (see `migrate`).
    pub(crate) migration_bell: Doorbell,
    /// This core's UDP sockets, when UDP transport is enabled.
    pub(crate) udp: Option<CoreUdpStart>,
}

/// A core's UDP sockets and the doorbell other cores ring when they route datagrams to it.
pub(crate) struct CoreUdpStart {
    pub(crate) rtp: OwnedFd,
    pub(crate) rtcp: OwnedFd,
    pub(crate) ingest_bell: Doorbell,
}

/// State shared by every task on one core.
pub(crate) struct CoreState<H> {
    pub(crate) core: usize,
    pub(crate) context: ServerContext,
    pub(crate) handler: H,
    pub(crate) fanout: CoreFanout,
    pub(crate) sessions: SessionRegistry,
    pub(crate) conns: RefCell<HashMap<u64, Rc<ConnShared>>>,
    pub(crate) udp: Option<CoreUdp>,
    /// The task queue of packet work: fan-out, UDP, and connections' writers.
    pub(crate) data_plane: TaskQueueHandle,
    next_conn_id: Cell<u64>,
}

impl<H> CoreState<H> {
    /// A connection id unique on this server: the core index in the low bits keeps ids from
    /// different cores apart without coordination.
    pub(crate) fn next_conn_id(&self) -> u64 {
        let n = self.next_conn_id.get();
        self.next_conn_id.set(n + 1);
        (n << 8) | (self.core as u64 & 0xff)
    }
}

/// How soon the data-plane queue must run once it has work.
const DATA_PLANE_LATENCY: Duration = Duration::from_millis(1);

/// Back-off after an accept error such as EMFILE, so a full fd table does not spin the core.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Runs core `core` until the server closes, then closes its connections and returns.
pub(crate) async fn run_core<H: Handler>(core: usize, context: ServerContext, handler: H, start: CoreStart) {
    let listener = adopt_tcp_listener(start.listener);
    let rtsps_listener = start.rtsps_listener.map(adopt_tcp_listener);
    let (udp, ingest_bell) = match (start.udp, context.udp()) {
        (Some(u), Some(shared)) => {
            let udp = CoreUdp {
                shared: shared.clone(),
                rtp: adopt_udp(u.rtp),
                rtcp: adopt_udp(u.rtcp),
                clients: RefCell::new(HashMap::new()),
                released: RefCell::new(Vec::new()),
            };
            (Some(udp), Some(u.ingest_bell))
        }
        _ => (None, None),
    };
    // The data plane runs in its own latency-sensitive task queue, so a burst of RTSP requests
    // (SETUP storms, slow handlers) is interleaved with packet work instead of delaying it.
    let data_plane =
        glommio::executor().create_task_queue(Shares::Static(1000), Latency::Matters(DATA_PLANE_LATENCY), "data-plane");
    let write_queue_size = context.config().write_queue_size;
    let data_plane_counters = context.counters().core(core).data_plane.clone();
    let state = Rc::new(CoreState {
        core,
        context,
        handler,
        fanout: CoreFanout::with_queue_size(core, write_queue_size, data_plane_counters),
        data_plane,
        sessions: SessionRegistry::default(),
        conns: RefCell::new(HashMap::new()),
        udp,
        next_conn_id: Cell::new(0),
    });
    let spawn_data = |future: Pin<Box<dyn Future<Output = ()>>>| {
        // The queue was created just above, so spawning into it cannot fail short of a glommio bug.
        glommio::spawn_local_into(future, data_plane).unwrap_or_else(|e| {
            tracing::error!(core, error = %e, "a data-plane task could not start; this core forwards nothing");
            glommio::spawn_local(async {})
        })
    };
    let udp_tasks = match ingest_bell {
        Some(bell) => vec![
            spawn_data(Box::pin(run_receive(state.clone(), false))),
            spawn_data(Box::pin(run_receive(state.clone(), true))),
            spawn_data(Box::pin(run_ingest(state.clone(), bell.adopt()))),
        ]
        .into_iter()
        .chain((core == 0).then(|| spawn_data(Box::pin(run_multicast_rtcp_receive(state.clone())))))
        .collect(),
        None => Vec::new(),
    };
    let fanout_task = spawn_data(Box::pin(run_fanout(state.clone(), start.fanout_bell.adopt())));
    let housekeeping_task = glommio::spawn_local(housekeeping(state.clone()));
    let connections = Gate::new();
    let mut shutdown = start.shutdown_bell.adopt();
    let mut migration_bell = start.migration_bell.adopt();
    let arrivals = async {
        while migration_bell.rung().await {
            while let Some(moving) = state.context.sessions().receive(core) {
                let stream = adopt_tcp_stream(moving.fd);
                // Boxed: a connection's task keeps its arguments for as long as it lives.
                let arrival = Box::new(Arrival {
                    buffered: moving.buffered,
                    request: moving.request,
                    nonce: moving.nonce,
                    user: moving.user,
                });
                let addrs = Some(moving.addrs);
                match connections.spawn(Box::pin(serve_connection(state.clone(), stream, Some(arrival), addrs))) {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(e) => tracing::error!(core, error = %e, "cannot spawn a moved connection's task"),
                }
            }
        }
    };
    // Set when the core stops: RTSPS handshakes in progress are abandoned.
    let stopping = Rc::new(CloseSignal::default());
    let tls = state.context.config().tls.as_ref().map(|t| t.0.clone());
    let main_tls = tls.clone().filter(|_| start.listener_tls);
    let accept = async {
        let main = accept_loop(&state, &connections, &listener, main_tls, &stopping);
        match (&rtsps_listener, tls) {
            (Some(rtsps), Some(tls)) => {
                futures_lite::future::or(main, accept_loop(&state, &connections, rtsps, Some(tls), &stopping)).await
            }
            _ => main.await,
        }
    };
    let accept_and_arrivals = futures_lite::future::or(accept, arrivals);
    futures_lite::future::or(accept_and_arrivals, async { while shutdown.rung().await {} }).await;
    drop(listener);
    drop(rtsps_listener);
    stopping.set();
    let open: Vec<Rc<ConnShared>> = state.conns.borrow().values().cloned().collect();
    for conn in open {
        conn.close();
    }
    if let Err(e) = connections.close().await {
        tracing::warn!(core, error = %e, "waiting for connections to close");
    }
    state.sessions.close_all(&state.handler, &state.context);
    drop(fanout_task);
    drop(housekeeping_task);
    drop(udp_tasks);
    tracing::debug!(core, "core stopped");
}

/// Accepts connections on `listener` forever, serving them as RTSPS when `tls` is given.
async fn accept_loop<H: Handler>(
    state: &Rc<CoreState<H>>,
    connections: &Gate,
    listener: &TcpListener,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    stopping: &Rc<CloseSignal>,
) {
    let core = state.core;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                tracing::trace!(core, tls = tls.is_some(), "accepted a connection");
                let state = state.clone();
                // A glommio task is cancelled when its handle drops: detach it, the gate tracks it.
                // Boxed: the gate's wrapper future holds the future it runs twice (as its capture
                // and as what it awaits), so unboxed every connection's state would be paid double.
                let spawned = match &tls {
                    Some(tls) => connections.spawn(Box::pin(serve_tls_connection(
                        state,
                        stream,
                        tls.clone(),
                        stopping.clone(),
                    ))),
                    None => connections.spawn(Box::pin(serve_connection(state, stream, None, None))),
                };
                match spawned {
                    Ok(task) => {
                        task.detach();
                    }
                    Err(e) => tracing::error!(core, error = %e, "cannot spawn a connection task"),
                }
            }
            Err(e) => {
                tracing::warn!(core, error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
}

/// Drains streams into local readers each time the core's fan-out doorbell rings.
async fn run_fanout<H: Handler>(state: Rc<CoreState<H>>, mut bell: AdoptedDoorbell) {
    let mut udp_sends = Vec::new();
    while bell.rung().await {
        loop {
            let drained = state.fanout.drain();
            state.fanout.take_udp_sends(&mut udp_sends);
            if let Some(udp) = state.udp.as_ref() {
                send_fanout(
                    udp,
                    &mut udp_sends,
                    &state.context.counters().core(state.core).data_plane,
                )
                .await;
            }
            udp_sends.clear();
            if drained == Drained::Done {
                break;
            }
            glommio::executor().yield_now().await;
        }
    }
}

/// How often a core reports reader losses.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// Periodic per-core work that must not run per packet.
async fn housekeeping<H: Handler>(state: Rc<CoreState<H>>) {
    loop {
        glommio::timer::sleep(HOUSEKEEPING_PERIOD).await;
        // The executor's stats restart at each read: what it spent running tasks and polling I/O,
        // not parked, since the previous period. Nothing else on this core reads them.
        let busy = glommio::executor().executor_stats().total_runtime();
        state.context.counters().core(state.core).add_busy(busy);
        state.sessions.report_reader_losses(&state.handler);
        let now = std::time::Instant::now();
        state.sessions.close_expired(&state, now);
        super::udp::send_receiver_reports(&state, now).await;
        state.handler.on_housekeeping();
    }
}
