//! The binary as an operator runs it: Prometheus scrapes after known traffic, scrape permissions,
//! and SIGTERM with readers connected.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
#[path = "rtsps/fixtures.rs"]
mod rtsps_fixtures;

use std::time::{Duration, Instant};

use common::binary::{basic, run, EdgeProcess, TempConfig};
use common::http::{get, sample, status};
use common::relay_fixtures::{play_tcp, publish_tcp, rtp_packet, send_frame, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, Received};
use rtsps_fixtures::CertFiles;

const PLAIN: &str = "[server]\nrtsp_address = '127.0.0.1:0'\n[metrics]\naddress = '127.0.0.1:0'\n\
                     [[paths]]\npattern = '^.+$'\n";

/// Scrapes until `done` holds for the body, or returns the last body.
fn scrape_until(edge: &EdgeProcess, auth: Option<&str>, done: impl Fn(&str) -> bool) -> String {
    let addr = edge
        .logged_address("serving metrics")
        .expect("the binary logs its metrics address");
    let mut body = String::new();
    eventually(Duration::from_secs(10), || {
        body = get(addr, "GET", "/metrics", auth);
        done(&body)
    });
    body
}

#[test]
fn a_scrape_after_known_traffic_shows_the_paths_readers_publishers_and_packet_counts() {
    let edge = EdgeProcess::start(PLAIN, &[]);
    let (mut publisher, _) = publish_tcp(edge.addr, "live", H264_SDP);
    let (mut reader, _) = play_tcp(edge.addr, "live");
    const PACKETS: u16 = 50;
    const PAYLOAD: usize = 100;
    let packet_len = rtp_packet(0, &[0; PAYLOAD]).len();
    for seq in 0..PACKETS {
        send_frame(&mut publisher, 0, &rtp_packet(seq, &[7; PAYLOAD]));
    }
    let mut received = 0;
    while received < PACKETS {
        match reader.receive() {
            Received::Frame { channel: 0, .. } => received += 1,
            Received::Closed => panic!("the reader was closed after {received} packets"),
            _ => {}
        }
    }
    // A writer counts a batch as sent once the write returned, which can be just after the reader
    // has the bytes: wait for both counters.
    let body = scrape_until(&edge, None, |body| {
        sample(body, "shardcast_path_received_packets_total{path=\"live\"}") == Some(f64::from(PACKETS))
            && sample(body, "shardcast_sent_packets_total").is_some_and(|sent| sent >= f64::from(PACKETS))
    });
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&body, series), Some(value), "{series} in:\n{body}");
    };
    expect("shardcast_path_readers{path=\"live\"}", 1.0);
    expect("shardcast_path_publishers{path=\"live\"}", 1.0);
    expect(
        "shardcast_path_received_bytes_total{path=\"live\"}",
        (usize::from(PACKETS) * packet_len) as f64,
    );
    expect("shardcast_received_packets_total", f64::from(PACKETS));
    expect("shardcast_connections", 2.0);
    expect("shardcast_sessions{state=\"play\",transport=\"tcp\"}", 1.0);
    expect("shardcast_sessions{state=\"record\",transport=\"tcp\"}", 1.0);
    assert!(
        sample(&body, "shardcast_sent_packets_total").unwrap() >= f64::from(PACKETS),
        "{body}"
    );
    assert!(body.contains("shardcast_build_info{version=\""), "{body}");

    drop(reader);
    drop(publisher);
    let body = scrape_until(&edge, None, |body| sample(body, "shardcast_connections") == Some(0.0));
    assert_eq!(sample(&body, "shardcast_connections"), Some(0.0), "{body}");
}

#[test]
fn with_users_only_a_user_with_the_metrics_permission_may_scrape() {
    let config = format!(
        "{PLAIN}[[users]]\nname = 'prom'\npassword = 'scrape'\npermissions = [{{ action = 'metrics' }}]\n\
         [[users]]\nname = 'cam'\npassword = 'pub'\npermissions = [{{ action = 'publish' }}]\n"
    );
    let edge = EdgeProcess::start(&config, &[]);
    let addr = edge.logged_address("serving metrics").unwrap();
    let credentials = |user: &str, password: &str| basic(user, password).trim_start_matches("Basic ").to_owned();
    assert_eq!(status(&get(addr, "GET", "/metrics", None)), "401");
    assert_eq!(
        status(&get(addr, "GET", "/metrics", Some(&credentials("cam", "pub")))),
        "401"
    );
    assert_eq!(
        status(&get(addr, "GET", "/metrics", Some(&credentials("prom", "wrong")))),
        "401"
    );
    let body = get(addr, "GET", "/metrics", Some(&credentials("prom", "scrape")));
    assert_eq!(status(&body), "200", "{body}");
    assert!(sample(&body, "shardcast_connections").is_some(), "{body}");
}

#[test]
fn sigterm_with_readers_connected_closes_them_and_exits_cleanly_within_the_deadline() {
    let mut edge = EdgeProcess::start(PLAIN, &[]);
    let (mut publisher, _) = publish_tcp(edge.addr, "live", H264_SDP);
    let mut readers: Vec<_> = (0..3).map(|_| play_tcp(edge.addr, "live").0).collect();
    send_frame(&mut publisher, 0, &rtp_packet(1, &[1; 10]));
    for reader in &mut readers {
        assert!(matches!(reader.receive(), Received::Frame { channel: 0, .. }));
    }
    let asked = Instant::now();
    edge.signal("TERM");
    let status = edge
        .wait_exit(Duration::from_secs(12))
        .expect("the binary exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
    for reader in &mut readers {
        assert!(reader.closed_within(Duration::from_secs(1)));
    }
    assert!(publisher.closed_within(Duration::from_secs(1)));
    assert!(edge.log_lines().iter().any(|l| l.contains("shutting down")));
}

fn tls_config(certs: &CertFiles) -> String {
    format!(
        "[server]\nrtsp_address = '127.0.0.1:0'\nrtsps_address = '127.0.0.1:0'\n\
         tls_cert_file = '{}'\ntls_key_file = '{}'\n[[paths]]\npattern = '^.+$'\n",
        certs.cert.display(),
        certs.key.display()
    )
}

#[test]
fn ffmpeg_publishes_over_rtsps_and_ffmpeg_reads_the_same_path_over_plain_rtsp() {
    let certs = CertFiles::new("binary-publish");
    let edge = EdgeProcess::start(&tls_config(&certs), &[]);
    let rtsps = edge
        .logged_address("serving TLS (RTSPS)")
        .expect("the binary logs its RTSPS address");
    let _publisher = ffmpeg_publish(&format!("rtsps://{rtsps}/live"), "tcp");
    let published = eventually(Duration::from_secs(10), || {
        let mut c = common::RawClient::connect(edge.addr);
        c.request("DESCRIBE", &edge.url("live", None), &[], b"").status == 200
    });
    assert!(published, "ffmpeg published over RTSPS: {:#?}", edge.log_lines());
    let (output, exited) = ffmpeg_read(&edge.url("live", None), "tcp", 25).wait_for(Duration::from_secs(20));
    assert!(
        exited && output.status.success(),
        "ffmpeg read over plain RTSP: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (output, exited) = ffmpeg_read(&format!("rtsps://{rtsps}/live"), "tcp", 25).wait_for(Duration::from_secs(20));
    assert!(
        exited && output.status.success(),
        "ffmpeg read over RTSPS: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_certificate_file_that_cannot_be_used_is_a_configuration_error_naming_it() {
    let certs = CertFiles::new("binary-bad-cert");
    std::fs::write(&certs.cert, "not a certificate").unwrap();
    let config = TempConfig::new(&tls_config(&certs));
    let output = run(&["--config", &config.path.to_string_lossy(), "--check-config"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tls_cert_file") && stderr.contains(&*certs.cert.to_string_lossy()),
        "{stderr}"
    );
}
