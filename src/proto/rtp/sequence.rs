//! Sequence number tracking for loss accounting (after RFC 3550 §6.4.1 and A.1, simplified).

/// How far behind the highest sequence number a packet may arrive and still be counted.
const MAX_MISORDER: u16 = 100;
/// Sequence number differences below this are forward steps, the rest backward (mod 2^16).
const HALF: u16 = 0x8000;

/// What [`SequenceTracker::observe`] made of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqEvent {
    /// The first packet the tracker has seen.
    First,
    /// The next sequence number after the highest so far.
    InOrder,
    /// A new highest sequence number after a gap; carries how many numbers were skipped.
    Lost(u16),
    /// The highest sequence number again, or one of the last 100 that was already received.
    /// Not counted.
    Duplicate,
    /// A packet behind the highest sequence number. If it is within the last 100 and filled a
    /// gap, it counts as received and no longer as lost; if it is further behind, or older
    /// than the first packet, it is dropped from the counters.
    Late,
}

/// Tracks the sequence numbers of one RTP stream (one SSRC) to count received and lost packets
/// and to produce the extended highest sequence number of RTCP receiver reports.
///
/// The model is deliberately simple. A sequence number up to 2^15 ahead of the highest one
/// (mod 2^16) is a forward step: it becomes the highest, and the numbers skipped are reported
/// as [`SeqEvent::Lost`], however many there are. Anything behind is [`SeqEvent::Late`] or
/// [`SeqEvent::Duplicate`]; only the last 100 numbers are remembered. There is no probation
/// or resynchronisation as in RFC 3550 A.1: when a source restarts its sequence (a new SSRC,
/// or a new `RTP-Info` after PLAY), the caller starts a new tracker.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    started: bool,
    highest: u16,
    /// How often the sequence number wrapped from 65535 to 0.
    cycles: u32,
    /// Bit `i` is set when `highest - i` was received; covers [`MAX_MISORDER`].
    window: u128,
    /// How many sequence numbers the highest advanced since the first packet (saturating).
    span: u32,
    received: u64,
    lost: u64,
}

impl SequenceTracker {
    /// A tracker that has seen no packet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for a received packet with sequence number `seq` and says what it was.
    pub fn observe(&mut self, seq: u16) -> SeqEvent {
        if !self.started {
            *self = Self {
                started: true,
                highest: seq,
                window: 1,
                received: 1,
                ..Self::default()
            };
            return SeqEvent::First;
        }
        let ahead = seq.wrapping_sub(self.highest);
        if ahead == 0 {
            return SeqEvent::Duplicate;
        }
        if ahead < HALF {
            if seq < self.highest {
                self.cycles = self.cycles.wrapping_add(1);
            }
            self.highest = seq;
            self.window = self.window.checked_shl(u32::from(ahead)).unwrap_or(0) | 1;
            self.span = self.span.saturating_add(u32::from(ahead));
            self.received += 1;
            let skipped = ahead - 1;
            if skipped == 0 {
                return SeqEvent::InOrder;
            }
            self.lost += u64::from(skipped);
            return SeqEvent::Lost(skipped);
        }
        let behind = self.highest.wrapping_sub(seq);
        if behind > MAX_MISORDER || u32::from(behind) > self.span {
            return SeqEvent::Late;
        }
        let bit = 1u128 << behind;
        if self.window & bit != 0 {
            return SeqEvent::Duplicate;
        }
        self.window |= bit;
        self.received += 1;
        self.lost = self.lost.saturating_sub(1);
        SeqEvent::Late
    }

    /// The extended highest sequence number received: the wrap count in the high 16 bits and
    /// the highest sequence number in the low 16, as in an RTCP report block. 0 before the
    /// first packet.
    pub fn extended_highest(&self) -> u32 {
        (self.cycles << 16) | u32::from(self.highest)
    }

    /// Packets counted as received: all but duplicates and dropped late packets.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Sequence numbers reported in [`SeqEvent::Lost`] that have not arrived late since.
    pub fn lost(&self) -> u64 {
        self.lost
    }
}
