//! One core's fan-out: its cursor into each stream it has readers of, and those readers.
//!
//! When the core's doorbell rings, [`CoreFanout::drain`] reads each pending stream's new packets once
//! and hands every local reader the same buffer (a refcount, not a copy), as an interleaved frame in
//! its connection's outbox. A reader whose outbox is full loses that packet alone.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::counters::DataPlaneCounters;
use super::outbox::{Outbox, Outgoing, PushError};
use super::ring::{PacketMeta, ReadOutcome, RingReader};
use super::stream::StreamShared;

/// Most packets read per stream before the drain gives other tasks a turn.
const MAX_DRAIN_BUDGET: usize = 256;

/// Bytes carved per arena refill: packets are sliced out of one allocation, which is reclaimed
/// (not reallocated) once every reader has written the packets it holds.
const ARENA_CHUNK: usize = 256 * 1024;

/// A reader over TCP: where its frames go and which channel each track uses.
#[derive(Debug)]
pub(crate) struct TcpReader {
    outbox: Rc<Outbox>,
    /// RTP channel per track (RTCP is the next channel); `None` for tracks it did not set up.
    rtp_channels: Vec<Option<u8>>,
    lost: Cell<u64>,
}

impl TcpReader {
    /// A reader writing to `outbox`, with the interleaved RTP channel of each track.
    pub(crate) fn new(outbox: Rc<Outbox>, rtp_channels: Vec<Option<u8>>) -> TcpReader {
        TcpReader {
            outbox,
            rtp_channels,
            lost: Cell::new(0),
        }
    }

    /// Packets this reader lost: its queue was full, or this core fell behind the ring.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.get()
    }

    /// Queues a packet to the reader; returns whether it was dropped because the queue was full.
    fn deliver(&self, meta: PacketMeta, payload: &Bytes) -> bool {
        let Some(Some(rtp_channel)) = self.rtp_channels.get(usize::from(meta.track)) else {
            return false;
        };
        let channel = if meta.is_rtcp {
            rtp_channel.wrapping_add(1)
        } else {
            *rtp_channel
        };
        let Some(frame) = Outgoing::frame(channel, payload.clone()) else {
            return false;
        };
        match self.outbox.push_frame(frame) {
            Ok(()) | Err(PushError::Closed) => false,
            Err(PushError::Full) => {
                self.lost.set(self.lost.get() + 1);
                true
            }
        }
    }
}

/// A reader over unicast UDP: the (RTP, RTCP) destination of each track it set up.
#[derive(Debug)]
pub(crate) struct UdpReader {
    destinations: Vec<Option<(SocketAddr, SocketAddr)>>,
    lost: Cell<u64>,
}

impl UdpReader {
    /// A reader receiving track `i` at `destinations[i]` (RTP, RTCP).
    pub(crate) fn new(destinations: Vec<Option<(SocketAddr, SocketAddr)>>) -> UdpReader {
        UdpReader {
            destinations,
            lost: Cell::new(0),
        }
    }

    /// Packets this reader lost because its core fell behind the ring.
    pub(crate) fn lost(&self) -> u64 {
        self.lost.get()
    }
}

/// A local reader of a stream.
#[derive(Debug, Clone)]
pub(crate) enum Reader {
    /// Interleaved frames into a connection's outbox.
    Tcp(Rc<TcpReader>),
    /// Datagrams from this core's UDP sockets.
    Udp(Rc<UdpReader>),
}

impl Reader {
    /// Packets this reader lost.
    pub(crate) fn lost(&self) -> u64 {
        match self {
            Reader::Tcp(r) => r.lost(),
            Reader::Udp(r) => r.lost(),
        }
    }

    fn add_lost(&self, lost: u64) {
        let counter = match self {
            Reader::Tcp(r) => &r.lost,
            Reader::Udp(r) => &r.lost,
        };
        counter.set(counter.get() + lost);
    }
}

/// One packet to send to every UDP reader of a track on this core, sharing one buffer.
#[derive(Debug)]
pub(crate) struct UdpSend {
    /// The packet.
    pub(crate) payload: Bytes,
    /// Whether it goes out of the RTCP socket.
    pub(crate) is_rtcp: bool,
    /// Where it goes.
    pub(crate) destinations: Rc<[SocketAddr]>,
}

/// Identifies a reader added to a [`CoreFanout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ReaderId(u64);

struct LocalStream {
    shared: Arc<StreamShared>,
    cursor: RingReader,
    readers: Vec<(ReaderId, Reader)>,
    /// UDP destinations per track, [RTP, RTCP]; rebuilt when readers come and go.
    udp_destinations: Vec<[Rc<[SocketAddr]>; 2]>,
}

impl LocalStream {
    fn rebuild_udp_destinations(&mut self) {
        let tracks = self
            .readers
            .iter()
            .filter_map(|(_, r)| match r {
                Reader::Udp(u) => Some(u.destinations.len()),
                Reader::Tcp(_) => None,
            })
            .max()
            .unwrap_or(0);
        self.udp_destinations = (0..tracks)
            .map(|track| {
                let pick = |rtcp: bool| -> Rc<[SocketAddr]> {
                    self.readers
                        .iter()
                        .filter_map(|(_, r)| match r {
                            Reader::Udp(u) => u.destinations.get(track).copied().flatten(),
                            Reader::Tcp(_) => None,
                        })
                        .map(|(rtp, rtcp_addr)| if rtcp { rtcp_addr } else { rtp })
                        .collect()
                };
                [pick(false), pick(true)]
            })
            .collect();
    }
}

/// Result of one drain pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Drained {
    /// Every pending stream was read to its head.
    Done,
    /// A stream still has packets; drain again after yielding.
    More,
}

/// The fan-out state of one core.
pub(crate) struct CoreFanout {
    core: usize,
    budget: usize,
    streams: RefCell<Vec<LocalStream>>,
    next_id: Cell<u64>,
    scratch: RefCell<Vec<u8>>,
    arena: RefCell<BytesMut>,
    udp_out: RefCell<Vec<UdpSend>>,
    counters: Arc<DataPlaneCounters>,
}

impl CoreFanout {
    /// The fan-out of core `core`, counting into a block of its own.
    pub(crate) fn new(core: usize) -> CoreFanout {
        Self::with_queue_size(core, MAX_DRAIN_BUDGET * 2, Arc::default())
    }

    /// The fan-out of core `core` whose TCP readers queue up to `write_queue_size` packets.
    ///
    /// A drain pass moves at most half a queue's worth of packets per stream before yielding, so
    /// writers empty the queues between passes and a backlog waits in the ring (which is much
    /// larger) instead of overflowing the queues of readers that keep up. Drops and ring overruns
    /// are counted in `counters`, the core's block.
    pub(crate) fn with_queue_size(
        core: usize,
        write_queue_size: usize,
        counters: Arc<DataPlaneCounters>,
    ) -> CoreFanout {
        CoreFanout {
            budget: (write_queue_size / 2).clamp(1, MAX_DRAIN_BUDGET),
            core,
            streams: RefCell::new(Vec::new()),
            next_id: Cell::new(0),
            scratch: RefCell::new(Vec::new()),
            arena: RefCell::new(BytesMut::new()),
            udp_out: RefCell::new(Vec::new()),
            counters,
        }
    }

    /// Starts delivering `stream`'s packets written from now on to a TCP `reader`.
    pub(crate) fn add_reader(&self, stream: &Arc<StreamShared>, reader: Rc<TcpReader>) -> ReaderId {
        self.add(stream, Reader::Tcp(reader))
    }

    /// Starts delivering `stream`'s packets written from now on to a UDP `reader`.
    pub(crate) fn add_udp_reader(&self, stream: &Arc<StreamShared>, reader: Rc<UdpReader>) -> ReaderId {
        self.add(stream, Reader::Udp(reader))
    }

    fn add(&self, stream: &Arc<StreamShared>, reader: Reader) -> ReaderId {
        let id = ReaderId(self.next_id.get());
        self.next_id.set(id.0 + 1);
        let mut streams = self.streams.borrow_mut();
        let index = match streams.iter().position(|s| Arc::ptr_eq(&s.shared, stream)) {
            Some(i) => i,
            None => {
                let cursor = stream.subscribe(self.core);
                streams.push(LocalStream {
                    shared: stream.clone(),
                    cursor,
                    readers: Vec::new(),
                    udp_destinations: Vec::new(),
                });
                streams.len() - 1
            }
        };
        stream.want_sender_report();
        stream.reader_joined();
        let local = &mut streams[index];
        let is_udp = matches!(reader, Reader::Udp(_));
        local.readers.push((id, reader));
        if is_udp {
            local.rebuild_udp_destinations();
        }
        id
    }

    /// Stops delivering to a reader; the core stops reading a stream once it has no readers left.
    pub(crate) fn remove_reader(&self, id: ReaderId) {
        let mut streams = self.streams.borrow_mut();
        for local in streams.iter_mut() {
            let before = local.readers.len();
            local.readers.retain(|(rid, _)| *rid != id);
            if local.readers.len() != before {
                local.shared.reader_left(before - local.readers.len());
                local.rebuild_udp_destinations();
            }
        }
        streams.retain(|local| {
            let keep = !local.readers.is_empty();
            if !keep {
                local.shared.unsubscribe(self.core);
            }
            keep
        });
    }

    /// Number of readers on this core, over all streams.
    pub(crate) fn reader_count(&self) -> usize {
        self.streams.borrow().iter().map(|s| s.readers.len()).sum()
    }

    /// Reads every pending stream's new packets and queues them to the local readers.
    pub(crate) fn drain(&self) -> Drained {
        let mut streams = self.streams.borrow_mut();
        streams.retain(|local| {
            if local.shared.is_closed() {
                for (_, reader) in &local.readers {
                    if let Reader::Tcp(tcp) = reader {
                        tcp.outbox.close();
                    }
                }
                local.shared.reader_left(local.readers.len());
                local.shared.unsubscribe(self.core);
                return false;
            }
            true
        });
        let mut scratch = self.scratch.borrow_mut();
        let mut arena = self.arena.borrow_mut();
        let mut udp_out = self.udp_out.borrow_mut();
        let mut result = Drained::Done;
        for local in streams.iter_mut() {
            if !local.shared.take_pending(self.core) {
                continue;
            }
            if scratch.len() < local.cursor.slot_len() {
                scratch.resize(local.cursor.slot_len(), 0);
            }
            let (drained, losses) = drain_stream(local, self.budget, &mut scratch, &mut arena, &mut udp_out);
            self.counters.add_dropped_slow_reader(losses.dropped_slow_reader);
            self.counters
                .add_ring_overruns(losses.ring_overruns, losses.ring_overrun_packets);
            if drained == Drained::More {
                // Still behind: put the flag back so the next pass reads this stream again.
                local.shared.mark_pending(self.core);
                result = Drained::More;
            }
        }
        result
    }

    /// Moves the UDP sends the last drains queued into `out` (which should be empty; its
    /// allocation is swapped in, so steady state allocates nothing).
    pub(crate) fn take_udp_sends(&self, out: &mut Vec<UdpSend>) {
        std::mem::swap(&mut *self.udp_out.borrow_mut(), out);
    }
}

/// What one drain pass of a stream lost, summed so the core's counters are touched once per pass.
#[derive(Debug, Default)]
struct PassLosses {
    /// Packets not queued because a reader's queue was full (one per reader and packet).
    dropped_slow_reader: u64,
    /// Times the core's cursor fell a whole ring behind.
    ring_overruns: u64,
    /// Packets the cursor skipped in those overruns.
    ring_overrun_packets: u64,
}

fn drain_stream(
    local: &mut LocalStream,
    budget: usize,
    scratch: &mut [u8],
    arena: &mut BytesMut,
    udp_out: &mut Vec<UdpSend>,
) -> (Drained, PassLosses) {
    let mut losses = PassLosses::default();
    for _ in 0..budget {
        match local.cursor.read(scratch) {
            ReadOutcome::Packet { len, meta, .. } => {
                let payload = copy_into_arena(arena, &scratch[..len]);
                for (_, reader) in &local.readers {
                    if let Reader::Tcp(tcp) = reader {
                        losses.dropped_slow_reader += u64::from(tcp.deliver(meta, &payload));
                    }
                }
                if let Some(destinations) = local.udp_destinations.get(usize::from(meta.track)) {
                    let destinations = &destinations[usize::from(meta.is_rtcp)];
                    if !destinations.is_empty() {
                        udp_out.push(UdpSend {
                            payload,
                            is_rtcp: meta.is_rtcp,
                            destinations: destinations.clone(),
                        });
                    }
                }
            }
            ReadOutcome::Overrun { lost } => {
                losses.ring_overruns += 1;
                losses.ring_overrun_packets += lost;
                for (_, reader) in &local.readers {
                    reader.add_lost(lost);
                }
            }
            ReadOutcome::Empty => return (Drained::Done, losses),
        }
    }
    (Drained::More, losses)
}

/// Copies a packet into the core's arena and returns it as shared bytes. `reserve` reclaims the
/// arena's previous allocation when no reader still holds a packet from it, so in steady state
/// this allocates nothing.
fn copy_into_arena(arena: &mut BytesMut, packet: &[u8]) -> Bytes {
    if arena.capacity() < packet.len() {
        arena.reserve(ARENA_CHUNK.max(packet.len()));
    }
    arena.extend_from_slice(packet);
    arena.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::stream::CoreBells;
    use crate::runtime::doorbell;

    fn stream_on_one_core(capacity: usize) -> (Arc<StreamShared>, crate::runtime::Doorbell) {
        let (ringer, bell) = doorbell().unwrap();
        let bells = Arc::new(CoreBells::new(vec![ringer]));
        (Arc::new(StreamShared::new(capacity, 1500, bells).unwrap()), bell)
    }

    fn frames(outbox: &Outbox) -> Vec<Outgoing> {
        let mut batch = Vec::new();
        if outbox.len() > 0 {
            futures_lite::future::block_on(outbox.next_batch(&mut batch, usize::MAX));
        }
        batch
    }

    #[test]
    fn udp_readers_of_a_track_share_one_send_per_packet_and_leave_when_removed() {
        let (stream, _bell) = stream_on_one_core(64);
        let fanout = CoreFanout::new(0);
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let first = fanout.add_udp_reader(
            &stream,
            Rc::new(UdpReader::new(vec![Some((addr(5000), addr(5001))), None])),
        );
        fanout.add_udp_reader(
            &stream,
            Rc::new(UdpReader::new(vec![
                Some((addr(6000), addr(6001))),
                Some((addr(6002), addr(6003))),
            ])),
        );
        let video = PacketMeta {
            track: 0,
            is_rtcp: false,
        };
        let audio_rtcp = PacketMeta {
            track: 1,
            is_rtcp: true,
        };
        stream.write(video, b"video").unwrap();
        stream.write(audio_rtcp, b"sr").unwrap();
        assert_eq!(fanout.drain(), Drained::Done);
        let mut sends = Vec::new();
        fanout.take_udp_sends(&mut sends);
        assert_eq!(sends.len(), 2);
        assert_eq!((&sends[0].payload[..], sends[0].is_rtcp), (&b"video"[..], false));
        assert_eq!(&sends[0].destinations[..], &[addr(5000), addr(6000)]);
        assert_eq!((&sends[1].payload[..], sends[1].is_rtcp), (&b"sr"[..], true));
        assert_eq!(&sends[1].destinations[..], &[addr(6003)]);
        sends.clear();
        fanout.remove_reader(first);
        stream.write(video, b"again").unwrap();
        fanout.drain();
        fanout.take_udp_sends(&mut sends);
        assert_eq!(&sends[0].destinations[..], &[addr(6000)]);
    }

    #[test]
    fn every_local_reader_gets_each_packet_on_its_own_channels() {
        let (stream, _bell) = stream_on_one_core(64);
        let fanout = CoreFanout::new(0);
        let a = Rc::new(Outbox::new(16));
        let b = Rc::new(Outbox::new(16));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(a.clone(), vec![Some(0), Some(2)])));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(b.clone(), vec![None, Some(0)])));
        stream
            .write(
                PacketMeta {
                    track: 0,
                    is_rtcp: false,
                },
                b"video",
            )
            .unwrap();
        stream
            .write(
                PacketMeta {
                    track: 1,
                    is_rtcp: true,
                },
                b"audio-rtcp",
            )
            .unwrap();
        assert_eq!(fanout.drain(), Drained::Done);
        let a_frames = frames(&a);
        assert_eq!(
            a_frames,
            vec![
                Outgoing::frame(0, Bytes::from_static(b"video")).unwrap(),
                Outgoing::frame(3, Bytes::from_static(b"audio-rtcp")).unwrap()
            ]
        );
        assert_eq!(
            frames(&b),
            vec![Outgoing::frame(1, Bytes::from_static(b"audio-rtcp")).unwrap()]
        );
    }

    #[test]
    fn a_reader_with_a_full_queue_loses_packets_alone() {
        let (stream, _bell) = stream_on_one_core(64);
        let fanout = CoreFanout::new(0);
        let slow = Rc::new(Outbox::new(2));
        let fast = Rc::new(Outbox::new(64));
        let slow_reader = Rc::new(TcpReader::new(slow.clone(), vec![Some(0)]));
        let fast_reader = Rc::new(TcpReader::new(fast.clone(), vec![Some(0)]));
        fanout.add_reader(&stream, slow_reader.clone());
        fanout.add_reader(&stream, fast_reader.clone());
        for i in 0..10u8 {
            stream.write(PacketMeta::default(), &[i]).unwrap();
        }
        fanout.drain();
        assert_eq!((slow.len(), slow_reader.lost()), (2, 8));
        assert_eq!((fast.len(), fast_reader.lost()), (10, 0));
        assert_eq!(fanout.counters.counts().dropped_slow_reader, 8);
    }

    #[test]
    fn packets_written_before_a_reader_joins_are_not_sent_to_it() {
        let (stream, _bell) = stream_on_one_core(64);
        stream.write(PacketMeta::default(), b"old").unwrap();
        let fanout = CoreFanout::new(0);
        let outbox = Rc::new(Outbox::new(8));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        stream.write(PacketMeta::default(), b"new").unwrap();
        fanout.drain();
        assert_eq!(
            frames(&outbox),
            vec![Outgoing::frame(0, Bytes::from_static(b"new")).unwrap()]
        );
    }

    #[test]
    fn a_core_behind_the_ring_counts_the_overrun_as_loss_for_its_readers() {
        let (stream, _bell) = stream_on_one_core(4);
        let fanout = CoreFanout::new(0);
        let outbox = Rc::new(Outbox::new(64));
        let reader = Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)]));
        fanout.add_reader(&stream, reader.clone());
        for i in 0..10u8 {
            stream.write(PacketMeta::default(), &[i]).unwrap();
        }
        fanout.drain();
        assert_eq!(reader.lost() + outbox.len() as u64, 10);
        assert!(reader.lost() >= 6, "lost {}", reader.lost());
        let counts = fanout.counters.counts();
        assert_eq!((counts.ring_overruns, counts.ring_overrun_packets), (1, reader.lost()));
    }

    #[test]
    fn closing_the_stream_closes_its_readers_and_removing_the_last_reader_unsubscribes() {
        let (stream, _bell) = stream_on_one_core(8);
        let fanout = CoreFanout::new(0);
        let outbox = Rc::new(Outbox::new(8));
        let id = fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        assert_eq!(stream.reader_count(), 1);
        fanout.remove_reader(id);
        assert_eq!((fanout.reader_count(), stream.reader_count()), (0, 0));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        assert_eq!(stream.reader_count(), 2);
        stream.close();
        fanout.drain();
        assert!(outbox.is_closed());
        assert_eq!((fanout.reader_count(), stream.reader_count()), (0, 0));
    }

    #[test]
    fn a_reader_joining_after_the_last_one_left_mid_ring_is_rung_for_new_packets() {
        let (stream, _bell) = stream_on_one_core(8);
        let fanout = CoreFanout::new(0);
        let outbox = Rc::new(Outbox::new(8));
        let id = fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        // Rung, but the reader leaves before the core drains.
        stream.write(PacketMeta::default(), b"old").unwrap();
        fanout.remove_reader(id);
        fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        // A stale pending flag would make the next write skip ringing the core.
        assert!(
            !stream.take_pending(0),
            "the new subscription starts with nothing pending"
        );
        stream.write(PacketMeta::default(), b"new").unwrap();
        assert!(stream.take_pending(0), "the write after the join rings the core");
    }

    #[test]
    fn a_burst_larger_than_the_budget_is_drained_over_several_passes() {
        let (stream, _bell) = stream_on_one_core(1024);
        let fanout = CoreFanout::new(0);
        let outbox = Rc::new(Outbox::new(1024));
        fanout.add_reader(&stream, Rc::new(TcpReader::new(outbox.clone(), vec![Some(0)])));
        for i in 0..600u32 {
            stream.write(PacketMeta::default(), &i.to_be_bytes()).unwrap();
        }
        let mut passes = 1;
        while fanout.drain() == Drained::More {
            passes += 1;
        }
        assert_eq!((outbox.len(), passes), (600, 3));
    }
}
