//! The edge application used as a library, in process: per-path stats for metrics, and a reload
//! that changes a path's source closes that path's sessions.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::time::Duration;

use common::binary::{play, publish};
use common::relay_fixtures::{rtp_packet, send_frame, H264_SDP};
use common::{eventually, Received};
use shardcast::edge::config::Config;
use shardcast::edge::state::Edge;
use shardcast::server::Server;

fn start(config: &str) -> (Server, Edge) {
    let config = Config::from_toml(config).unwrap();
    let edge = Edge::new(config.clone());
    let server = Server::start(config.server.to_server_config(), {
        let edge = edge.clone();
        move |ctx, _| edge.handler(ctx)
    })
    .unwrap();
    (server, edge)
}

const OPEN: &str = "[server]\nrtsp_address = \"127.0.0.1:0\"\n[[paths]]\npattern = \"^.+$\"\n";

#[test]
fn path_stats_count_readers_publishers_and_packets() {
    let (server, edge) = start(OPEN);
    assert!(edge.path_stats().is_empty());
    let mut publisher = publish(server.local_addr(), "cam", H264_SDP, None);
    let reader = play(server.local_addr(), "cam", None);
    for seq in 0..5 {
        send_frame(&mut publisher, 0, &rtp_packet(seq, &[0x65, 1, 2, 3]));
    }
    let counted = eventually(Duration::from_secs(5), || {
        edge.path_stats()
            .first()
            .is_some_and(|s| s.name == "cam" && s.readers == 1 && s.publishers == 1 && s.stream.packets >= 5)
    });
    assert!(counted, "{:?}", edge.path_stats());
    drop(reader);
    assert!(eventually(Duration::from_secs(5), || edge.path_stats()[0].readers == 0));
    drop(publisher);
    assert!(eventually(Duration::from_secs(5), || edge.path_stats().is_empty()));
}

#[test]
fn a_reload_that_changes_a_paths_source_closes_its_sessions() {
    let (server, edge) = start(OPEN);
    let mut publisher = publish(server.local_addr(), "cam", H264_SDP, None);
    let mut reader = play(server.local_addr(), "cam", None);
    let pulled = OPEN.replace("\"^.+$\"\n", "\"^.+$\"\nsource = \"rtsp://origin.example/$0\"\n");
    let report = edge.reload(Config::from_toml(&pulled).unwrap());
    assert_eq!(report.closed_paths, vec!["cam".to_owned()]);
    assert!(report.ignored_sections.is_empty());
    assert!(
        publisher.closed_within(Duration::from_secs(5)),
        "the publisher is closed"
    );
    let reader_closed = eventually(Duration::from_secs(5), || matches!(reader.receive(), Received::Closed));
    assert!(reader_closed, "the reader is closed");
}

#[test]
fn a_reload_that_revokes_a_udp_readers_permission_ends_its_session() {
    let config = |alice_reads: bool| {
        format!(
            "[server]\nrtsp_address = \"127.0.0.1:0\"\nrtp_address = \"127.0.0.1:0\"\nrtcp_address = \"127.0.0.1:0\"\n\
             [[paths]]\npattern = \"^.+$\"\n\
             [[users]]\nname = \"any\"\npermissions = [{{ action = \"publish\" }}]\n\
             [[users]]\nname = \"alice\"\npassword = \"pw\"\npermissions = {}\n",
            if alice_reads { "[{ action = \"read\" }]" } else { "[]" }
        )
    };
    let (server, edge) = start(&config(true));
    let addr = server.local_addr();
    let _publisher = publish(addr, "cam", H264_SDP, None);
    let rtp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let transport = format!(
        "RTP/AVP;unicast;client_port={}-{}",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    );
    let auth = common::binary::basic("alice", "pw");
    let url = format!("rtsp://{addr}/cam");
    let mut control = common::RawClient::connect(addr);
    let r = control.request(
        "SETUP",
        &format!("{url}/trackID=0"),
        &[("Transport", &transport), ("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let session = common::relay_fixtures::session_of(&r);
    let r = control.request("PLAY", &url, &[("Session", &session), ("Authorization", &auth)], b"");
    assert_eq!(r.status, 200, "{r:?}");

    edge.reload(Config::from_toml(&config(false)).unwrap());
    let ended = eventually(Duration::from_secs(5), || {
        let mut c = common::RawClient::connect(addr);
        c.request("GET_PARAMETER", &url, &[("Session", &session)], b"").status == 454
    });
    assert!(ended, "the UDP session of a user who lost read permission ends");
}
