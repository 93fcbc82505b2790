//! Server-wide counters: one block of relaxed atomics per core, summed into a [`ServerMetrics`]
//! snapshot by [`ServerContext::metrics`](super::ServerContext::metrics).
//!
//! Only the owning core writes its block (gauges go up and down on the core that opened the
//! connection or session, so a core's value never goes below zero), so the data plane never
//! contends on a cache line; readers of a snapshot pay for the summing.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::fanout::counters::{DataPlaneCounters, DataPlaneCounts};
use crate::session::{SessionState, TransportKind};

/// Every session state, in the order the counters index them.
pub const SESSION_STATES: [SessionState; 5] = [
    SessionState::Initial,
    SessionState::PrePlay,
    SessionState::Play,
    SessionState::PreRecord,
    SessionState::Record,
];

/// Every session transport, `None` for a session whose first SETUP has not succeeded yet.
pub const SESSION_TRANSPORTS: [Option<TransportKind>; 4] = [
    None,
    Some(TransportKind::Tcp),
    Some(TransportKind::Udp),
    Some(TransportKind::Multicast),
];

fn state_index(state: SessionState) -> usize {
    match state {
        SessionState::Initial => 0,
        SessionState::PrePlay => 1,
        SessionState::Play => 2,
        SessionState::PreRecord => 3,
        SessionState::Record => 4,
    }
}

fn transport_index(transport: Option<TransportKind>) -> usize {
    match transport {
        None => 0,
        Some(TransportKind::Tcp) => 1,
        Some(TransportKind::Udp) => 2,
        Some(TransportKind::Multicast) => 3,
    }
}

/// Open sessions by state and transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounts {
    counts: [[u64; SESSION_TRANSPORTS.len()]; SESSION_STATES.len()],
}

impl SessionCounts {
    /// Open sessions in `state` whose media travels over `transport` (`None`: not set up yet).
    pub fn get(&self, state: SessionState, transport: Option<TransportKind>) -> u64 {
        self.counts[state_index(state)][transport_index(transport)]
    }

    /// Open sessions in `state`, over any transport.
    pub fn in_state(&self, state: SessionState) -> u64 {
        self.counts[state_index(state)].iter().sum()
    }

    /// Open sessions over `transport`, in any state.
    pub fn over_transport(&self, transport: Option<TransportKind>) -> u64 {
        self.counts.iter().map(|row| row[transport_index(transport)]).sum()
    }

    /// Open sessions in all.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Every (state, transport, count), zeros included, in [`SESSION_STATES`] then
    /// [`SESSION_TRANSPORTS`] order.
    pub fn iter(&self) -> impl Iterator<Item = (SessionState, Option<TransportKind>, u64)> + '_ {
        SESSION_STATES.iter().flat_map(move |&state| {
            SESSION_TRANSPORTS
                .iter()
                .map(move |&transport| (state, transport, self.get(state, transport)))
        })
    }
}

/// A snapshot of a server's counters, summed over its cores. Counters (`*_total` in Prometheus
/// terms) only grow while the server runs; gauges are the current value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerMetrics {
    /// Open RTSP connections (gauge).
    pub connections_open: u64,
    /// RTSP connections accepted since the server started.
    pub connections_accepted: u64,
    /// Open sessions by state and transport (gauges).
    pub sessions: SessionCounts,
    /// RTP and RTCP packets received from publishers, over TCP (interleaved) and UDP.
    pub received_packets: u64,
    /// Bytes of those packets, without interleaving headers or IP/UDP headers.
    pub received_bytes: u64,
    /// RTP and RTCP packets sent to readers: TCP frames written, UDP datagrams sent, and packets
    /// sent to multicast groups (once per group, whatever the number of readers).
    pub sent_packets: u64,
    /// Bytes of those packets, without interleaving headers or IP/UDP headers.
    pub sent_bytes: u64,
    /// Packets publishers' RTP sequence numbers show were lost before reaching the server (the
    /// sum of the ingest packets-lost events given to the handler).
    pub packets_lost: u64,
    /// Packets not queued for a TCP reader because its write queue was full: it reads slower
    /// than the stream arrives. Counted once per reader and packet.
    pub packets_dropped_slow_reader: u64,
    /// Times a core fell a whole stream ring behind and skipped packets for all its readers of
    /// that stream.
    pub ring_overruns: u64,
    /// Packets skipped in those overruns (once per core and stream, not per reader).
    pub ring_overrun_packets: u64,
    /// UDP datagrams from publishers dropped because the core owning their session fell behind.
    pub udp_ingress_dropped: u64,
    /// Time each core's executor spent running tasks and polling I/O (not parked), in seconds,
    /// indexed by core. Updated by each core about once a second.
    pub core_busy_seconds: Vec<f64>,
}

/// The control-plane counters of one core, plus its data-plane block.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CoreCounters {
    /// Shared with the core's fan-out and connections' outboxes.
    pub(crate) data_plane: Arc<DataPlaneCounters>,
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    sessions: [[AtomicU64; SESSION_TRANSPORTS.len()]; SESSION_STATES.len()],
    busy_nanos: AtomicU64,
}

impl CoreCounters {
    /// Adds executor time the core spent busy since the last call.
    pub(crate) fn add_busy(&self, busy: Duration) {
        let nanos = u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX);
        self.busy_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn session_cell(&self, (state, transport): (usize, usize)) -> Option<&AtomicU64> {
        self.sessions.get(state)?.get(transport)
    }
}

/// Counters sent from any thread: a stream writes to its multicast group from its publisher's
/// thread, whichever core (or none) that is.
#[derive(Debug, Default)]
#[repr(align(128))]
struct SharedCounters {
    multicast_sent_packets: AtomicU64,
    multicast_sent_bytes: AtomicU64,
}

/// Every core's counters; one per server, in its context.
#[derive(Debug)]
pub(crate) struct ServerCounters {
    cores: Box<[CoreCounters]>,
    /// Used if a core index is ever out of range, so counting never panics; summed like the others.
    spare: CoreCounters,
    shared: SharedCounters,
}

impl ServerCounters {
    /// Counters for `cores` cores.
    pub(crate) fn new(cores: usize) -> ServerCounters {
        ServerCounters {
            cores: (0..cores).map(|_| CoreCounters::default()).collect(),
            spare: CoreCounters::default(),
            shared: SharedCounters::default(),
        }
    }

    /// Core `core`'s block.
    pub(crate) fn core(&self, core: usize) -> &CoreCounters {
        self.cores.get(core).unwrap_or(&self.spare)
    }

    /// Counts a packet sent to a multicast group.
    pub(crate) fn add_multicast_sent(&self, packets: u64, bytes: u64) {
        self.shared.multicast_sent_packets.fetch_add(packets, Ordering::Relaxed);
        self.shared.multicast_sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sums every core into a snapshot (`udp_ingress_dropped` is the caller's to fill in).
    pub(crate) fn snapshot(&self) -> ServerMetrics {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut metrics = ServerMetrics::default();
        let mut data = DataPlaneCounts::default();
        for core in self.cores.iter().chain(std::iter::once(&self.spare)) {
            // Gauges are wrapping sums: a core's value cannot go below zero, but a decrement seen
            // before its increment (relaxed loads) must not turn into 2^64.
            metrics.connections_open = metrics.connections_open.wrapping_add(load(&core.connections_open));
            metrics.connections_accepted += load(&core.connections_accepted);
            for (row, cells) in metrics.sessions.counts.iter_mut().zip(core.sessions.iter()) {
                for (count, cell) in row.iter_mut().zip(cells.iter()) {
                    *count = count.wrapping_add(load(cell));
                }
            }
            data += core.data_plane.counts();
        }
        metrics.connections_open = clamp_gauge(metrics.connections_open);
        for count in metrics.sessions.counts.iter_mut().flatten() {
            *count = clamp_gauge(*count);
        }
        metrics.received_packets = data.received_packets;
        metrics.received_bytes = data.received_bytes;
        metrics.sent_packets = data.sent_packets + load(&self.shared.multicast_sent_packets);
        metrics.sent_bytes = data.sent_bytes + load(&self.shared.multicast_sent_bytes);
        metrics.packets_lost = data.packets_lost;
        metrics.packets_dropped_slow_reader = data.dropped_slow_reader;
        metrics.ring_overruns = data.ring_overruns;
        metrics.ring_overrun_packets = data.ring_overrun_packets;
        metrics.core_busy_seconds = self
            .cores
            .iter()
            .map(|core| Duration::from_nanos(load(&core.busy_nanos)).as_secs_f64())
            .collect();
        metrics
    }
}

/// A gauge summed with wrapping arithmetic that came out "negative" (a racing read) reads as 0.
fn clamp_gauge(value: u64) -> u64 {
    if value > u64::MAX / 2 {
        0
    } else {
        value
    }
}

/// Counts one open connection on its core while it lives.
#[derive(Debug)]
pub(crate) struct ConnectionGauge {
    counters: Arc<ServerCounters>,
    core: usize,
}

impl ConnectionGauge {
    /// Counts a connection open on `core`; `accepted` when it was accepted here rather than moved
    /// from another core (a moved connection was counted as accepted by its first core).
    pub(crate) fn open(counters: Arc<ServerCounters>, core: usize, accepted: bool) -> ConnectionGauge {
        let block = counters.core(core);
        block.connections_open.fetch_add(1, Ordering::Relaxed);
        if accepted {
            block.connections_accepted.fetch_add(1, Ordering::Relaxed);
        }
        ConnectionGauge { counters, core }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        let block = self.counters.core(self.core);
        block.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one session in its (state, transport) cell of its core until it is released.
#[derive(Debug)]
pub(crate) struct SessionGauge {
    counters: Arc<ServerCounters>,
    core: usize,
    /// The cell the session is counted in; `None` once released.
    cell: Cell<Option<(usize, usize)>>,
}

impl SessionGauge {
    /// Counts a new session on `core` in `state`, with no transport yet.
    pub(crate) fn open(counters: Arc<ServerCounters>, core: usize, state: SessionState) -> SessionGauge {
        let gauge = SessionGauge {
            counters,
            core,
            cell: Cell::new(None),
        };
        gauge.set(state, None);
        gauge
    }

    /// Moves the session to the cell of `state` and `transport`.
    pub(crate) fn set(&self, state: SessionState, transport: Option<TransportKind>) {
        let next = (state_index(state), transport_index(transport));
        let previous = self.cell.replace(Some(next));
        if previous == Some(next) {
            return;
        }
        let block = self.counters.core(self.core);
        if let Some(cell) = previous.and_then(|p| block.session_cell(p)) {
            cell.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(cell) = block.session_cell(next) {
            cell.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stops counting the session (it closed); later calls do nothing.
    pub(crate) fn release(&self) {
        if let Some(cell) = self
            .cell
            .take()
            .and_then(|p| self.counters.core(self.core).session_cell(p))
        {
            cell.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for SessionGauge {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_follow_connections_and_sessions_and_return_to_zero() {
        let counters = Arc::new(ServerCounters::new(2));
        let first = ConnectionGauge::open(counters.clone(), 0, true);
        let moved = ConnectionGauge::open(counters.clone(), 1, false);
        let session = SessionGauge::open(counters.clone(), 1, SessionState::Initial);
        session.set(SessionState::PrePlay, Some(TransportKind::Tcp));
        session.set(SessionState::Play, Some(TransportKind::Tcp));
        let metrics = counters.snapshot();
        assert_eq!((metrics.connections_open, metrics.connections_accepted), (2, 1));
        assert_eq!(metrics.sessions.get(SessionState::Play, Some(TransportKind::Tcp)), 1);
        assert_eq!(metrics.sessions.total(), 1);
        assert_eq!(metrics.sessions.in_state(SessionState::Play), 1);
        assert_eq!(metrics.sessions.over_transport(Some(TransportKind::Tcp)), 1);
        assert_eq!(metrics.sessions.iter().count(), 20);
        session.release();
        drop(session);
        drop((first, moved));
        let metrics = counters.snapshot();
        assert_eq!((metrics.connections_open, metrics.sessions.total()), (0, 0));
        assert_eq!(metrics.connections_accepted, 1);
    }

    #[test]
    fn the_snapshot_sums_every_core_and_the_multicast_sends() {
        let counters = ServerCounters::new(2);
        counters.core(0).data_plane.add_sent(2, 200);
        counters.core(1).data_plane.add_sent(1, 50);
        counters.core(1).data_plane.add_received(4, 400);
        counters.add_multicast_sent(1, 10);
        counters.core(1).add_busy(Duration::from_millis(1500));
        counters.core(7).data_plane.add_lost(3);
        let metrics = counters.snapshot();
        assert_eq!((metrics.sent_packets, metrics.sent_bytes), (4, 260));
        assert_eq!((metrics.received_packets, metrics.received_bytes), (4, 400));
        assert_eq!(metrics.packets_lost, 3, "an out-of-range core still counts");
        assert_eq!(metrics.core_busy_seconds, vec![0.0, 1.5]);
    }
}
