//! The part of a stream every core shares: its ring, which cores read it, and how to wake them.
//!
//! Waking is per core, not per reader: after a packet is written, each core with readers of the
//! stream is rung only if it is not already pending, so a burst of packets costs one wake-up per
//! core (DESIGN.md: cross-core wake-ups cost tens of microseconds; wake per batch, not per packet).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::ring::{ring, PacketMeta, RingError, RingReader, RingWriter};
use crate::runtime::DoorbellRinger;

/// The doorbell of every core's fan-out task, indexed by core.
#[derive(Debug)]
pub(crate) struct CoreBells {
    ringers: Vec<DoorbellRinger>,
}

impl CoreBells {
    /// Wraps one ringer per core, in core order.
    pub(crate) fn new(ringers: Vec<DoorbellRinger>) -> CoreBells {
        CoreBells { ringers }
    }

    /// Number of cores.
    pub(crate) fn len(&self) -> usize {
        self.ringers.len()
    }

    pub(crate) fn ring(&self, core: usize) {
        if let Some(ringer) = self.ringers.get(core) {
            ringer.ring();
        }
    }
}

#[derive(Debug, Default)]
struct CoreInterest {
    readers: AtomicUsize,
    pending: AtomicBool,
}

/// Counters of what went into a stream.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
}

/// A stream's shared state; `Arc`-shared by the `ServerStream` handles and every core's fan-out.
pub(crate) struct StreamShared {
    writer: Mutex<RingWriter>,
    interest: Box<[CoreInterest]>,
    bells: Arc<CoreBells>,
    counters: Counters,
    closed: AtomicBool,
    /// Readers of the stream on every core (each core's fan-out adds and removes its own).
    readers: AtomicUsize,
    /// A reader joined: the next packet of each track (bit per track; tracks past 63 share the
    /// last bit) should be followed by a sender report.
    sender_report_wanted: AtomicU64,
}

impl std::fmt::Debug for StreamShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamShared")
            .field("packets", &self.counters.packets.load(Ordering::Relaxed))
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl StreamShared {
    /// A stream whose ring holds `capacity` packets (a power of two) of up to `max_packet` bytes.
    pub(crate) fn new(capacity: usize, max_packet: usize, bells: Arc<CoreBells>) -> Result<StreamShared, RingError> {
        let (writer, _) = ring(capacity, max_packet)?;
        let interest = (0..bells.len()).map(|_| CoreInterest::default()).collect();
        Ok(StreamShared {
            writer: Mutex::new(writer),
            interest,
            bells,
            counters: Counters::default(),
            closed: AtomicBool::new(false),
            readers: AtomicUsize::new(0),
            sender_report_wanted: AtomicU64::new(0),
        })
    }

    /// Appends a packet and rings every core that has readers and is not already pending.
    ///
    /// The lock is uncontended in practice (one publisher per stream); it only makes `ServerStream`
    /// usable from any thread.
    pub(crate) fn write(&self, meta: PacketMeta, packet: &[u8]) -> Result<(), RingError> {
        self.append(meta, packet, true)
    }

    /// Appends a packet the server made itself (a sender report): delivered like any other but not
    /// counted as written to the stream, whose counters say what its source sent.
    pub(crate) fn write_generated(&self, meta: PacketMeta, packet: &[u8]) -> Result<(), RingError> {
        self.append(meta, packet, false)
    }

    fn append(&self, meta: PacketMeta, packet: &[u8], counted: bool) -> Result<(), RingError> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let pushed = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(meta, packet);
        if let Err(e) = pushed {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        if counted {
            self.counters.packets.fetch_add(1, Ordering::Relaxed);
            self.counters.bytes.fetch_add(packet.len() as u64, Ordering::Relaxed);
        }
        self.ring_interested_cores();
        Ok(())
    }

    fn ring_interested_cores(&self) {
        for (core, interest) in self.interest.iter().enumerate() {
            if interest.readers.load(Ordering::Acquire) > 0 && !interest.pending.swap(true, Ordering::AcqRel) {
                self.bells.ring(core);
            }
        }
    }

    /// Asks for a sender report after the next packet, so a reader that just joined need not wait
    /// for the periodic one to map RTP time to wall clock.
    pub(crate) fn want_sender_report(&self) {
        self.sender_report_wanted.store(u64::MAX, Ordering::Release);
    }

    /// Whether a sender report of `track` was asked for since the last call for that track.
    pub(crate) fn take_sender_report_wanted(&self, track: usize) -> bool {
        let bit = 1u64 << track.min(63);
        self.sender_report_wanted.fetch_and(!bit, Ordering::AcqRel) & bit != 0
    }

    /// Registers a reader on `core` and returns a cursor at the next packet to be written.
    pub(crate) fn subscribe(&self, core: usize) -> RingReader {
        if let Some(interest) = self.interest.get(core) {
            // A flag left set when the core's last reader left between a ring and its drain would
            // stop every later write from ringing this core: its new readers would get nothing.
            interest.pending.store(false, Ordering::Release);
            interest.readers.fetch_add(1, Ordering::AcqRel);
        }
        self.writer.lock().unwrap_or_else(PoisonError::into_inner).subscribe()
    }

    /// Counts a reader that joined on some core (several readers of one core share one subscription).
    pub(crate) fn reader_joined(&self) {
        self.readers.fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts `readers` readers that left.
    pub(crate) fn reader_left(&self, readers: usize) {
        // Saturating, like `unsubscribe`: a count that wrapped would report billions of readers.
        let _ = self.readers.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(readers))
        });
    }

    /// Readers of the stream on every core.
    pub(crate) fn reader_count(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// Removes a reader registered with [`StreamShared::subscribe`].
    pub(crate) fn unsubscribe(&self, core: usize) {
        if let Some(interest) = self.interest.get(core) {
            // Saturating: an unbalanced unsubscribe must not wrap the count and wake a core forever.
            let _ = interest
                .readers
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// Clears `core`'s pending flag; returns whether it was set. Cleared *before* draining, so a
    /// packet written during the drain rings the core again.
    pub(crate) fn take_pending(&self, core: usize) -> bool {
        self.interest
            .get(core)
            .is_some_and(|i| i.pending.swap(false, Ordering::AcqRel))
    }

    /// Sets `core`'s pending flag again after a drain stopped early, so the next pass resumes.
    pub(crate) fn mark_pending(&self, core: usize) {
        if let Some(interest) = self.interest.get(core) {
            interest.pending.store(true, Ordering::Release);
        }
    }

    /// Marks the stream closed and wakes every core with readers so they drop them.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            for interest in self.interest.iter() {
                interest.pending.store(false, Ordering::Release);
            }
            self.ring_interested_cores();
        }
    }

    /// Whether [`StreamShared::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Packets and bytes written, and packets refused (too large for the ring's slots).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        (
            self.counters.packets.load(Ordering::Relaxed),
            self.counters.bytes.load(Ordering::Relaxed),
            self.counters.refused.load(Ordering::Relaxed),
        )
    }
}
