use std::collections::HashMap;

use super::*;

fn server() -> ServerMetrics {
    ServerMetrics {
        connections_open: 2,
        connections_accepted: 5,
        received_packets: 10,
        received_bytes: 1200,
        sent_packets: 11,
        sent_bytes: 1300,
        packets_lost: 3,
        packets_dropped_slow_reader: 4,
        ring_overruns: 1,
        ring_overrun_packets: 6,
        udp_ingress_dropped: 7,
        core_busy_seconds: vec![0.25, 1.5],
        ..ServerMetrics::default()
    }
}

fn build() -> BuildInfo {
    BuildInfo {
        version: "0.1.0".into(),
        rustc: Some("1.85.0".into()),
    }
}

fn path(name: &str) -> PathMetrics {
    PathMetrics {
        name: name.into(),
        readers: 3,
        publishers: 1,
        bytes_received: 4096,
        packets_received: 32,
        source: PathSource::Publisher,
    }
}

/// The value of the sample line that starts with `series` (name and labels) followed by a space.
fn value<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
}

#[test]
fn counters_and_gauges_appear_with_their_values() {
    let text = render(&server(), &[path("cam")], &build());
    for (series, expected) in [
        ("shardcast_build_info{version=\"0.1.0\",rustc=\"1.85.0\"}", "1"),
        ("shardcast_connections", "2"),
        ("shardcast_connections_accepted_total", "5"),
        ("shardcast_received_packets_total", "10"),
        ("shardcast_received_bytes_total", "1200"),
        ("shardcast_sent_packets_total", "11"),
        ("shardcast_sent_bytes_total", "1300"),
        ("shardcast_packets_lost_total", "3"),
        ("shardcast_packets_dropped_slow_reader_total", "4"),
        ("shardcast_ring_overruns_total", "1"),
        ("shardcast_ring_overrun_packets_total", "6"),
        ("shardcast_udp_ingress_dropped_total", "7"),
        ("shardcast_core_busy_seconds_total{core=\"0\"}", "0.25"),
        ("shardcast_core_busy_seconds_total{core=\"1\"}", "1.5"),
        ("shardcast_sessions{state=\"play\",transport=\"tcp\"}", "0"),
        ("shardcast_path_info{path=\"cam\",source=\"publisher\"}", "1"),
        ("shardcast_path_readers{path=\"cam\"}", "3"),
        ("shardcast_path_publishers{path=\"cam\"}", "1"),
        ("shardcast_path_received_bytes_total{path=\"cam\"}", "4096"),
        ("shardcast_path_received_packets_total{path=\"cam\"}", "32"),
    ] {
        assert_eq!(value(&text, series), Some(expected), "{series} in\n{text}");
    }
    assert_eq!(
        text.matches("shardcast_sessions{").count(),
        20,
        "every state and transport"
    );
}

#[test]
fn every_family_has_one_help_and_one_type_line_before_its_samples() {
    let text = render(&server(), &[path("a"), path("b")], &build());
    let mut types: HashMap<&str, usize> = HashMap::new();
    let mut helps: HashMap<&str, usize> = HashMap::new();
    let mut current = "";
    for line in text.lines() {
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["#", "HELP", name, ..] => *helps.entry(name).or_default() += 1,
            ["#", "TYPE", name, kind] => {
                assert!(matches!(*kind, "counter" | "gauge"), "{line}");
                assert_eq!(kind == &"counter", name.ends_with("_total"), "{line}");
                *types.entry(name).or_default() += 1;
                current = name;
            }
            _ => {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert_eq!(name, current, "sample {line:?} outside its family");
                assert!(name.starts_with("shardcast_"), "{line}");
            }
        }
    }
    assert_eq!(types.len(), 19, "{types:?}");
    assert!(types.values().all(|n| *n == 1), "{types:?}");
    assert_eq!(helps, types);
    assert!(text.ends_with('\n'));
}

#[test]
fn label_values_are_escaped() {
    let mut odd = path("a\\b\"c\nd");
    odd.source = PathSource::Other("x\"y".into());
    let text = render(&server(), &[odd], &build());
    assert_eq!(
        value(&text, "shardcast_path_readers{path=\"a\\\\b\\\"c\\nd\"}"),
        Some("3"),
        "{text}"
    );
    assert!(text.contains("source=\"x\\\"y\""), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("shardcast_path_readers")).count(),
        1
    );
}

#[test]
fn paths_families_are_left_out_when_there_are_no_paths_and_rustc_is_optional() {
    let text = render(
        &ServerMetrics::default(),
        &[],
        &BuildInfo {
            version: "1.2.3".into(),
            rustc: None,
        },
    );
    assert!(!text.contains("shardcast_path_"), "{text}");
    assert_eq!(value(&text, "shardcast_build_info{version=\"1.2.3\"}"), Some("1"));
    assert_eq!(value(&text, "shardcast_connections"), Some("0"));
}

#[test]
fn busy_seconds_that_are_not_numbers_use_the_format_s_spelling() {
    let mut metrics = server();
    metrics.core_busy_seconds = vec![f64::NAN, f64::INFINITY];
    let text = render(&metrics, &[], &build());
    assert_eq!(
        value(&text, "shardcast_core_busy_seconds_total{core=\"0\"}"),
        Some("NaN")
    );
    assert_eq!(
        value(&text, "shardcast_core_busy_seconds_total{core=\"1\"}"),
        Some("+Inf")
    );
}
