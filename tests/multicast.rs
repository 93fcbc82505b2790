//! UDP multicast play. Multicast needs a route and an interface that loops it back, which a
//! shared CI host cannot be asked for, so each test re-runs itself inside a fresh network namespace
//! (DESIGN.md §4) where loopback carries 224.0.0.0/4.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::net::{Ipv4Addr, UdpSocket};
use std::time::Duration;

use common::netns::rerun_in_network_namespace;
use common::relay_fixtures::{publish_tcp, start_relay, with_udp, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, gst_read, RawClient};
use shardcast::server::{Server, ServerConfig};

fn start() -> Server {
    start_with(|_| {})
}

fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Server {
    start_relay(|c| {
        with_udp(c);
        c.multicast_ip_range = Some("239.5.0.0/16".parse().unwrap());
        c.multicast_rtp_port = Some(19002);
        c.multicast_rtcp_port = Some(19003);
        config(c);
    })
    .0
}

fn wait_published(server: &Server, url: &str) {
    let addr = server.local_addr();
    assert!(
        eventually(Duration::from_secs(20), || RawClient::connect(addr)
            .request("DESCRIBE", url, &[], b"")
            .status
            == 200),
        "{url} was not published"
    );
}

#[test]
fn a_multicast_setup_answers_a_group_from_the_range_and_packets_reach_it() {
    if rerun_in_network_namespace("a_multicast_setup_answers_a_group_from_the_range_and_packets_reach_it") {
        return;
    }
    let server = start();
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/mc");
    let _publisher = ffmpeg_publish(&url, "tcp");
    wait_published(&server, &url);
    let mut c = RawClient::connect(addr);
    let r = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", "RTP/AVP;multicast")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let transport = r.header("Transport").unwrap().to_owned();
    let destination = transport
        .split(';')
        .find_map(|p| p.strip_prefix("destination="))
        .expect("a destination in the answer");
    let group: Ipv4Addr = destination.parse().unwrap();
    assert!(group.octets()[..2] == [239, 5], "{group} is not in 239.5.0.0/16");
    assert!(
        transport.contains("port=19002-19003") && transport.contains("ttl="),
        "{transport}"
    );
    let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)], b"").status, 200);
    let socket = UdpSocket::bind(("0.0.0.0", 19002)).unwrap();
    socket.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 2048];
    let n = socket.recv(&mut buf).expect("RTP on the multicast group");
    assert!(n >= 12 && buf[0] >> 6 == 2, "not an RTP packet");
    // After TEARDOWN the group is released: nothing more arrives.
    assert_eq!(c.request("TEARDOWN", &url, &[("Session", &session)], b"").status, 200);
    std::thread::sleep(Duration::from_millis(200));
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    while socket.recv(&mut buf).is_ok() {}
    assert!(
        socket.recv(&mut buf).is_err(),
        "packets still reach the group after the last reader left"
    );
}

#[test]
fn ffmpeg_and_gstreamer_read_over_udp_multicast() {
    if rerun_in_network_namespace("ffmpeg_and_gstreamer_read_over_udp_multicast") {
        return;
    }
    let server = start();
    let url = format!("rtsp://{}/mcast", server.local_addr());
    let _publisher = ffmpeg_publish(&url, "tcp");
    wait_published(&server, &url);
    let (out, exited) = ffmpeg_read(&url, "udp_multicast", 50).wait_for(Duration::from_secs(30));
    assert!(
        exited && out.status.success(),
        "ffmpeg multicast: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (out, exited) = gst_read(&url, "udp-mcast", 50, None).wait_for(Duration::from_secs(30));
    assert!(
        exited && out.status.success(),
        "GStreamer multicast: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn receiver_reports_to_the_group_keep_a_multicast_reader_alive() {
    if rerun_in_network_namespace("receiver_reports_to_the_group_keep_a_multicast_reader_alive") {
        return;
    }
    let server = start_with(|c| c.idle_timeout = Duration::from_secs(2));
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/rr");
    let (_publisher, _) = publish_tcp(addr, "rr", H264_SDP);
    let mut c = RawClient::connect(addr);
    let r = c.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", "RTP/AVP;multicast")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let transport = r.header("Transport").unwrap().to_owned();
    let group: Ipv4Addr = transport
        .split(';')
        .find_map(|p| p.strip_prefix("destination="))
        .unwrap()
        .parse()
        .unwrap();
    let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    assert_eq!(c.request("PLAY", &url, &[("Session", &session)], b"").status, 200);
    drop(c);
    let reports = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver_report = [0x80u8, 201, 0, 1, 0xAB, 0xCD, 0xEF, 0x01];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        reports.send_to(&receiver_report, (group, 19003)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut probe = RawClient::connect(addr);
    let r = probe.request("GET_PARAMETER", &url, &[("Session", &session)], b"");
    assert_eq!(
        r.status, 200,
        "receiver reports to the group must keep the session for 4 s > 2 s idle"
    );
    std::thread::sleep(Duration::from_secs(4));
    let r = RawClient::connect(addr).request("GET_PARAMETER", &url, &[("Session", &session)], b"");
    assert_eq!(r.status, 454, "without reports or requests the session times out");
}
