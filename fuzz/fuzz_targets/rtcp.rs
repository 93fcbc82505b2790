//! RTCP compound parsing on arbitrary bytes: never panics; parsed reports rebuild and reparse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::rtcp::{packets, RtcpPacket, SenderReport};

fuzz_target!(|data: &[u8]| {
    for packet in packets(data) {
        match packet {
            Ok(RtcpPacket::SenderReport(view)) => {
                let report = SenderReport::from(view);
                let bytes = report.to_bytes().expect("a parsed report has at most 31 blocks");
                let Some(Ok(RtcpPacket::SenderReport(again))) = packets(&bytes).next() else {
                    panic!("a built sender report must parse");
                };
                assert_eq!(SenderReport::from(again), report);
            }
            Ok(RtcpPacket::SourceDescription(sdes)) => {
                let _ = sdes.cname();
            }
            Ok(RtcpPacket::Goodbye(bye)) => {
                let _ = (bye.ssrcs().count(), bye.reason());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
});
