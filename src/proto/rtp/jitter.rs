//! Interarrival jitter (RFC 3550 §6.4.1, computed as in A.8).

use std::time::Duration;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Estimates the interarrival jitter of one RTP stream, in the stream's timestamp units.
///
/// For each packet the transit time is its arrival time (converted to the RTP clock) minus
/// its RTP timestamp; `D` is the difference between consecutive transit times, and the jitter
/// `J` moves by `(|D| - J) / 16` per packet. As in RFC 3550 A.8, `J` is kept scaled by 16 in
/// integer arithmetic. Both the arrival clock and the RTP timestamp are taken modulo 2^32, so
/// a timestamp wrap, or an arbitrary random start, makes no difference.
///
/// Arrival times are passed in by the caller, from a monotonic clock and any fixed origin.
/// Packets must be fed in arrival order; retransmitted or duplicate packets should be left out.
#[derive(Debug, Clone)]
pub struct JitterEstimator {
    clock_rate: u32,
    /// The previous transit time, in timestamp units; `None` before the first packet.
    transit: Option<u32>,
    /// The jitter times 16, in timestamp units.
    jitter_x16: u32,
}

impl JitterEstimator {
    /// An estimator for a stream whose RTP clock runs at `clock_rate` Hz (90 000 for video).
    ///
    /// A clock rate of 0 is accepted and yields a jitter of 0.
    pub fn new(clock_rate: u32) -> Self {
        Self {
            clock_rate,
            transit: None,
            jitter_x16: 0,
        }
    }

    /// The clock rate the estimator was created with.
    pub fn clock_rate(&self) -> u32 {
        self.clock_rate
    }

    /// Accounts for a packet with RTP timestamp `rtp_timestamp` that arrived at `arrival`.
    pub fn update(&mut self, arrival: Duration, rtp_timestamp: u32) {
        // Truncation to 32 bits keeps the arrival clock modulo 2^32, like the RTP timestamp.
        let arrival_ticks = (arrival.as_nanos() * u128::from(self.clock_rate) / NANOS_PER_SEC) as u32;
        let transit = arrival_ticks.wrapping_sub(rtp_timestamp);
        if let Some(previous) = self.transit.replace(transit) {
            // The difference of two values modulo 2^32, read as signed: the shorter way round.
            let d = i64::from(transit.wrapping_sub(previous) as i32).unsigned_abs();
            let j = u64::from(self.jitter_x16);
            let next = (j + d).saturating_sub((j + 8) >> 4);
            self.jitter_x16 = u32::try_from(next).unwrap_or(u32::MAX);
        }
    }

    /// The jitter in timestamp units, as carried in the "interarrival jitter" field of an RTCP
    /// report block.
    pub fn jitter_ticks(&self) -> u32 {
        self.jitter_x16 >> 4
    }

    /// The jitter as a duration; zero if the clock rate is 0.
    pub fn jitter(&self) -> Duration {
        if self.clock_rate == 0 {
            return Duration::ZERO;
        }
        let nanos = u128::from(self.jitter_x16) * NANOS_PER_SEC / (16 * u128::from(self.clock_rate));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}
