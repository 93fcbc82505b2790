//! The RTP header view on arbitrary bytes: never panics, and its ranges stay in bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::rtp::RtpView;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = RtpView::parse(data) {
        assert!(view.header_len() <= data.len());
        assert!(view.payload_range().end <= data.len());
        let _ = (view.sequence_number(), view.timestamp(), view.ssrc(), view.csrcs().count(), view.extension());
    }
});
