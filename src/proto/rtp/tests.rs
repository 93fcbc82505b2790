use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// An H.264 packet exercising every optional part of the header.
const H264: [u8; 36] = [
    0xB2, // V=2, P=1, X=1, CC=2
    0xE0, // M=1, PT=96
    0xFF, 0xFF, // sequence number 65535
    0x5F, 0x3A, 0x1C, 0x20, // timestamp
    0xDE, 0xAD, 0xBE, 0xEF, // SSRC
    0x11, 0x11, 0x11, 0x11, // CSRC 1
    0x22, 0x22, 0x22, 0x22, // CSRC 2
    0xBE, 0xDE, 0x00, 0x01, // one-byte extension profile, 1 word
    0x22, 0x00, 0x01, 0x2C, // ID 2, 3 bytes: transmission time offset 300
    0x65, 0x88, 0x84, 0x21, 0xA0, // an IDR slice NAL unit (start)
    0x00, 0x00, 0x03, // 3 bytes of padding
];
const H264_HEADER_LEN: usize = 28;

#[test]
fn parses_every_field_of_an_h264_packet() {
    let p = RtpView::parse(&H264).expect("valid packet");
    assert_eq!(p.version(), 2);
    assert!(p.padding());
    assert!(p.has_extension());
    assert_eq!(p.csrc_count(), 2);
    assert!(p.marker());
    assert_eq!(p.payload_type(), 96);
    assert_eq!(p.sequence_number(), 0xFFFF);
    assert_eq!(p.timestamp(), 0x5F3A_1C20);
    assert_eq!(p.ssrc(), 0xDEAD_BEEF);
    assert!(p.csrcs().eq([0x1111_1111, 0x2222_2222]));
    assert_eq!(p.csrcs().len(), 2);
    assert_eq!(p.extension(), Some((ONE_BYTE_PROFILE, &[0x22, 0x00, 0x01, 0x2C][..])));
    assert!(p.extension_elements().eq([(2, &[0x00, 0x01, 0x2C][..])]));
    assert_eq!(p.header_len(), H264_HEADER_LEN);
    assert_eq!(p.payload(), &[0x65, 0x88, 0x84, 0x21, 0xA0]);
    assert_eq!(p.payload_range(), 28..33);
    assert_eq!(p.as_bytes(), &H264[..]);
    let header = RtpHeader {
        marker: true,
        payload_type: 96,
        sequence_number: 0xFFFF,
        timestamp: 0x5F3A_1C20,
        ssrc: 0xDEAD_BEEF,
    };
    assert_eq!(p.header(), header);
}

#[test]
fn minimal_packet_has_no_csrcs_extension_or_padding() {
    let buf = [0x80, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
    let p = RtpView::parse(&buf).expect("valid packet");
    assert_eq!(
        (p.csrcs().count(), p.extension(), p.extension_elements().count()),
        (0, None, 0)
    );
    assert_eq!((p.header_len(), p.payload()), (12, &[][..]));
}

#[test]
fn every_truncation_is_rejected_with_the_part_that_is_cut() {
    for len in 0..H264.len() {
        let err = RtpView::parse(&H264[..len]).expect_err("truncated packet");
        let expected = match len {
            0..12 => RtpError::TruncatedFixedHeader { len },
            12..20 => RtpError::TruncatedCsrcList { needed: 20, len },
            20..24 => RtpError::TruncatedExtension { needed: 24, len },
            24..28 => RtpError::TruncatedExtension { needed: 28, len },
            _ => match err {
                RtpError::BadPadding { available, .. } => {
                    assert_eq!(available, len - H264_HEADER_LEN);
                    err
                }
                other => panic!("length {len}: expected bad padding, got {other:?}"),
            },
        };
        assert_eq!(err, expected, "length {len}");
        let mut copy = H264;
        assert_eq!(RtpViewMut::parse(&mut copy[..len]).map(|_| ()), Err(err));
    }
}

#[test]
fn versions_other_than_2_are_rejected() {
    for version in [0u8, 1, 3] {
        let mut buf = H264;
        buf[0] = (buf[0] & 0x3F) | (version << 6);
        assert_eq!(
            RtpView::parse(&buf).map(|_| ()),
            Err(RtpError::UnsupportedVersion { version })
        );
    }
}

#[test]
fn padding_count_must_be_nonzero_and_fit_after_the_header() {
    let with_last = |last: u8| {
        let mut buf = H264;
        buf[35] = last;
        buf
    };
    let bad = |padding, available| Err(RtpError::BadPadding { padding, available });
    assert_eq!(RtpView::parse(&with_last(0)).map(|_| ()), bad(0, 8));
    assert_eq!(RtpView::parse(&with_last(9)).map(|_| ()), bad(9, 8));
    assert_eq!(RtpView::parse(&with_last(255)).map(|_| ()), bad(255, 8));
    let all_padding = with_last(8);
    let p = RtpView::parse(&all_padding).expect("padding may fill everything after the header");
    assert_eq!((p.payload(), p.payload_range()), (&[][..], 28..28));
    // P set but nothing after the header: the last byte belongs to the header, not padding.
    assert_eq!(RtpView::parse(&H264[..H264_HEADER_LEN]).map(|_| ()), bad(0, 0));
    // Without the P bit the same bytes are all payload.
    let mut no_p = H264;
    no_p[0] &= !0x20;
    assert_eq!(RtpView::parse(&no_p).expect("valid").payload(), &H264[28..]);
}

#[test]
fn error_messages_say_what_and_where() {
    let msg = |e: RtpError| e.to_string();
    assert!(msg(RtpError::TruncatedFixedHeader { len: 5 }).contains("5 bytes"));
    assert!(msg(RtpError::UnsupportedVersion { version: 1 }).contains("version 1"));
    assert!(msg(RtpError::TruncatedCsrcList { needed: 20, len: 13 }).contains("byte 20"));
    assert!(msg(RtpError::TruncatedExtension { needed: 28, len: 25 }).contains("25 bytes"));
    assert!(msg(RtpError::BadPadding {
        padding: 9,
        available: 8
    })
    .contains("9"));
    let e = RtpWriteError::BufferTooSmall {
        needed: 12,
        available: 4,
    };
    assert!(e.to_string().contains("12") && e.to_string().contains('4'));
}

#[test]
fn setters_rewrite_only_their_field() {
    let mut buf = H264;
    let mut p = RtpViewMut::parse(&mut buf).expect("valid packet");
    p.set_sequence_number(0x0102);
    p.set_timestamp(0x0304_0506);
    p.set_ssrc(0x0708_090A);
    p.set_marker(false);
    p.set_payload_type(0xFF); // only the low 7 bits count
    assert_eq!(
        (p.marker(), p.payload_type(), p.sequence_number()),
        (false, 0x7F, 0x0102)
    );
    assert_eq!(
        (p.timestamp(), p.ssrc(), p.header_len()),
        (0x0304_0506, 0x0708_090A, 28)
    );
    assert_eq!(p.payload_range(), 28..33);
    p.payload_mut()[0] = 0x41;
    p.set_payload_type(96);
    assert!(!p.as_view().marker());
    p.set_marker(true);
    assert_eq!(p.into_view().payload_type(), 96);

    let v = RtpView::parse(&buf).expect("still valid");
    assert_eq!((v.marker(), v.payload_type(), v.sequence_number()), (true, 96, 0x0102));
    assert_eq!((v.timestamp(), v.ssrc()), (0x0304_0506, 0x0708_090A));
    assert_eq!(v.payload(), &[0x41, 0x88, 0x84, 0x21, 0xA0]);
    // Byte 0, the CSRCs, the extension and the padding are untouched.
    assert_eq!(buf[0], H264[0]);
    assert_eq!(buf[12..28], H264[12..28]);
    assert_eq!(buf[29..], H264[29..]);
}

#[test]
fn header_writer_rejects_short_buffers_and_leaves_the_rest() {
    let mut small = [0u8; 11];
    let err = RtpHeader::default().write(&mut small);
    assert_eq!(
        err,
        Err(RtpWriteError::BufferTooSmall {
            needed: 12,
            available: 11
        })
    );
    let mut buf = [0xAAu8; 14];
    let h = RtpHeader {
        marker: true,
        payload_type: 0x80 | 8,
        sequence_number: 1,
        timestamp: 2,
        ssrc: 3,
    };
    assert_eq!(h.write(&mut buf), Ok(RtpHeader::LEN));
    assert_eq!(buf, [0x80, 0x88, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0xAA, 0xAA]);
}

#[test]
fn one_byte_extension_elements() {
    // ID 1 (1 byte), padding, ID 3 (2 bytes), ID 14 (16 bytes).
    let mut data = vec![0x10, 0xAA, 0x00, 0x00, 0x31, 0xBB, 0xCC, 0xEF];
    data.extend(1..=16u8);
    let all: Vec<_> = extension_elements(ONE_BYTE_PROFILE, &data).collect();
    assert_eq!(all, [(1, &[0xAA][..]), (3, &[0xBB, 0xCC][..]), (14, &data[8..])]);
    // ID 15 stops processing; so do ID 0 with a length and an element cut short.
    assert!(extension_elements(ONE_BYTE_PROFILE, &[0x10, 0xAA, 0xF0, 0x20, 0xBB]).eq([(1, &[0xAA][..])]));
    assert_eq!(extension_elements(ONE_BYTE_PROFILE, &[0x01, 0xAA, 0xBB]).count(), 0);
    let mut cut = extension_elements(ONE_BYTE_PROFILE, &[0x10, 0xAA, 0x22, 0xBB]);
    assert_eq!(
        (cut.next(), cut.next(), cut.next()),
        (Some((1, &[0xAA][..])), None, None)
    );
}

#[test]
fn two_byte_extension_elements() {
    let data = [0x01, 0x00, 0x00, 0x10, 0x02, 0xAA, 0xBB, 0x00, 0xFF, 0x01, 0xCC];
    let all: Vec<_> = extension_elements(0x1003, &data).collect();
    assert_eq!(all, [(1, &[][..]), (0x10, &[0xAA, 0xBB][..]), (0xFF, &[0xCC][..])]);
    assert_eq!(extension_elements(TWO_BYTE_PROFILE, &[0x05]).count(), 0);
    assert_eq!(extension_elements(TWO_BYTE_PROFILE, &[0x05, 0x03, 0xAA]).count(), 0);
    assert_eq!(extension_elements(0x1234, &data).count(), 0);
}

#[test]
fn sequence_wraps_in_order() {
    let mut t = SequenceTracker::new();
    assert_eq!(t.extended_highest(), 0);
    assert_eq!(t.observe(65534), SeqEvent::First);
    assert_eq!(t.observe(65535), SeqEvent::InOrder);
    assert_eq!(t.observe(0), SeqEvent::InOrder);
    assert_eq!(t.observe(1), SeqEvent::InOrder);
    assert_eq!(t.extended_highest(), 65536 + 1);
    assert_eq!((t.received(), t.lost()), (4, 0));
    for n in 2..=40u16 {
        assert_eq!(t.observe(n), SeqEvent::InOrder);
    }
    assert_eq!(t.extended_highest(), 65536 + 40);
}

#[test]
fn sequence_gap_duplicate_and_late() {
    let mut t = SequenceTracker::new();
    assert_eq!(t.observe(1000), SeqEvent::First);
    assert_eq!(t.observe(1004), SeqEvent::Lost(3));
    assert_eq!((t.received(), t.lost()), (2, 3));
    assert_eq!(t.observe(1004), SeqEvent::Duplicate);
    assert_eq!(t.observe(1000), SeqEvent::Duplicate);
    // One of the lost ones arrives late: counted, and no longer lost.
    assert_eq!(t.observe(1002), SeqEvent::Late);
    assert_eq!((t.received(), t.lost()), (3, 2));
    assert_eq!(t.observe(1002), SeqEvent::Duplicate);
    // Before the first packet: late, not counted.
    assert_eq!(t.observe(999), SeqEvent::Late);
    assert_eq!((t.received(), t.lost()), (3, 2));
    for n in 1005..=1200 {
        assert_eq!(t.observe(n), SeqEvent::InOrder);
    }
    // Further behind than 100: dropped.
    assert_eq!(t.observe(1099), SeqEvent::Late);
    assert_eq!(t.observe(1100), SeqEvent::Duplicate);
    assert_eq!((t.received(), t.lost(), t.extended_highest()), (199, 2, 1200));
    // A gap across the wrap.
    let mut w = SequenceTracker::new();
    w.observe(65533);
    assert_eq!(w.observe(2), SeqEvent::Lost(4));
    assert_eq!((w.extended_highest(), w.lost()), (65536 + 2, 4));
    assert_eq!(w.observe(65535), SeqEvent::Late);
    assert_eq!((w.extended_highest(), w.lost(), w.received()), (65536 + 2, 3, 3));
}

/// Feeds packets sent every `step` ms (90 kHz timestamps) whose arrivals are offset by
/// `skew(i)` ms, and returns the estimator.
fn feed(first_ts: u32, n: u32, skew: impl Fn(u32) -> u64) -> JitterEstimator {
    let mut j = JitterEstimator::new(90_000);
    for i in 0..n {
        let arrival = Duration::from_millis(5_000 + 40 * u64::from(i) + skew(i));
        j.update(arrival, first_ts.wrapping_add(3_600 * i));
    }
    j
}

#[test]
fn constant_spacing_has_no_jitter() {
    let j = feed(12_345, 500, |_| 0);
    assert_eq!(
        (j.jitter_ticks(), j.jitter(), j.clock_rate()),
        (0, Duration::ZERO, 90_000)
    );
}

#[test]
fn alternating_spacing_converges_to_the_deviation() {
    // Interarrival spacing alternates 30 ms / 50 ms around the nominal 40 ms: |D| is 10 ms,
    // 900 ticks at 90 kHz.
    let j = feed(0, 1_000, |i| if i % 2 == 1 { 10 } else { 0 });
    assert!((880..=910).contains(&j.jitter_ticks()), "jitter {}", j.jitter_ticks());
    let ms = j.jitter().as_secs_f64() * 1e3;
    assert!((9.7..=10.1).contains(&ms), "jitter {ms} ms");
}

#[test]
fn timestamp_wrap_does_not_disturb_jitter() {
    let j = feed(u32::MAX - 3_600 * 50, 500, |_| 0);
    assert_eq!(j.jitter_ticks(), 0);
    let j = feed(u32::MAX - 3_600 * 50, 1_000, |i| if i % 2 == 1 { 10 } else { 0 });
    assert!((880..=910).contains(&j.jitter_ticks()), "jitter {}", j.jitter_ticks());
    assert_eq!(JitterEstimator::new(0).jitter(), Duration::ZERO);
}

proptest! {
    #[test]
    fn written_headers_parse_back(
        marker: bool,
        payload_type in 0u8..128,
        sequence_number: u16,
        timestamp: u32,
        ssrc: u32,
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let header = RtpHeader { marker, payload_type, sequence_number, timestamp, ssrc };
        let mut buf = vec![0u8; RtpHeader::LEN + payload.len()];
        prop_assert_eq!(header.write(&mut buf), Ok(RtpHeader::LEN));
        buf[RtpHeader::LEN..].copy_from_slice(&payload);
        let p = RtpView::parse(&buf).expect("written header parses");
        prop_assert_eq!(p.header(), header);
        prop_assert_eq!((p.version(), p.padding(), p.has_extension(), p.csrc_count()), (2, false, false, 0));
        prop_assert_eq!(p.payload(), &payload[..]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(mut buf in proptest::collection::vec(any::<u8>(), 0..200), first: u8) {
        // Force version 2 three times in four, so that parsing usually goes past byte 0.
        if let (Some(b), true) = (buf.first_mut(), first < 192) {
            *b = (first & 0x3F) | 0x80;
        }
        if let Ok(p) = RtpView::parse(&buf) {
            let range = p.payload_range();
            prop_assert!(p.header_len() == range.start && range.end <= buf.len());
            prop_assert_eq!(p.payload(), &buf[range]);
            prop_assert_eq!(p.csrcs().count(), usize::from(p.csrc_count()));
            let ext_len = p.extension().map_or(0, |(_, data)| data.len() + 4);
            prop_assert_eq!(p.header_len(), 12 + 4 * usize::from(p.csrc_count()) + ext_len);
            for (_, data) in p.extension_elements() {
                prop_assert!(data.len() <= 255);
            }
            let mut copy = buf.clone();
            let mut m = RtpViewMut::parse(&mut copy).expect("same validation");
            m.set_payload_type(p.payload_type() ^ 0x7F);
            m.set_marker(!p.marker());
            prop_assert_eq!(m.payload_range(), p.payload_range());
        } else {
            let mut copy = buf.clone();
            prop_assert!(RtpViewMut::parse(&mut copy).is_err());
        }
    }

    #[test]
    fn arbitrary_extension_data_never_panics(profile: u16, data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut total = 0;
        for (_, element) in extension_elements(profile, &data) {
            total += element.len();
        }
        prop_assert!(total <= data.len());
    }

    #[test]
    fn tracker_counts_never_exceed_what_was_seen(seqs in proptest::collection::vec(any::<u16>(), 1..300)) {
        let mut t = SequenceTracker::new();
        for &s in &seqs {
            t.observe(s);
        }
        prop_assert!(t.received() <= seqs.len() as u64);
    }

    #[test]
    fn jitter_never_panics(clock_rate: u32, packets in proptest::collection::vec((any::<u64>(), any::<u32>()), 0..100)) {
        let mut j = JitterEstimator::new(clock_rate);
        for (nanos, ts) in packets {
            j.update(Duration::from_nanos(nanos), ts);
        }
        let _ = (j.jitter_ticks(), j.jitter());
    }
}
