//! Unicast UDP transport: raw readers and publishers checking the wire, and ffmpeg and GStreamer
//! reading and publishing over UDP (DESIGN.md §2, issue 4).
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::relay_fixtures::{self, play_tcp, rtp_packet, session_of, start_relay, with_udp, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, gst_read, RawClient, Received};
use shardcast::server::{Server, ServerConfig};

fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Server {
    start_relay(|c| {
        with_udp(c);
        config(c);
    })
    .0
}

/// Two client sockets (RTP, RTCP) on 127.0.0.1.
fn client_sockets() -> (UdpSocket, UdpSocket) {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for s in [&rtp, &rtcp] {
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    }
    (rtp, rtcp)
}

fn ports(rtp: &UdpSocket, rtcp: &UdpSocket) -> String {
    format!(
        "{}-{}",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    )
}

/// A TCP publisher of one H.264 track on `path`.
fn publish_tcp(addr: SocketAddr, path: &str) -> RawClient {
    relay_fixtures::publish_tcp(addr, path, H264_SDP).0
}

/// Sends an RTP packet on the publisher's video channel.
fn send_frame(c: &mut RawClient, payload: &[u8]) {
    relay_fixtures::send_frame(c, 0, payload);
}

/// A UDP publisher of one H.264 track on `path`, sending from `rtp` and `rtcp`: ANNOUNCE, SETUP
/// with client ports and mode=record, RECORD. Returns the control connection.
fn publish_udp(addr: SocketAddr, path: &str, rtp: &UdpSocket, rtcp: &UdpSocket) -> RawClient {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let r = c.request(
        "ANNOUNCE",
        &base,
        &[("Content-Type", "application/sdp")],
        H264_SDP.as_bytes(),
    );
    let session = session_of(&r);
    let t = format!("RTP/AVP;unicast;client_port={};mode=record", ports(rtp, rtcp));
    let r = c.request(
        "SETUP",
        &format!("{base}/streamid=0"),
        &[("Transport", &t), ("Session", &session)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(c.request("RECORD", &base, &[("Session", &session)], b"").status, 200);
    c
}

/// A UDP reader of `path`: SETUP with client ports, PLAY. Returns the control connection, the
/// session id and the server ports the SETUP answered.
fn read_udp(addr: SocketAddr, path: &str, rtp: &UdpSocket, rtcp: &UdpSocket) -> (RawClient, String, String) {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let t = format!("RTP/AVP;unicast;client_port={}", ports(rtp, rtcp));
    let r = c.request("SETUP", &format!("{base}/trackID=0"), &[("Transport", &t)], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let transport = r.header("Transport").unwrap().to_owned();
    let session = session_of(&r);
    assert_eq!(c.request("PLAY", &base, &[("Session", &session)], b"").status, 200);
    (c, session, transport)
}

/// Receives RTP datagrams until `count` arrived or a second passed without any.
fn receive_rtp(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    let mut quiet_since = Instant::now();
    while got.len() < count && quiet_since.elapsed() < Duration::from_secs(1) {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(buf[..n].to_vec());
            quiet_since = Instant::now();
        }
    }
    got
}

#[test]
fn a_udp_reader_gets_the_server_ports_and_every_packet_from_the_rtp_port() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let (server_rtp, server_rtcp) = server.context().udp_server_ports().unwrap();
    assert_eq!((server_rtp % 2, server_rtcp), (0, server_rtp + 1));
    let mut publisher = publish_tcp(addr, "cam");
    let (rtp, rtcp) = client_sockets();
    let (_control, _, transport) = read_udp(addr, "cam", &rtp, &rtcp);
    assert!(
        transport.contains(&format!("server_port={server_rtp}-{server_rtcp}")),
        "{transport}"
    );
    assert!(
        transport.contains(&format!("client_port={}", ports(&rtp, &rtcp))),
        "{transport}"
    );
    // Receive while sending: 200 datagrams at once would overflow a default socket buffer.
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (n, from) = rtp.recv_from(&mut buf).unwrap();
        rtp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut got = vec![buf[..n].to_vec()];
        got.extend(receive_rtp(&rtp, 199));
        (from, got)
    });
    for seq in 0..200u16 {
        send_frame(&mut publisher, &rtp_packet(seq, &[seq as u8; 500]));
        if seq % 20 == 19 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let (from, got) = receiver.join().unwrap();
    assert_eq!(from.port(), server_rtp, "RTP must come from the advertised server port");
    let sequences: Vec<u16> = got.iter().map(|p| u16::from_be_bytes([p[2], p[3]])).collect();
    assert_eq!(sequences, (0..200u16).collect::<Vec<_>>(), "sequence numbers received");
    for (seq, packet) in (0..200u16).zip(&got) {
        assert!(
            *packet == rtp_packet(seq, &[seq as u8; 500]),
            "packet {seq} was altered"
        );
    }
}

#[test]
fn tcp_and_udp_readers_of_one_stream_both_receive_it() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "mixed");
    let (rtp, rtcp) = client_sockets();
    let (_udp_control, _, _) = read_udp(addr, "mixed", &rtp, &rtcp);
    let (mut tcp_reader, _session) = play_tcp(addr, "mixed");
    for seq in 0..50u16 {
        send_frame(&mut publisher, &rtp_packet(seq, b"both"));
    }
    assert_eq!(receive_rtp(&rtp, 50).len(), 50);
    let mut frames = 0;
    while frames < 50 {
        match tcp_reader.receive() {
            Received::Frame { channel: 0, .. } => frames += 1,
            Received::Frame { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn two_readers_on_the_same_ip_and_ports_are_refused() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let _publisher = publish_tcp(addr, "dup");
    let (rtp, rtcp) = client_sockets();
    let (_first, _, _) = read_udp(addr, "dup", &rtp, &rtcp);
    let mut second = RawClient::connect(addr);
    let t = format!("RTP/AVP;unicast;client_port={}", ports(&rtp, &rtcp));
    let r = second.request(
        "SETUP",
        &format!("rtsp://{addr}/dup/trackID=0"),
        &[("Transport", &t)],
        b"",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn a_udp_reader_that_sends_nothing_is_closed_after_the_idle_timeout_and_rtcp_keeps_one_alive() {
    let server = start_with(|c| c.idle_timeout = Duration::from_secs(2));
    let addr = server.local_addr();
    let (server_rtp, server_rtcp) = server.context().udp_server_ports().unwrap();
    let mut publisher = publish_tcp(addr, "idle");
    let (silent_rtp, silent_rtcp) = client_sockets();
    let (_c1, silent, _) = read_udp(addr, "idle", &silent_rtp, &silent_rtcp);
    let (alive_rtp, alive_rtcp) = client_sockets();
    let (_c2, _, _) = read_udp(addr, "idle", &alive_rtp, &alive_rtcp);
    let receiver_report = [0x80u8, 201, 0, 1, 0xAB, 0xCD, 0xEF, 0x01];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        alive_rtcp
            .send_to(&receiver_report, ("127.0.0.1", server_rtcp))
            .unwrap();
        send_frame(&mut publisher, &rtp_packet(1, b"tick"));
        std::thread::sleep(Duration::from_millis(250));
    }
    let _ = server_rtp;
    // The silent reader's session is gone: a new connection cannot use it.
    let mut c = RawClient::connect(addr);
    let r = c.request("PLAY", &format!("rtsp://{addr}/idle"), &[("Session", &silent)], b"");
    assert_eq!(r.status, 454, "the silent reader's session must have timed out");
    while silent_rtp.recv(&mut [0u8; 2048]).is_ok() {}
    send_frame(&mut publisher, &rtp_packet(2, b"after"));
    assert!(
        receive_rtp(&silent_rtp, 1).is_empty(),
        "a timed-out reader must get nothing"
    );
    while alive_rtp.recv(&mut [0u8; 2048]).is_ok() {}
    send_frame(&mut publisher, &rtp_packet(3, b"after"));
    assert_eq!(
        receive_rtp(&alive_rtp, 1).len(),
        1,
        "RTCP must keep the other reader alive"
    );
}

#[test]
fn a_udp_publisher_gets_nat_opening_packets_and_its_rtp_reaches_readers() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let (server_rtp, _) = server.context().udp_server_ports().unwrap();
    let (rtp, rtcp) = client_sockets();
    let _publisher = publish_udp(addr, "udppub", &rtp, &rtcp);
    let mut buf = [0u8; 64];
    assert!(
        rtp.recv(&mut buf).is_ok(),
        "an RTP packet must open the publisher's NAT binding"
    );
    assert!(
        rtcp.recv(&mut buf).is_ok(),
        "an RTCP packet must open the publisher's NAT binding"
    );
    let (reader_rtp, reader_rtcp) = client_sockets();
    let (_r, _, _) = read_udp(addr, "udppub", &reader_rtp, &reader_rtcp);
    for seq in 0..100u16 {
        rtp.send_to(&rtp_packet(seq, b"from-udp"), ("127.0.0.1", server_rtp))
            .unwrap();
    }
    let got = receive_rtp(&reader_rtp, 100);
    assert_eq!(got.len(), 100);
    assert!(got[99] == rtp_packet(99, b"from-udp"), "the last packet was altered");
}

#[test]
fn ffmpeg_publishes_over_udp_and_ffmpeg_and_gstreamer_read_over_udp() {
    let server = start_with(|_| {});
    let url = format!("rtsp://{}/udp", server.local_addr());
    let _publisher = ffmpeg_publish(&url, "udp");
    let addr = server.local_addr();
    assert!(eventually(Duration::from_secs(20), || {
        RawClient::connect(addr).request("DESCRIBE", &url, &[], b"").status == 200
    }));
    let (out, exited) = ffmpeg_read(&url, "udp", 50).wait_for(Duration::from_secs(30));
    assert!(
        exited && out.status.success(),
        "ffmpeg over UDP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, exited) = gst_read(&url, "udp", 50, None).wait_for(Duration::from_secs(30));
    assert!(
        exited && out.status.success(),
        "GStreamer over UDP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn udp_publisher_loss_and_reordering_are_reported_exactly_and_answered_with_a_receiver_report() {
    let (server, paths) = start_relay(with_udp);
    let addr = server.local_addr();
    let (server_rtp, _) = server.context().udp_server_ports().unwrap();
    let (rtp, rtcp) = client_sockets();
    let _publisher = publish_udp(addr, "lossy", &rtp, &rtcp);
    let mut punch = [0u8; 64];
    let _ = rtp.recv(&mut punch);
    let _ = rtcp.recv(&mut punch);

    let (mut reader, _reader_session) = play_tcp(addr, "lossy");

    // 0..120 with 10 and 11 lost, 20 and 21 swapped, 30 sent twice.
    let mut order: Vec<u16> = (0..120).filter(|s| *s != 10 && *s != 11).collect();
    let at20 = order.iter().position(|s| *s == 20).unwrap();
    order.swap(at20, at20 + 1);
    let at30 = order.iter().position(|s| *s == 30).unwrap();
    order.insert(at30, 30);
    for seq in &order {
        rtp.send_to(&rtp_packet(*seq, b"lossy"), ("127.0.0.1", server_rtp))
            .unwrap();
    }
    let mut sequences = Vec::new();
    while sequences.len() < 118 {
        match reader.receive() {
            Received::Frame { channel: 0, payload } => sequences.push(u16::from_be_bytes([payload[2], payload[3]])),
            Received::Frame { .. } => {}
            other => panic!("after {} packets: {other:?}", sequences.len()),
        }
    }
    let expected: Vec<u16> = (0..120).filter(|s| *s != 10 && *s != 11).collect();
    assert_eq!(sequences, expected, "readers get the packets once each, in order");
    assert!(
        eventually(Duration::from_secs(2), || paths.packets_lost() == 2),
        "lost: {}",
        paths.packets_lost()
    );

    // A receiver report reaches the publisher's RTCP port, counting the same loss.
    rtcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 512];
    let n = rtcp.recv(&mut buf).expect("a receiver report within 3 s");
    assert_eq!(buf[1], 201, "an RTCP receiver report");
    assert!(n >= 32, "with one report block");
    let block = &buf[8..32];
    assert_eq!(
        u32::from_be_bytes([block[0], block[1], block[2], block[3]]),
        0x1234_5678,
        "about the publisher's SSRC"
    );
    assert_eq!(
        u32::from_be_bytes([0, block[5], block[6], block[7]]),
        2,
        "cumulative lost"
    );
    assert_eq!(
        u32::from_be_bytes([block[8], block[9], block[10], block[11]]),
        119,
        "highest sequence"
    );
}

#[test]
fn the_first_sender_report_describes_the_packet_it_follows() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "sr");
    let (mut reader, _session) = play_tcp(addr, "sr");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    send_frame(&mut publisher, &rtp_packet(7, &[0xAA; 300]));
    let (rtp, sr) = loop {
        match reader.receive() {
            Received::Frame { channel: 0, payload } => {
                let Received::Frame {
                    channel: 1,
                    payload: sr,
                } = reader.receive()
                else {
                    panic!("no sender report after the first packet")
                };
                break (payload, sr);
            }
            Received::Frame { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(rtp, rtp_packet(7, &[0xAA; 300]));
    let word = |i: usize| u32::from_be_bytes([sr[i], sr[i + 1], sr[i + 2], sr[i + 3]]);
    assert_eq!(sr[1], 200, "an RTCP sender report");
    assert_eq!(word(4), 0x1234_5678, "with the publisher's SSRC");
    assert_eq!(word(16), 7 * 3000, "and the RTP time of the packet");
    assert_eq!((word(20), word(24)), (1, 300), "one packet, 300 payload octets");
    let ntp_secs = u64::from(word(8));
    let unix_secs = ntp_secs - 2_208_988_800;
    assert!(
        unix_secs.abs_diff(before.as_secs()) <= 2,
        "NTP time is the wall clock: {unix_secs} vs {}",
        before.as_secs()
    );
}

#[test]
fn options_with_a_session_header_keeps_a_udp_session_alive() {
    let server = start_with(|c| c.idle_timeout = Duration::from_secs(1));
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "opt");
    let (rtp, rtcp) = client_sockets();
    let (mut control, session, _) = read_udp(addr, "opt", &rtp, &rtcp);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let r = control.request("OPTIONS", &format!("rtsp://{addr}/opt"), &[("Session", &session)], b"");
        assert_eq!(r.status, 200);
        send_frame(&mut publisher, &rtp_packet(1, b"tick"));
        std::thread::sleep(Duration::from_millis(300));
    }
    while rtp.recv(&mut [0u8; 2048]).is_ok() {}
    send_frame(&mut publisher, &rtp_packet(2, b"still"));
    assert_eq!(
        receive_rtp(&rtp, 1).len(),
        1,
        "OPTIONS keepalives must keep the session"
    );
}

#[test]
fn a_udp_session_outlives_its_connection_and_any_new_connection_can_drive_it() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "moving");
    let (rtp, rtcp) = client_sockets();
    let (control, session, _) = read_udp(addr, "moving", &rtp, &rtcp);
    drop(control);
    let url = format!("rtsp://{addr}/moving");
    // New connections land on either core; each must reach the session wherever it lives.
    for round in 0..8 {
        let mut c = RawClient::connect(addr);
        let r = c.request("GET_PARAMETER", &url, &[("Session", &session)], b"");
        assert_eq!(r.status, 200, "keepalive from new connection {round}: {r:?}");
        let r = c.request("OPTIONS", &url, &[("Session", &session)], b"");
        assert_eq!(r.status, 200, "a second request on the moved connection {round}");
    }
    while rtp.recv(&mut [0u8; 2048]).is_ok() {}
    send_frame(&mut publisher, &rtp_packet(5, b"still"));
    assert_eq!(receive_rtp(&rtp, 1).len(), 1, "the reader still receives");
    let mut c = RawClient::connect(addr);
    assert_eq!(c.request("TEARDOWN", &url, &[("Session", &session)], b"").status, 200);
    let mut c = RawClient::connect(addr);
    assert_eq!(
        c.request("PLAY", &url, &[("Session", &session)], b"").status,
        454,
        "torn down"
    );
}

#[test]
fn a_reader_that_joins_later_gets_a_sender_report_with_its_first_packets() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "late");
    let base = format!("rtsp://{addr}/late");
    let play = |seq_hint: u16| {
        let mut reader = RawClient::connect(addr);
        let r = reader.request(
            "SETUP",
            &format!("{base}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
            b"",
        );
        let session = session_of(&r);
        let r = reader.request("PLAY", &base, &[("Session", &session)], b"");
        assert_eq!(r.status, 200, "reader {seq_hint}");
        reader
    };
    let mut early = play(0);
    for seq in 0..5 {
        send_frame(&mut publisher, &rtp_packet(seq, b"early"));
    }
    let mut got_report = false;
    for _ in 0..6 {
        if let Received::Frame { channel: 1, .. } = early.receive() {
            got_report = true;
        }
    }
    assert!(
        got_report,
        "the first reader gets a sender report after the first packet"
    );
    // Well inside the 10 s period: only joining can make the next report come now.
    let mut late = play(5);
    send_frame(&mut publisher, &rtp_packet(5, b"late"));
    let Received::Frame { channel: 0, .. } = late.receive() else {
        panic!("the packet first")
    };
    let Received::Frame { channel: 1, payload } = late.receive() else {
        panic!("a reader that joined late must get a sender report with its first packet")
    };
    assert_eq!(payload[1], 200);
}

#[test]
fn sender_reports_carry_the_publishers_wall_clock_once_it_sent_one() {
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let mut publisher = publish_tcp(addr, "clock");
    let (mut reader, _session) = play_tcp(addr, "clock");
    // The publisher's SR: NTP 2020-01-01T00:00:00Z at RTP time 0.
    let ntp_2020: u32 = 3_786_825_600;
    let mut sr = vec![0x80, 200, 0, 6, 0x12, 0x34, 0x56, 0x78];
    sr.extend_from_slice(&ntp_2020.to_be_bytes());
    sr.extend_from_slice(&[0; 4]);
    sr.extend_from_slice(&0u32.to_be_bytes());
    sr.extend_from_slice(&[0; 8]);
    relay_fixtures::send_frame(&mut publisher, 1, &sr);
    // One second of media later on the 90 kHz clock (seq 30 * 3000 ticks).
    send_frame(&mut publisher, &rtp_packet(30, b"later"));
    let ours = loop {
        match reader.receive() {
            Received::Frame { channel: 1, payload }
                if payload[1] == 200 && payload[16..20] == 90_000u32.to_be_bytes() =>
            {
                break payload
            }
            Received::Frame { .. } => {}
            other => panic!("{other:?}"),
        }
    };
    let secs = u32::from_be_bytes([ours[8], ours[9], ours[10], ours[11]]);
    assert_eq!(
        secs,
        ntp_2020 + 1,
        "the server's report maps RTP time to the publisher's clock"
    );
}
