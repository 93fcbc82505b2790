//! HTTP request heads (the metrics endpoint's input) on arbitrary bytes: never panics, and what
//! parses has a token method, a path target and lower-case header names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardcast::proto::http::{head_length, HttpRequestHead};

fuzz_target!(|data: &[u8]| {
    let head = match head_length(data) {
        Some(end) => &data[..end],
        None => data,
    };
    if let Ok(parsed) = HttpRequestHead::parse(head) {
        assert!(parsed.method.bytes().all(|b| b.is_ascii_alphabetic()));
        assert!(parsed.target.starts_with('/') || parsed.target == "*");
        assert!(parsed.headers.iter().all(|(name, _)| !name.bytes().any(|b| b.is_ascii_uppercase())));
    }
});
