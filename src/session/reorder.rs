//! Putting a UDP publisher's RTP back in order (DESIGN.md §2, issue 4): up to 64 packets are held
//! while a gap may still fill; late and duplicate packets are dropped; gaps that never fill are
//! reported as lost.

/// Packets held while waiting for a missing one.
pub const REORDER_WINDOW: usize = 64;

/// What the buffer releases, in sequence order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released<T> {
    /// The next packet.
    Packet(T),
    /// This many packets are missing before the next one.
    Lost(u16),
}

/// What happened to a pushed packet that was not released at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Released (possibly with others) or held for later.
    Accepted,
    /// Already released or already held: dropped.
    Duplicate,
    /// Older than what was already released: dropped.
    Late,
}

/// A reorder buffer over 16-bit sequence numbers.
#[derive(Debug)]
pub struct ReorderBuffer<T> {
    /// The sequence number expected next; `None` before the first packet.
    expected: Option<u16>,
    slots: Vec<Option<T>>,
    held: usize,
}

impl<T> Default for ReorderBuffer<T> {
    fn default() -> Self {
        ReorderBuffer {
            expected: None,
            slots: (0..REORDER_WINDOW).map(|_| None).collect(),
            held: 0,
        }
    }
}

impl<T> ReorderBuffer<T> {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(seq: u16) -> usize {
        usize::from(seq) % REORDER_WINDOW
    }

    /// Adds packet `seq`; `release` gets, in order, every packet (and gap) that can now go out.
    pub fn push(&mut self, seq: u16, packet: T, release: &mut impl FnMut(Released<T>)) -> Pushed {
        let Some(expected) = self.expected else {
            self.expected = Some(seq.wrapping_add(1));
            release(Released::Packet(packet));
            return Pushed::Accepted;
        };
        let ahead = seq.wrapping_sub(expected) as i16;
        if ahead < 0 {
            return Pushed::Late;
        }
        let ahead = ahead as usize;
        if ahead >= REORDER_WINDOW {
            // The gap cannot fill within the window: release what is held, then jump.
            self.flush_until(seq, release);
        } else if ahead > 0 {
            let slot = &mut self.slots[Self::slot(seq)];
            if slot.is_some() {
                return Pushed::Duplicate;
            }
            *slot = Some(packet);
            self.held += 1;
            return Pushed::Accepted;
        }
        release(Released::Packet(packet));
        self.expected = Some(seq.wrapping_add(1));
        self.release_consecutive(release);
        Pushed::Accepted
    }

    /// Releases held packets and gaps up to (not including) `seq`, and expects `seq` next.
    fn flush_until(&mut self, seq: u16, release: &mut impl FnMut(Released<T>)) {
        let Some(mut next) = self.expected else { return };
        let mut missing: u32 = 0;
        while self.held > 0 && next != seq {
            match self.slots[Self::slot(next)].take() {
                Some(packet) => {
                    self.held -= 1;
                    if missing > 0 {
                        release(Released::Lost(missing as u16));
                        missing = 0;
                    }
                    release(Released::Packet(packet));
                }
                None => missing += 1,
            }
            next = next.wrapping_add(1);
        }
        missing += u32::from(seq.wrapping_sub(next));
        if missing > 0 {
            release(Released::Lost(missing.min(u32::from(u16::MAX)) as u16));
        }
        self.expected = Some(seq);
    }

    fn release_consecutive(&mut self, release: &mut impl FnMut(Released<T>)) {
        while self.held > 0 {
            let Some(next) = self.expected else { return };
            let Some(packet) = self.slots[Self::slot(next)].take() else {
                return;
            };
            self.held -= 1;
            release(Released::Packet(packet));
            self.expected = Some(next.wrapping_add(1));
        }
    }

    /// Packets currently held.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(seqs: &[u16]) -> (Vec<Released<u16>>, Vec<Pushed>) {
        let mut buffer = ReorderBuffer::new();
        let mut out = Vec::new();
        let pushed = seqs.iter().map(|&s| buffer.push(s, s, &mut |r| out.push(r))).collect();
        (out, pushed)
    }

    fn packets(seqs: &[u16]) -> Vec<Released<u16>> {
        seqs.iter().map(|&s| Released::Packet(s)).collect()
    }

    #[test]
    fn in_order_packets_pass_straight_through_across_the_wrap() {
        let (out, _) = run(&[65534, 65535, 0, 1]);
        assert_eq!(out, packets(&[65534, 65535, 0, 1]));
    }

    #[test]
    fn a_swapped_pair_comes_out_in_order() {
        let (out, _) = run(&[10, 12, 11, 13]);
        assert_eq!(out, packets(&[10, 11, 12, 13]));
    }

    #[test]
    fn duplicates_and_late_packets_are_dropped() {
        let (out, pushed) = run(&[10, 11, 11, 13, 13, 9]);
        assert_eq!(out, packets(&[10, 11]));
        assert_eq!(pushed[2], Pushed::Late);
        assert_eq!(pushed[4], Pushed::Duplicate);
        assert_eq!(pushed[5], Pushed::Late);
    }

    #[test]
    fn a_gap_that_never_fills_is_reported_once_the_window_is_passed() {
        let mut seqs = vec![0u16];
        seqs.extend(3..70); // 1 and 2 never come
        let (out, _) = run(&seqs);
        let mut expected = packets(&[0]);
        expected.push(Released::Lost(2));
        expected.extend(packets(&(3..70).collect::<Vec<_>>()));
        assert_eq!(out, expected);
    }

    #[test]
    fn a_big_jump_releases_what_was_held_and_counts_the_rest_as_lost() {
        let (out, _) = run(&[0, 2, 1000]);
        assert_eq!(
            out,
            vec![
                Released::Packet(0),
                Released::Lost(1),
                Released::Packet(2),
                Released::Lost(997),
                Released::Packet(1000)
            ]
        );
    }

    proptest! {
        #[test]
        fn shuffles_within_the_window_lose_nothing(start in any::<u16>(), swaps in prop::collection::vec(0usize..200, 0..50)) {
            let mut seqs: Vec<u16> = (0..200u16).map(|i| start.wrapping_add(i)).collect();
            for (i, s) in swaps.iter().enumerate() {
                let j = (*s).min(seqs.len() - 1);
                let k = (j + i % 8 + 1).min(seqs.len() - 1);
                if j > 0 { seqs.swap(j, k); }
            }
            let (out, _) = run(&seqs);
            let released: Vec<u16> = out.iter().filter_map(|r| match r { Released::Packet(p) => Some(*p), _ => None }).collect();
            let lost: u32 = out.iter().map(|r| match r { Released::Lost(n) => u32::from(*n), _ => 0 }).sum();
            // Everything after the first packet comes out in order; what was displaced before the
            // first packet is late, and nothing is reported lost that later arrived.
            prop_assert!(released.windows(2).all(|w| w[1] == w[0].wrapping_add(1)));
            prop_assert_eq!(lost, 0);
        }

        #[test]
        fn released_plus_lost_covers_the_sequence_span(seqs in prop::collection::vec(any::<u16>(), 1..300)) {
            let (out, _) = run(&seqs);
            let released = out.iter().filter(|r| matches!(r, Released::Packet(_))).count();
            prop_assert!(released >= 1 && released <= seqs.len());
        }
    }
}
