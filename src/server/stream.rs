//! [`ServerStream`]: a stream that readers on every core play from.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::ServerContext;
use crate::fanout::ring::{PacketMeta, RingError};
use crate::fanout::stream::StreamShared;
use crate::proto::rtp::RtpView;
use crate::proto::sdp::SessionDescription;
use crate::proto::time::{duration_to_rtp_ticks, NtpTime};
use crate::runtime::MulticastSender;

/// Packets a stream's ring holds. A core that falls this far behind loses packets for its readers;
/// at 1472-byte slots this is about 1.5 MiB per stream.
const RING_CAPACITY: usize = 1024;

/// Interval between RTCP sender reports per track (DESIGN.md §2).
const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// Why a packet was not written to a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamWriteError {
    /// The track index is not a media of the stream's description.
    #[error("track {track} does not exist (the stream has {tracks})")]
    UnknownTrack {
        /// The index given.
        track: usize,
        /// Number of medias.
        tracks: usize,
    },
    /// The packet is not valid RTP.
    #[error("invalid RTP packet: {0}")]
    InvalidRtp(String),
    /// The packet is larger than the configured max packet size.
    #[error("packet of {len} bytes exceeds the {max}-byte maximum")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
}

/// Why a stream could not be created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The description has no media.
    #[error("a stream needs at least one media")]
    NoMedia,
    /// More medias than interleaved channel pairs or ring metadata can address.
    #[error("a stream has at most 127 medias, this one has {0}")]
    TooManyMedias(usize),
    /// The ring could not be allocated.
    #[error("{0}")]
    Ring(#[from] RingError),
}

#[derive(Debug, Clone, Copy)]
struct LastPacket {
    sequence: u16,
    timestamp: u32,
    at: Instant,
    wall: SystemTime,
}

#[derive(Debug)]
struct TrackClock {
    clock_rate: u32,
    ssrc: Option<u32>,
    last: Option<LastPacket>,
    packets: u32,
    octets: u32,
    next_sender_report: Option<Instant>,
    /// The publisher's own wall clock, from its last sender report: (NTP, RTP time).
    publisher_clock: Option<(NtpTime, u32)>,
}

struct StreamInner {
    shared: Arc<StreamShared>,
    /// Per track, where packets also go while the track has multicast readers.
    multicast: RwLock<Vec<Option<MulticastSender>>>,
    multicast_on: std::sync::atomic::AtomicBool,
    description: RwLock<SessionDescription>,
    tracks: Mutex<Vec<TrackClock>>,
    sender_reports: bool,
    /// The server's counters, for what is sent to multicast groups.
    counters: Arc<super::metrics::ServerCounters>,
}

/// A stream readers play from. Clone it freely: clones share one stream; it is `Send + Sync`, so a
/// publisher on any core (or any thread) can write to it.
#[derive(Clone)]
pub struct ServerStream {
    inner: Arc<StreamInner>,
}

impl std::fmt::Debug for ServerStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerStream")
            .field("shared", &self.inner.shared)
            .finish_non_exhaustive()
    }
}

/// Who made a packet written to the stream: its stats count only what the source wrote.
#[derive(Debug, Clone, Copy)]
enum Origin {
    /// The publisher, puller or application writing the stream.
    Source,
    /// The server itself (sender reports).
    Server,
}

/// What went through a stream so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamStats {
    /// Packets written by the stream's source (not the sender reports the server adds).
    pub packets: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Packets refused (larger than the max packet size).
    pub refused: u64,
    /// Readers playing the stream now, on every core, over TCP or UDP (multicast readers are
    /// not counted: the group, not the server, delivers to them).
    pub readers: usize,
}

impl ServerStream {
    /// A stream described by `description`, served by the server `context` belongs to.
    pub fn new(context: &ServerContext, description: SessionDescription) -> Result<ServerStream, StreamError> {
        let tracks = track_clocks(&description)?;
        let config = context.config();
        let shared = StreamShared::new(RING_CAPACITY, config.max_packet_size, context.bells())?;
        Ok(ServerStream {
            inner: Arc::new(StreamInner {
                multicast: RwLock::new(Vec::new()),
                multicast_on: std::sync::atomic::AtomicBool::new(false),
                shared: Arc::new(shared),
                description: RwLock::new(description),
                tracks: Mutex::new(tracks),
                sender_reports: !config.disable_rtcp_sender_reports,
                counters: context.counters().clone(),
            }),
        })
    }

    /// The stream's description (what DESCRIBE answers, before per-media controls are set).
    pub fn description(&self) -> SessionDescription {
        self.inner
            .description
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the description, for example when a publisher reconnects with new parameters;
    /// readers that DESCRIBE from now on see it. The number of medias must not change.
    pub fn reload_description(&self, description: SessionDescription) -> Result<(), StreamError> {
        let tracks = track_clocks(&description)?;
        let mut current = self.inner.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        if tracks.len() != current.len() {
            return Err(StreamError::TooManyMedias(tracks.len()));
        }
        for (old, new) in current.iter_mut().zip(tracks) {
            old.clock_rate = new.clock_rate;
        }
        *self.inner.description.write().unwrap_or_else(PoisonError::into_inner) = description;
        Ok(())
    }

    /// Number of medias.
    pub fn track_count(&self) -> usize {
        self.inner.tracks.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Writes an RTP packet of `track` to every reader, stamping sender reports with the current time.
    pub fn write_packet_rtp(&self, track: usize, packet: &[u8]) -> Result<(), StreamWriteError> {
        self.write_packet_rtp_with_ntp(track, packet, SystemTime::now())
    }

    /// Writes an RTP packet whose capture time is `ntp`, used in the sender reports that follow it.
    pub fn write_packet_rtp_with_ntp(
        &self,
        track: usize,
        packet: &[u8],
        ntp: SystemTime,
    ) -> Result<(), StreamWriteError> {
        let view = RtpView::parse(packet).map_err(|e| StreamWriteError::InvalidRtp(e.to_string()))?;
        let now = Instant::now();
        let report = {
            let mut tracks = self.inner.tracks.lock().unwrap_or_else(PoisonError::into_inner);
            let count = tracks.len();
            let clock = tracks
                .get_mut(track)
                .ok_or(StreamWriteError::UnknownTrack { track, tracks: count })?;
            clock.ssrc = Some(view.ssrc());
            clock.last = Some(LastPacket {
                sequence: view.sequence_number(),
                timestamp: view.timestamp(),
                at: now,
                wall: ntp,
            });
            clock.packets = clock.packets.wrapping_add(1);
            clock.octets = clock.octets.wrapping_add(view.payload().len() as u32);
            self.sender_report_due(track, clock, now)
        };
        self.push(track, false, packet, Origin::Source)?;
        if let Some(report) = report {
            // The report describes the packet just written, so it follows it.
            self.push(track, true, &report, Origin::Server)?;
        }
        Ok(())
    }

    /// Writes an RTCP packet of `track` to every reader.
    ///
    /// A sender report in it sets the track's wall clock: the server's own sender reports then map
    /// RTP time to the publisher's NTP time rather than to the moment packets arrived here.
    pub fn write_packet_rtcp(&self, track: usize, packet: &[u8]) -> Result<(), StreamWriteError> {
        {
            let mut tracks = self.inner.tracks.lock().unwrap_or_else(PoisonError::into_inner);
            let count = tracks.len();
            let clock = tracks
                .get_mut(track)
                .ok_or(StreamWriteError::UnknownTrack { track, tracks: count })?;
            for rtcp in crate::proto::rtcp::packets(packet) {
                match rtcp {
                    Ok(crate::proto::rtcp::RtcpPacket::SenderReport(sr)) => {
                        clock.publisher_clock = Some((sr.ntp(), sr.rtp_time()));
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        self.push(track, true, packet, Origin::Source)
    }

    /// Writes an RTP or RTCP packet (the relay case).
    pub fn write_packet(&self, track: usize, is_rtcp: bool, packet: &[u8]) -> Result<(), StreamWriteError> {
        if is_rtcp {
            self.write_packet_rtcp(track, packet)
        } else {
            self.write_packet_rtp(track, packet)
        }
    }

    /// Starts (`Some`) or stops (`None`) sending a track to a multicast group.
    pub(crate) fn set_multicast(&self, track: usize, sender: Option<MulticastSender>) {
        let mut multicast = self.inner.multicast.write().unwrap_or_else(PoisonError::into_inner);
        if multicast.len() <= track {
            multicast.resize_with(track + 1, || None);
        }
        multicast[track] = sender;
        let on = multicast.iter().any(Option::is_some);
        self.inner.multicast_on.store(on, std::sync::atomic::Ordering::Release);
    }

    /// Packets the multicast outputs could not send.
    pub fn multicast_dropped(&self) -> u64 {
        let multicast = self.inner.multicast.read().unwrap_or_else(PoisonError::into_inner);
        multicast.iter().flatten().map(MulticastSender::dropped).sum()
    }

    fn push(&self, track: usize, is_rtcp: bool, packet: &[u8], origin: Origin) -> Result<(), StreamWriteError> {
        if self.inner.multicast_on.load(std::sync::atomic::Ordering::Acquire) {
            let multicast = self.inner.multicast.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(Some(sender)) = multicast.get(track) {
                let dropped = sender.dropped();
                sender.send(is_rtcp, packet);
                if sender.dropped() == dropped {
                    self.inner.counters.add_multicast_sent(1, packet.len() as u64);
                }
            }
        }
        let meta = PacketMeta {
            track: track as u8,
            is_rtcp,
        };
        let written = match origin {
            Origin::Source => self.inner.shared.write(meta, packet),
            Origin::Server => self.inner.shared.write_generated(meta, packet),
        };
        written.map_err(|e| match e {
            RingError::PacketTooLarge { len, max } => StreamWriteError::TooLarge { len, max },
            RingError::CapacityNotPowerOfTwo(_) => StreamWriteError::TooLarge {
                len: packet.len(),
                max: 0,
            },
        })
    }

    fn sender_report_due(&self, track: usize, clock: &mut TrackClock, now: Instant) -> Option<Vec<u8>> {
        if !self.inner.sender_reports {
            return None;
        }
        let joined = self.inner.shared.take_sender_report_wanted(track);
        match clock.next_sender_report {
            Some(due) if now < due && !joined => return None,
            _ => clock.next_sender_report = Some(now + SENDER_REPORT_INTERVAL),
        }
        let last = clock.last?;
        let ntp = match clock.publisher_clock {
            // The publisher's clock, advanced by the RTP time elapsed since its report.
            Some((ntp, rtp_time)) => {
                let ticks = i64::from(crate::proto::time::rtp_ts_delta(last.timestamp, rtp_time));
                let nanos = ticks * 1_000_000_000 / i64::from(clock.clock_rate.max(1));
                let base = ntp.to_unix();
                let at = if nanos >= 0 {
                    base + Duration::from_nanos(nanos.unsigned_abs())
                } else {
                    base.saturating_sub(Duration::from_nanos(nanos.unsigned_abs()))
                };
                NtpTime::from_unix(at)
            }
            None => NtpTime::from_unix(last.wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()),
        };
        super::rtcp::sender_report(clock.ssrc?, ntp, last.timestamp, clock.packets, clock.octets)
    }

    /// The `RTP-Info` values for a reader starting now: the next sequence number and the RTP time
    /// of this instant on the track's clock; `None` before the first packet.
    pub(crate) fn rtp_info(&self, track: usize, now: Instant) -> Option<(u16, u32)> {
        let tracks = self.inner.tracks.lock().unwrap_or_else(PoisonError::into_inner);
        let clock = tracks.get(track)?;
        let last = clock.last?;
        let elapsed = now.saturating_duration_since(last.at);
        let ticks = duration_to_rtp_ticks(elapsed, clock.clock_rate);
        Some((last.sequence.wrapping_add(1), last.timestamp.wrapping_add(ticks)))
    }

    /// Packets, bytes and refused packets so far, and the readers playing the stream now.
    pub fn stats(&self) -> StreamStats {
        let (packets, bytes, refused) = self.inner.shared.counts();
        StreamStats {
            packets,
            bytes,
            refused,
            readers: self.inner.shared.reader_count(),
        }
    }

    /// Closes the stream: its readers are disconnected and later writes are ignored.
    pub fn close(&self) {
        self.inner.shared.close();
    }

    /// Whether [`ServerStream::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.is_closed()
    }

    pub(crate) fn shared(&self) -> &Arc<StreamShared> {
        &self.inner.shared
    }
}

fn track_clocks(description: &SessionDescription) -> Result<Vec<TrackClock>, StreamError> {
    let medias = description.medias.len();
    if medias == 0 {
        return Err(StreamError::NoMedia);
    }
    if medias > 127 {
        return Err(StreamError::TooManyMedias(medias));
    }
    Ok(description
        .medias
        .iter()
        .map(|m| TrackClock {
            // 90 kHz is the video default; a media without rtpmap or static type is unusual.
            clock_rate: m.clock_rate().unwrap_or(90_000),
            ssrc: None,
            last: None,
            packets: 0,
            octets: 0,
            next_sender_report: None,
            publisher_clock: None,
        })
        .collect())
}
