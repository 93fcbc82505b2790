//! The request/response rules of DESIGN.md §2 over TCP, checked with a raw socket client.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::relay_fixtures::{play_tcp, publish_tcp, relay, rtp_packet, send_frame, start_relay, H264_AAC_SDP};
use common::{eventually, RawClient, Received};
use shardcast::server::{Server, ServerConfig};

fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Server {
    start_relay(config).0
}

fn start() -> Server {
    start_with(|_| {})
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("rtsp://{addr}/{path}")
}

/// A publisher of H.264 + AAC on `path` over TCP, recording, with its session id.
fn publish(addr: SocketAddr, path: &str) -> (RawClient, String) {
    publish_tcp(addr, path, H264_AAC_SDP)
}

/// A reader of `path` over TCP that has set up the video track and sent PLAY.
fn read(addr: SocketAddr, path: &str) -> (RawClient, String) {
    play_tcp(addr, path)
}

#[test]
fn options_echoes_cseq_names_the_server_and_lists_only_supported_methods() {
    let server = start();
    let mut c = RawClient::connect(server.local_addr());
    let cseq = c.send("OPTIONS", "*", &[], b"");
    let Received::Response(r) = c.receive() else {
        panic!("no response")
    };
    assert_eq!(r.status, 200);
    assert_eq!(r.header("CSeq"), Some(cseq.to_string().as_str()));
    assert!(r.header("Server").is_some_and(|s| s.starts_with("shardcast")));
    let public = r.header("Public").unwrap();
    for m in [
        "OPTIONS",
        "DESCRIBE",
        "ANNOUNCE",
        "SETUP",
        "PLAY",
        "RECORD",
        "PAUSE",
        "GET_PARAMETER",
        "TEARDOWN",
    ] {
        assert!(public.contains(m), "{m} missing from {public}");
    }
    assert!(!public.contains("SET_PARAMETER"), "{public}");
}

#[test]
fn a_request_without_cseq_gets_400_without_cseq_and_the_connection_closes() {
    let server = start();
    let mut c = RawClient::connect(server.local_addr());
    c.send_raw(b"OPTIONS rtsp://127.0.0.1/ RTSP/1.0\r\n\r\n");
    let Received::Response(r) = c.receive() else {
        panic!("no response")
    };
    assert_eq!(r.status, 400);
    assert_eq!(r.header("CSeq"), None);
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn a_duplicate_cseq_is_refused_like_a_missing_one() {
    let server = start();
    let mut c = RawClient::connect(server.local_addr());
    c.send_raw(b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nCSeq: 2\r\n\r\n");
    let Received::Response(r) = c.receive() else {
        panic!("no response")
    };
    assert_eq!((r.status, r.header("CSeq")), (400, None));
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn a_star_url_on_describe_is_400_and_closes() {
    let server = start();
    let mut c = RawClient::connect(server.local_addr());
    let r = c.request("DESCRIBE", "*", &[], b"");
    assert_eq!(r.status, 400);
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn describe_of_a_published_path_returns_sdp_with_one_track_control_per_media() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "cam/1");
    let mut c = RawClient::connect(addr);
    let r = c.request("DESCRIBE", &url(addr, "cam/1"), &[("Accept", "application/sdp")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/sdp"));
    assert_eq!(
        r.header("Content-Base"),
        Some(format!("{}/", url(addr, "cam/1")).as_str())
    );
    let sdp = String::from_utf8(r.body).unwrap();
    assert!(
        sdp.contains("a=control:trackID=0") && sdp.contains("a=control:trackID=1"),
        "{sdp}"
    );
    assert!(!sdp.contains("streamid"), "publisher controls must be replaced: {sdp}");
    assert!(sdp.contains("H264/90000"), "{sdp}");
    let r = c.request("DESCRIBE", &url(addr, "nothing-here"), &[], b"");
    assert_eq!(r.status, 404);
}

#[test]
fn ffmpeg_and_gstreamer_url_dialects_resolve_to_the_same_path() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "live");
    for setup_url in [
        format!("rtsp://{addr}/live?token=1/trackID=0"),
        format!("rtsp://{addr}/live/trackID=0?token=1"),
    ] {
        let mut c = RawClient::connect(addr);
        let r = c.request(
            "SETUP",
            &setup_url,
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
            b"",
        );
        assert_eq!(r.status, 200, "{setup_url}: {r:?}");
    }
    let mut c = RawClient::connect(addr);
    let r = c.request("DESCRIBE", &format!("rtsp://{addr}/live/"), &[], b"");
    assert_eq!(r.status, 200, "trailing slash");
}

#[test]
fn an_unknown_session_is_454_and_a_missing_session_header_is_454() {
    let server = start();
    let addr = server.local_addr();
    let mut c = RawClient::connect(addr);
    let r = c.request("PLAY", &url(addr, "x"), &[("Session", "deadbeef")], b"");
    assert_eq!(r.status, 454);
    let r = c.request("PLAY", &url(addr, "x"), &[], b"");
    assert_eq!(r.status, 454);
    let r = c.request("OPTIONS", &url(addr, "x"), &[], b"");
    assert_eq!(r.status, 200, "the connection stays usable");
}

#[test]
fn methods_in_the_wrong_state_get_455() {
    let server = start();
    let addr = server.local_addr();
    let (mut publisher, session) = publish(addr, "s");
    let r = publisher.request("PLAY", &url(addr, "s"), &[("Session", &session)], b"");
    assert_eq!(r.status, 455, "PLAY on a recording session");
    let (mut reader, session) = read(addr, "s");
    let r = reader.request("RECORD", &url(addr, "s"), &[("Session", &session)], b"");
    assert_eq!(r.status, 455, "RECORD on a playing session");
}

#[test]
fn setup_with_only_unsupported_transports_is_461_and_the_connection_stays_open() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let mut c = RawClient::connect(addr);
    let r = c.request(
        "SETUP",
        &format!("{}/trackID=0", url(addr, "p")),
        &[("Transport", "RTP/SAVP;unicast;client_port=5000-5001")],
        b"",
    );
    assert_eq!(r.status, 461);
    let r = c.request("OPTIONS", &url(addr, "p"), &[], b"");
    assert_eq!(r.status, 200);
}

#[test]
fn setup_answers_transport_and_session_timeout_and_assigns_free_interleaved_channels() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let mut c = RawClient::connect(addr);
    let base = url(addr, "p");
    let r = c.request(
        "SETUP",
        &format!("{base}/trackID=0"),
        &[("Transport", "RTP/AVP/TCP;unicast")],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.header("Transport").unwrap().contains("interleaved=0-1"), "{r:?}");
    let session_header = r.header("Session").unwrap();
    assert!(session_header.ends_with(";timeout=55"), "{session_header}");
    let session = session_header.split(';').next().unwrap().to_owned();
    let r = c.request(
        "SETUP",
        &format!("{base}/trackID=1"),
        &[("Transport", "RTP/AVP/TCP;unicast"), ("Session", &session)],
        b"",
    );
    assert!(r.header("Transport").unwrap().contains("interleaved=2-3"), "{r:?}");
    let r = c.request(
        "SETUP",
        &format!("{base}/trackID=1"),
        &[
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=4-6"),
            ("Session", &session),
        ],
        b"",
    );
    assert_eq!(r.status, 400, "non-consecutive channels");
}

#[test]
fn a_tcp_session_cannot_be_used_from_a_second_connection() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let (_reader, session) = read(addr, "p");
    let mut other = RawClient::connect(addr);
    let r = other.request("PAUSE", &url(addr, "p"), &[("Session", &session)], b"");
    assert_eq!(r.status, 400);
}

#[test]
fn teardown_ends_the_session_and_the_connection_stays_usable() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let (mut reader, session) = read(addr, "p");
    let r = reader.request("TEARDOWN", &url(addr, "p"), &[("Session", &session)], b"");
    assert_eq!(r.status, 200);
    let r = reader.request("OPTIONS", &url(addr, "p"), &[], b"");
    assert_eq!(r.status, 200);
    let r = reader.request("PLAY", &url(addr, "p"), &[("Session", &session)], b"");
    assert_eq!(r.status, 454);
}

#[test]
fn the_play_response_precedes_the_first_frame_and_frames_carry_the_published_packets() {
    let server = start();
    let addr = server.local_addr();
    let (mut publisher, _) = publish(addr, "p");
    let mut reader = RawClient::connect(addr);
    let base = url(addr, "p");
    let r = reader.request(
        "SETUP",
        &format!("{base}/trackID=0"),
        &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        b"",
    );
    let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    // Packets flow before PLAY: none may reach the reader before the PLAY response.
    for seq in 0..20 {
        send_frame(&mut publisher, 0, &rtp_packet(seq, b"before"));
    }
    std::thread::sleep(Duration::from_millis(100));
    reader.send("PLAY", &base, &[("Session", &session)], b"");
    let Received::Response(r) = reader.receive() else {
        panic!("a frame arrived before the PLAY response")
    };
    assert_eq!(r.status, 200);
    let rtp_info = r.header("RTP-Info").expect("RTP-Info after packets were published");
    assert!(rtp_info.contains("seq=20"), "{rtp_info}");
    for seq in 20..30 {
        send_frame(&mut publisher, 0, &rtp_packet(seq, b"after"));
    }
    let mut seq = 20u16;
    while seq < 30 {
        match reader.receive() {
            Received::Frame { channel: 0, payload } => {
                assert_eq!(payload, rtp_packet(seq, b"after"));
                seq += 1;
            }
            Received::Frame { channel: 1, .. } => {} // a sender report
            other => panic!("expected frame {seq}, got {other:?}"),
        }
    }
}

#[test]
fn pause_and_play_can_repeat() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let (mut reader, session) = read(addr, "p");
    let base = url(addr, "p");
    for method in ["PAUSE", "PAUSE", "PLAY", "PLAY", "PAUSE", "PLAY"] {
        let r = reader.request(method, &base, &[("Session", &session)], b"");
        assert_eq!(r.status, 200, "{method}");
    }
}

#[test]
fn get_parameter_without_a_handler_is_an_empty_keepalive_and_set_parameter_is_501() {
    let server = start();
    let addr = server.local_addr();
    let (_publisher, _) = publish(addr, "p");
    let (mut reader, session) = read(addr, "p");
    let r = reader.request("GET_PARAMETER", &url(addr, "p"), &[("Session", &session)], b"");
    assert_eq!(
        (r.status, r.header("Content-Type"), r.body.len()),
        (200, Some("text/parameters"), 0)
    );
    let r = reader.request("SET_PARAMETER", &url(addr, "p"), &[("Session", &session)], b"");
    assert_eq!(r.status, 501);
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let server = start_with(|c| c.idle_timeout = Duration::from_millis(600));
    let mut c = RawClient::connect(server.local_addr());
    let r = c.request("OPTIONS", "*", &[], b"");
    assert_eq!(r.status, 200);
    assert!(c.closed_within(Duration::from_secs(5)));
}

#[test]
fn malformed_input_closes_only_its_own_connection() {
    let server = start();
    let addr = server.local_addr();
    let mut healthy = RawClient::connect(addr);
    assert_eq!(healthy.request("OPTIONS", "*", &[], b"").status, 200);
    let long_header = format!("OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nX: {}\r\n\r\n", "a".repeat(3000));
    let frame_before_play = b"$\x00\x00\x04abcd".to_vec();
    let client_response = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\n\r\n".to_vec();
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02garbage\r\n\r\n".to_vec(),
        long_header.into_bytes(),
        frame_before_play,
        client_response,
        b"OPTIONS * RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
    ];
    for input in inputs {
        let mut bad = RawClient::connect(addr);
        bad.send_raw(&input);
        assert!(
            bad.closed_within(Duration::from_secs(5)),
            "not closed after {:?}",
            String::from_utf8_lossy(&input)
        );
        assert_eq!(healthy.request("OPTIONS", "*", &[], b"").status, 200);
    }
    // A truncated request followed by a hang-up must not disturb anything either.
    let mut truncated = RawClient::connect(addr);
    truncated.send_raw(b"DESCRIBE rtsp://127.0.0.1/p RTSP/1.0\r\nCSeq: 1\r\nAcc");
    drop(truncated);
    assert_eq!(healthy.request("OPTIONS", "*", &[], b"").status, 200);
}

#[test]
fn closing_the_server_closes_its_connections_and_is_idempotent() {
    let server = start();
    let mut c = RawClient::connect(server.local_addr());
    assert_eq!(c.request("OPTIONS", "*", &[], b"").status, 200);
    server.close();
    assert!(c.closed_within(Duration::from_secs(5)));
    server.close();
    server.wait();
    assert!(eventually(Duration::from_secs(2), || std::net::TcpStream::connect(
        server.local_addr()
    )
    .is_err()));
}

#[test]
fn a_listener_factory_replaces_binding_and_its_errors_fail_start() {
    use shardcast::server::ListenerFactory;
    let cpu = common::first_allowed_cpu();
    let made = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = made.local_addr().unwrap();
    let slot = std::sync::Mutex::new(Some(made));
    let server = start_with(|c| {
        c.cpus = Some(vec![cpu]);
        c.listener_factory = Some(ListenerFactory::new(move |_, count| {
            assert_eq!(count, 1);
            Ok(slot.lock().unwrap().take().into_iter().collect())
        }));
    });
    assert_eq!(
        server.local_addr(),
        addr,
        "the server serves on the listener it was given"
    );
    assert_eq!(RawClient::connect(addr).request("OPTIONS", "*", &[], b"").status, 200);

    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.listener_factory = Some(ListenerFactory::new(|_, _| {
        Err(std::io::ErrorKind::PermissionDenied.into())
    }));
    let refused = Server::start(config, |ctx, _| relay::Relay::new(ctx, relay::Paths::default()));
    assert!(
        matches!(refused, Err(shardcast::server::StartError::Bind { .. })),
        "{refused:?}"
    );
}

#[test]
fn an_rtsps_address_without_a_tls_setting_is_refused_rather_than_served_in_clear() {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.rtsps_address = Some("127.0.0.1:0".parse().unwrap());
    let refused = Server::start(config, |ctx, _| relay::Relay::new(ctx, relay::Paths::default()));
    assert!(
        matches!(
            refused,
            Err(shardcast::server::StartError::Config(
                shardcast::server::ServerConfigError::RtspsWithoutTls
            ))
        ),
        "{refused:?}"
    );
}
