//! Micro-benchmarks of the per-request and per-packet parsers, each beside a baseline that only
//! copies the same bytes, so the ratio survives a noisy machine.
//!
//! `cargo bench -p shardcast-bench --bench proto`

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardcast::proto::headers::{Transports, TypedHeader};
use shardcast::proto::rtp::RtpView;
use shardcast::proto::rtsp::{Decoder, Limits};

const PLAY: &[u8] = b"PLAY rtsp://127.0.0.1:8554/live/cam/ RTSP/1.0\r\n\
CSeq: 5\r\n\
User-Agent: Lavf59.27.100\r\n\
Session: 2d9a7c41f0e3b6a8\r\n\
Range: npt=0.000-\r\n\
\r\n";

const SETUP_RESPONSE: &[u8] = b"RTSP/1.0 200 OK\r\n\
CSeq: 4\r\n\
Server: shardcast\r\n\
Session: 2d9a7c41f0e3b6a8;timeout=55\r\n\
Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=5F3A2B1C\r\n\
\r\n";

fn rtp_packet() -> Vec<u8> {
    let mut p = vec![0x80, 0xE0, 0x12, 0x34, 0, 1, 0x5F, 0x90, 0xDE, 0xAD, 0xBE, 0xEF];
    p.resize(1200, 0xAB);
    p
}

fn decode_one(input: &[u8]) -> usize {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(input);
    match decoder.decode(&mut buf) {
        Ok(Some(_)) => 1,
        _ => 0,
    }
}

fn rtsp(c: &mut Criterion) {
    let mut group = c.benchmark_group("rtsp");
    for (name, input) in [("play_request", PLAY), ("setup_response", SETUP_RESPONSE)] {
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(format!("{name}/baseline_copy"), |b| {
            b.iter(|| BytesMut::from(black_box(input)).len())
        });
        group.bench_function(format!("{name}/decode"), |b| b.iter(|| decode_one(black_box(input))));
    }
    let transport = "RTP/AVP;unicast;client_port=58318-58319,RTP/AVP/TCP;unicast;interleaved=0-1";
    group.bench_function("transport_header/parse", |b| {
        b.iter(|| Transports::parse(black_box(transport)).is_ok())
    });
    group.finish();
}

fn rtp(c: &mut Criterion) {
    let packet = rtp_packet();
    let mut group = c.benchmark_group("rtp");
    group.bench_function("baseline_read_seq", |b| {
        b.iter(|| {
            let p = black_box(&packet[..]);
            u16::from_be_bytes([p[2], p[3]])
        })
    });
    group.bench_function("view_parse", |b| {
        b.iter(|| RtpView::parse(black_box(&packet[..])).map(|v| v.sequence_number()).ok())
    });
    group.finish();
}

criterion_group!(benches, rtsp, rtp);
criterion_main!(benches);
