//! SDP parsing on arbitrary bytes; a parsed description must survive a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::sdp;

fuzz_target!(|data: &[u8]| {
    if let Ok(description) = sdp::parse(data) {
        let text = description.to_string();
        let again = sdp::parse(text.as_bytes()).expect("a serialised description must parse");
        assert_eq!(again.medias.len(), description.medias.len());
        let _ = sdp::for_describe(&description, std::net::Ipv4Addr::LOCALHOST.into()).to_string();
    }
});
