//! Figures: histograms and their percentiles, per-track sequence accounting (loss, duplicates,
//! reordering, RFC 3550 jitter), per-reader and per-publisher reports, error counts, and the fan-out
//! skew of a core's readers of one stream.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use shardcast::client::ClientError;
use shardcast::proto::rtp::{JitterEstimator, SeqEvent, SequenceTracker};

/// Largest value a histogram holds exactly (60 s in microseconds); larger values count as this.
pub const HIST_MAX_US: u64 = 60_000_000;

/// A microsecond histogram with 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    // Fixed, valid bounds: 1 us to 60 s, 3 significant figures.
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

/// Adds `from` into `into`; both come from [`histogram`], so the bounds always agree.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) {
    if let Err(e) = into.add(from) {
        tracing::warn!("cannot merge histograms: {e}");
    }
}

/// Microseconds of `d`, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The distribution of a histogram, in its unit (microseconds here).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Mean value.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Largest value (to the histogram's precision; values above 60 s count as 60 s).
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of `h`, `None` when it is empty.
    pub fn of(h: &Histogram<u64>) -> Option<Percentiles> {
        if h.is_empty() {
            return None;
        }
        Some(Percentiles {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            p99_99: h.value_at_quantile(0.9999),
            max: h.max(),
        })
    }
}

/// Loss, duplicates and reordering of one track's RTP packets, and their jitter.
///
/// A new SSRC (the server restarted the stream) starts a new sequence space; what the old one lost
/// is kept.
pub struct TrackAccount {
    ssrc: Option<u32>,
    sequence: SequenceTracker,
    jitter: JitterEstimator,
    /// Lost in earlier sequence spaces of this session.
    lost_before: u64,
    /// Packets that arrived twice.
    pub duplicates: u64,
    /// Packets that arrived after a later one and filled a gap.
    pub reordered: u64,
    /// Packets so late (more than 100 behind) that they could not be placed.
    pub too_late: u64,
}

impl TrackAccount {
    /// Accounting for a track whose RTP clock runs at `clock_rate` Hz (0: unknown, no jitter).
    pub fn new(clock_rate: u32) -> Self {
        TrackAccount {
            ssrc: None,
            sequence: SequenceTracker::new(),
            jitter: JitterEstimator::new(clock_rate),
            lost_before: 0,
            duplicates: 0,
            reordered: 0,
            too_late: 0,
        }
    }

    /// Accounts for a packet; returns whether it is new (not a duplicate nor unplaceable).
    pub fn observe(&mut self, ssrc: u32, sequence: u16, timestamp: u32, arrival: Duration) -> bool {
        if self.ssrc != Some(ssrc) {
            if self.ssrc.is_some() {
                self.lost_before += self.sequence.lost();
                self.sequence = SequenceTracker::new();
                self.jitter = JitterEstimator::new(self.jitter.clock_rate());
            }
            self.ssrc = Some(ssrc);
        }
        let received = self.sequence.received();
        match self.sequence.observe(sequence) {
            SeqEvent::Duplicate => {
                self.duplicates += 1;
                false
            }
            SeqEvent::Late => {
                if self.sequence.received() > received {
                    self.reordered += 1;
                    true
                } else {
                    self.too_late += 1;
                    false
                }
            }
            SeqEvent::First | SeqEvent::InOrder | SeqEvent::Lost(_) => {
                self.jitter.update(arrival, timestamp);
                true
            }
        }
    }

    /// Packets missing (gaps not filled by late arrivals).
    pub fn lost(&self) -> u64 {
        self.lost_before + self.sequence.lost()
    }

    /// RFC 3550 interarrival jitter now.
    pub fn jitter(&self) -> Duration {
        self.jitter.jitter()
    }
}

/// Counts of failures by kind, with one example message each.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts(pub BTreeMap<String, ErrorKind>);

/// One kind of failure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorKind {
    /// How often it happened.
    pub count: u64,
    /// The first message of this kind.
    pub example: String,
}

impl ErrorCounts {
    /// Counts `message` under `kind`.
    pub fn add(&mut self, kind: String, message: &str) {
        let entry = self.0.entry(kind).or_default();
        if entry.count == 0 {
            entry.example = message.to_owned();
        }
        entry.count += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &ErrorCounts) {
        for (kind, e) in &other.0 {
            let entry = self.0.entry(kind.clone()).or_default();
            if entry.count == 0 {
                entry.example = e.example.clone();
            }
            entry.count += e.count;
        }
    }
}

/// A short, stable name for a client error, to count failures by kind: `stage: what`.
pub fn error_kind(stage: &str, e: &ClientError) -> String {
    let what = match e {
        ClientError::Connect { io, .. } => format!("connect: {}", io.kind()),
        ClientError::Timeout { what } => format!("timeout {what}"),
        ClientError::Status { method, status, .. } => format!("{method} answered {}", status.0),
        ClientError::Protocol(_) => "protocol error".into(),
        ClientError::Decode(_) => "undecodable stream".into(),
        ClientError::Url(_) => "invalid URL".into(),
        ClientError::Sdp(_) => "invalid SDP".into(),
        ClientError::Auth(_) => "authentication".into(),
        ClientError::UnsupportedTransport => "transport refused (461)".into(),
        ClientError::Io(io) => format!("I/O: {}", io.kind()),
        ClientError::Closed => "closed by the server".into(),
        // ClientError may grow variants; name them by their message.
        #[allow(unreachable_patterns)]
        other => other.to_string(),
    };
    format!("{stage}: {what}")
}

/// Everything one reader slot measured over the run (one or more sessions, when churned).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReaderReport {
    /// Slot number.
    pub id: usize,
    /// Index of the loadgen core it ran on.
    pub core: usize,
    /// The URL it read (credentials masked).
    pub url: String,
    /// Sessions attempted.
    pub sessions: u64,
    /// Sessions that got a PLAY response.
    pub plays: u64,
    /// Sessions ended by churn (left and rejoined).
    pub churned: u64,
    /// RTP packets received (duplicates excluded).
    pub packets: u64,
    /// Bytes of those packets, RTP headers included.
    pub bytes: u64,
    /// RTCP packets received.
    pub rtcp_packets: u64,
    /// RTP packets missing from the sequence numbers received.
    pub lost: u64,
    /// RTP packets received twice.
    pub duplicates: u64,
    /// RTP packets that arrived after a later one.
    pub reordered: u64,
    /// RTP packets too late to be placed (more than 100 behind).
    pub too_late: u64,
    /// Datagrams or frames that were not RTP.
    pub invalid: u64,
    /// RFC 3550 interarrival jitter at the end of the last session, in microseconds (worst track).
    pub jitter_us: u64,
    /// Packets that carried a loadgen timestamp trailer.
    pub latency_samples: u64,
    /// Mean one-way latency in microseconds.
    pub latency_mean_us: Option<f64>,
    /// Largest one-way latency in microseconds.
    pub latency_max_us: Option<u64>,
    /// Trailers stamped later than they arrived (clocks out of step).
    pub negative_latency: u64,
    /// Packets the publisher sent before this reader's PLAY request: replayed from a server cache
    /// (or in flight at that moment). Counted as packets, not as latency samples.
    pub sent_before_play: u64,
    /// From the start of the first session (connect) to its PLAY response, in microseconds.
    pub time_to_play_us: Option<u64>,
    /// From the start of the first session to its first RTP packet, in microseconds.
    pub time_to_first_packet_us: Option<u64>,
    /// Failed sessions (setup or while reading).
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
    #[serde(skip)]
    pub(crate) latency_sum_us: u64,
}

/// Everything one publisher measured over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublisherReport {
    /// Publisher number.
    pub id: usize,
    /// Index of the loadgen core it ran on (none for ffmpeg).
    pub core: Option<usize>,
    /// The URL it published to (credentials masked).
    pub url: String,
    /// Sessions attempted.
    pub sessions: u64,
    /// Sessions that got a RECORD response.
    pub records: u64,
    /// Frames sent.
    pub frames: u64,
    /// RTP packets sent.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
    /// Frames sent more than one frame interval after their scheduled time.
    pub late_frames: u64,
    /// Largest delay of a frame behind its schedule, in microseconds.
    pub max_lateness_us: u64,
    /// Times the schedule was reset after falling more than a second behind (frames skipped).
    pub resyncs: u64,
    /// From the start of the first session to its RECORD response, in microseconds.
    pub time_to_record_us: Option<u64>,
    /// Failed sessions.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// First and last arrival of recent frames at a core's readers of one stream: the fan-out skew.
///
/// Frames are recognised by the trailer counter of their last packet. A frame's skew is recorded
/// once it leaves the window (or at the end), if at least two readers received it.
pub struct SkewTracker {
    slots: Vec<SkewSlot>,
}

#[derive(Clone, Copy, Default)]
struct SkewSlot {
    used: bool,
    counter: u32,
    first_ns: u64,
    last_ns: u64,
    readers: u32,
}

/// Frames remembered per stream: 10 s at 25 fps.
const SKEW_WINDOW: usize = 256;

impl Default for SkewTracker {
    fn default() -> Self {
        SkewTracker {
            slots: vec![SkewSlot::default(); SKEW_WINDOW],
        }
    }
}

impl SkewTracker {
    /// A reader received the last packet of frame `counter` at `at_ns` (monotonic); a frame that
    /// leaves the window has its skew recorded into `out` (microseconds).
    pub fn observe(&mut self, counter: u32, at_ns: u64, out: &mut Histogram<u64>) {
        let slot = &mut self.slots[counter as usize % SKEW_WINDOW];
        if slot.used && slot.counter == counter {
            slot.first_ns = slot.first_ns.min(at_ns);
            slot.last_ns = slot.last_ns.max(at_ns);
            slot.readers += 1;
            return;
        }
        // An older frame than the slot holds: it already left the window.
        if slot.used && counter.wrapping_sub(slot.counter) > u32::MAX / 2 {
            return;
        }
        Self::finish(slot, out);
        *slot = SkewSlot {
            used: true,
            counter,
            first_ns: at_ns,
            last_ns: at_ns,
            readers: 1,
        };
    }

    /// Records every frame still in the window.
    pub fn flush(&mut self, out: &mut Histogram<u64>) {
        for slot in &mut self.slots {
            Self::finish(slot, out);
            slot.used = false;
        }
    }

    fn finish(slot: &SkewSlot, out: &mut Histogram<u64>) {
        if slot.used && slot.readers >= 2 {
            out.saturating_record((slot.last_ns - slot.first_ns) / 1000);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_duplicates_and_reordering() {
        let mut t = TrackAccount::new(90_000);
        let at = |ms| Duration::from_millis(ms);
        for (i, seq) in [10u16, 11, 13, 12, 12, 14, 17].into_iter().enumerate() {
            t.observe(1, seq, u32::from(seq) * 3600, at(40 * i as u64));
        }
        assert_eq!(
            (t.lost(), t.duplicates, t.reordered),
            (2, 1, 1),
            "15 and 16 are missing"
        );
        // A new SSRC: a new sequence space, old loss kept.
        t.observe(2, 500, 0, at(400));
        t.observe(2, 502, 7200, at(440));
        assert_eq!(t.lost(), 3);
    }

    #[test]
    fn steady_arrivals_have_no_jitter() {
        let mut t = TrackAccount::new(90_000);
        for i in 0..100u16 {
            t.observe(1, i, u32::from(i) * 3600, Duration::from_millis(40 * u64::from(i)));
        }
        assert_eq!(t.jitter(), Duration::ZERO);
    }

    #[test]
    fn skew_is_first_to_last_reader() {
        let mut h = histogram();
        let mut s = SkewTracker::default();
        s.observe(5, 1_000_000, &mut h);
        s.observe(5, 1_300_000, &mut h);
        s.observe(5, 1_100_000, &mut h);
        s.observe(6, 2_000_000, &mut h); // a single reader: no skew
        s.observe(5 + SKEW_WINDOW as u32, 9_000_000, &mut h); // evicts frame 5
        assert_eq!((h.len(), h.max()), (1, 300));
        s.observe(5, 9_100_000, &mut h); // too old: ignored
        s.flush(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = histogram();
        assert!(Percentiles::of(&h).is_none());
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h).unwrap();
        assert_eq!((p.count, p.min, p.p50, p.p99), (1000, 1, 500, 990));
        assert!(p.max >= p.p99_99 && p.p99_99 >= p.p99_9 && p.p99_9 >= p.p99);
    }

    #[test]
    fn errors_are_counted_by_kind() {
        let mut e = ErrorCounts::default();
        e.add(error_kind("setup", &ClientError::Closed), "first");
        e.add(error_kind("setup", &ClientError::Closed), "second");
        assert_eq!(e.0["setup: closed by the server"].count, 2);
        assert_eq!(e.0["setup: closed by the server"].example, "first");
    }
}
