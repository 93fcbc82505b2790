//! The UDP side of a server: per-core sockets on the shared server ports, the route from a
//! client's address to the core that owns its session, and ingest of publishers' packets.
//!
//! The kernel spreads datagrams over the cores' SO_REUSEPORT sockets by a hash of the source, not
//! by who owns the session, so a receiving core looks the source up in a shared route table and
//! hands the packet to the owner's mailbox (a lock-free queue plus one doorbell ring per batch).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use crossbeam_queue::ArrayQueue;

use super::core::CoreState;
use super::handler::Handler;
use super::receiver::{receiver_report, RECEIVER_REPORT_INTERVAL};
use super::session::{PublishedPacket, ServerSession};
use crate::fanout::core::UdpSend;
use crate::fanout::counters::DataPlaneCounters;
use crate::fanout::stream::CoreBells;
use crate::proto::rtcp::RtcpPacket;
use crate::proto::rtp::RtpView;
use crate::runtime::{RecvBatch, UdpSocket};
use crate::session::SessionState;
use crate::session::{Pushed, Released};

/// Packets waiting for their owner core; beyond this a burst is dropped and counted.
const MAILBOX_CAPACITY: usize = 8192;

/// Datagrams received per `recvmmsg`.
const RECV_BATCH: usize = 64;

/// A datagram on its way to the core that owns its sender's session.
#[derive(Debug)]
pub(crate) struct Ingress {
    from: SocketAddr,
    is_rtcp: bool,
    oversized: bool,
    data: Bytes,
}

/// What every core shares about UDP.
pub(crate) struct UdpShared {
    /// The advertised server ports (RTP, RTCP).
    pub(crate) server_ports: (u16, u16),
    routes: RwLock<HashMap<SocketAddr, usize>>,
    /// Client RTP destinations taken by reader sessions, on every core: two readers at one
    /// address would receive each other's packets.
    destinations: std::sync::Mutex<HashMap<SocketAddr, String>>,
    mailboxes: Box<[ArrayQueue<Ingress>]>,
    bells: CoreBells,
    dropped: AtomicU64,
}

impl UdpShared {
    pub(crate) fn new(server_ports: (u16, u16), bells: CoreBells) -> UdpShared {
        let mailboxes = (0..bells.len()).map(|_| ArrayQueue::new(MAILBOX_CAPACITY)).collect();
        UdpShared {
            server_ports,
            routes: RwLock::new(HashMap::new()),
            destinations: std::sync::Mutex::new(HashMap::new()),
            mailboxes,
            bells,
            dropped: AtomicU64::new(0),
        }
    }

    fn set_route(&self, from: SocketAddr, core: usize) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(from, core);
    }

    fn remove_route(&self, from: SocketAddr) {
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&from);
    }

    /// Datagrams dropped because their owner's mailbox was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Takes `destination` for `session`; false when another session already has it.
    pub(crate) fn claim_destination(&self, destination: SocketAddr, session: &str) -> bool {
        let mut taken = self.destinations.lock().unwrap_or_else(PoisonError::into_inner);
        match taken.get(&destination) {
            Some(owner) => owner == session,
            None => {
                taken.insert(destination, session.to_owned());
                true
            }
        }
    }

    fn release_destinations(&self, session: &str) {
        let mut taken = self.destinations.lock().unwrap_or_else(PoisonError::into_inner);
        taken.retain(|_, owner| owner != session);
    }
}

/// Who a datagram from a client address belongs to, on the owning core.
#[derive(Debug, Clone)]
pub(crate) struct UdpClient {
    pub(crate) session: String,
    pub(crate) track: usize,
    pub(crate) is_rtcp: bool,
}

/// One core's UDP sockets and its table of clients.
pub(crate) struct CoreUdp {
    pub(crate) shared: std::sync::Arc<UdpShared>,
    pub(crate) rtp: UdpSocket,
    pub(crate) rtcp: UdpSocket,
    pub(crate) clients: RefCell<HashMap<SocketAddr, UdpClient>>,
    /// Scratch space for what a reorder buffer releases.
    pub(crate) released: RefCell<Vec<Released<Bytes>>>,
}

impl CoreUdp {
    /// Routes datagrams from `from` to this core, for `client`.
    pub(crate) fn register(&self, core: usize, from: SocketAddr, client: UdpClient) {
        self.shared.set_route(from, core);
        self.clients.borrow_mut().insert(from, client);
    }

    /// Forgets every address of a session.
    pub(crate) fn forget_session(&self, session: &str) {
        self.shared.release_destinations(session);
        let mut clients = self.clients.borrow_mut();
        let gone: Vec<SocketAddr> = clients
            .iter()
            .filter(|(_, c)| c.session == session)
            .map(|(a, _)| *a)
            .collect();
        for addr in gone {
            clients.remove(&addr);
            self.shared.remove_route(addr);
        }
    }
}

/// Receives on one of this core's sockets and hands each datagram to its owner's mailbox.
pub(crate) async fn run_receive<H: Handler>(state: Rc<CoreState<H>>, is_rtcp: bool) {
    let Some(udp) = state.udp.as_ref() else { return };
    let socket = if is_rtcp { &udp.rtcp } else { &udp.rtp };
    receive_on(&state, udp, socket, is_rtcp, |from| from).await;
}

/// Receives readers' receiver reports sent to multicast groups (on core 0 only: every socket on
/// the port would get a copy). A multicast reader is known by its IP alone, so the route key is
/// its address with port 0.
pub(crate) async fn run_multicast_rtcp_receive<H: Handler>(state: Rc<CoreState<H>>) {
    let (Some(udp), Some(multicast)) = (state.udp.as_ref(), state.context.multicast()) else {
        return;
    };
    let Some(fd) = multicast.rtcp_socket.as_ref().and_then(|fd| fd.try_clone().ok()) else {
        return;
    };
    let socket = crate::runtime::adopt_udp(fd);
    receive_on(&state, udp, &socket, true, |from| SocketAddr::new(from.ip(), 0)).await;
}

async fn receive_on<H: Handler>(
    state: &Rc<CoreState<H>>,
    udp: &CoreUdp,
    socket: &UdpSocket,
    is_rtcp: bool,
    route_key: impl Fn(SocketAddr) -> SocketAddr,
) {
    let max_packet = state.context.config().max_packet_size;
    let mut batch = RecvBatch::new(RECV_BATCH, max_packet);
    let mut arena = BytesMut::new();
    let mut woken = vec![false; udp.shared.mailboxes.len()];
    loop {
        let count = match socket.recv_batch(&mut batch).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(core = state.core, error = %e, "UDP receive failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        woken.iter_mut().for_each(|w| *w = false);
        {
            let routes = udp.shared.routes.read().unwrap_or_else(PoisonError::into_inner);
            for i in 0..count {
                let (data, from, oversized) = batch.packet(i);
                let from = route_key(from);
                let Some(&core) = routes.get(&from) else {
                    tracing::trace!(%from, "datagram from an unknown source dropped");
                    continue;
                };
                if arena.capacity() < data.len() {
                    arena.reserve(64 * 1024);
                }
                arena.extend_from_slice(data);
                let ingress = Ingress {
                    from,
                    is_rtcp,
                    oversized,
                    data: arena.split().freeze(),
                };
                match udp.shared.mailboxes.get(core).map(|m| m.push(ingress)) {
                    Some(Ok(())) => woken[core] = true,
                    _ => {
                        udp.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        for (core, wake) in woken.iter().enumerate() {
            if *wake {
                udp.shared.bells.ring(core);
            }
        }
    }
}

/// Handles the datagrams other cores (and this one) routed here, each time the bell rings.
pub(crate) async fn run_ingest<H: Handler>(state: Rc<CoreState<H>>, mut bell: crate::runtime::AdoptedDoorbell) {
    let Some(udp) = state.udp.as_ref() else { return };
    let Some(mailbox) = udp.shared.mailboxes.get(state.core) else {
        return;
    };
    let counters = &state.context.counters().core(state.core).data_plane;
    while bell.rung().await {
        let (mut packets, mut bytes, mut lost) = (0u64, 0u64, 0u64);
        while let Some(ingress) = mailbox.pop() {
            let len = ingress.data.len() as u64;
            match handle_ingress(&state, udp, ingress) {
                Ingested::Publisher { lost: n } => {
                    packets += 1;
                    bytes += len;
                    lost += n;
                }
                Ingested::Other => {}
            }
        }
        counters.add_received(packets, bytes);
        counters.add_lost(lost);
    }
}

/// What a datagram routed to this core was.
enum Ingested {
    /// A publisher's packet, whose sequence number showed `lost` packets missing before it.
    Publisher { lost: u64 },
    /// Anything else: a reader's receiver report, a stray or invalid datagram.
    Other,
}

fn handle_ingress<H: Handler>(state: &Rc<CoreState<H>>, udp: &CoreUdp, ingress: Ingress) -> Ingested {
    let client = udp.clients.borrow().get(&ingress.from).cloned();
    let Some(client) = client else {
        return Ingested::Other;
    };
    let Some(session) = state.sessions.get(&client.session) else {
        return Ingested::Other;
    };
    if client.is_rtcp != ingress.is_rtcp {
        return Ingested::Other; // RTP arriving from the RTCP port or the reverse: not what was negotiated
    }
    touch(&session);
    if session.state() != SessionState::Record {
        return Ingested::Other; // a reader's receiver report: keeping it alive is all it does
    }
    if ingress.oversized {
        let error = OversizedDatagram {
            max: state.context.config().max_packet_size,
        };
        state.handler.on_decode_error(&session, &error);
        return Ingested::Other;
    }
    let now = Instant::now();
    if ingress.is_rtcp {
        note_sender_reports(&session, client.track, &ingress.data, now);
        deliver(&session, client.track, true, &ingress.data);
        return Ingested::Publisher { lost: 0 };
    }
    let view = match RtpView::parse(&ingress.data) {
        Ok(view) => view,
        Err(e) => {
            state.handler.on_decode_error(&session, &e);
            return Ingested::Other;
        }
    };
    let seq = view.sequence_number();
    // A scratch vector kept on the core, so ingest allocates nothing per packet.
    let mut released = std::mem::take(&mut *udp.released.borrow_mut());
    {
        let mut receivers = session.shared.receivers.borrow_mut();
        let Some(receiver) = receivers.get_mut(client.track) else {
            return Ingested::Other;
        };
        let pushed = receiver.reorder.push(seq, ingress.data, &mut |r| released.push(r));
        if pushed != Pushed::Accepted {
            tracing::trace!(session = %client.session, seq, ?pushed, "RTP packet dropped");
        }
        for r in &released {
            if let Released::Packet(packet) = r {
                if let Ok(v) = RtpView::parse(packet) {
                    receiver.on_packet(v.sequence_number(), v.timestamp(), v.ssrc(), now);
                }
            }
        }
    }
    let mut lost = 0;
    for r in released.drain(..) {
        match r {
            Released::Packet(packet) => deliver(&session, client.track, false, &packet),
            Released::Lost(n) => {
                lost += u64::from(n);
                state.handler.on_packets_lost(&session, u64::from(n));
            }
        }
    }
    *udp.released.borrow_mut() = released;
    Ingested::Publisher { lost }
}

/// Hands a publisher's packet to the session's callback.
fn deliver(session: &ServerSession, track: usize, is_rtcp: bool, data: &[u8]) {
    let mut callback = session.shared.on_packet.borrow_mut();
    if let Some(callback) = callback.as_mut() {
        callback(PublishedPacket { track, is_rtcp, data });
    }
}

/// Remembers the sender reports in a publisher's RTCP, for the LSR/DLSR of our receiver reports.
fn note_sender_reports(session: &ServerSession, track: usize, data: &[u8], now: Instant) {
    let mut receivers = session.shared.receivers.borrow_mut();
    let Some(receiver) = receivers.get_mut(track) else {
        return;
    };
    for packet in crate::proto::rtcp::packets(data) {
        match packet {
            Ok(RtcpPacket::SenderReport(sr)) => receiver.on_sender_report(sr.ntp(), now),
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// Sends each UDP publisher on this core its receiver report when due.
pub(crate) async fn send_receiver_reports<H: Handler>(state: &CoreState<H>, now: Instant) {
    let Some(udp) = state.udp.as_ref() else { return };
    for session in state.sessions.all() {
        if session.state() != SessionState::Record || session.transport() != Some(crate::session::TransportKind::Udp) {
            continue;
        }
        if session.shared.next_receiver_report.get().is_some_and(|due| now < due) {
            continue;
        }
        let report = {
            let mut receivers = session.shared.receivers.borrow_mut();
            receiver_report(session.shared.server_ssrc, &mut receivers, now)
        };
        // The first report goes out as soon as packets arrived, then every interval.
        let Some(report) = report else { continue };
        session
            .shared
            .next_receiver_report
            .set(Some(now + RECEIVER_REPORT_INTERVAL));
        let destination = session
            .shared
            .medias
            .borrow()
            .first()
            .and_then(|m| m.client_ports)
            .map(|(_, rtcp)| SocketAddr::new(session.shared.creator_ip, rtcp));
        if let Some(destination) = destination {
            let mut ignore = |_: usize, _: std::io::Error| {};
            let _ = udp.rtcp.send_to_many(&report, &[destination], &mut ignore).await;
        }
    }
}

fn touch(session: &ServerSession) {
    let mut liveness = session.shared.liveness.get();
    liveness.touch(Instant::now());
    session.shared.liveness.set(liveness);
}

/// A publisher sent a datagram larger than the configured max packet size.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("datagram larger than the {max}-byte max packet size")]
pub struct OversizedDatagram {
    /// The configured limit.
    pub max: usize,
}

/// Sends what the fan-out queued for this core's UDP readers, counting what the kernel took once
/// per call.
pub(crate) async fn send_fanout(udp: &CoreUdp, sends: &mut Vec<UdpSend>, counters: &DataPlaneCounters) {
    let (mut packets, mut bytes) = (0u64, 0u64);
    for send in sends.drain(..) {
        let socket = if send.is_rtcp { &udp.rtcp } else { &udp.rtp };
        let mut on_error = |index: usize, error: std::io::Error| {
            tracing::trace!(destination = ?send.destinations.get(index), %error, "UDP send to a reader failed");
        };
        match socket
            .send_to_many(&send.payload, &send.destinations, &mut on_error)
            .await
        {
            Ok(sent) => {
                packets += sent as u64;
                bytes += (sent * send.payload.len()) as u64;
            }
            Err(e) => tracing::debug!(error = %e, "UDP fan-out send failed"),
        }
    }
    counters.add_sent(packets, bytes);
}
