//! SIGHUP reloads paths and users without dropping sessions the change does not affect; an
//! invalid file keeps the running configuration.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::time::{Duration, Instant};

use common::binary::{basic, play, publish, EdgeProcess};
use common::relay_fixtures::{rtp_packet, send_frame, H264_SDP};
use common::{RawClient, Received};

/// Anonymous clients read `open`; `cam` publishes; `alice` reads everything with `password`.
fn config(alice_password: &str, alice_reads: bool) -> String {
    let alice_permissions = if alice_reads { r#"[{ action = "read" }]"# } else { "[]" };
    format!(
        r#"
[server]
rtsp_address = "127.0.0.1:0"

[[paths]]
pattern = "^\\w+$"

[[users]]
name = "any"
permissions = [{{ action = "read", path = "^open$" }}]

[[users]]
name = "cam"
password = "campw"
permissions = [{{ action = "publish" }}]

[[users]]
name = "alice"
password = "{alice_password}"
permissions = {alice_permissions}
"#
    )
}

const CAM: Option<(&str, &str)> = Some(("cam", "campw"));

/// Sends a packet from `publisher` until `reader` receives one, within `limit`.
fn reader_receives(publisher: &mut RawClient, reader: &mut RawClient, seq: &mut u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        *seq = seq.wrapping_add(1);
        send_frame(publisher, 0, &rtp_packet(*seq, &[0x65, 1, 2, 3]));
        match reader.receive() {
            Received::Frame { channel: 0, .. } => return true,
            Received::Frame { .. } | Received::Response(_) => {}
            Received::Closed => return false,
        }
    }
    false
}

/// Sends SIGHUP and waits for one more log line containing `needle`.
fn hup_and_wait(edge: &EdgeProcess, needle: &str) {
    let before = edge.log_count(needle);
    edge.sighup();
    let done = common::eventually(Duration::from_secs(10), || edge.log_count(needle) > before);
    assert!(done, "no {needle:?} after SIGHUP: {:#?}", edge.log_lines());
}

#[test]
fn a_changed_password_applies_on_sighup_while_a_reader_of_another_path_keeps_playing() {
    let edge = EdgeProcess::start(&config("old-pw", true), &[]);
    let mut publisher = publish(edge.addr, "open", H264_SDP, CAM);
    let mut reader = play(edge.addr, "open", None);
    let _other = publish(edge.addr, "other", H264_SDP, CAM);
    let mut seq = 0;
    assert!(reader_receives(
        &mut publisher,
        &mut reader,
        &mut seq,
        Duration::from_secs(5)
    ));

    edge.config.rewrite(&config("new-pw", true));
    hup_and_wait(&edge, "configuration reloaded");

    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "DESCRIBE",
        &edge.url("other", None),
        &[("Authorization", &basic("alice", "new-pw"))],
        b"",
    );
    assert_eq!(r.status, 200, "the new password is accepted: {r:?}");
    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "DESCRIBE",
        &edge.url("other", None),
        &[("Authorization", &basic("alice", "old-pw"))],
        b"",
    );
    assert_eq!(r.status, 401, "the old password is refused: {r:?}");
    // Every core applies a reload at its next housekeeping pass (once a second): give them time
    // to wrongly close the reader before checking that it still plays.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        reader_receives(&mut publisher, &mut reader, &mut seq, Duration::from_secs(5)),
        "the unaffected reader stopped receiving packets"
    );
}

#[test]
fn a_user_who_lost_read_permission_is_disconnected_and_others_keep_playing() {
    let edge = EdgeProcess::start(&config("pw", true), &[]);
    let mut publisher = publish(edge.addr, "open", H264_SDP, CAM);
    let mut anonymous = play(edge.addr, "open", None);
    let mut alice = play(edge.addr, "open", Some(("alice", "pw")));
    let mut seq = 0;
    assert!(reader_receives(
        &mut publisher,
        &mut alice,
        &mut seq,
        Duration::from_secs(5)
    ));

    edge.config.rewrite(&config("pw", false));
    hup_and_wait(&edge, "configuration reloaded");

    assert!(alice.closed_within(Duration::from_secs(5)), "alice may no longer read");
    assert!(
        reader_receives(&mut publisher, &mut anonymous, &mut seq, Duration::from_secs(5)),
        "the anonymous reader is unaffected"
    );
}

#[test]
fn an_invalid_file_on_sighup_keeps_the_running_configuration() {
    let mut edge = EdgeProcess::start(&config("pw", true), &[]);
    let mut publisher = publish(edge.addr, "open", H264_SDP, CAM);
    let mut reader = play(edge.addr, "open", None);

    edge.config
        .rewrite("[server]\nrtsp_address = \"127.0.0.1:0\"\n[[paths]]\npattern = \"(\"\n");
    hup_and_wait(&edge, "reload refused");
    assert!(edge
        .log_lines()
        .iter()
        .any(|l| l.contains("reload refused") && l.contains("`pattern`")));

    assert!(edge.is_running());
    let mut seq = 0;
    assert!(reader_receives(
        &mut publisher,
        &mut reader,
        &mut seq,
        Duration::from_secs(5)
    ));
    let mut c = RawClient::connect(edge.addr);
    let r = c.request(
        "DESCRIBE",
        &edge.url("open", None),
        &[("Authorization", &basic("alice", "pw"))],
        b"",
    );
    assert_eq!(r.status, 200, "the running users still apply: {r:?}");
}

#[test]
fn server_changes_on_sighup_are_ignored_with_a_warning() {
    let edge = EdgeProcess::start(&config("pw", true), &[]);
    let text = config("pw", true).replace("[server]\n", "[server]\nidle_timeout = \"30s\"\n");
    edge.config.rewrite(&text);
    hup_and_wait(&edge, "configuration reloaded");
    assert!(
        edge.log_lines()
            .iter()
            .any(|l| l.contains("WARN") && l.contains("restart")),
        "{:#?}",
        edge.log_lines()
    );
}
