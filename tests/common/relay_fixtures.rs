//! A relay server on 127.0.0.1 and the raw RTSP steps tests repeat: publish, build RTP packets,
//! send interleaved frames.

use std::net::SocketAddr;

use shardcast::server::{Server, ServerConfig};

use super::{RawClient, RawResponse};

#[allow(dead_code)] // each test binary uses a different part of the relay
#[path = "../../examples/relay/handler.rs"]
pub mod relay;

/// One H.264 video track, as a camera announces it.
pub const H264_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";

/// H.264 video and AAC audio, as ffmpeg announces them.
pub const H264_AAC_SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n\
m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/44100/2\r\na=control:streamid=1\r\n";

/// A relay on 127.0.0.1:0 (TCP only unless `config` enables more), with its path table.
pub fn start_relay(config: impl FnOnce(&mut ServerConfig)) -> (Server, relay::Paths) {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut c);
    let paths = relay::Paths::default();
    let server = Server::start(c, {
        let paths = paths.clone();
        move |ctx, _| relay::Relay::new(ctx, paths.clone())
    })
    .expect("server starts");
    (server, paths)
}

/// Enables UDP on ports the server picks.
pub fn with_udp(c: &mut ServerConfig) {
    c.rtp_address = Some("127.0.0.1:0".parse().unwrap());
    c.rtcp_address = Some("127.0.0.1:0".parse().unwrap());
}

/// The session id of a response's `Session` header.
pub fn session_of(r: &RawResponse) -> String {
    r.header("Session").unwrap().split(';').next().unwrap().to_owned()
}

/// A TCP publisher of `sdp` on `path`: ANNOUNCE, SETUP of every media on interleaved channels
/// 2i-2i+1 with mode=record, RECORD. Returns the connection and the session id.
pub fn publish_tcp(addr: SocketAddr, path: &str, sdp: &str) -> (RawClient, String) {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let r = c.request(
        "ANNOUNCE",
        &base,
        &[("Content-Type", "application/sdp")],
        sdp.as_bytes(),
    );
    assert_eq!(r.status, 200, "ANNOUNCE: {r:?}");
    let session = session_of(&r);
    let medias = sdp.matches("m=").count();
    for i in 0..medias {
        let t = format!("RTP/AVP/TCP;unicast;interleaved={}-{};mode=record", 2 * i, 2 * i + 1);
        let r = c.request(
            "SETUP",
            &format!("{base}/streamid={i}"),
            &[("Transport", &t), ("Session", &session)],
            b"",
        );
        assert_eq!(r.status, 200, "SETUP {i}: {r:?}");
    }
    let r = c.request("RECORD", &base, &[("Session", &session)], b"");
    assert_eq!(r.status, 200, "RECORD: {r:?}");
    (c, session)
}

/// A reader of `path` over TCP that set up its first track on interleaved channels 0-1 and sent
/// PLAY. Returns the connection and the session id.
pub fn play_tcp(addr: SocketAddr, path: &str) -> (RawClient, String) {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let r = c.request(
        "SETUP",
        &format!("{base}/trackID=0"),
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        b"",
    );
    assert_eq!(r.status, 200, "SETUP: {r:?}");
    let session = session_of(&r);
    let r = c.request("PLAY", &base, &[("Session", &session)], b"");
    assert_eq!(r.status, 200, "PLAY: {r:?}");
    (c, session)
}

/// RTP packet `seq` (PT 96, SSRC 0x12345678, 90 kHz timestamp `seq * 3000`) carrying `payload`.
pub fn rtp_packet(seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// Sends `payload` as an interleaved frame on `channel`.
pub fn send_frame(c: &mut RawClient, channel: u8, payload: &[u8]) {
    let mut f = vec![b'$', channel];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(payload);
    c.send_raw(&f);
}
