//! Users and permissions of the running binary: who may read and publish which path, from where,
//! with which password; limits and paths the config does not serve.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::time::{Duration, Instant};

use common::binary::{basic, play, publish, setup_reader, EdgeProcess};
use common::relay_fixtures::H264_SDP;
use common::{ffmpeg_publish, ffmpeg_read, RawClient};

/// Anonymous clients read `public/...`; `cam` publishes anything; `alice` reads anything;
/// `bob` too (a clear password, which ffmpeg's Digest can use); `remote` may read only from 10.0.0.0/8; `viewer` reads only `vip` (a path limited to 1 reader).
const CONFIG: &str = r#"
[server]
rtsp_address = "127.0.0.1:0"

[[paths]]
name = "vip"
max_readers = 1

[[paths]]
pattern = "^pulled/(\\w+)$"
source = "rtsp://127.0.0.1:1/$1"
start_timeout = "500ms"

[[paths]]
pattern = "^(public|private)/\\w+$"

[[users]]
name = "any"
permissions = [{ action = "read", path = "^public/" }]

[[users]]
name = "cam"
password = "campw"
permissions = [{ action = "publish" }]

[[users]]
name = "alice"
# sha256 of "alicepw", checked with Basic
password = "sha256:ZiSXTqK6/6wWRCLkSQN2wcMTE82XckrozmL7PwoDcPI="
permissions = [{ action = "read" }]

[[users]]
name = "bob"
password = "bobpw"
permissions = [{ action = "read" }]

[[users]]
name = "remote"
password = "remotepw"
ips = ["10.0.0.0/8"]
permissions = [{ action = "read" }]

[[users]]
name = "viewer"
password = "viewerpw"
permissions = [{ action = "read", path = "^vip$" }]
"#;

const CAM: Option<(&str, &str)> = Some(("cam", "campw"));

#[test]
fn the_hashed_password_in_the_test_config_is_alicepw() {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(b"alicepw");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest);
    assert!(CONFIG.contains(&format!("sha256:{encoded}")), "{encoded}");
}

#[test]
fn a_reader_without_read_rights_gets_401_and_one_with_them_reads() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let _cam = publish(edge.addr, "private/a", H264_SDP, CAM);
    let mut c = RawClient::connect(edge.addr);
    let r = c.request("DESCRIBE", &edge.url("private/a", None), &[], b"");
    assert_eq!(r.status, 401, "anonymous may not read private paths: {r:?}");
    assert!(r.header_count("WWW-Authenticate") >= 1, "{r:?}");
    // `cam` has the right password but only publishes.
    let auth = basic("cam", "campw");
    let r = c.request(
        "DESCRIBE",
        &edge.url("private/a", None),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401, "a publisher may not read: {r:?}");
    assert!(edge.wait_for_log("permission denied", Duration::from_secs(5)));

    let mut c = RawClient::connect(edge.addr);
    let auth = basic("alice", "alicepw");
    let r = c.request(
        "DESCRIBE",
        &edge.url("private/a", None),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let _reader = play(edge.addr, "private/a", Some(("alice", "alicepw")));
}

#[test]
fn anonymous_clients_read_what_user_any_may_read_but_not_publish() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "ANNOUNCE",
        &edge.url("public/a", None),
        &[("Content-Type", "application/sdp")],
        H264_SDP.as_bytes(),
    );
    assert_eq!(r.status, 401, "{r:?}");
    let _cam = publish(edge.addr, "public/a", H264_SDP, CAM);
    let _reader = play(edge.addr, "public/a", None);
}

#[test]
fn a_wrong_password_is_answered_late_and_the_connection_closed_without_logging_it() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let mut c = RawClient::connect(edge.addr);
    let auth = basic("alice", "guess-123");
    let asked = Instant::now();
    let r = c.request(
        "DESCRIBE",
        &edge.url("private/a", None),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401, "{r:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(500),
        "answered after {:?}",
        asked.elapsed()
    );
    assert!(c.closed_within(Duration::from_secs(3)));
    assert!(edge.wait_for_log("authentication failed", Duration::from_secs(5)));
    assert_eq!(edge.log_count("guess-123"), 0, "the password must not be logged");
}

#[test]
fn the_right_password_from_an_address_outside_ips_is_refused() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let _cam = publish(edge.addr, "private/a", H264_SDP, CAM);
    let (mut c, r) = setup_reader(edge.addr, "private/a", Some(("remote", "remotepw")));
    assert_eq!(r.status, 401, "127.0.0.1 is outside 10.0.0.0/8: {r:?}");
    assert!(c.closed_within(Duration::from_secs(3)));
}

#[test]
fn max_readers_refuses_the_reader_beyond_the_limit_until_one_leaves() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let _cam = publish(edge.addr, "vip", H264_SDP, CAM);
    let viewer = Some(("viewer", "viewerpw"));
    let first = play(edge.addr, "vip", viewer);
    let (_second, r) = setup_reader(edge.addr, "vip", viewer);
    assert_eq!(r.status, 503, "the second reader exceeds max_readers = 1: {r:?}");
    drop(first);
    let admitted = common::eventually(Duration::from_secs(5), || {
        setup_reader(edge.addr, "vip", viewer).1.status == 200
    });
    assert!(admitted, "a reader is admitted once the first one left");
}

#[test]
fn unserved_paths_are_404_and_pulled_paths_refuse_publishers() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let auth = basic("alice", "alicepw");
    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "DESCRIBE",
        &edge.url("elsewhere", None),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 404, "no [[paths]] entry serves it: {r:?}");
    let r = c.request(
        "DESCRIBE",
        &edge.url("pulled/x", None),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        r.status, 503,
        "the origin cannot be reached within start_timeout: {r:?}"
    );
    let auth = basic("cam", "campw");
    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "ANNOUNCE",
        &edge.url("pulled/x", None),
        &[("Content-Type", "application/sdp"), ("Authorization", &auth)],
        H264_SDP.as_bytes(),
    );
    assert_eq!(r.status, 403, "a pulled path takes no publisher: {r:?}");
}

#[test]
fn ffmpeg_publishes_and_reads_with_credentials_in_the_url() {
    let edge = EdgeProcess::start(CONFIG, &[]);
    let _publisher = ffmpeg_publish(&edge.url("private/ff", CAM), "tcp");
    let mut published = RawClient::connect(edge.addr);
    let auth = basic("alice", "alicepw");
    let ready = common::eventually(Duration::from_secs(15), || {
        let r = published.request(
            "DESCRIBE",
            &edge.url("private/ff", None),
            &[("Authorization", &auth)],
            b"",
        );
        r.status == 200
    });
    assert!(ready, "ffmpeg's stream never appeared: {:#?}", edge.log_lines());
    let reader = ffmpeg_read(&edge.url("private/ff", Some(("bob", "bobpw"))), "tcp", 25);
    let (out, exited) = reader.wait_for(Duration::from_secs(30));
    assert!(
        exited && out.status.success(),
        "ffmpeg reader: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
