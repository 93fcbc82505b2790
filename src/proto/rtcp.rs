//! RTCP (RFC 3550 §6) compound packet parsing and sender/receiver report building.
//!
//! Parsing is sans-IO and zero-copy: [`packets`] walks a compound packet and yields borrowed
//! views ([`SenderReportView`], [`ReceiverReportView`], [`SdesView`], [`ByeView`]) whose
//! structure has already been checked, so their accessors cannot fail. Unknown packet types
//! are tolerated as [`RtcpPacket::Other`]. Building goes through [`SenderReport`],
//! [`ReceiverReport`] and [`goodbye`], which write into caller-provided buffers.

use crate::proto::time::NtpTime;

/// Packet type of a sender report.
pub const PT_SR: u8 = 200;
/// Packet type of a receiver report.
pub const PT_RR: u8 = 201;
/// Packet type of a source description.
pub const PT_SDES: u8 = 202;
/// Packet type of a goodbye.
pub const PT_BYE: u8 = 203;
/// SDES item type of the canonical name (CNAME).
pub const SDES_CNAME: u8 = 1;
/// The most report blocks (or sources) a single RTCP packet can carry: the 5-bit count field.
pub const MAX_REPORTS: usize = 31;

const HEADER_LEN: usize = 4;
const SR_INFO_LEN: usize = 24;
const BLOCK_LEN: usize = 24;
const MIN_CUMULATIVE_LOST: i32 = -(1 << 23);
const MAX_CUMULATIVE_LOST: i32 = (1 << 23) - 1;

/// Why a received RTCP packet was rejected. Offsets are byte offsets into the compound buffer.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RtcpError {
    /// The buffer ends inside a header or a fixed-size part starting at `offset`.
    #[error("RTCP packet truncated at offset {offset}")]
    TooShort {
        /// Where the truncated header or field starts.
        offset: usize,
    },
    /// The version field of the packet at `offset` is not 2.
    #[error("unsupported RTCP version {version} at offset {offset}")]
    UnsupportedVersion {
        /// Where the packet starts.
        offset: usize,
        /// The version found.
        version: u8,
    },
    /// The length field of the packet at `offset` points past the end of the buffer.
    #[error("RTCP packet at offset {offset} declares {declared} bytes but only {available} remain")]
    LengthBeyondBuffer {
        /// Where the packet starts.
        offset: usize,
        /// The packet length in bytes implied by its length field.
        declared: usize,
        /// The bytes left in the buffer from `offset`.
        available: usize,
    },
    /// The report or source count of the packet at `offset` does not fit in its length.
    #[error("RTCP packet at offset {offset} has a count that does not fit its length")]
    BadReportCount {
        /// Where the packet starts.
        offset: usize,
    },
    /// The padding count of the packet at `offset` is zero or larger than its payload.
    #[error("RTCP packet at offset {offset} has invalid padding")]
    BadPadding {
        /// Where the packet starts.
        offset: usize,
    },
    /// An SDES chunk or item starting at `offset` is truncated or lacks its terminator.
    #[error("malformed SDES chunk or item at offset {offset}")]
    BadSdes {
        /// Where the malformed chunk or item starts.
        offset: usize,
    },
    /// The BYE reason starting at `offset` is longer than the packet.
    #[error("BYE reason at offset {offset} overruns its packet")]
    BadByeReason {
        /// Where the reason length octet is.
        offset: usize,
    },
    /// The buffer holds no RTCP packet at all.
    #[error("empty RTCP compound packet")]
    Empty,
}

/// Why an RTCP packet could not be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RtcpWriteError {
    /// The output buffer is smaller than the encoded packet.
    #[error("RTCP output buffer too small: need {needed} bytes, have {available}")]
    BufferTooSmall {
        /// Bytes the packet needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// More than [`MAX_REPORTS`] report blocks were given.
    #[error("{0} report blocks exceed the RTCP maximum of 31")]
    TooManyReports(usize),
}

fn be32(b: &[u8], at: usize) -> u32 {
    match at.checked_add(4).and_then(|end| b.get(at..end)) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// One reception report block (RFC 3550 §6.4.1), as carried in SR and RR packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction of packets lost since the previous report, in units of 1/256.
    pub fraction_lost: u8,
    /// Cumulative packets lost; 24-bit signed on the wire, clamped to that range when written.
    pub cumulative_lost: i32,
    /// Extended highest sequence number received.
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the NTP time of the last SR received from the source (LSR).
    pub last_sender_report: u32,
    /// Delay since that SR in units of 1/65536 s (DLSR).
    pub delay_since_last_sender_report: u32,
}

impl ReportBlock {
    fn parse(b: &[u8]) -> Self {
        let word = be32(b, 4);
        ReportBlock {
            ssrc: be32(b, 0),
            fraction_lost: (word >> 24) as u8,
            // Shifting left then arithmetic shift right sign-extends the 24-bit value.
            cumulative_lost: ((word << 8) as i32) >> 8,
            highest_sequence: be32(b, 8),
            jitter: be32(b, 12),
            last_sender_report: be32(b, 16),
            delay_since_last_sender_report: be32(b, 20),
        }
    }

    fn words(&self) -> [u32; 6] {
        let lost = self.cumulative_lost.clamp(MIN_CUMULATIVE_LOST, MAX_CUMULATIVE_LOST) as u32 & 0xFF_FFFF;
        let (b, lsr, dlsr) = (self, self.last_sender_report, self.delay_since_last_sender_report);
        [
            b.ssrc,
            u32::from(b.fraction_lost) << 24 | lost,
            b.highest_sequence,
            b.jitter,
            lsr,
            dlsr,
        ]
    }
}

fn blocks(b: &[u8]) -> impl Iterator<Item = ReportBlock> + '_ {
    b.chunks_exact(BLOCK_LEN).map(ReportBlock::parse)
}

/// A validated sender report (PT 200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderReportView<'a> {
    body: &'a [u8],
    blocks: &'a [u8],
}

impl<'a> SenderReportView<'a> {
    /// SSRC of the sender.
    pub fn ssrc(&self) -> u32 {
        be32(self.body, 0)
    }
    /// NTP wallclock time at which the report was sent.
    pub fn ntp(&self) -> NtpTime {
        NtpTime((u64::from(be32(self.body, 4)) << 32) | u64::from(be32(self.body, 8)))
    }
    /// RTP timestamp corresponding to [`ntp`](Self::ntp).
    pub fn rtp_time(&self) -> u32 {
        be32(self.body, 12)
    }
    /// Total RTP data packets sent.
    pub fn packet_count(&self) -> u32 {
        be32(self.body, 16)
    }
    /// Total RTP payload octets sent.
    pub fn octet_count(&self) -> u32 {
        be32(self.body, 20)
    }
    /// The reception report blocks, in wire order.
    pub fn reports(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        blocks(self.blocks)
    }
}

/// A validated receiver report (PT 201).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiverReportView<'a> {
    ssrc: u32,
    blocks: &'a [u8],
}

impl<'a> ReceiverReportView<'a> {
    /// SSRC of the packet sender.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }
    /// The reception report blocks, in wire order.
    pub fn reports(&self) -> impl Iterator<Item = ReportBlock> + 'a {
        blocks(self.blocks)
    }
}

/// Splits one SDES chunk off `b`: its SSRC, its item bytes (without terminator) and the rest.
/// On error returns the offset within `b` of the bad chunk or item.
fn split_chunk(b: &[u8]) -> Result<(u32, &[u8], &[u8]), usize> {
    if b.len() < 4 {
        return Err(0);
    }
    let ssrc = be32(b, 0);
    let mut pos = 4;
    loop {
        match b.get(pos) {
            None => return Err(pos),
            Some(0) => {
                let items = b.get(4..pos).unwrap_or(&[]);
                // The terminator and padding run to the next 32-bit boundary.
                let end = ((pos + 4) & !3).min(b.len());
                return Ok((ssrc, items, b.get(end..).unwrap_or(&[])));
            }
            Some(_) => {
                let len = usize::from(*b.get(pos + 1).ok_or(pos)?);
                let next = pos + 2 + len;
                if next > b.len() {
                    return Err(pos);
                }
                pos = next;
            }
        }
    }
}

/// A validated source description (PT 202).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesView<'a> {
    body: &'a [u8],
    count: u8,
}

impl<'a> SdesView<'a> {
    /// The chunks, one per described source.
    pub fn chunks(&self) -> SdesChunks<'a> {
        SdesChunks {
            rest: self.body,
            left: self.count,
        }
    }
    /// The SSRC/CSRC of every chunk.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.chunks().map(|c| c.ssrc)
    }
    /// The first CNAME item of any chunk.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.chunks()
            .find_map(|c| c.items().find(|&(t, _)| t == SDES_CNAME).map(|(_, v)| v))
    }
}

/// Iterator over the chunks of an SDES packet.
#[derive(Debug, Clone)]
pub struct SdesChunks<'a> {
    rest: &'a [u8],
    left: u8,
}

impl<'a> Iterator for SdesChunks<'a> {
    type Item = SdesChunk<'a>;
    fn next(&mut self) -> Option<SdesChunk<'a>> {
        self.left = self.left.checked_sub(1)?;
        match split_chunk(self.rest) {
            Ok((ssrc, items, rest)) => {
                self.rest = rest;
                Some(SdesChunk { ssrc, items })
            }
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

/// One SDES chunk: a source and its items.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    /// The source described.
    pub ssrc: u32,
    items: &'a [u8],
}

impl<'a> SdesChunk<'a> {
    /// The items as `(item_type, value)` pairs, in wire order.
    pub fn items(&self) -> SdesItems<'a> {
        SdesItems { rest: self.items }
    }
}

/// Iterator over the `(item_type, value)` items of one SDES chunk.
#[derive(Debug, Clone)]
pub struct SdesItems<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SdesItems<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&kind, rest) = self.rest.split_first()?;
        let (&len, rest) = rest.split_first()?;
        let value = rest.get(..usize::from(len))?;
        self.rest = rest.get(usize::from(len)..).unwrap_or(&[]);
        Some((kind, value))
    }
}

/// A validated goodbye (PT 203).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByeView<'a> {
    ssrcs: &'a [u8],
    reason: Option<&'a [u8]>,
}

impl<'a> ByeView<'a> {
    /// The sources leaving.
    pub fn ssrcs(&self) -> impl Iterator<Item = u32> + 'a {
        self.ssrcs.chunks_exact(4).map(|c| be32(c, 0))
    }
    /// The optional reason for leaving (UTF-8 text per the RFC, not checked).
    pub fn reason(&self) -> Option<&'a [u8]> {
        self.reason
    }
}

/// One packet of an RTCP compound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    /// A sender report (PT 200).
    SenderReport(SenderReportView<'a>),
    /// A receiver report (PT 201).
    ReceiverReport(ReceiverReportView<'a>),
    /// A source description (PT 202).
    SourceDescription(SdesView<'a>),
    /// A goodbye (PT 203).
    Goodbye(ByeView<'a>),
    /// Any other packet type (APP, feedback, XR, ...), passed through unparsed.
    Other {
        /// The packet type octet.
        packet_type: u8,
        /// Everything after the 4-byte header, without padding.
        body: &'a [u8],
    },
}

impl RtcpPacket<'_> {
    /// The packet type octet of this packet.
    pub fn packet_type(&self) -> u8 {
        match self {
            RtcpPacket::SenderReport(_) => PT_SR,
            RtcpPacket::ReceiverReport(_) => PT_RR,
            RtcpPacket::SourceDescription(_) => PT_SDES,
            RtcpPacket::Goodbye(_) => PT_BYE,
            RtcpPacket::Other { packet_type, .. } => *packet_type,
        }
    }
}

/// Parses the packet at the start of `buf` (which sits at `offset` in the compound).
/// Returns the packet and its total length including header and padding.
fn parse_one(buf: &[u8], offset: usize) -> Result<(RtcpPacket<'_>, usize), RtcpError> {
    let &[b0, packet_type, l0, l1, ..] = buf else {
        return Err(RtcpError::TooShort { offset });
    };
    let version = b0 >> 6;
    if version != 2 {
        return Err(RtcpError::UnsupportedVersion { offset, version });
    }
    let count = b0 & 0x1f;
    let total = (usize::from(u16::from_be_bytes([l0, l1])) + 1) * 4;
    let Some(packet) = buf.get(..total) else {
        return Err(RtcpError::LengthBeyondBuffer {
            offset,
            declared: total,
            available: buf.len(),
        });
    };
    let mut body = packet.get(HEADER_LEN..).unwrap_or(&[]);
    if b0 & 0x20 != 0 {
        // Padding (normally only on the last packet) is counted by the packet's last octet.
        let pad = usize::from(body.last().copied().unwrap_or(0));
        if pad == 0 || pad > body.len() {
            return Err(RtcpError::BadPadding { offset });
        }
        body = body.get(..body.len() - pad).unwrap_or(&[]);
    }
    let bad_count = RtcpError::BadReportCount { offset };
    let too_short = RtcpError::TooShort {
        offset: offset + HEADER_LEN,
    };
    let blocks_len = usize::from(count) * BLOCK_LEN;
    let parsed = match packet_type {
        PT_SR => {
            if body.len() < SR_INFO_LEN {
                return Err(too_short);
            }
            let blocks = body.get(SR_INFO_LEN..SR_INFO_LEN + blocks_len).ok_or(bad_count)?;
            RtcpPacket::SenderReport(SenderReportView { body, blocks })
        }
        PT_RR => {
            let ssrc = body.get(..4).map(|b| be32(b, 0)).ok_or(too_short)?;
            let blocks = body.get(4..4 + blocks_len).ok_or(bad_count)?;
            RtcpPacket::ReceiverReport(ReceiverReportView { ssrc, blocks })
        }
        PT_SDES => {
            let mut rest = body;
            for _ in 0..count {
                if rest.len() < 4 {
                    return Err(bad_count);
                }
                let at = offset + HEADER_LEN + (body.len() - rest.len());
                rest = split_chunk(rest).map_err(|e| RtcpError::BadSdes { offset: at + e })?.2;
            }
            RtcpPacket::SourceDescription(SdesView { body, count })
        }
        PT_BYE => {
            let n = usize::from(count) * 4;
            let ssrcs = body.get(..n).ok_or(bad_count)?;
            let reason = match body.get(n..) {
                Some(&[len, ref text @ ..]) => Some(text.get(..usize::from(len)).ok_or(RtcpError::BadByeReason {
                    offset: offset + HEADER_LEN + n,
                })?),
                _ => None,
            };
            RtcpPacket::Goodbye(ByeView { ssrcs, reason })
        }
        _ => RtcpPacket::Other { packet_type, body },
    };
    Ok((parsed, total))
}

/// Iterator over the packets of a compound RTCP packet; see [`packets`].
#[derive(Debug, Clone)]
pub struct Packets<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Iterator for Packets<'a> {
    type Item = Result<RtcpPacket<'a>, RtcpError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let rest = self.buf.get(self.offset..).filter(|r| !r.is_empty())?;
        match parse_one(rest, self.offset) {
            Ok((packet, len)) => {
                self.offset += len;
                Some(Ok(packet))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Packets<'_> {}

/// Iterates over the packets of the compound RTCP packet `buf`.
///
/// Each item is a parsed packet or the error that stopped parsing; after an error the iterator
/// yields nothing more. An empty buffer yields nothing. Nothing is allocated. Padding is stripped
/// from any packet whose P bit is set (RFC 3550 allows it only on the last); bytes after the
/// report blocks of an SR or RR (profile-specific extensions) are ignored.
pub fn packets(buf: &[u8]) -> Packets<'_> {
    Packets {
        buf,
        offset: 0,
        failed: false,
    }
}

/// Checks that `buf` is a well-formed, non-empty compound RTCP packet and returns how many
/// packets it holds.
///
/// The RFC 3550 §6.1 rule that a compound starts with an SR or RR is deliberately not enforced.
pub fn validate_compound(buf: &[u8]) -> Result<usize, RtcpError> {
    let mut n = 0;
    for packet in packets(buf) {
        packet?;
        n += 1;
    }
    if n == 0 {
        return Err(RtcpError::Empty);
    }
    Ok(n)
}

/// Writes a packet of type `pt` with count field `count`, the 32-bit `words` after the header
/// and then the report blocks; returns the bytes written.
fn encode(
    out: &mut [u8],
    pt: u8,
    count: usize,
    words: &[u32],
    reports: &[ReportBlock],
) -> Result<usize, RtcpWriteError> {
    if count > MAX_REPORTS {
        return Err(RtcpWriteError::TooManyReports(count));
    }
    let len = HEADER_LEN + 4 * words.len() + BLOCK_LEN * reports.len();
    let Some(out) = out.get_mut(..len) else {
        return Err(RtcpWriteError::BufferTooSmall {
            needed: len,
            available: out.len(),
        });
    };
    let [w0, w1] = ((len / 4 - 1) as u16).to_be_bytes();
    let header = u32::from_be_bytes([0x80 | count as u8, pt, w0, w1]);
    let all = std::iter::once(header).chain(words.iter().copied());
    for (dst, word) in out
        .chunks_exact_mut(4)
        .zip(all.chain(reports.iter().flat_map(ReportBlock::words)))
    {
        dst.copy_from_slice(&word.to_be_bytes());
    }
    Ok(len)
}

/// A sender report to send (PT 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SenderReport {
    /// SSRC of the sender.
    pub ssrc: u32,
    /// NTP wallclock time of the report.
    pub ntp: NtpTime,
    /// RTP timestamp corresponding to `ntp`.
    pub rtp_time: u32,
    /// Total RTP data packets sent.
    pub packet_count: u32,
    /// Total RTP payload octets sent.
    pub octet_count: u32,
    /// Reception report blocks; at most [`MAX_REPORTS`].
    pub reports: Vec<ReportBlock>,
}

impl SenderReport {
    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + SR_INFO_LEN + BLOCK_LEN * self.reports.len()
    }

    /// Writes the packet to the start of `out`, returning the bytes written.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtcpWriteError> {
        let (ntp_hi, ntp_lo) = ((self.ntp.0 >> 32) as u32, self.ntp.0 as u32);
        let words = [
            self.ssrc,
            ntp_hi,
            ntp_lo,
            self.rtp_time,
            self.packet_count,
            self.octet_count,
        ];
        encode(out, PT_SR, self.reports.len(), &words, &self.reports)
    }

    /// Encodes the packet into a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RtcpWriteError> {
        let mut v = vec![0; self.encoded_len()];
        self.write(&mut v)?;
        Ok(v)
    }
}

impl From<SenderReportView<'_>> for SenderReport {
    fn from(v: SenderReportView<'_>) -> Self {
        SenderReport {
            ssrc: v.ssrc(),
            ntp: v.ntp(),
            rtp_time: v.rtp_time(),
            packet_count: v.packet_count(),
            octet_count: v.octet_count(),
            reports: v.reports().collect(),
        }
    }
}

/// A receiver report to send (PT 201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverReport {
    /// SSRC of the packet sender.
    pub ssrc: u32,
    /// Reception report blocks; at most [`MAX_REPORTS`].
    pub reports: Vec<ReportBlock>,
}

impl ReceiverReport {
    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + 4 + BLOCK_LEN * self.reports.len()
    }

    /// Writes the packet to the start of `out`, returning the bytes written.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtcpWriteError> {
        encode(out, PT_RR, self.reports.len(), &[self.ssrc], &self.reports)
    }

    /// Encodes the packet into a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, RtcpWriteError> {
        let mut v = vec![0; self.encoded_len()];
        self.write(&mut v)?;
        Ok(v)
    }
}

impl From<ReceiverReportView<'_>> for ReceiverReport {
    fn from(v: ReceiverReportView<'_>) -> Self {
        ReceiverReport {
            ssrc: v.ssrc(),
            reports: v.reports().collect(),
        }
    }
}

/// Writes a BYE packet for the single source `ssrc`, without reason, returning the bytes written.
pub fn goodbye(ssrc: u32, out: &mut [u8]) -> Result<usize, RtcpWriteError> {
    encode(out, PT_BYE, 1, &[ssrc], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An SR laid out per RFC 3550 §6.4.1 with one report block.
    const SR: [u8; 52] = [
        0x81, 0xC8, 0x00, 0x0C, // V=2 P=0 RC=1, PT=200, length 12
        0x12, 0x34, 0x56, 0x78, // SSRC of sender
        0xE1, 0xA2, 0xB3, 0xC4, 0x80, 0x00, 0x00, 0x00, // NTP timestamp
        0x00, 0x01, 0x5F, 0x90, // RTP timestamp 90000
        0x00, 0x00, 0x00, 0x64, // packet count 100
        0x00, 0x01, 0xE2, 0x40, // octet count 123456
        0xDE, 0xAD, 0xBE, 0xEF, // SSRC_1
        0x40, 0xFF, 0xFF, 0xFE, // fraction lost 1/4, cumulative lost -2
        0x00, 0x01, 0x00, 0x05, // extended highest sequence
        0x00, 0x00, 0x00, 0x20, // jitter
        0xB3, 0xC4, 0x80, 0x00, // LSR
        0x00, 0x01, 0x00, 0x00, // DLSR (1 s)
    ];

    /// An SR without blocks followed by SDES with a CNAME, as ffmpeg sends them.
    const SR_SDES: [u8; 44] = [
        0x80, 0xC8, 0x00, 0x06, 0x0A, 0x0B, 0x0C, 0x0D, // SR header, SSRC
        0xE1, 0xA2, 0xB3, 0xC4, 0x00, 0x00, 0x00, 0x00, // NTP
        0x00, 0x00, 0x0E, 0x10, 0x00, 0x00, 0x00, 0x02, // RTP time, packets
        0x00, 0x00, 0x05, 0xDC, // octets
        0x81, 0xCA, 0x00, 0x03, 0x0A, 0x0B, 0x0C, 0x0D, // SDES header, chunk SSRC
        0x01, 0x04, b'h', b'o', b's', b't', 0x00, 0x00, // CNAME "host", end, pad
    ];

    fn one(buf: &[u8]) -> RtcpPacket<'_> {
        let mut it = packets(buf);
        let p = it.next().expect("a packet").expect("valid");
        assert!(it.next().is_none());
        p
    }

    fn as_sr(p: RtcpPacket<'_>) -> SenderReportView<'_> {
        match p {
            RtcpPacket::SenderReport(v) => v,
            other => panic!("not an SR: {other:?}"),
        }
    }

    fn as_rr(p: RtcpPacket<'_>) -> ReceiverReportView<'_> {
        match p {
            RtcpPacket::ReceiverReport(v) => v,
            other => panic!("not an RR: {other:?}"),
        }
    }

    fn as_bye(p: RtcpPacket<'_>) -> ByeView<'_> {
        match p {
            RtcpPacket::Goodbye(v) => v,
            other => panic!("not a BYE: {other:?}"),
        }
    }

    #[test]
    fn parses_rfc_sender_report_field_by_field() {
        let sr = as_sr(one(&SR));
        assert_eq!(sr.ssrc(), 0x1234_5678);
        assert_eq!(sr.ntp(), NtpTime(0xE1A2_B3C4_8000_0000));
        assert_eq!(sr.rtp_time(), 90_000);
        assert_eq!(sr.packet_count(), 100);
        assert_eq!(sr.octet_count(), 123_456);
        let blocks: Vec<_> = sr.reports().collect();
        let expected = ReportBlock {
            ssrc: 0xDEAD_BEEF,
            fraction_lost: 0x40,
            cumulative_lost: -2,
            highest_sequence: 0x0001_0005,
            jitter: 0x20,
            last_sender_report: 0xB3C4_8000,
            delay_since_last_sender_report: 0x0001_0000,
        };
        assert_eq!(blocks, [expected]);
        let owned = SenderReport::from(sr);
        assert_eq!(owned.to_bytes().as_deref(), Ok(&SR[..]));
    }

    #[test]
    fn parses_sr_followed_by_sdes_cname() {
        assert_eq!(validate_compound(&SR_SDES), Ok(2));
        let mut it = packets(&SR_SDES).map(|p| p.expect("valid"));
        let sr = as_sr(it.next().expect("an SR"));
        assert_eq!(
            (sr.ssrc(), sr.rtp_time(), sr.packet_count(), sr.octet_count()),
            (0x0A0B_0C0D, 3600, 2, 1500)
        );
        assert_eq!(sr.reports().count(), 0);
        let Some(RtcpPacket::SourceDescription(sdes)) = it.next() else {
            panic!("not SDES")
        };
        assert_eq!(sdes.cname(), Some(&b"host"[..]));
        assert_eq!(sdes.ssrcs().collect::<Vec<_>>(), [0x0A0B_0C0D]);
        let chunk = sdes.chunks().next().expect("a chunk");
        assert_eq!(chunk.items().collect::<Vec<_>>(), [(SDES_CNAME, &b"host"[..])]);
    }

    #[test]
    fn receiver_report_round_trips() {
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 3,
            cumulative_lost: -8_388_608,
            ..Default::default()
        };
        let rr = ReceiverReport {
            ssrc: 42,
            reports: vec![block, ReportBlock { jitter: 9, ..block }],
        };
        let bytes = rr.to_bytes().expect("encodes");
        assert_eq!(bytes.len(), rr.encoded_len());
        let view = as_rr(one(&bytes));
        assert_eq!(ReceiverReport::from(view), rr);
    }

    #[test]
    fn cumulative_lost_clamps_to_24_bits() {
        let block = |cumulative_lost| ReportBlock {
            cumulative_lost,
            ..Default::default()
        };
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![block(i32::MAX), block(i32::MIN)],
        };
        let bytes = rr.to_bytes().expect("encodes");
        let view = as_rr(one(&bytes));
        let lost: Vec<_> = view.reports().map(|b| b.cumulative_lost).collect();
        assert_eq!(lost, [8_388_607, -8_388_608]);
    }

    #[test]
    fn write_errors() {
        let rr = ReceiverReport {
            ssrc: 1,
            reports: vec![ReportBlock::default(); 32],
        };
        assert_eq!(rr.to_bytes(), Err(RtcpWriteError::TooManyReports(32)));
        let sr = SenderReport {
            ssrc: 1,
            ntp: NtpTime(0),
            rtp_time: 0,
            packet_count: 0,
            octet_count: 0,
            reports: vec![],
        };
        let mut small = [0u8; 27];
        assert_eq!(
            sr.write(&mut small),
            Err(RtcpWriteError::BufferTooSmall {
                needed: 28,
                available: 27
            })
        );
        assert_eq!(
            goodbye(5, &mut small[..7]),
            Err(RtcpWriteError::BufferTooSmall {
                needed: 8,
                available: 7
            })
        );
    }

    #[test]
    fn goodbye_round_trips_and_reason_is_read() {
        let mut buf = [0u8; 8];
        assert_eq!(goodbye(0xCAFE_BABE, &mut buf), Ok(8));
        let bye = as_bye(one(&buf));
        assert_eq!(bye.ssrcs().collect::<Vec<_>>(), [0xCAFE_BABE]);
        assert_eq!(bye.reason(), None);
        let with_reason = [0x81, 0xCB, 0x00, 0x02, 0, 0, 0, 1, 3, b'b', b'y', b'e'];
        let bye = as_bye(one(&with_reason));
        assert_eq!(bye.reason(), Some(&b"bye"[..]));
        let overrun = [0x81, 0xCB, 0x00, 0x02, 0, 0, 0, 1, 4, b'b', b'y', b'e'];
        assert_eq!(validate_compound(&overrun), Err(RtcpError::BadByeReason { offset: 8 }));
    }

    #[test]
    fn unknown_packet_type_is_tolerated() {
        let mut buf = SR_SDES.to_vec();
        buf.extend_from_slice(&[0x81, 206, 0x00, 0x02, 0, 0, 0, 1, 0, 0, 0, 2]);
        assert_eq!(validate_compound(&buf), Ok(3));
        let last = packets(&buf).last().expect("three packets");
        assert_eq!(
            last,
            Ok(RtcpPacket::Other {
                packet_type: 206,
                body: &[0, 0, 0, 1, 0, 0, 0, 2]
            })
        );
        assert_eq!(last.map(|p| p.packet_type()), Ok(206));
    }

    #[test]
    fn padding_is_stripped_from_the_last_packet() {
        let buf = [0xA0, 0xC9, 0x00, 0x02, 0, 0, 0, 9, 0, 0, 0, 4];
        let rr = as_rr(one(&buf));
        assert_eq!(rr.ssrc(), 9);
        let zero_pad = [0xA0, 0xC9, 0x00, 0x02, 0, 0, 0, 9, 0, 0, 0, 0];
        assert_eq!(validate_compound(&zero_pad), Err(RtcpError::BadPadding { offset: 0 }));
    }

    #[test]
    fn every_truncation_is_an_error_except_at_packet_boundaries() {
        let mut buf = SR.to_vec();
        buf.extend_from_slice(&SR_SDES);
        let boundaries = [52, 80];
        for len in 0..buf.len() {
            let result = validate_compound(&buf[..len]);
            if boundaries.contains(&len) {
                assert!(result.is_ok(), "len {len}: {result:?}");
            } else {
                assert!(result.is_err(), "len {len} parsed as {result:?}");
            }
            let errors = packets(&buf[..len]).filter(Result::is_err).count();
            assert!(errors <= 1);
        }
        assert_eq!(validate_compound(&[]), Err(RtcpError::Empty));
        assert_eq!(validate_compound(&SR[..3]), Err(RtcpError::TooShort { offset: 0 }));
    }

    #[test]
    fn structural_errors_are_reported_with_offsets() {
        let mut long = SR;
        long[3] = 0x0D;
        assert_eq!(
            validate_compound(&long),
            Err(RtcpError::LengthBeyondBuffer {
                offset: 0,
                declared: 56,
                available: 52
            })
        );
        let mut buf = SR_SDES.to_vec();
        buf[28] = 0x40 | 0x01;
        assert_eq!(
            validate_compound(&buf),
            Err(RtcpError::UnsupportedVersion { offset: 28, version: 1 })
        );
        let mut rc = SR;
        rc[0] = 0x82;
        assert_eq!(validate_compound(&rc), Err(RtcpError::BadReportCount { offset: 0 }));
        let mut sdes = SR_SDES;
        sdes[43] = 1; // terminator missing
        sdes[42] = 1;
        assert_eq!(validate_compound(&sdes), Err(RtcpError::BadSdes { offset: 42 }));
        // After the first error, nothing more is yielded.
        let mut bad_first = SR_SDES;
        bad_first[0] = 0x00;
        assert_eq!(packets(&bad_first).count(), 1);
    }

    fn block() -> impl Strategy<Value = ReportBlock> {
        (
            any::<u32>(),
            any::<u8>(),
            MIN_CUMULATIVE_LOST..=MAX_CUMULATIVE_LOST,
            any::<[u32; 4]>(),
        )
            .prop_map(|(ssrc, fraction_lost, cumulative_lost, [a, b, c, d])| ReportBlock {
                ssrc,
                fraction_lost,
                cumulative_lost,
                highest_sequence: a,
                jitter: b,
                last_sender_report: c,
                delay_since_last_sender_report: d,
            })
    }

    proptest! {
        #[test]
        fn sender_report_round_trips(
            head in any::<[u32; 4]>(),
            ntp in any::<u64>(),
            reports in prop::collection::vec(block(), 0..=MAX_REPORTS),
        ) {
            let [ssrc, rtp_time, packet_count, octet_count] = head;
            let sr = SenderReport { ssrc, ntp: NtpTime(ntp), rtp_time, packet_count, octet_count, reports };
            let bytes = sr.to_bytes().expect("encodes");
            prop_assert_eq!(bytes.len(), sr.encoded_len());
            prop_assert_eq!(validate_compound(&bytes), Ok(1));
            let Some(Ok(RtcpPacket::SenderReport(view))) = packets(&bytes).next() else {
                return Err(TestCaseError::fail("not an SR"));
            };
            prop_assert_eq!(SenderReport::from(view), sr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = validate_compound(&bytes);
            for packet in packets(&bytes).flatten() {
                let _ = packet.packet_type();
                match packet {
                    RtcpPacket::SenderReport(v) => { let _ = (v.ntp(), v.reports().count()); }
                    RtcpPacket::ReceiverReport(v) => { let _ = v.reports().count(); }
                    RtcpPacket::SourceDescription(v) => {
                        let _ = (v.cname(), v.chunks().flat_map(|c| c.items()).count());
                    }
                    RtcpPacket::Goodbye(v) => { let _ = (v.ssrcs().count(), v.reason()); }
                    RtcpPacket::Other { .. } => {}
                }
            }
        }

        #[test]
        fn valid_headers_with_random_bodies_never_panic(
            pt in 200u8..=204,
            first in any::<u8>(),
            body in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let words = body.len() / 4;
            let mut buf = vec![0x80 | (first & 0x3f), pt, 0, words as u8];
            buf.extend_from_slice(&body[..words * 4]);
            for packet in packets(&buf).flatten() {
                if let RtcpPacket::SourceDescription(v) = packet {
                    let _ = v.chunks().flat_map(|c| c.items()).count();
                }
            }
        }
    }
}
