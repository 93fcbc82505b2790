//! What the server tracks about each track a UDP publisher sends: the reorder buffer, loss and
//! jitter, and the last sender report, so it can send RTCP receiver reports (RFC 3550 §6.4.2).

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::proto::rtcp::{ReceiverReport, ReportBlock};
use crate::proto::rtp::{JitterEstimator, SequenceTracker};
use crate::proto::time::NtpTime;
use crate::session::ReorderBuffer;

/// How often a UDP publisher gets a receiver report.
pub(crate) const RECEIVER_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Receive state of one track of a UDP publisher.
#[derive(Debug)]
pub(crate) struct TrackReceiver {
    pub(crate) reorder: ReorderBuffer<Bytes>,
    sequences: SequenceTracker,
    jitter: JitterEstimator,
    origin: Instant,
    ssrc: Option<u32>,
    /// Middle 32 bits of the last sender report's NTP time, and when it arrived.
    last_sender_report: Option<(u32, Instant)>,
    /// Received and expected counts at the previous report, for the fraction lost.
    prior: (u64, u64),
}

impl TrackReceiver {
    pub(crate) fn new(clock_rate: u32, now: Instant) -> TrackReceiver {
        TrackReceiver {
            reorder: ReorderBuffer::new(),
            sequences: SequenceTracker::new(),
            jitter: JitterEstimator::new(clock_rate.max(1)),
            origin: now,
            ssrc: None,
            last_sender_report: None,
            prior: (0, 0),
        }
    }

    /// Accounts an in-order packet released by the reorder buffer.
    pub(crate) fn on_packet(&mut self, seq: u16, timestamp: u32, ssrc: u32, arrival: Instant) {
        self.ssrc = Some(ssrc);
        self.sequences.observe(seq);
        self.jitter
            .update(arrival.saturating_duration_since(self.origin), timestamp);
    }

    /// Remembers a sender report from the publisher.
    pub(crate) fn on_sender_report(&mut self, ntp: NtpTime, arrival: Instant) {
        self.last_sender_report = Some((ntp.middle32(), arrival));
    }

    /// The report block for this track, or `None` before any packet arrived.
    pub(crate) fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let received = self.sequences.received();
        let lost = self.sequences.lost();
        let expected = received + lost;
        let (prior_received, prior_expected) = self.prior;
        self.prior = (received, expected);
        let expected_interval = expected.saturating_sub(prior_expected);
        let lost_interval = expected_interval.saturating_sub(received.saturating_sub(prior_received));
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        let (last_sender_report, delay) = match self.last_sender_report {
            Some((lsr, at)) => {
                // DLSR is in units of 1/65536 s.
                let delay = now.saturating_duration_since(at);
                let units = (delay.as_secs_f64() * 65536.0).min(f64::from(u32::MAX)) as u32;
                (lsr, units)
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(lost).unwrap_or(i32::MAX),
            highest_sequence: self.sequences.extended_highest(),
            jitter: self.jitter.jitter_ticks(),
            last_sender_report,
            delay_since_last_sender_report: delay,
        })
    }
}

/// A receiver report from `server_ssrc` with one block per track that received packets.
pub(crate) fn receiver_report(server_ssrc: u32, tracks: &mut [TrackReceiver], now: Instant) -> Option<Vec<u8>> {
    let reports: Vec<ReportBlock> = tracks.iter_mut().filter_map(|t| t.report_block(now)).collect();
    if reports.is_empty() {
        return None;
    }
    ReceiverReport {
        ssrc: server_ssrc,
        reports,
    }
    .to_bytes()
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::rtcp::{packets, RtcpPacket};

    #[test]
    fn a_report_counts_the_packets_lost_and_echoes_the_last_sender_report() {
        let start = Instant::now();
        let mut track = TrackReceiver::new(90_000, start);
        for seq in (0..100u16).filter(|s| s % 10 != 5) {
            track.on_packet(
                seq,
                u32::from(seq) * 3600,
                0xABCD,
                start + Duration::from_millis(u64::from(seq) * 40),
            );
        }
        track.on_sender_report(NtpTime(0x1122_3344_5566_7788), start);
        let now = start + Duration::from_secs(2);
        let bytes = receiver_report(7, std::slice::from_mut(&mut track), now).unwrap();
        let Some(Ok(RtcpPacket::ReceiverReport(rr))) = packets(&bytes).next() else {
            panic!()
        };
        let block = rr.reports().next().unwrap();
        assert_eq!((rr.ssrc(), block.ssrc), (7, 0xABCD));
        assert_eq!(block.cumulative_lost, 10, "seq 5, 15, ..., 95 never came");
        assert_eq!(block.highest_sequence, 99);
        assert_eq!(block.fraction_lost, (10 * 256 / 100) as u8);
        assert_eq!(block.last_sender_report, 0x3344_5566);
        assert_eq!(block.delay_since_last_sender_report, 2 * 65536);
        assert_eq!(block.jitter, 0, "evenly spaced packets have no jitter");
    }

    #[test]
    fn no_report_before_the_first_packet() {
        let mut track = TrackReceiver::new(90_000, Instant::now());
        assert!(receiver_report(1, std::slice::from_mut(&mut track), Instant::now()).is_none());
    }
}
