//! Real clients against the relay: ffmpeg publishes H.264 + AAC over TCP; ffmpeg and GStreamer read
//! and decode it. These need ffmpeg and GStreamer installed (scripts/test installs them).
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
#[path = "../examples/relay/handler.rs"]
mod relay;

use std::time::Duration;

use common::{eventually, ffmpeg_publish, ffmpeg_read, gst_read, RawClient};
use shardcast::server::{Server, ServerConfig};

fn start() -> Server {
    let paths = relay::Paths::default();
    Server::start(ServerConfig::new("127.0.0.1:0".parse().unwrap()), move |ctx, _| {
        relay::Relay::new(ctx, paths.clone())
    })
    .expect("server starts")
}

/// Waits until `path` is published (DESCRIBE answers 200).
fn wait_published(server: &Server, path: &str) {
    let addr = server.local_addr();
    let ok = eventually(Duration::from_secs(20), || {
        let mut c = RawClient::connect(addr);
        c.request("DESCRIBE", &format!("rtsp://{addr}/{path}"), &[], b"").status == 200
    });
    assert!(ok, "{path} was not published within 20 s");
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
