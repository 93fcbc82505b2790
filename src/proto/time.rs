//! NTP timestamps and RTP clock arithmetic with wrap-around.
//!
//! RTCP sender reports pair a 64-bit NTP timestamp with an RTP timestamp; RTP sequence numbers
//! and timestamps wrap, so every comparison here is modular.

use std::time::Duration;

/// Seconds between the NTP epoch (1900-01-01) and the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET_SECS: u64 = 2_208_988_800;

/// A 64-bit NTP timestamp: 32 bits of seconds since 1900 and 32 bits of fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NtpTime(pub u64);

impl NtpTime {
    /// The NTP time of an instant given as the time elapsed since the Unix epoch.
    ///
    /// NTP seconds wrap in 2036 (era 1); the wrap is kept, as on the wire.
    pub fn from_unix(since_unix_epoch: Duration) -> Self {
        let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET_SECS) & 0xFFFF_FFFF;
        // Round the fraction to nearest so that from_unix(to_unix(x)) is stable.
        let frac = ((u64::from(since_unix_epoch.subsec_nanos()) << 32) + 500_000_000) / 1_000_000_000;
        NtpTime((secs << 32) + frac)
    }

    /// The time since the Unix epoch of this NTP time, assuming NTP era 0 (before 2036)
    /// for seconds at or after 1970 and era 1 otherwise.
    pub fn to_unix(self) -> Duration {
        let secs = self.0 >> 32;
        let frac = self.0 & 0xFFFF_FFFF;
        let unix_secs = if secs >= NTP_UNIX_OFFSET_SECS {
            secs - NTP_UNIX_OFFSET_SECS
        } else {
            secs + (1 << 32) - NTP_UNIX_OFFSET_SECS
        };
        let nanos = (frac * 1_000_000_000 + (1 << 31)) >> 32;
        Duration::new(unix_secs, 0) + Duration::from_nanos(nanos)
    }

    /// The middle 32 bits, as carried in the LSR field of RTCP receiver reports.
    pub fn middle32(self) -> u32 {
        (self.0 >> 16) as u32
    }
}

/// The signed distance from `earlier` to `later` between two 32-bit RTP timestamps,
/// interpreting the difference modulo 2^32 as the shorter way round.
pub fn rtp_ts_delta(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// The signed distance from `earlier` to `later` between two 16-bit sequence numbers.
pub fn seq_delta(later: u16, earlier: u16) -> i16 {
    later.wrapping_sub(earlier) as i16
}

/// Converts a duration to RTP clock ticks at `clock_rate` Hz, truncated to 32 bits as on the wire.
pub fn duration_to_rtp_ticks(d: Duration, clock_rate: u32) -> u32 {
    let ticks = d.as_nanos() * u128::from(clock_rate) / 1_000_000_000;
    ticks as u32
}

/// Converts a signed RTP tick count at `clock_rate` Hz to a duration; `None` for negative
/// counts or a zero clock rate.
pub fn rtp_ticks_to_duration(ticks: i64, clock_rate: u32) -> Option<Duration> {
    if ticks < 0 || clock_rate == 0 {
        return None;
    }
    let nanos = (ticks as u128) * 1_000_000_000 / u128::from(clock_rate);
    Some(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

/// Extends 16-bit RTP sequence numbers to a monotonic 64-bit count across wrap-arounds
/// (RFC 3550 §A.1 cycle counting).
#[derive(Debug, Clone, Default)]
pub struct SeqExtender {
    last: Option<u64>,
}

impl SeqExtender {
    /// A new extender that has seen no packet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the extended sequence number of `seq`: the value congruent to `seq` modulo 2^16
    /// closest to the highest one seen so far. Only forward movement updates the reference.
    pub fn extend(&mut self, seq: u16) -> u64 {
        let Some(last) = self.last else {
            // Start one cycle up so that a packet reordered from before the first stays positive.
            let first = (1u64 << 16) + u64::from(seq);
            self.last = Some(first);
            return first;
        };
        let delta = i64::from(seq_delta(seq, last as u16));
        let ext = (last as i64 + delta).max(0) as u64;
        if ext > last {
            self.last = Some(ext);
        }
        ext
    }

    /// The highest extended sequence number seen, if any.
    pub fn highest(&self) -> Option<u64> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unix_epoch_maps_to_ntp_offset() {
        let ntp = NtpTime::from_unix(Duration::ZERO);
        assert_eq!(ntp.0 >> 32, NTP_UNIX_OFFSET_SECS);
        assert_eq!(ntp.0 & 0xFFFF_FFFF, 0);
    }

    #[test]
    fn half_second_is_half_the_fraction_range() {
        let ntp = NtpTime::from_unix(Duration::from_millis(500));
        assert_eq!(ntp.0 & 0xFFFF_FFFF, 0x8000_0000);
    }

    #[test]
    fn middle32_takes_low_seconds_and_high_fraction() {
        assert_eq!(NtpTime(0x1234_5678_9ABC_DEF0).middle32(), 0x5678_9ABC);
    }

    #[test]
    fn rtp_timestamp_delta_crosses_wrap() {
        assert_eq!(rtp_ts_delta(10, u32::MAX - 9), 20);
        assert_eq!(rtp_ts_delta(u32::MAX - 9, 10), -20);
    }

    #[test]
    fn sequence_extender_counts_cycles_forward_and_tolerates_reordering() {
        let mut ext = SeqExtender::new();
        let a = ext.extend(65534);
        let b = ext.extend(65535);
        let c = ext.extend(0);
        let late = ext.extend(65533);
        let d = ext.extend(1);
        assert_eq!([b - a, c - b, d - c], [1, 1, 1]);
        assert_eq!(a - late, 1);
        assert_eq!(ext.highest(), Some(d));
    }

    #[test]
    fn ninety_khz_ticks_round_trip_through_duration() {
        let d = Duration::from_millis(40);
        let ticks = duration_to_rtp_ticks(d, 90_000);
        assert_eq!(ticks, 3600);
        assert_eq!(rtp_ticks_to_duration(i64::from(ticks), 90_000), Some(d));
        assert_eq!(rtp_ticks_to_duration(-1, 90_000), None);
        assert_eq!(rtp_ticks_to_duration(1, 0), None);
    }

    proptest! {
        #[test]
        fn ntp_round_trip_is_within_a_nanosecond(secs in 0u64..2_000_000_000, nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            let back = NtpTime::from_unix(d).to_unix();
            let err = back.abs_diff(d);
            prop_assert!(err <= Duration::from_nanos(1), "{d:?} -> {back:?}");
        }

        #[test]
        fn seq_delta_inverts_wrapping_add(a: u16, step in -1000i16..1000) {
            let b = a.wrapping_add(step as u16);
            prop_assert_eq!(seq_delta(b, a), step);
        }
    }
}
