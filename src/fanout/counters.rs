//! One core's data-plane counters: what it received from publishers and sent to readers, and what
//! it had to drop.
//!
//! Each core owns one block, aligned to 128 bytes (two cache lines, as the adjacent-line
//! prefetcher pairs them) so that no two cores ever write the same line. Counters are relaxed
//! atomics added once per batch where the code has batches (a drain pass, a written vector, a
//! `sendmmsg`), read by whoever takes a metrics snapshot.

use std::sync::atomic::{AtomicU64, Ordering};

/// The data-plane counters of one core. Every count only grows.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct DataPlaneCounters {
    received_packets: AtomicU64,
    received_bytes: AtomicU64,
    sent_packets: AtomicU64,
    sent_bytes: AtomicU64,
    packets_lost: AtomicU64,
    dropped_slow_reader: AtomicU64,
    ring_overruns: AtomicU64,
    ring_overrun_packets: AtomicU64,
}

/// A copy of one core's [`DataPlaneCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DataPlaneCounts {
    pub(crate) received_packets: u64,
    pub(crate) received_bytes: u64,
    pub(crate) sent_packets: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) packets_lost: u64,
    pub(crate) dropped_slow_reader: u64,
    pub(crate) ring_overruns: u64,
    pub(crate) ring_overrun_packets: u64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl DataPlaneCounters {
    /// Packets (RTP and RTCP) and their bytes received from publishers, without transport framing.
    pub(crate) fn add_received(&self, packets: u64, bytes: u64) {
        add(&self.received_packets, packets);
        add(&self.received_bytes, bytes);
    }

    /// Packets and their bytes sent to readers, without transport framing.
    pub(crate) fn add_sent(&self, packets: u64, bytes: u64) {
        add(&self.sent_packets, packets);
        add(&self.sent_bytes, bytes);
    }

    /// Packets a publisher's sequence numbers show were lost before they reached the server.
    pub(crate) fn add_lost(&self, packets: u64) {
        add(&self.packets_lost, packets);
    }

    /// Packets not queued for a reader because its write queue was full.
    pub(crate) fn add_dropped_slow_reader(&self, packets: u64) {
        add(&self.dropped_slow_reader, packets);
    }

    /// Times this core fell a whole ring behind a stream, and the packets it skipped doing so.
    pub(crate) fn add_ring_overruns(&self, overruns: u64, packets: u64) {
        add(&self.ring_overruns, overruns);
        add(&self.ring_overrun_packets, packets);
    }

    /// The current counts.
    pub(crate) fn counts(&self) -> DataPlaneCounts {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DataPlaneCounts {
            received_packets: load(&self.received_packets),
            received_bytes: load(&self.received_bytes),
            sent_packets: load(&self.sent_packets),
            sent_bytes: load(&self.sent_bytes),
            packets_lost: load(&self.packets_lost),
            dropped_slow_reader: load(&self.dropped_slow_reader),
            ring_overruns: load(&self.ring_overruns),
            ring_overrun_packets: load(&self.ring_overrun_packets),
        }
    }
}

impl std::ops::AddAssign for DataPlaneCounts {
    fn add_assign(&mut self, other: DataPlaneCounts) {
        self.received_packets += other.received_packets;
        self.received_bytes += other.received_bytes;
        self.sent_packets += other.sent_packets;
        self.sent_bytes += other.sent_bytes;
        self.packets_lost += other.packets_lost;
        self.dropped_slow_reader += other.dropped_slow_reader;
        self.ring_overruns += other.ring_overruns;
        self.ring_overrun_packets += other.ring_overrun_packets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_fills_its_own_cache_lines() {
        assert_eq!(std::mem::align_of::<DataPlaneCounters>(), 128);
        let blocks = [DataPlaneCounters::default(), DataPlaneCounters::default()];
        let distance = std::ptr::addr_of!(blocks[1]) as usize - std::ptr::addr_of!(blocks[0]) as usize;
        assert!(distance >= 128);
    }

    #[test]
    fn counts_add_up_and_sum_over_cores() {
        let a = DataPlaneCounters::default();
        a.add_received(2, 300);
        a.add_sent(3, 400);
        a.add_lost(1);
        a.add_dropped_slow_reader(5);
        a.add_ring_overruns(1, 7);
        let b = DataPlaneCounters::default();
        b.add_received(1, 100);
        let mut total = a.counts();
        total += b.counts();
        assert_eq!(
            total,
            DataPlaneCounts {
                received_packets: 3,
                received_bytes: 400,
                sent_packets: 3,
                sent_bytes: 400,
                packets_lost: 1,
                dropped_slow_reader: 5,
                ring_overruns: 1,
                ring_overrun_packets: 7,
            }
        );
    }
}
