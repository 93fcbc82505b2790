//! The binary's configuration as an operator meets it: `--check-config`, exit code 2 with the key
//! and line of what is wrong, and `SHARDCAST_*` environment overrides.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::time::Duration;

use common::binary::{run, EdgeProcess, TempConfig};
use common::RawClient;

const SERVER: &str = "[server]\nrtsp_address = \"127.0.0.1:0\"\n";

#[test]
fn check_config_accepts_a_valid_file_and_the_embedded_default() {
    let file = TempConfig::new(&format!("{SERVER}[[paths]]\npattern = \"^cams/(\\\\w+)$\"\n"));
    let out = run(&["--config", file.path.to_str().unwrap(), "--check-config"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration OK"),
        "{out:?}"
    );
    let out = run(&["--check-config"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("embedded default"),
        "{out:?}"
    );
}

#[test]
fn an_invalid_config_exits_with_code_2_naming_the_key_and_line() {
    // Line 6 starts the second [[users]] entry, whose ips are wrong.
    let text = format!(
        "{SERVER}[[users]]\nname = \"any\"\n\n[[users]]\nname = \"alice\"\npassword = \"x\"\nips = [\"10.0.0.0/99\"]\n"
    );
    let file = TempConfig::new(&text);
    let out = run(&["--config", file.path.to_str().unwrap(), "--check-config"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`ips`") && stderr.contains("line 6"), "{stderr}");

    let file = TempConfig::new(&format!("{SERVER}idle_timeout = \"soon\"\n"));
    let out = run(&["--config", file.path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2), "without --check-config too: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("idle_timeout") && stderr.contains("line 3"), "{stderr}");
}

#[test]
fn a_missing_file_exits_with_code_2() {
    let out = run(&["--config", "/nonexistent/shardcast.toml"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/shardcast.toml"));
}

#[test]
fn environment_overrides_are_validated_and_unknown_variables_named() {
    let out = run(&["--check-config"], &[("SHARDCAST_SERVER_READ_TIMEOUT", "soon")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("read_timeout"), "{out:?}");
    let out = run(&["--check-config"], &[("SHARDCAST_SERVER_READ_TIMOUT", "5s")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SHARDCAST_SERVER_READ_TIMOUT"),
        "{out:?}"
    );
}

#[test]
fn environment_overrides_take_effect_on_the_running_server() {
    // The file serves only `cam`; the environment renames it to `tv` and switches logs to JSON.
    let text = format!("{SERVER}[[paths]]\nname = \"cam\"\n");
    let edge = EdgeProcess::start(
        &text,
        &[("SHARDCAST_PATHS_0_NAME", "tv"), ("SHARDCAST_LOG_FORMAT", "json")],
    );
    assert!(
        edge.log_lines()
            .iter()
            .any(|l| l.starts_with('{') && l.contains("serving RTSP")),
        "{:#?}",
        edge.log_lines()
    );
    let mut c = RawClient::connect(edge.addr);
    let r = c.request("DESCRIBE", &edge.url("cam", None), &[], b"");
    assert_eq!(r.status, 404, "the file's name no longer serves: {r:?}");
    let r = c.request("DESCRIBE", &edge.url("tv", None), &[], b"");
    assert_eq!(r.status, 404, "nobody publishes tv yet: {r:?}");
    let _publisher = common::binary::publish(edge.addr, "tv", common::relay_fixtures::H264_SDP, None);
    let r = c.request("DESCRIBE", &edge.url("tv", None), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(!c.closed_within(Duration::from_millis(100)));
}
