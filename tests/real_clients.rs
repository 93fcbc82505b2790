//! Real clients against the relay: ffmpeg publishes H.264 + AAC over TCP; ffmpeg and GStreamer read
//! and decode it. These need ffmpeg and GStreamer installed (scripts/test installs them).
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::relay_fixtures::relay;

use std::time::Duration;

use std::process::Command;

use common::{eventually, ffmpeg_publish, ffmpeg_read, gst_read, ChildGuard, RawClient};
use shardcast::proto::auth::{authorize, AuthMethod, Challenge};
use shardcast::server::{Server, ServerConfig};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret";

fn start() -> Server {
    let paths = relay::Paths::default();
    Server::start(ServerConfig::new("127.0.0.1:0".parse().unwrap()), move |ctx, _| {
        relay::Relay::new(ctx, paths.clone())
    })
    .expect("server starts")
}

/// A relay that requires `USER`/`PASSWORD` with one auth method.
fn start_with_auth(method: AuthMethod) -> Server {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.auth_methods = vec![method];
    let paths = relay::Paths::default();
    Server::start(config, move |ctx, _| {
        relay::Relay::new(ctx, paths.clone()).with_credentials(USER, PASSWORD)
    })
    .expect("server starts")
}

/// Waits until `path` is published (DESCRIBE answers 200), authenticating when challenged.
fn wait_published(server: &Server, path: &str) {
    let addr = server.local_addr();
    let url = format!("rtsp://{addr}/{path}");
    let ok = eventually(Duration::from_secs(20), || {
        let mut c = RawClient::connect(addr);
        let r = c.request("DESCRIBE", &url, &[], b"");
        if r.status != 401 {
            return r.status == 200;
        }
        let challenge = Challenge::parse(r.header("WWW-Authenticate").unwrap()).unwrap();
        let value = authorize(&challenge, USER, PASSWORD, "DESCRIBE", &url, None).unwrap();
        c.request("DESCRIBE", &url, &[("Authorization", &value)], b"").status == 200
    });
    assert!(ok, "{path} was not published within 20 s");
}

/// Waits for a reader to exit by itself and checks it succeeded.
fn assert_reader_succeeds(reader: ChildGuard, what: &str) {
    let (out, exited) = reader.wait_for(Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "{what} did not finish decoding: {stderr}");
    assert!(out.status.success(), "{what} failed: {stderr}");
}

#[test]
fn ffmpeg_publishes_over_tcp_and_ffmpeg_reads_and_decodes_it() {
    let server = start();
    let url = format!("rtsp://{}/ffmpeg", server.local_addr());
    let mut publisher = ffmpeg_publish(&url, "tcp");
    wait_published(&server, "ffmpeg");
    let reader = ffmpeg_read(&url, "tcp", 50);
    let (out, exited) = reader.wait_for(Duration::from_secs(30));
    assert!(exited, "the reader did not finish decoding 50 frames");
    assert!(
        out.status.success(),
        "ffmpeg reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(publisher.is_running(), "the publisher must keep running while read");
}

#[test]
fn ffmpeg_publishes_over_tcp_and_gstreamer_reads_and_decodes_it() {
    let server = start();
    let url = format!("rtsp://{}/gst", server.local_addr());
    let _publisher = ffmpeg_publish(&url, "tcp");
    wait_published(&server, "gst");
    let reader = gst_read(&url, "tcp", 50, None);
    let (out, exited) = reader.wait_for(Duration::from_secs(30));
    assert!(
        exited,
        "GStreamer did not decode 50 buffers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "GStreamer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn credentials_in_the_url_let_ffmpeg_publish_and_ffmpeg_and_gstreamer_read_with_basic_and_digest() {
    for method in [AuthMethod::Basic, AuthMethod::DigestMd5] {
        let server = start_with_auth(method);
        let addr = server.local_addr();
        let _publisher = ffmpeg_publish(&format!("rtsp://{USER}:{PASSWORD}@{addr}/secure"), "tcp");
        wait_published(&server, "secure");
        let ffmpeg = ffmpeg_read(&format!("rtsp://{USER}:{PASSWORD}@{addr}/secure"), "tcp", 25);
        assert_reader_succeeds(ffmpeg, &format!("ffmpeg with {method}"));
        let gst = gst_read(&format!("rtsp://{addr}/secure"), "tcp", 25, Some((USER, PASSWORD)));
        assert_reader_succeeds(gst, &format!("GStreamer with {method}"));
    }
}

#[test]
fn a_reader_with_a_wrong_password_is_refused() {
    let server = start_with_auth(AuthMethod::DigestMd5);
    let addr = server.local_addr();
    let _publisher = ffmpeg_publish(&format!("rtsp://{USER}:{PASSWORD}@{addr}/secure"), "tcp");
    wait_published(&server, "secure");
    let reader = ffmpeg_read(&format!("rtsp://{USER}:wrong@{addr}/secure"), "tcp", 25);
    let (out, exited) = reader.wait_for(Duration::from_secs(20));
    assert!(
        exited && !out.status.success(),
        "ffmpeg must fail with a wrong password"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn gstreamer_publishes_over_tcp_and_ffmpeg_reads_and_decodes_it() {
    let server = start();
    let url = format!("rtsp://{}/gstpub", server.local_addr());
    let mut c = Command::new("gst-launch-1.0");
    c.args([
        "-q",
        "videotestsrc",
        "is-live=true",
        "!",
        "video/x-raw,width=320,height=240,framerate=25/1",
    ])
    .args([
        "!",
        "x264enc",
        "tune=zerolatency",
        "speed-preset=ultrafast",
        "key-int-max=25",
    ])
    .args(["!", "rtspclientsink", "protocols=tcp"])
    .arg(format!("location={url}"));
    let mut publisher = ChildGuard::spawn(c);
    wait_published(&server, "gstpub");
    assert_reader_succeeds(ffmpeg_read(&url, "tcp", 50), "ffmpeg reading GStreamer's stream");
    assert!(
        publisher.is_running(),
        "the GStreamer publisher must keep running while read"
    );
}
