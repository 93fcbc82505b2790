//! The RTSP stream decoder on arbitrary bytes, fed in pieces whose sizes come from the input,
//! must never panic and must decode the same messages whatever the split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shardcast::proto::rtsp::{Decoder, Limits, Message};

fn decode(data: &[u8], chunk: usize) -> (Vec<Message>, bool) {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let whole = decode(rest, rest.len());
    let split = decode(rest, usize::from(first % 16) + 1);
    assert_eq!(whole, split, "decoding depends on where the input was split");
    for m in whole.0 {
        let mut wire = BytesMut::new();
        m.encode(&mut wire);
    }
});
