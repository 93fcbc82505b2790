//! A lock-free single-writer broadcast ring of packets.
//!
//! One publisher writes, every core reads through its own cursor. Each slot is a seqlock:
//! the writer stamps it odd while writing and even when done, and a reader accepts a copy only
//! if the stamp was the expected even value before and after copying. Payload bytes live in
//! `AtomicU64` words, so concurrent reads of a slot being overwritten are defined behaviour
//! (relaxed atomics compile to plain moves on x86-64 and aarch64) and no `unsafe` is needed.
//!
//! A reader that falls more than the ring's capacity behind sees [`ReadOutcome::Overrun`] with
//! the number of packets it lost, and resumes at the oldest packet still held: a slow core loses
//! packets, it never slows the writer.

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Metadata carried with each packet in the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// Index of the media (track) in the stream's description.
    pub track: u8,
    /// True for RTCP, false for RTP.
    pub is_rtcp: bool,
}

impl PacketMeta {
    fn pack(self) -> u32 {
        u32::from(self.track) | (u32::from(self.is_rtcp) << 8)
    }

    fn unpack(v: u32) -> Self {
        PacketMeta {
            track: v as u8,
            is_rtcp: v & 0x100 != 0,
        }
    }
}

/// Why a ring could not be created or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// Capacity must be a non-zero power of two so that slot indexing is a mask.
    #[error("ring capacity {0} is not a non-zero power of two")]
    CapacityNotPowerOfTwo(usize),
    /// The packet is larger than the ring's slots.
    #[error("packet of {len} bytes exceeds the ring's {max} byte slots")]
    PacketTooLarge {
        /// The packet's length.
        len: usize,
        /// The slot size.
        max: usize,
    },
}

struct Slot {
    /// 0: never written; 2s+1: packet s being written; 2s+2: packet s complete.
    stamp: AtomicU64,
    len: AtomicU32,
    meta: AtomicU32,
    words: Box<[AtomicU64]>,
}

struct Shared {
    slots: Box<[Slot]>,
    mask: u64,
    max_len: usize,
    /// Sequence number of the next packet to be written (= packets written so far).
    head: AtomicU64,
}

/// The writing end of a ring. There is exactly one; it is not `Clone`.
pub struct RingWriter {
    shared: Arc<Shared>,
    next: u64,
}

/// A reading cursor. Clone it to read the same ring from several places.
#[derive(Clone)]
pub struct RingReader {
    shared: Arc<Shared>,
    next: u64,
}

/// What a read returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// A packet of `len` bytes was copied to the front of the output buffer.
    Packet {
        /// Its length in bytes.
        len: usize,
        /// Its metadata.
        meta: PacketMeta,
        /// Its sequence number in the ring (count of packets written before it).
        seq: u64,
    },
    /// No new packet yet.
    Empty,
    /// The reader fell behind and `lost` packets were overwritten before it could read them;
    /// it now points at the oldest packet the ring holds.
    Overrun {
        /// How many packets this reader missed.
        lost: u64,
    },
}

/// Creates a ring of `capacity` slots (a power of two), each holding up to `max_len` bytes.
///
/// Memory is `capacity * max_len` bytes (rounded up to 8), allocated once here.
pub fn ring(capacity: usize, max_len: usize) -> Result<(RingWriter, RingReader), RingError> {
    if capacity == 0 || !capacity.is_power_of_two() {
        return Err(RingError::CapacityNotPowerOfTwo(capacity));
    }
    let words = max_len.div_ceil(8);
    let slots = (0..capacity)
        .map(|_| Slot {
            stamp: AtomicU64::new(0),
            len: AtomicU32::new(0),
            meta: AtomicU32::new(0),
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
        })
        .collect();
    let shared = Arc::new(Shared {
        slots,
        mask: capacity as u64 - 1,
        max_len,
        head: AtomicU64::new(0),
    });
    Ok((
        RingWriter {
            shared: shared.clone(),
            next: 0,
        },
        RingReader { shared, next: 0 },
    ))
}

impl RingWriter {
    /// Appends a packet. Never blocks; overwrites the oldest slot when the ring is full.
    pub fn push(&mut self, meta: PacketMeta, packet: &[u8]) -> Result<u64, RingError> {
        let shared = &*self.shared;
        if packet.len() > shared.max_len {
            return Err(RingError::PacketTooLarge {
                len: packet.len(),
                max: shared.max_len,
            });
        }
        let seq = self.next;
        let slot = &shared.slots[(seq & shared.mask) as usize];
        slot.stamp.store(2 * seq + 1, Ordering::Relaxed);
        // Orders the odd stamp before the data stores: a reader that sees new data sees the odd stamp.
        fence(Ordering::Release);
        let mut chunks = packet.chunks_exact(8);
        for (word, chunk) in slot.words.iter().zip(&mut chunks) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            word.store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut b = [0u8; 8];
            b[..rest.len()].copy_from_slice(rest);
            if let Some(word) = slot.words.get(packet.len() / 8) {
                word.store(u64::from_ne_bytes(b), Ordering::Relaxed);
            }
        }
        slot.len.store(packet.len() as u32, Ordering::Relaxed);
        slot.meta.store(meta.pack(), Ordering::Relaxed);
        slot.stamp.store(2 * seq + 2, Ordering::Release);
        self.next = seq + 1;
        shared.head.store(self.next, Ordering::Release);
        Ok(seq)
    }

    /// A new reader positioned at the next packet to be written.
    pub fn subscribe(&self) -> RingReader {
        RingReader {
            shared: self.shared.clone(),
            next: self.next,
        }
    }

    /// Packets written so far.
    pub fn written(&self) -> u64 {
        self.next
    }
}

impl RingReader {
    /// Copies the next packet into `out`, which must hold the ring's slot size.
    pub fn read(&mut self, out: &mut [u8]) -> ReadOutcome {
        let shared = &*self.shared;
        let head = shared.head.load(Ordering::Acquire);
        if self.next >= head {
            return ReadOutcome::Empty;
        }
        let capacity = shared.mask + 1;
        if head - self.next > capacity {
            return self.resync(head);
        }
        let seq = self.next;
        let slot = &shared.slots[(seq & shared.mask) as usize];
        let expected = 2 * seq + 2;
        if slot.stamp.load(Ordering::Acquire) != expected {
            // Overwritten (or being overwritten) by a later packet since `head` was read.
            return self.resync(shared.head.load(Ordering::Acquire));
        }
        let len = (slot.len.load(Ordering::Relaxed) as usize)
            .min(shared.max_len)
            .min(out.len());
        let meta = slot.meta.load(Ordering::Relaxed);
        for (chunk, word) in out[..len].chunks_mut(8).zip(slot.words.iter()) {
            let b = word.load(Ordering::Relaxed).to_ne_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        // Orders the data loads before the stamp re-check.
        fence(Ordering::Acquire);
        if slot.stamp.load(Ordering::Relaxed) != expected {
            return self.resync(shared.head.load(Ordering::Acquire));
        }
        self.next = seq + 1;
        ReadOutcome::Packet {
            len,
            meta: PacketMeta::unpack(meta),
            seq,
        }
    }

    fn resync(&mut self, head: u64) -> ReadOutcome {
        // Skip to the oldest slot that cannot be overwritten by the packet being written now.
        let capacity = self.shared.mask + 1;
        let oldest_safe = head.saturating_sub(capacity - 1).max(self.next + 1);
        let lost = oldest_safe - self.next;
        self.next = oldest_safe;
        ReadOutcome::Overrun { lost }
    }

    /// Packets written but not yet read by this reader (may exceed the capacity if it overran).
    pub fn backlog(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire).saturating_sub(self.next)
    }

    /// Size of the buffer [`RingReader::read`] needs.
    pub fn slot_len(&self) -> usize {
        self.shared.max_len
    }

    /// Moves this reader to the next packet to be written, skipping any backlog.
    pub fn skip_to_head(&mut self) {
        self.next = self.shared.head.load(Ordering::Acquire);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(i: u64, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
    }

    #[test]
    fn reader_gets_every_packet_in_order_with_metadata() {
        let (mut w, mut r) = ring(8, 1500).unwrap();
        let mut out = vec![0; 1500];
        for i in 0..5u64 {
            w.push(
                PacketMeta {
                    track: i as u8,
                    is_rtcp: i % 2 == 1,
                },
                &packet(i, 100 + i as usize),
            )
            .unwrap();
        }
        for i in 0..5u64 {
            match r.read(&mut out) {
                ReadOutcome::Packet { len, meta, seq } => {
                    assert_eq!((seq, len), (i, 100 + i as usize));
                    assert_eq!(
                        meta,
                        PacketMeta {
                            track: i as u8,
                            is_rtcp: i % 2 == 1
                        }
                    );
                    assert_eq!(&out[..len], &packet(i, len)[..]);
                }
                other => panic!("packet {i}: {other:?}"),
            }
        }
        assert_eq!(r.read(&mut out), ReadOutcome::Empty);
    }

    #[test]
    fn slow_reader_is_told_how_many_packets_it_lost_and_resumes() {
        let (mut w, mut r) = ring(4, 64).unwrap();
        let mut out = [0u8; 64];
        for i in 0..10u64 {
            w.push(PacketMeta::default(), &packet(i, 10)).unwrap();
        }
        // 10 written, 4 slots: packets 0..=6 are gone (7 is the oldest safe from the next write).
        assert_eq!(r.read(&mut out), ReadOutcome::Overrun { lost: 7 });
        for i in 7..10u64 {
            assert!(matches!(r.read(&mut out), ReadOutcome::Packet { seq, .. } if seq == i));
        }
        assert_eq!(r.read(&mut out), ReadOutcome::Empty);
    }

    #[test]
    fn oversized_packet_and_bad_capacity_are_refused() {
        assert_eq!(ring(3, 10).err(), Some(RingError::CapacityNotPowerOfTwo(3)));
        assert_eq!(ring(0, 10).err(), Some(RingError::CapacityNotPowerOfTwo(0)));
        let (mut w, _) = ring(2, 10).unwrap();
        assert_eq!(
            w.push(PacketMeta::default(), &[0; 11]),
            Err(RingError::PacketTooLarge { len: 11, max: 10 })
        );
    }

    #[test]
    fn subscriber_starts_at_the_next_packet() {
        let (mut w, _) = ring(4, 16).unwrap();
        w.push(PacketMeta::default(), b"old").unwrap();
        let mut r = w.subscribe();
        let mut out = [0u8; 16];
        assert_eq!(r.read(&mut out), ReadOutcome::Empty);
        w.push(PacketMeta::default(), b"new").unwrap();
        assert!(matches!(r.read(&mut out), ReadOutcome::Packet { len: 3, seq: 1, .. }));
        assert_eq!(&out[..3], b"new");
    }

    /// A writer on one thread and readers on others: every packet a reader accepts is intact
    /// (never torn), sequence numbers only increase, and packets read + lost = packets written.
    #[test]
    fn concurrent_readers_never_see_torn_packets() {
        const N: u64 = 200_000;
        let (mut w, r) = ring(64, 256).unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut r = r.clone();
                std::thread::spawn(move || {
                    let mut out = [0u8; 256];
                    let (mut got, mut lost, mut last) = (0u64, 0u64, None);
                    while got + lost < N {
                        match r.read(&mut out) {
                            ReadOutcome::Packet { len, seq, .. } => {
                                let expect = packet(seq, 8 + (seq % 200) as usize);
                                assert_eq!(&out[..len], &expect[..], "torn packet {seq}");
                                assert!(last.is_none_or(|l| seq > l));
                                last = Some(seq);
                                got += 1;
                            }
                            ReadOutcome::Overrun { lost: n } => lost += n,
                            ReadOutcome::Empty => std::hint::spin_loop(),
                        }
                    }
                    (got, lost)
                })
            })
            .collect();
        for i in 0..N {
            w.push(PacketMeta::default(), &packet(i, 8 + (i % 200) as usize))
                .unwrap();
        }
        for h in readers {
            let (got, lost) = h.join().unwrap();
            assert_eq!(got + lost, N);
            assert!(got > 0);
        }
    }
}
