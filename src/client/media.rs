//! Media of a set-up session: receiving packets (interleaved or UDP) into a reused buffer, sending
//! them, per-track statistics, and the keepalive and RTCP receiver report schedules.
//!
//! Receiving allocates nothing per packet. Over TCP a frame is handed out as a slice of the control
//! connection's read buffer; over UDP each datagram is received with one non-blocking `recvfrom` into
//! one buffer, and only when every socket is empty does the client wait for the first socket (or the
//! control connection, or a timer) to be ready.

use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_lite::future;

use super::config::ClientTransport;
use super::connection::{Connection, Item};
use super::error::{ClientError, Result};
use crate::proto::rtcp::{self, ReceiverReport, ReportBlock, RtcpPacket};
use crate::proto::rtp::{JitterEstimator, RtpView, SeqEvent, SequenceTracker};
use crate::proto::rtsp::{InterleavedFrame, Message};
use crate::runtime::connect::{readable_any, yield_if_needed, ClientUdpSocket};

/// Largest datagram received; a longer one is dropped.
const MAX_DATAGRAM: usize = 4096;
/// UDP tracks a client can set up (two sockets each, one bit each in the ready mask).
pub(crate) const MAX_UDP_TRACKS: usize = 32;

/// A packet returned by [`Client::read_packet`](super::Client::read_packet), borrowed from the
/// client's receive buffer until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceivedPacket<'a> {
    /// The track (index of the media in the session description).
    pub track: usize,
    /// Whether this is an RTCP packet (else RTP).
    pub is_rtcp: bool,
    /// The packet.
    pub data: &'a [u8],
}

/// Counters of one track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TrackStats {
    /// RTP packets received (playing) or sent (recording); duplicates and invalid packets excluded.
    pub packets: u64,
    /// Bytes of those RTP packets, headers included.
    pub bytes: u64,
    /// Packets missing from the received sequence numbers (late arrivals are deducted).
    pub lost: u64,
    /// RTP interarrival jitter (RFC 3550 §6.4.1).
    pub jitter: Duration,
}

/// Where a set-up track's packets travel.
pub(crate) enum TrackTransport {
    /// Interleaved channels (RTP, RTCP).
    Tcp { rtp: u8, rtcp: u8 },
    /// UDP sockets `2 * slot` and `2 * slot + 1` of [`Media::sockets`]; packets go to the server
    /// ports (or, for multicast, the group ports) and are accepted from `source` when known.
    Udp {
        slot: usize,
        server_rtp: Option<SocketAddr>,
        server_rtcp: Option<SocketAddr>,
        source: Option<IpAddr>,
    },
}

/// One set-up track.
pub(crate) struct Track {
    /// The index of the media in the session description.
    pub(crate) index: usize,
    transport: TrackTransport,
    sequence: SequenceTracker,
    jitter: JitterEstimator,
    packets: u64,
    bytes: u64,
    /// SSRC of the packets received, for the report block.
    sender_ssrc: Option<u32>,
    /// LSR (middle 32 bits of the NTP time) of the last sender report, and when it arrived.
    last_sender_report: Option<(u32, Instant)>,
    /// Expected and received counts at the previous receiver report, for its fraction lost.
    prior: (u64, u64),
}

impl Track {
    /// A track reached through `transport`, whose RTP clock runs at `clock_rate` (0: unknown).
    pub(crate) fn new(index: usize, transport: TrackTransport, clock_rate: u32) -> Self {
        Track {
            index,
            transport,
            sequence: SequenceTracker::new(),
            jitter: JitterEstimator::new(clock_rate),
            packets: 0,
            bytes: 0,
            sender_ssrc: None,
            last_sender_report: None,
            prior: (0, 0),
        }
    }

    fn account(&mut self, data: &[u8], is_rtcp: bool, arrival: Duration, now: Instant) {
        if is_rtcp {
            for packet in rtcp::packets(data) {
                match packet {
                    Ok(RtcpPacket::SenderReport(sr)) => self.last_sender_report = Some((sr.ntp().middle32(), now)),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            return;
        }
        let Ok(view) = RtpView::parse(data) else { return };
        match self.sequence.observe(view.sequence_number()) {
            SeqEvent::Duplicate | SeqEvent::Late => return,
            SeqEvent::First | SeqEvent::InOrder | SeqEvent::Lost(_) => {}
        }
        self.jitter.update(arrival, view.timestamp());
        self.sender_ssrc = Some(view.ssrc());
        self.packets += 1;
        self.bytes += data.len() as u64;
    }

    fn stats(&self) -> TrackStats {
        TrackStats {
            packets: self.packets,
            bytes: self.bytes,
            lost: self.sequence.lost(),
            jitter: self.jitter.jitter(),
        }
    }

    /// The report block on this track's sender, `None` before its first RTP packet.
    fn report_block(&mut self, now: Instant) -> Option<ReportBlock> {
        let ssrc = self.sender_ssrc?;
        let received = self.sequence.received();
        let expected = received + self.sequence.lost();
        let (expected_interval, received_interval) = (expected - self.prior.0, received - self.prior.1);
        self.prior = (expected, received);
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .unwrap_or(0)
            .min(255) as u8;
        let (lsr, dlsr) = match self.last_sender_report {
            Some((lsr, at)) => {
                let delay = now.saturating_duration_since(at);
                (
                    lsr,
                    (delay.as_nanos() * 65536 / 1_000_000_000).min(u128::from(u32::MAX)) as u32,
                )
            }
            None => (0, 0),
        };
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: i32::try_from(self.sequence.lost()).unwrap_or(i32::MAX),
            highest_sequence: self.sequence.extended_highest(),
            jitter: self.jitter.jitter_ticks(),
            last_sender_report: lsr,
            delay_since_last_sender_report: dlsr,
        })
    }
}

/// What woke a wait for media.
enum Wake {
    Socket(std::io::Result<usize>),
    Control(Result<()>),
    Timer,
}

/// The set-up tracks, their sockets, buffers and schedules.
pub(crate) struct Media {
    pub(crate) transport: ClientTransport,
    pub(crate) tracks: Vec<Track>,
    /// RTP and RTCP socket of each UDP track, by slot.
    pub(crate) sockets: Vec<ClientUdpSocket>,
    /// Bit `i`: socket `i` may have a datagram queued.
    ready: u64,
    /// Where the next round of non-blocking receives starts, so no socket starves.
    next_socket: usize,
    buf: Vec<u8>,
    /// Origin of the arrival times fed to the jitter estimators.
    origin: Instant,
    read_timeout: Duration,
    keepalive_interval: Duration,
    report_interval: Duration,
    next_keepalive: Option<Instant>,
    next_report: Option<Instant>,
    /// Our SSRC in receiver reports.
    ssrc: u32,
    /// The URL keepalives are sent to.
    pub(crate) control_url: String,
}

impl Media {
    pub(crate) fn new(
        transport: ClientTransport,
        read_timeout: Duration,
        keepalive_interval: Duration,
        report_interval: Duration,
    ) -> Self {
        let mut ssrc = [0u8; 4];
        if getrandom::getrandom(&mut ssrc).is_err() {
            ssrc = (std::process::id() ^ 0x5348_4152).to_be_bytes();
        }
        Media {
            transport,
            tracks: Vec::new(),
            sockets: Vec::new(),
            ready: 0,
            next_socket: 0,
            buf: Vec::new(),
            origin: Instant::now(),
            read_timeout,
            keepalive_interval,
            report_interval,
            next_keepalive: None,
            next_report: None,
            ssrc: u32::from_be_bytes(ssrc),
            control_url: String::new(),
        }
    }

    /// Adds a track whose UDP sockets, when it has some, are `sockets` (RTP, RTCP).
    pub(crate) fn add_track(&mut self, track: Track, sockets: Option<(ClientUdpSocket, ClientUdpSocket)>) {
        if let Some((rtp, rtcp)) = sockets {
            self.sockets.push(rtp);
            self.sockets.push(rtcp);
            self.ready |= 0b11 << (self.sockets.len() - 2);
            if self.buf.is_empty() {
                self.buf = vec![0; MAX_DATAGRAM];
            }
        }
        self.tracks.push(track);
    }

    /// The slot the next UDP track gets.
    pub(crate) fn next_udp_slot(&self) -> usize {
        self.sockets.len() / 2
    }

    /// Starts the keepalive (every `keepalive_interval`, at most 2/3 of the server's session timeout)
    /// and, over UDP, the receiver report schedules.
    pub(crate) fn start(&mut self, session_timeout: Option<Duration>, control_url: String) {
        let now = Instant::now();
        let mut interval = self.keepalive_interval;
        if let Some(timeout) = session_timeout.filter(|t| !t.is_zero()) {
            interval = interval.min(timeout * 2 / 3);
        }
        self.keepalive_interval = interval;
        self.next_keepalive = (!interval.is_zero()).then(|| now + interval);
        let udp = self.transport != ClientTransport::Tcp;
        self.next_report = (udp && !self.report_interval.is_zero()).then(|| now + self.report_interval);
        self.ready = u64::MAX;
        self.control_url = control_url;
    }

    /// Stops the schedules and forgets every track (after TEARDOWN).
    pub(crate) fn clear(&mut self) {
        self.tracks.clear();
        self.sockets.clear();
        self.ready = 0;
        self.next_keepalive = None;
        self.next_report = None;
    }

    pub(crate) fn stats(&self, tracks: usize) -> Vec<TrackStats> {
        let count = self.tracks.iter().map(|t| t.index + 1).max().unwrap_or(0).max(tracks);
        let mut stats = vec![TrackStats::default(); count];
        for track in &self.tracks {
            stats[track.index] = track.stats();
        }
        stats
    }

    /// The next packet of any track; see [`Client::read_packet`](super::Client::read_packet).
    pub(crate) async fn read<'a>(&'a mut self, conn: &'a mut Connection) -> Result<ReceivedPacket<'a>> {
        yield_if_needed().await;
        if self.tracks.is_empty() {
            return Err(ClientError::Protocol("read_packet before any SETUP".into()));
        }
        let deadline = Instant::now() + self.read_timeout;
        match self.transport {
            ClientTransport::Tcp => self.read_tcp(conn, deadline).await,
            ClientTransport::Udp | ClientTransport::UdpMulticast => self.read_udp(conn, deadline).await,
        }
    }

    async fn read_tcp<'a>(&'a mut self, conn: &'a mut Connection, deadline: Instant) -> Result<ReceivedPacket<'a>> {
        let (track, is_rtcp, range) = loop {
            match conn.io.next_item()? {
                Some(Item::Frame { channel, range }) => {
                    let Some((i, is_rtcp)) = self.track_of_channel(channel) else {
                        continue; // a channel we did not set up
                    };
                    let now = Instant::now();
                    let arrival = now - self.origin;
                    self.tracks[i].account(conn.io.bytes(range.clone()), is_rtcp, arrival, now);
                    break (self.tracks[i].index, is_rtcp, range);
                }
                Some(Item::Message(Message::Response(response))) => conn.note_response(&response)?,
                Some(Item::Message(_)) => {} // a server request: not answered
                None => {
                    self.run_schedules(conn, deadline).await?;
                    self.arm(conn, deadline);
                    let Connection { io, alarm, .. } = &mut *conn;
                    future::or(io.fill(), async {
                        alarm.wait().await;
                        Ok(())
                    })
                    .await?;
                }
            }
        };
        Ok(ReceivedPacket {
            track,
            is_rtcp,
            data: conn.io.bytes(range),
        })
    }

    async fn read_udp<'a>(&'a mut self, conn: &'a mut Connection, deadline: Instant) -> Result<ReceivedPacket<'a>> {
        let (track, is_rtcp, len) = loop {
            // Responses to keepalives on the control connection.
            while let Some(item) = conn.io.next_item()? {
                if let Item::Message(Message::Response(response)) = item {
                    conn.note_response(&response)?;
                }
            }
            if let Some(found) = self.try_receive()? {
                break found;
            }
            self.run_schedules(conn, deadline).await?;
            self.arm(conn, deadline);
            let Connection { io, alarm, .. } = &mut *conn;
            let sockets = &self.sockets;
            let wake = future::or(
                async { Wake::Socket(readable_any(sockets).await) },
                future::or(async { Wake::Control(io.fill().await) }, async {
                    alarm.wait().await;
                    Wake::Timer
                }),
            )
            .await;
            match wake {
                Wake::Socket(ready) => self.ready |= 1 << ready?,
                Wake::Control(result) => result?,
                Wake::Timer => {}
            }
        };
        Ok(ReceivedPacket {
            track,
            is_rtcp,
            data: &self.buf[..len],
        })
    }

    /// One non-blocking receive on the sockets that may have data: `(track, is_rtcp, len)`.
    fn try_receive(&mut self) -> Result<Option<(usize, bool, usize)>> {
        let count = self.sockets.len();
        let mut tried = 0;
        while tried < count {
            let i = (self.next_socket + tried) % count;
            tried += 1;
            if self.ready & (1 << i) == 0 {
                continue;
            }
            let Some((len, from)) = self.sockets[i].try_recv_from(&mut self.buf)? else {
                self.ready &= !(1 << i);
                continue;
            };
            self.next_socket = i + 1;
            tried = 0;
            let (slot, is_rtcp) = (i / 2, i % 2 == 1);
            let Some(t) = self
                .tracks
                .iter()
                .position(|t| matches!(t.transport, TrackTransport::Udp { slot: s, .. } if s == slot))
            else {
                continue;
            };
            let track = &mut self.tracks[t];
            let TrackTransport::Udp { source, .. } = track.transport else {
                continue;
            };
            if len > self.buf.len() || source.is_some_and(|ip| ip != from.ip()) {
                continue; // oversized, or not from the server
            }
            let now = Instant::now();
            track.account(&self.buf[..len], is_rtcp, now - self.origin, now);
            return Ok(Some((track.index, is_rtcp, len)));
        }
        Ok(None)
    }

    fn track_of_channel(&self, channel: u8) -> Option<(usize, bool)> {
        self.tracks.iter().enumerate().find_map(|(i, t)| match t.transport {
            TrackTransport::Tcp { rtp, .. } if rtp == channel => Some((i, false)),
            TrackTransport::Tcp { rtcp, .. } if rtcp == channel => Some((i, true)),
            _ => None,
        })
    }

    /// Sends the keepalive and receiver reports that are due; fails once the read deadline passed.
    async fn run_schedules(&mut self, conn: &mut Connection, deadline: Instant) -> Result<()> {
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::Timeout {
                what: "waiting for media".into(),
            });
        }
        self.keepalive_if_due(conn, now).await?;
        if self.next_report.is_some_and(|at| now >= at) {
            self.next_report = Some(now + self.report_interval);
            self.send_receiver_reports(now).await?;
        }
        Ok(())
    }

    /// Sends a keepalive request if one is due; its response is consumed by later reads.
    pub(crate) async fn keepalive_if_due(&mut self, conn: &mut Connection, now: Instant) -> Result<()> {
        if self.next_keepalive.is_none_or(|at| now < at) {
            return Ok(());
        }
        self.next_keepalive = Some(now + self.keepalive_interval);
        conn.send_keepalive(&self.control_url).await
    }

    /// Sets the alarm for the earliest of the deadline and the schedules, unless it already goes off
    /// earlier (it then wakes us early, and we set it again).
    fn arm(&self, conn: &mut Connection, deadline: Instant) {
        let target = [Some(deadline), self.next_keepalive, self.next_report]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline);
        let now = Instant::now();
        if conn.alarm.at() <= now || target < conn.alarm.at() {
            conn.alarm.set(target);
        }
    }

    /// One RR (plus SDES CNAME) per UDP track that has received RTP, to the track's RTCP destination.
    async fn send_receiver_reports(&mut self, now: Instant) -> Result<()> {
        let mut packet = [0u8; 128];
        for t in 0..self.tracks.len() {
            let track = &mut self.tracks[t];
            let TrackTransport::Udp {
                slot,
                server_rtcp: Some(to),
                ..
            } = track.transport
            else {
                continue;
            };
            let Some(block) = track.report_block(now) else {
                continue;
            };
            let report = ReceiverReport {
                ssrc: self.ssrc,
                reports: vec![block],
            };
            let Ok(mut len) = report.write(&mut packet) else {
                continue;
            };
            len += write_cname(self.ssrc, &mut packet[len..]);
            self.sockets[2 * slot + 1].send_to(&packet[..len], to).await?;
        }
        Ok(())
    }

    /// Sends one packet of `track`; see [`Client::write_packet`](super::Client::write_packet).
    pub(crate) async fn write(
        &mut self,
        conn: &mut Connection,
        track: usize,
        is_rtcp: bool,
        data: &[u8],
    ) -> Result<()> {
        let Some(t) = self.tracks.iter().position(|t| t.index == track) else {
            return Err(ClientError::Protocol(format!("track {track} is not set up")));
        };
        match self.tracks[t].transport {
            TrackTransport::Tcp { rtp, rtcp } => {
                let channel = if is_rtcp { rtcp } else { rtp };
                let header = InterleavedFrame::header(channel, data.len()).ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "a {}-byte packet does not fit an interleaved frame",
                        data.len()
                    ))
                })?;
                let mut slices = [IoSlice::new(&header), IoSlice::new(data)];
                conn.io.write_all(&mut slices, conn.write_timeout).await?;
            }
            TrackTransport::Udp {
                slot,
                server_rtp,
                server_rtcp,
                ..
            } => {
                let to = if is_rtcp { server_rtcp } else { server_rtp };
                let to = to.ok_or_else(|| ClientError::Protocol("the SETUP answer has no server_port".into()))?;
                self.sockets[2 * slot + usize::from(is_rtcp)].send_to(data, to).await?;
            }
        }
        if !is_rtcp {
            let track = &mut self.tracks[t];
            track.packets += 1;
            track.bytes += data.len() as u64;
        }
        self.keepalive_if_due(conn, Instant::now()).await?;
        // Consume whatever the server sent meanwhile (keepalive responses, RTCP) without waiting, so
        // that it never fills the socket and blocks the server's writes.
        while let Some(result) = future::poll_once(conn.io.fill()).await {
            result?;
            while let Some(item) = conn.io.next_item()? {
                if let Item::Message(Message::Response(response)) = item {
                    conn.note_response(&response)?;
                }
            }
        }
        Ok(())
    }
}

/// Writes an SDES packet with our CNAME (RFC 3550 §6.5) after a report; returns its length.
fn write_cname(ssrc: u32, out: &mut [u8]) -> usize {
    const CNAME: &[u8] = b"shardcast";
    // Header, SSRC, item type and length, the name, a terminating zero, padded to 32 bits.
    let len = (4 + 4 + 2 + CNAME.len() + 1).next_multiple_of(4);
    if out.len() < len {
        return 0;
    }
    let words = (len / 4 - 1) as u16;
    out[..4].copy_from_slice(&[0x81, 202, (words >> 8) as u8, words as u8]);
    out[4..8].copy_from_slice(&ssrc.to_be_bytes());
    out[8] = 1;
    out[9] = CNAME.len() as u8;
    out[10..10 + CNAME.len()].copy_from_slice(CNAME);
    out[10 + CNAME.len()..len].fill(0);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_report_with_cname_is_a_valid_compound() {
        let mut track = Track::new(0, TrackTransport::Tcp { rtp: 0, rtcp: 1 }, 90_000);
        let t0 = Instant::now();
        let mut packet = [0u8; 20];
        for (i, seq) in [1u16, 2, 4, 5].into_iter().enumerate() {
            packet[..4].copy_from_slice(&[0x80, 96, 0, seq as u8]);
            packet[8..12].copy_from_slice(&7u32.to_be_bytes());
            track.account(&packet, false, Duration::from_millis(40 * i as u64), t0);
        }
        let block = track.report_block(t0).unwrap();
        assert_eq!((block.ssrc, block.cumulative_lost, block.highest_sequence), (7, 1, 5));
        assert_eq!(block.fraction_lost, (256 / 5) as u8);
        let mut out = [0u8; 128];
        let mut len = ReceiverReport {
            ssrc: 9,
            reports: vec![block],
        }
        .write(&mut out)
        .unwrap();
        len += write_cname(9, &mut out[len..]);
        assert_eq!(rtcp::validate_compound(&out[..len]), Ok(2));
        let cname = rtcp::packets(&out[..len]).find_map(|p| match p {
            Ok(RtcpPacket::SourceDescription(s)) => s.cname().map(<[u8]>::to_vec),
            _ => None,
        });
        assert_eq!(cname.as_deref(), Some(&b"shardcast"[..]));
        assert_eq!(track.stats().packets, 4);
    }
}
