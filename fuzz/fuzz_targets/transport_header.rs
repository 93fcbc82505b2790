//! Transport header parsing on arbitrary text; what parses must re-encode to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::headers::{Transports, TypedHeader};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(offers) = Transports::parse(text) {
        let again = Transports::parse(&offers.encode()).expect("an encoded Transport header must parse");
        assert_eq!(again, offers);
    }
});
