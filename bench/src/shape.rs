//! The packet sizes of loadgen's synthetic stream (loadgen/src/synth.rs), frame by frame, so that the
//! limit program sends the same packet stream: the same rate, packet size and bursts.
//!
//! A keyframe every `gop` frames: SPS and PPS packets, then an IDR slice 6 times an average P frame;
//! P frames vary by ±20%; slices larger than a packet are cut into FU-A fragments.

/// An IDR frame is this many times an average P frame (as loadgen).
const KEYFRAME_WEIGHT: f64 = 6.0;
/// RTP header bytes.
pub const RTP_HEADER: usize = 12;
/// FU indicator and header.
const FU_OVERHEAD: usize = 2;
/// SPS and PPS packets of a keyframe, RTP header included.
const PARAMETER_SETS: [usize; 2] = [RTP_HEADER + 25, RTP_HEADER + 5];

/// What shapes the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Video bitrate, bits/s.
    pub bitrate: u64,
    /// RTP packet size, header included.
    pub packet_size: usize,
    /// Frames per second.
    pub fps: f64,
    /// Frames per GOP.
    pub gop: u32,
}

impl Shape {
    /// loadgen's defaults for everything but rate and packet size.
    pub fn new(bitrate: u64, packet_size: usize) -> Shape {
        Shape {
            bitrate,
            packet_size,
            fps: 25.0,
            gop: 50,
        }
    }

    /// Bytes of an average P frame and of a keyframe's slice.
    fn frame_bytes(&self) -> (f64, f64) {
        let average = self.bitrate as f64 / 8.0 / self.fps;
        let gop = f64::from(self.gop.max(1));
        if self.gop <= 1 {
            return (average, average);
        }
        let p = average * gop / (KEYFRAME_WEIGHT + gop - 1.0);
        (p, p * KEYFRAME_WEIGHT)
    }

    /// The frames of the stream, each as its packets' sizes (RTP header included).
    pub fn frames(&self, seed: u64) -> Frames {
        Frames {
            shape: *self,
            index: 0,
            rng: seed | 1,
        }
    }

    /// Average packets per second over `seconds` of the stream.
    pub fn packets_per_second(&self) -> f64 {
        let frames = (self.fps * 10.0).round().max(1.0) as usize;
        let packets: usize = self.frames(1).take(frames).map(|f| f.len()).sum();
        packets as f64 * self.fps / frames as f64
    }
}

/// Iterator over frames.
pub struct Frames {
    shape: Shape,
    index: u64,
    rng: u64,
}

impl Iterator for Frames {
    type Item = Vec<usize>;

    fn next(&mut self) -> Option<Vec<usize>> {
        let key = self.index % u64::from(self.shape.gop.max(1)) == 0;
        self.index += 1;
        let (p, keyframe) = self.shape.frame_bytes();
        let size = if key {
            keyframe
        } else {
            let jitter = (xorshift(&mut self.rng) % 4001) as f64 / 10_000.0 - 0.2;
            p * (1.0 + jitter)
        };
        let nal = (size.round() as usize).max(17);
        let room = self.shape.packet_size.saturating_sub(RTP_HEADER + FU_OVERHEAD).max(1);
        let mut packets = Vec::new();
        if key {
            packets.extend(PARAMETER_SETS);
        }
        if nal <= room + 1 {
            packets.push(RTP_HEADER + nal);
        } else {
            let body = nal - 1;
            let fragments = body.div_ceil(room);
            for i in 0..fragments {
                let len = if i + 1 == fragments { body - room * i } else { room };
                packets.push(RTP_HEADER + FU_OVERHEAD + len);
            }
        }
        Some(packets)
    }
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
    use super::*;

    #[test]
    fn rate_and_sizes_match_the_request() {
        let shape = Shape::new(2_000_000, 1200);
        let frames: Vec<Vec<usize>> = shape.frames(7).take(250).collect();
        let bytes: usize = frames.iter().flatten().sum();
        let bits_per_s = bytes as f64 * 8.0 / 10.0;
        assert!((bits_per_s / 2e6 - 1.0).abs() < 0.05, "{bits_per_s}");
        assert!(frames.iter().flatten().all(|&p| p <= 1200));
        assert_eq!(frames[0].len(), frames[0].iter().filter(|&&p| p > 0).count());
        // About 220 packets/s: 2 Mbit/s in ~1130-byte packets.
        let pps = shape.packets_per_second();
        assert!((200.0..240.0).contains(&pps), "{pps}");
    }
}
