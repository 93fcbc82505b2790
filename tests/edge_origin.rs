//! Two `shardcast` binaries, an origin and an edge pulling from it, as a CDN runs them: ffmpeg
//! publishes to the origin and reads from the edge; the edge pulls only while it has readers,
//! with one upstream session for all of them, and its readers survive an origin restart.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::binary::EdgeProcess;
use common::http::{get, sample};
use common::relay_fixtures::{play_tcp, publish_tcp, rtp_packet, send_frame, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, RawClient, Received};

fn origin_config(rtsp_address: &str) -> String {
    format!(
        "[server]\nrtsp_address = '{rtsp_address}'\n[metrics]\naddress = '127.0.0.1:0'\n\
         [[paths]]\npattern = '^live/.+$'\n"
    )
}

fn edge_config(origin: SocketAddr, close_after_idle: &str) -> String {
    format!(
        "[server]\nrtsp_address = '127.0.0.1:0'\n[metrics]\naddress = '127.0.0.1:0'\n\
         [[paths]]\npattern = '^live/(.+)$'\nsource = 'rtsp://{origin}/live/$1'\n\
         start_timeout = '10s'\nclose_after_idle = '{close_after_idle}'\n"
    )
}

/// A path's reader count on a server's `/metrics` (0 when the path is not listed).
fn readers(server: &EdgeProcess, path: &str) -> f64 {
    let addr = server.logged_address("serving metrics").unwrap();
    let body = get(addr, "GET", "/metrics", None);
    sample(&body, &format!("shardcast_path_readers{{path=\"{path}\"}}")).unwrap_or(0.0)
}

/// Whether `path` answers DESCRIBE with 200 on `server`.
fn describable(server: SocketAddr, path: &str) -> bool {
    let mut c = RawClient::connect(server);
    c.request("DESCRIBE", &format!("rtsp://{server}/{path}"), &[], b"")
        .status
        == 200
}

#[test]
fn ffmpeg_reads_from_the_edge_what_ffmpeg_publishes_to_the_origin_over_one_upstream_session() {
    let origin = EdgeProcess::start(&origin_config("127.0.0.1:0"), &[]);
    let edge = EdgeProcess::start(&edge_config(origin.addr, "1s"), &[]);
    let _publisher = ffmpeg_publish(&origin.url("live/cam", None), "tcp");
    assert!(eventually(Duration::from_secs(10), || describable(
        origin.addr,
        "live/cam"
    )));
    assert_eq!(
        readers(&origin, "live/cam"),
        0.0,
        "nothing is pulled before a reader asks"
    );

    // Two readers on the edge: a raw one that stays, and ffmpeg decoding frames.
    let (mut staying, _) = play_tcp(edge.addr, "live/cam");
    assert!(matches!(staying.receive(), Received::Frame { .. }));
    let (output, exited) = ffmpeg_read(&edge.url("live/cam", None), "tcp", 25).wait_for(Duration::from_secs(20));
    assert!(
        exited && output.status.success(),
        "ffmpeg read from the edge: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        readers(&origin, "live/cam"),
        1.0,
        "every edge reader shares one upstream session"
    );

    // The last edge reader leaves: after close_after_idle the edge stops pulling.
    drop(staying);
    assert!(
        eventually(Duration::from_secs(10), || readers(&origin, "live/cam") == 0.0),
        "the edge stopped pulling after close_after_idle"
    );
    // A new reader starts the pull again.
    let (mut again, _) = play_tcp(edge.addr, "live/cam");
    assert!(matches!(again.receive(), Received::Frame { .. }));
    assert_eq!(readers(&origin, "live/cam"), 1.0);
}

#[test]
fn a_path_the_origin_does_not_have_is_404_on_the_edge() {
    let origin = EdgeProcess::start(&origin_config("127.0.0.1:0"), &[]);
    let edge = EdgeProcess::start(&edge_config(origin.addr, "1s"), &[]);
    let mut c = RawClient::connect(edge.addr);
    let r = c.request("DESCRIBE", &edge.url("live/nothing", None), &[], b"");
    assert_eq!(r.status, 404, "{r:?}");
}

/// Starts an origin on a fixed address, retrying while the previous process still holds it.
fn restart_origin(addr: SocketAddr) -> EdgeProcess {
    let mut last = Vec::new();
    let started = eventually(Duration::from_secs(10), || {
        match EdgeProcess::try_start(&origin_config(&addr.to_string()), &[]) {
            Ok(origin) => {
                last.clear();
                last.push(origin);
                true
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(200));
                false
            }
        }
    });
    assert!(started, "the origin could not be restarted on {addr}");
    last.pop().unwrap()
}

#[test]
fn edge_readers_stay_connected_through_an_origin_restart_and_resume() {
    let mut origin = EdgeProcess::start(&origin_config("127.0.0.1:0"), &[]);
    let origin_addr = origin.addr;
    let edge = EdgeProcess::start(&edge_config(origin_addr, "10s"), &[]);
    let (mut publisher, _) = publish_tcp(origin_addr, "live/cam", H264_SDP);
    send_frame(&mut publisher, 0, &rtp_packet(1, b"before"));
    let (mut reader, _) = play_tcp(edge.addr, "live/cam");
    // Keep publishing until the edge reader has a packet from the first origin.
    let mut seq = 2;
    let got_first = eventually(Duration::from_secs(10), || {
        send_frame(&mut publisher, 0, &rtp_packet(seq, b"before"));
        seq += 1;
        matches!(reader.receive(), Received::Frame { channel: 0, .. })
    });
    assert!(got_first);

    origin.signal("TERM");
    assert!(origin.wait_exit(Duration::from_secs(12)).is_some());
    drop(publisher);
    let origin = restart_origin(origin_addr);
    let (mut publisher, _) = publish_tcp(origin.addr, "live/cam", H264_SDP);

    // The same edge connection receives the new origin's packets (the publisher keeps sending
    // while the edge reconnects with backoff).
    let marker = b"after-restart";
    std::thread::spawn(move || {
        for seq in 0..400u16 {
            send_frame(&mut publisher, 0, &rtp_packet(seq, marker));
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let resumed = eventually(Duration::from_secs(20), || match reader.receive() {
        Received::Frame { channel: 0, payload } => payload.ends_with(marker),
        Received::Closed => panic!("the edge closed its reader during the origin restart"),
        _ => false,
    });
    assert!(resumed, "the edge reader received the restarted origin's packets");
}
