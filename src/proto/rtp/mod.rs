//! RTP (RFC 3550 §5) packets: a zero-copy header view, in-place header rewriting, a writer for
//! the fixed header, RFC 8285 header extension elements, and receive-side statistics.
//!
//! Everything here is sans-IO and allocation-free, so it can sit on the per-packet path:
//!
//! - [`RtpView`] validates a received packet once in [`RtpView::parse`] (version, CSRC list,
//!   extension length, padding) and then answers every accessor from the borrowed bytes. No
//!   accessor can fail or panic afterwards.
//! - [`RtpViewMut`] does the same over a mutable buffer and rewrites the sequence number,
//!   timestamp, SSRC, marker and payload type in place, which is what a relay does before
//!   forwarding a packet to a reader.
//! - [`RtpHeader`] writes the 12-byte fixed header (no CSRCs, no extension) of packets the
//!   server generates itself.
//! - [`extension_elements`] walks one-byte and two-byte header extension elements (RFC 8285).
//! - [`SequenceTracker`] counts received and lost packets from sequence numbers, and
//!   [`JitterEstimator`] computes the interarrival jitter of RFC 3550 §6.4.1 / A.8. Both take
//!   their inputs as arguments; neither reads a clock.
//!
//! # Example
//!
//! ```
//! use shardcast::proto::rtp::{RtpHeader, RtpView, RtpViewMut};
//!
//! let mut buf = [0u8; 16];
//! let header = RtpHeader { marker: true, payload_type: 96, sequence_number: 7, timestamp: 90_000, ssrc: 0xCAFE };
//! let n = header.write(&mut buf)?;
//! buf[n..].copy_from_slice(b"\x65\x88\x84\x21");
//!
//! let mut packet = RtpViewMut::parse(&mut buf)?;
//! packet.set_ssrc(0xBEEF);
//!
//! let view = RtpView::parse(&buf)?;
//! assert_eq!((view.sequence_number(), view.ssrc(), view.payload()), (7, 0xBEEF, &b"\x65\x88\x84\x21"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

mod extension;
mod jitter;
mod sequence;
#[cfg(test)]
mod tests;

use std::ops::Range;

pub use extension::{extension_elements, ExtensionElements, ONE_BYTE_PROFILE, TWO_BYTE_PROFILE};
pub use jitter::JitterEstimator;
pub use sequence::{SeqEvent, SequenceTracker};

/// The only RTP version in use (RFC 3550 §5.1).
pub const VERSION: u8 = 2;

const FIXED_LEN: usize = 12;
const CSRC_LEN: usize = 4;
const EXTENSION_HEADER_LEN: usize = 4;

/// Why a received RTP packet was rejected by [`RtpView::parse`] or [`RtpViewMut::parse`].
///
/// Lengths are in bytes and count from the start of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// The packet is shorter than the 12-byte fixed header.
    #[error("RTP packet of {len} bytes is shorter than the 12-byte fixed header")]
    TruncatedFixedHeader {
        /// The packet length.
        len: usize,
    },
    /// The version field (the top two bits of byte 0) is not 2.
    #[error("unsupported RTP version {version} in byte 0 of the fixed header (expected 2)")]
    UnsupportedVersion {
        /// The version found.
        version: u8,
    },
    /// The CSRC count in byte 0 announces more CSRC identifiers than the packet holds.
    #[error("RTP CSRC list ends at byte {needed} but the packet has only {len} bytes")]
    TruncatedCsrcList {
        /// Where the CSRC list would end.
        needed: usize,
        /// The packet length.
        len: usize,
    },
    /// The X bit is set but the extension header, or the extension data its length field
    /// announces, runs past the end of the packet.
    #[error("RTP header extension ends at byte {needed} but the packet has only {len} bytes")]
    TruncatedExtension {
        /// Where the extension header or data would end.
        needed: usize,
        /// The packet length.
        len: usize,
    },
    /// The P bit is set but the padding count in the last byte is 0, or larger than the bytes
    /// that follow the header.
    #[error("RTP padding count {padding} in the last byte is not in 1..={available} (the bytes after the header)")]
    BadPadding {
        /// The padding count found in the last byte (0 if no byte follows the header).
        padding: usize,
        /// The bytes after the header, payload and padding together.
        available: usize,
    },
}

/// Why [`RtpHeader::write`] could not write a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpWriteError {
    /// The output buffer is shorter than the header.
    #[error("RTP header needs {needed} bytes but the output buffer has {available}")]
    BufferTooSmall {
        /// The bytes the header needs.
        needed: usize,
        /// The length of the output buffer.
        available: usize,
    },
}

/// Where the parts of a validated packet end; computed once by [`layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    /// End of the CSRC list (start of the extension header, if any).
    csrc_end: usize,
    /// End of the header: fixed part, CSRCs and extension.
    header_len: usize,
    /// End of the payload (start of the padding, if any).
    payload_end: usize,
}

/// Validates `buf` as an RTP packet and locates its parts.
fn layout(buf: &[u8]) -> Result<Layout, RtpError> {
    let len = buf.len();
    if len < FIXED_LEN {
        return Err(RtpError::TruncatedFixedHeader { len });
    }
    let b0 = byte(buf, 0);
    let version = b0 >> 6;
    if version != VERSION {
        return Err(RtpError::UnsupportedVersion { version });
    }
    let csrc_end = FIXED_LEN + usize::from(b0 & 0x0F) * CSRC_LEN;
    if len < csrc_end {
        return Err(RtpError::TruncatedCsrcList { needed: csrc_end, len });
    }
    let header_len = if b0 & 0x10 != 0 {
        let data_start = csrc_end + EXTENSION_HEADER_LEN;
        if len < data_start {
            return Err(RtpError::TruncatedExtension {
                needed: data_start,
                len,
            });
        }
        let end = data_start + usize::from(be16(buf, csrc_end + 2)) * 4;
        if len < end {
            return Err(RtpError::TruncatedExtension { needed: end, len });
        }
        end
    } else {
        csrc_end
    };
    let available = len - header_len;
    let padding = if b0 & 0x20 != 0 {
        let padding = buf
            .get(header_len..)
            .and_then(<[u8]>::last)
            .map_or(0, |&p| usize::from(p));
        if padding == 0 || padding > available {
            return Err(RtpError::BadPadding { padding, available });
        }
        padding
    } else {
        0
    };
    Ok(Layout {
        csrc_end,
        header_len,
        payload_end: len - padding,
    })
}

/// The byte at `at`, or 0 past the end (never reached for validated offsets).
fn byte(b: &[u8], at: usize) -> u8 {
    b.get(at).copied().unwrap_or(0)
}

/// The big-endian `u16` at `at`, or 0 past the end (never reached for validated offsets).
fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

/// The big-endian `u32` at `at`, or 0 past the end (never reached for validated offsets).
fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[w, x, y, z]) => u32::from_be_bytes([w, x, y, z]),
        _ => 0,
    }
}

/// Copies `bytes` to `at`; does nothing past the end (never reached for validated offsets).
fn put(b: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = b.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

/// A validated, borrowed RTP packet.
///
/// [`RtpView::parse`] checks the structure once; the accessors then read straight from the
/// buffer and cannot fail. The view is two words and a few offsets, and `Copy`.
#[derive(Debug, Clone, Copy)]
pub struct RtpView<'a> {
    buf: &'a [u8],
    layout: Layout,
}

impl<'a> RtpView<'a> {
    /// Validates `buf` as one RTP packet: version 2, a CSRC list and header extension that fit,
    /// and, if the P bit is set, a padding count of at least 1 that fits after the header.
    ///
    /// The whole of `buf` is the packet; trailing bytes are payload (or padding).
    pub fn parse(buf: &'a [u8]) -> Result<Self, RtpError> {
        Ok(Self {
            buf,
            layout: layout(buf)?,
        })
    }

    /// The version field; always 2 for a parsed packet.
    pub fn version(&self) -> u8 {
        byte(self.buf, 0) >> 6
    }

    /// Whether the P bit is set, i.e. the packet ends in padding.
    pub fn padding(&self) -> bool {
        byte(self.buf, 0) & 0x20 != 0
    }

    /// Whether the X bit is set, i.e. a header extension follows the CSRC list.
    pub fn has_extension(&self) -> bool {
        byte(self.buf, 0) & 0x10 != 0
    }

    /// The number of CSRC identifiers (0 to 15).
    pub fn csrc_count(&self) -> u8 {
        byte(self.buf, 0) & 0x0F
    }

    /// The marker bit; for video, usually the last packet of a frame.
    pub fn marker(&self) -> bool {
        byte(self.buf, 1) & 0x80 != 0
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        byte(self.buf, 1) & 0x7F
    }

    /// The sequence number.
    pub fn sequence_number(&self) -> u16 {
        be16(self.buf, 2)
    }

    /// The RTP timestamp, in units of the payload format's clock rate.
    pub fn timestamp(&self) -> u32 {
        be32(self.buf, 4)
    }

    /// The synchronization source identifier.
    pub fn ssrc(&self) -> u32 {
        be32(self.buf, 8)
    }

    /// The contributing source identifiers, in packet order.
    pub fn csrcs(&self) -> impl ExactSizeIterator<Item = u32> + 'a {
        let buf = self.buf;
        (0..usize::from(self.csrc_count())).map(move |i| be32(buf, FIXED_LEN + i * CSRC_LEN))
    }

    /// The header extension as `(profile, data)`, where `profile` is the 16 bits "defined by
    /// profile" (`0xBEDE` for RFC 8285 one-byte elements) and `data` excludes the 4-byte
    /// extension header. `None` if the X bit is clear.
    pub fn extension(&self) -> Option<(u16, &'a [u8])> {
        if !self.has_extension() {
            return None;
        }
        let Layout {
            csrc_end, header_len, ..
        } = self.layout;
        let data = self.buf.get(csrc_end + EXTENSION_HEADER_LEN..header_len).unwrap_or(&[]);
        Some((be16(self.buf, csrc_end), data))
    }

    /// The RFC 8285 elements of the header extension; empty if there is none or its profile is
    /// neither one-byte nor two-byte.
    pub fn extension_elements(&self) -> ExtensionElements<'a> {
        match self.extension() {
            Some((profile, data)) => extension_elements(profile, data),
            None => extension_elements(0, &[]),
        }
    }

    /// The header length: 12 bytes, plus 4 per CSRC, plus the extension if present.
    pub fn header_len(&self) -> usize {
        self.layout.header_len
    }

    /// The payload, without the header and without padding.
    pub fn payload(&self) -> &'a [u8] {
        self.buf.get(self.payload_range()).unwrap_or(&[])
    }

    /// Where the payload lies in [`as_bytes`](Self::as_bytes).
    pub fn payload_range(&self) -> Range<usize> {
        self.layout.header_len..self.layout.payload_end
    }

    /// The whole packet, header, payload and padding, as it was parsed.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }

    /// The fixed-header fields as an [`RtpHeader`], e.g. to build a packet like this one.
    pub fn header(&self) -> RtpHeader {
        RtpHeader {
            marker: self.marker(),
            payload_type: self.payload_type(),
            sequence_number: self.sequence_number(),
            timestamp: self.timestamp(),
            ssrc: self.ssrc(),
        }
    }
}

/// A validated RTP packet in a mutable buffer, whose fixed-header fields can be rewritten in
/// place (the packet's layout never changes).
#[derive(Debug)]
pub struct RtpViewMut<'a> {
    buf: &'a mut [u8],
    layout: Layout,
}

impl<'a> RtpViewMut<'a> {
    /// Validates `buf` exactly as [`RtpView::parse`] does.
    pub fn parse(buf: &'a mut [u8]) -> Result<Self, RtpError> {
        let layout = layout(buf)?;
        Ok(Self { buf, layout })
    }

    /// A read-only view of the packet as it is now, for the accessors of [`RtpView`].
    pub fn as_view(&self) -> RtpView<'_> {
        RtpView {
            buf: &*self.buf,
            layout: self.layout,
        }
    }

    /// Gives up mutation and returns a read-only view with the buffer's lifetime.
    pub fn into_view(self) -> RtpView<'a> {
        RtpView {
            buf: self.buf,
            layout: self.layout,
        }
    }

    /// The marker bit.
    pub fn marker(&self) -> bool {
        self.as_view().marker()
    }

    /// The 7-bit payload type.
    pub fn payload_type(&self) -> u8 {
        self.as_view().payload_type()
    }

    /// The sequence number.
    pub fn sequence_number(&self) -> u16 {
        self.as_view().sequence_number()
    }

    /// The RTP timestamp.
    pub fn timestamp(&self) -> u32 {
        self.as_view().timestamp()
    }

    /// The synchronization source identifier.
    pub fn ssrc(&self) -> u32 {
        self.as_view().ssrc()
    }

    /// The header length; see [`RtpView::header_len`].
    pub fn header_len(&self) -> usize {
        self.layout.header_len
    }

    /// Where the payload lies in the buffer; see [`RtpView::payload_range`].
    pub fn payload_range(&self) -> Range<usize> {
        self.layout.header_len..self.layout.payload_end
    }

    /// The payload, mutable, without header and padding.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.payload_range();
        self.buf.get_mut(range).unwrap_or(&mut [])
    }

    /// Overwrites the sequence number.
    pub fn set_sequence_number(&mut self, sequence_number: u16) {
        put(self.buf, 2, &sequence_number.to_be_bytes());
    }

    /// Overwrites the RTP timestamp.
    pub fn set_timestamp(&mut self, timestamp: u32) {
        put(self.buf, 4, &timestamp.to_be_bytes());
    }

    /// Overwrites the SSRC.
    pub fn set_ssrc(&mut self, ssrc: u32) {
        put(self.buf, 8, &ssrc.to_be_bytes());
    }

    /// Sets or clears the marker bit, leaving the payload type alone.
    pub fn set_marker(&mut self, marker: bool) {
        let b1 = (byte(self.buf, 1) & 0x7F) | (u8::from(marker) << 7);
        put(self.buf, 1, &[b1]);
    }

    /// Overwrites the payload type with its low 7 bits, leaving the marker bit alone.
    pub fn set_payload_type(&mut self, payload_type: u8) {
        let b1 = (byte(self.buf, 1) & 0x80) | (payload_type & 0x7F);
        put(self.buf, 1, &[b1]);
    }
}

/// The fixed header of a packet to send: version 2, no padding, no extension, no CSRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpHeader {
    /// The marker bit.
    pub marker: bool,
    /// The payload type; only the low 7 bits are written.
    pub payload_type: u8,
    /// The sequence number.
    pub sequence_number: u16,
    /// The RTP timestamp.
    pub timestamp: u32,
    /// The synchronization source identifier.
    pub ssrc: u32,
}

impl RtpHeader {
    /// The length of the written header in bytes.
    pub const LEN: usize = FIXED_LEN;

    /// Writes the header to the start of `out` and returns the bytes written ([`Self::LEN`]);
    /// the payload goes right after. Bytes of `out` past the header are left untouched.
    pub fn write(&self, out: &mut [u8]) -> Result<usize, RtpWriteError> {
        let Some(head) = out.first_chunk_mut::<FIXED_LEN>() else {
            return Err(RtpWriteError::BufferTooSmall {
                needed: Self::LEN,
                available: out.len(),
            });
        };
        let [s0, s1] = self.sequence_number.to_be_bytes();
        let [t0, t1, t2, t3] = self.timestamp.to_be_bytes();
        let [i0, i1, i2, i3] = self.ssrc.to_be_bytes();
        let b1 = (u8::from(self.marker) << 7) | (self.payload_type & 0x7F);
        *head = [VERSION << 6, b1, s0, s1, t0, t1, t2, t3, i0, i1, i2, i3];
        Ok(Self::LEN)
    }
}
