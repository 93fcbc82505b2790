//! Benchmarks for shardcast.
//!
//! - `benches/proto.rs`: criterion micro-benchmarks of the parsers (`cargo bench -p shardcast-bench`).
//! - the `shardcast-bench` binary: the fan-out benchmark harness (docs/benchmarks.md). In one run it
//!   builds the server and loadgen, and for each scenario (transport × readers × bitrate) measures the
//!   bare `sendmmsg`/`writev` limit, shardcast under loadgen, and optionally a peer server; then the
//!   session set-up rate, memory per idle reader and the 1-core to 2-core scaling; and writes a table,
//!   JSON and a PNG plot.
//! - the `limit` binary: the bare fan-out program ([`limit`]).

use std::time::Duration;

pub mod harness;
pub mod limit;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod sample;
pub mod shape;
pub mod sys;

/// Parses `250ms`, `10s`, `2m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (examples: 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        other => return Err(format!("unknown duration unit `{other}` (use ms, s or m)")),
    };
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a bit rate: `2M`, `500k`, `1.5M`, `2000000`.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a rate (examples: 500k, 2M)"))?;
    let factor = match unit.trim() {
        "" => 1.0,
        "k" | "K" => 1e3,
        "m" | "M" => 1e6,
        "g" | "G" => 1e9,
        other => return Err(format!("unknown rate unit `{other}` (use k, M or G)")),
    };
    let rate = value * factor;
    if !rate.is_finite() || !(1000.0..=100e9).contains(&rate) {
        return Err(format!("`{s}`: the rate must be between 1k and 100G bits/s"));
    }
    Ok(rate.round() as u64)
}

/// A rate as loadgen takes it: `2M`, `500k`, `1500`.
pub fn format_rate(bits: u64) -> String {
    if bits % 1_000_000 == 0 {
        format!("{}M", bits / 1_000_000)
    } else if bits % 1000 == 0 {
        format!("{}k", bits / 1000)
    } else {
        bits.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("x").is_err());
        assert_eq!(parse_rate("2M"), Ok(2_000_000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert!(parse_rate("5").is_err());
        assert_eq!(format_rate(2_000_000), "2M");
        assert_eq!(format_rate(8_000), "8k");
        assert_eq!(format_rate(1_500), "1500");
    }
}
