//! A synthetic H.264 stream shaped like an encoder's output (RFC 6184 packetization), and the
//! timestamp trailer readers measure latency with.
//!
//! Every `gop` frames a keyframe: SPS and PPS (the ones of the SDP's `sprop-parameter-sets`) as single
//! NAL unit packets, then an IDR slice [`KEYFRAME_WEIGHT`] times the size of an average P frame. Other
//! frames are non-IDR slices whose size varies by ±20%. The frame sizes average the requested bitrate
//! over a GOP. A NAL unit larger than one packet is split into FU-A fragments; the last packet of a
//! frame has the marker bit. Timestamps run at 90 kHz.
//!
//! The last [`TRAILER_LEN`] bytes of every slice packet are a trailer: [`TRAILER_MAGIC`], a per-publisher
//! packet counter (u32 big-endian) and the send time in nanoseconds since the UNIX epoch (u64
//! big-endian, from `SystemTime`), written just before the packet is handed to the socket. A reader on
//! the same host (or with a synchronised clock) gets the one-way latency from it, and readers on one
//! core recognise the same packet by its counter whatever sequence numbers the server rewrites.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shardcast::proto::rtp::RtpHeader;
use shardcast::proto::sdp::{self, SessionDescription};

/// Trailer length in bytes.
pub const TRAILER_LEN: usize = 16;
/// First 4 bytes of a trailer.
pub const TRAILER_MAGIC: [u8; 4] = *b"SCLG";
/// RTP payload type of the stream.
pub const PAYLOAD_TYPE: u8 = 96;
/// RTP clock of H.264.
pub const CLOCK_RATE: u32 = 90_000;
/// An IDR frame is this many times an average P frame.
pub const KEYFRAME_WEIGHT: f64 = 6.0;
/// Smallest and largest RTP packet (header included) accepted.
pub const MIN_PACKET_SIZE: usize = 64;
/// An Ethernet MTU's worth of UDP payload.
pub const MAX_PACKET_SIZE: usize = 1472;
/// Frames per second unless told otherwise (`--fps`).
pub const DEFAULT_FPS: f64 = 25.0;
/// Frames per GOP unless told otherwise (`--gop`).
pub const DEFAULT_GOP: u32 = 50;

/// SPS of a 640x360 constrained-baseline stream (level 3.0), as x264 writes it.
const SPS: &[u8] = &[
    0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00, 0x01, 0x00, 0x00, 0x03,
    0x00, 0x32, 0x0f, 0x16, 0x2e, 0x48,
];
/// The matching PPS.
const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

/// NAL header bytes: IDR slice (nal_ref_idc 3, type 5) and non-IDR slice (nal_ref_idc 2, type 1).
const NAL_IDR: u8 = 0x65;
const NAL_SLICE: u8 = 0x41;
/// FU-A NAL unit type.
const FU_A: u8 = 28;
/// Bytes a packet needs besides its slice data: the FU indicator and header.
const FU_OVERHEAD: usize = 2;
/// Smallest NAL unit: a header and a trailer.
const MIN_NAL: usize = 1 + TRAILER_LEN;

/// What shapes the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamShape {
    /// Video bitrate in bits/s (NAL units; RTP headers add about 1%).
    pub bitrate: u64,
    /// RTP packet size, header included.
    pub packet_size: usize,
    /// Frames per second.
    pub fps: f64,
    /// Frames per GOP.
    pub gop: u32,
}

impl StreamShape {
    /// A stream of `bitrate` bits/s in packets of `packet_size` bytes, at the default frame rate and GOP.
    pub fn new(bitrate: u64, packet_size: usize) -> StreamShape {
        StreamShape {
            bitrate,
            packet_size,
            fps: DEFAULT_FPS,
            gop: DEFAULT_GOP,
        }
    }

    /// Average RTP packets per second, over ten seconds of the stream.
    pub fn packets_per_second(&self) -> f64 {
        let frames = (self.fps * 10.0).round().max(1.0) as usize;
        let mut packetizer = Packetizer::new(*self, 1);
        let packets: usize = (0..frames).map(|_| packetizer.next_frame().packets()).sum();
        packets as f64 * self.fps / frames as f64
    }

    /// Checks the shape can be produced; the message names the offending option.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_PACKET_SIZE..=MAX_PACKET_SIZE).contains(&self.packet_size) {
            return Err(format!(
                "--packet-size {}: must be between {MIN_PACKET_SIZE} and {MAX_PACKET_SIZE}",
                self.packet_size
            ));
        }
        if !(self.fps.is_finite() && self.fps >= 0.1 && self.fps <= 1000.0) {
            return Err(format!("--fps {}: must be between 0.1 and 1000", self.fps));
        }
        if self.gop == 0 {
            return Err("--gop must be at least 1".into());
        }
        Ok(())
    }

    /// Time between frames.
    pub fn frame_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.fps)
    }

    /// Bytes of an average P frame and of a keyframe's IDR slice.
    fn frame_bytes(&self) -> (f64, f64) {
        let average = self.bitrate as f64 / 8.0 / self.fps;
        if self.gop == 1 {
            return (average, average);
        }
        let gop = f64::from(self.gop);
        let p = average * gop / (KEYFRAME_WEIGHT + gop - 1.0);
        (p, p * KEYFRAME_WEIGHT)
    }
}

/// The session description announced for the stream.
pub fn session_description(shape: &StreamShape, session_id: u64) -> SessionDescription {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = format!(
        "v=0\r\no=- {session_id} 1 IN IP4 127.0.0.1\r\ns=shardcast loadgen\r\nt=0 0\r\n\
         m=video 0 RTP/AVP {PAYLOAD_TYPE}\r\nb=AS:{kbps}\r\na=rtpmap:{PAYLOAD_TYPE} H264/{CLOCK_RATE}\r\n\
         a=fmtp:{PAYLOAD_TYPE} packetization-mode=1;profile-level-id=42c01e;sprop-parameter-sets={sps},{pps}\r\n\
         a=framerate:{fps}\r\n",
        kbps = shape.bitrate.div_ceil(1000),
        sps = b64.encode(SPS),
        pps = b64.encode(PPS),
        fps = shape.fps,
    );
    // The text above is well-formed by construction; a failure here is a bug worth a loud stop.
    sdp::parse(text.as_bytes()).unwrap_or_else(|e| panic!("the synthetic SDP does not parse: {e}"))
}

/// One frame to send: its NAL units and how they are cut into packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Whether this is a keyframe (SPS, PPS, IDR).
    pub key: bool,
    /// Size of the slice NAL unit in bytes, header included.
    pub nal_len: usize,
    /// RTP timestamp of every packet of the frame.
    pub timestamp: u32,
    /// Packets the slice takes (1: a single NAL unit packet; more: FU-A fragments).
    slice_packets: usize,
    /// Slice bytes one FU-A fragment carries.
    slice_room: usize,
}

impl Frame {
    /// Packets of the frame, parameter sets included.
    pub fn packets(&self) -> usize {
        self.slice_packets + if self.key { 2 } else { 0 }
    }

    /// Length of packet `index` of the frame, RTP header included: what
    /// [`Packetizer::write_packet`] writes for it.
    pub fn packet_len(&self, index: usize) -> usize {
        let h = RtpHeader::LEN;
        let mut index = index;
        if self.key {
            match index {
                0 => return h + SPS.len(),
                1 => return h + PPS.len(),
                _ => index -= 2,
            }
        }
        if self.slice_packets == 1 {
            return h + self.nal_len;
        }
        let body = self.nal_len - 1;
        let start = (index * self.slice_room).min(body);
        h + FU_OVERHEAD + self.slice_room.min(body - start)
    }
}

/// Produces the frames and packets of one stream.
pub struct Packetizer {
    shape: StreamShape,
    ssrc: u32,
    sequence: u16,
    timestamp_base: u32,
    frame_index: u64,
    /// Packets sent with a trailer (the trailer's counter).
    counter: u32,
    rng: u64,
    filler: Vec<u8>,
}

impl Packetizer {
    /// A stream starting at random sequence number, timestamp and SSRC drawn from `seed`.
    pub fn new(shape: StreamShape, seed: u64) -> Packetizer {
        let mut rng = seed | 1;
        let ssrc = xorshift(&mut rng) as u32;
        let sequence = xorshift(&mut rng) as u16;
        let timestamp_base = xorshift(&mut rng) as u32;
        // Non-zero filler bytes, so that a depacketizer writing Annex B sees no start codes in them.
        let filler = (0..64 * 1024).map(|_| (xorshift(&mut rng) % 255) as u8 + 1).collect();
        Packetizer {
            shape,
            ssrc,
            sequence,
            timestamp_base,
            frame_index: 0,
            counter: 0,
            rng,
            filler,
        }
    }

    /// The next frame.
    pub fn next_frame(&mut self) -> Frame {
        let index = self.frame_index;
        self.frame_index += 1;
        let key = index % u64::from(self.shape.gop) == 0;
        let (p, keyframe) = self.shape.frame_bytes();
        let size = if key {
            keyframe
        } else {
            // ±20%, uniform.
            let jitter = (xorshift(&mut self.rng) % 4001) as f64 / 10_000.0 - 0.2;
            p * (1.0 + jitter)
        };
        let room = self.slice_room();
        let mut nal_len = (size.round() as usize).max(MIN_NAL);
        let slice_packets = if nal_len <= room + 1 {
            1
        } else {
            let body = nal_len - 1;
            let fragments = body.div_ceil(room);
            // The last fragment must hold the trailer.
            let last = body - room * (fragments - 1);
            if last < TRAILER_LEN {
                nal_len += TRAILER_LEN - last;
            }
            fragments
        };
        let ticks = (index as f64 * f64::from(CLOCK_RATE) / self.shape.fps).round() as u64;
        Frame {
            key,
            nal_len,
            timestamp: self.timestamp_base.wrapping_add(ticks as u32),
            slice_packets,
            slice_room: room,
        }
    }

    /// Slice bytes one FU-A fragment carries.
    fn slice_room(&self) -> usize {
        self.shape.packet_size - RtpHeader::LEN - FU_OVERHEAD
    }

    /// Writes packet `index` of `frame` into `out` (at least the packet size long) and returns its
    /// length and whether it carries a trailer (to be stamped with [`stamp`] right before sending).
    pub fn write_packet(&mut self, frame: &Frame, index: usize, out: &mut [u8]) -> (usize, bool) {
        let last = index + 1 == frame.packets();
        let header = |sequence| RtpHeader {
            marker: last,
            payload_type: PAYLOAD_TYPE,
            sequence_number: sequence,
            timestamp: frame.timestamp,
            ssrc: self.ssrc,
        };
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        let h = RtpHeader::LEN;
        // The buffer is sized by the caller to the packet size; RtpHeader::write only fails on less.
        let _ = header(sequence).write(out);
        let mut index = index;
        if frame.key {
            if index < 2 {
                let nal = if index == 0 { SPS } else { PPS };
                out[h..h + nal.len()].copy_from_slice(nal);
                return (h + nal.len(), false);
            }
            index -= 2;
        }
        let nal_header = if frame.key { NAL_IDR } else { NAL_SLICE };
        let offset = (self.frame_index as usize * 131 + index * 17) % (self.filler.len() / 2);
        if frame.slice_packets == 1 {
            let len = frame.nal_len;
            out[h] = nal_header;
            out[h + 1..h + len].copy_from_slice(&self.filler[offset..offset + len - 1]);
            return (h + len, true);
        }
        let room = frame.slice_room;
        let body = frame.nal_len - 1;
        let start = index * room;
        let chunk = room.min(body - start);
        out[h] = (nal_header & 0xE0) | FU_A;
        let mut fu = nal_header & 0x1F;
        if index == 0 {
            fu |= 0x80;
        }
        if index + 1 == frame.slice_packets {
            fu |= 0x40;
        }
        out[h + 1] = fu;
        out[h + 2..h + 2 + chunk].copy_from_slice(&self.filler[offset..offset + chunk]);
        (h + 2 + chunk, true)
    }

    /// The next trailer counter.
    pub fn next_counter(&mut self) -> u32 {
        let c = self.counter;
        self.counter = self.counter.wrapping_add(1);
        c
    }
}

/// Writes the trailer (magic, `counter`, the current time) into the last bytes of `packet`.
pub fn stamp(packet: &mut [u8], counter: u32) {
    let len = packet.len();
    let trailer = &mut packet[len - TRAILER_LEN..];
    trailer[..4].copy_from_slice(&TRAILER_MAGIC);
    trailer[4..8].copy_from_slice(&counter.to_be_bytes());
    trailer[8..].copy_from_slice(&unix_nanos().to_be_bytes());
}

/// A trailer found at the end of a payload: (counter, send time in ns since the epoch).
///
/// The magic alone could occur by chance in a foreign stream (one packet in 2^32), so the time must
/// also be within a day of `now_ns`.
pub fn read_trailer(payload: &[u8], now_ns: u64) -> Option<(u32, u64)> {
    let start = payload.len().checked_sub(TRAILER_LEN)?;
    let trailer = &payload[start..];
    if trailer[..4] != TRAILER_MAGIC {
        return None;
    }
    let counter = u32::from_be_bytes(trailer[4..8].try_into().ok()?);
    let sent = u64::from_be_bytes(trailer[8..16].try_into().ok()?);
    const DAY: u64 = 86_400 * 1_000_000_000;
    (sent.abs_diff(now_ns) < DAY).then_some((counter, sent))
}

/// Nanoseconds since the UNIX epoch, from the wall clock.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[cfg(test)]
mod tests {
    use shardcast::proto::rtp::RtpView;

    use super::*;

    fn shape() -> StreamShape {
        StreamShape {
            bitrate: 2_000_000,
            packet_size: 1200,
            fps: 25.0,
            gop: 50,
        }
    }

    #[test]
    fn the_sdp_is_h264_with_parameter_sets() {
        let d = session_description(&shape(), 7);
        let media = &d.medias[0];
        assert_eq!(media.clock_rate(), Some(90_000));
        assert_eq!(media.rtpmap(96).unwrap().encoding, "H264");
        let fmtp = media.fmtp(96).unwrap();
        assert!(fmtp.contains("sprop-parameter-sets=Z0LAHtkAoC/5cBEAAAMAAQAAAwAyDxYuSA==,aMuDyyA="));
        assert!(fmtp.contains("packetization-mode=1"));
    }

    #[test]
    fn a_gop_averages_the_bitrate_and_packets_are_well_formed() {
        let shape = shape();
        let mut p = Packetizer::new(shape, 42);
        let mut buf = vec![0u8; shape.packet_size];
        let mut nal_bytes = 0usize;
        let mut expected_seq = None;
        let mut key_packets = 0;
        for f in 0..shape.gop {
            let frame = p.next_frame();
            assert_eq!(frame.key, f == 0);
            nal_bytes += frame.nal_len;
            let mut reassembled = 0;
            for i in 0..frame.packets() {
                let (len, trailer) = p.write_packet(&frame, i, &mut buf);
                assert!(len <= shape.packet_size);
                assert_eq!(len, frame.packet_len(i), "the announced length is the written one");
                let counter = p.next_counter();
                if trailer {
                    stamp(&mut buf[..len], counter);
                }
                let view = RtpView::parse(&buf[..len]).unwrap();
                assert_eq!(
                    view.marker(),
                    i + 1 == frame.packets(),
                    "marker on the last packet only"
                );
                assert_eq!(view.timestamp(), frame.timestamp);
                assert_eq!(view.payload_type(), 96);
                if let Some(e) = expected_seq {
                    assert_eq!(view.sequence_number(), e);
                }
                expected_seq = Some(view.sequence_number().wrapping_add(1));
                let payload = view.payload();
                let nal_type = payload[0] & 0x1F;
                if frame.key && i < 2 {
                    assert_eq!(nal_type, if i == 0 { 7 } else { 8 });
                    assert!(!trailer);
                    continue;
                }
                assert!(trailer);
                let (c, sent) = read_trailer(payload, unix_nanos()).unwrap();
                assert_eq!(c, counter);
                assert!(sent > 0);
                if nal_type == 28 {
                    let fu = payload[1];
                    let first = frame.key as usize * 2;
                    assert_eq!(fu & 0x80 != 0, i == first, "start bit");
                    assert_eq!(fu & 0x40 != 0, i + 1 == frame.packets(), "end bit");
                    assert_eq!(fu & 0x1F, if frame.key { 5 } else { 1 });
                    reassembled += payload.len() - 2;
                } else {
                    assert_eq!(nal_type, if frame.key { 5 } else { 1 });
                    reassembled += payload.len() - 1;
                }
                if frame.key {
                    key_packets += 1;
                }
            }
            assert_eq!(reassembled + 1, frame.nal_len, "the fragments add up to the NAL unit");
        }
        let average = nal_bytes as f64 * 8.0 * shape.fps / f64::from(shape.gop);
        assert!((average / 2e6 - 1.0).abs() < 0.05, "{average} bit/s");
        assert!(key_packets > 10, "a keyframe spans many packets: {key_packets}");
    }

    #[test]
    fn the_default_shape_sends_about_220_packets_per_second_at_2_mbits() {
        let shape = StreamShape::new(2_000_000, 1200);
        assert_eq!(shape, self::shape());
        // 2 Mbit/s in packets of ~1130 bytes on average (keyframes' last fragments are short).
        let pps = shape.packets_per_second();
        assert!((200.0..240.0).contains(&pps), "{pps}");
    }

    #[test]
    fn foreign_payloads_have_no_trailer() {
        let now = unix_nanos();
        assert_eq!(read_trailer(&[0u8; 40], now), None);
        assert_eq!(read_trailer(&[1u8; 3], now), None);
        let mut fake = [0u8; 16];
        fake[..4].copy_from_slice(&TRAILER_MAGIC);
        assert_eq!(
            read_trailer(&fake, now),
            None,
            "a time far from now is chance, not a trailer"
        );
    }

    #[test]
    fn small_packets_and_one_frame_gops() {
        let shape = StreamShape {
            bitrate: 10_000,
            packet_size: 64,
            fps: 30.0,
            gop: 1,
        };
        shape.validate().unwrap();
        let mut p = Packetizer::new(shape, 1);
        let mut buf = vec![0u8; 64];
        for _ in 0..5 {
            let frame = p.next_frame();
            assert!(frame.key);
            for i in 0..frame.packets() {
                let (len, _) = p.write_packet(&frame, i, &mut buf);
                assert!(len <= 64);
                assert_eq!(len, frame.packet_len(i));
            }
        }
        assert!(StreamShape {
            packet_size: 20,
            ..shape
        }
        .validate()
        .is_err());
    }
}
