//! Running loadgen (`read` and `publish` modes) and reading the figures the harness needs from its
//! `--json` report (loadgen/src/report.rs), plus a bare RTSP DESCRIBE probe and child-process helpers.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

/// Percentiles of a loadgen histogram, microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Pct {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// Largest value.
    pub max: u64,
}

impl Pct {
    fn of(v: &Value) -> Option<Pct> {
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        Some(Pct {
            count: n("count")?,
            p50: n("p50")?,
            p90: n("p90").unwrap_or(0),
            p99: n("p99")?,
            p99_9: n("p99_9").unwrap_or(0),
            max: n("max").unwrap_or(0),
        })
    }
}

/// One second of a loadgen run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Row {
    /// Seconds since the start (the row covers `t_s - 1 .. t_s`).
    pub t_s: u64,
    /// Readers playing.
    pub readers_up: u64,
    /// RTP packets received in that second.
    pub rx_packets: u64,
    /// PLAY responses in that second.
    pub plays: u64,
}

/// What a `loadgen read` run reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadRun {
    /// Exit code (0 completed, 1 failed, 2 nothing run, 130 interrupted).
    pub exit_code: Option<i32>,
    /// Start of the run, ns since the epoch.
    pub started_ns: u64,
    /// Length of the run, seconds.
    pub wall_s: f64,
    /// Why it was cut short.
    pub aborted: Option<String>,
    /// Reader slots.
    pub slots: u64,
    /// Sessions that got a PLAY response.
    pub plays: u64,
    /// Slots that never played.
    pub never_played: u64,
    /// Readers playing at the end.
    pub playing_at_end: u64,
    /// RTP packets received by all readers.
    pub packets: u64,
    /// Packets missing.
    pub lost: u64,
    /// lost / (received + lost).
    pub loss_ratio: f64,
    /// Failed sessions.
    pub errors: u64,
    /// Failures by kind.
    pub error_kinds: Vec<(String, u64)>,
    /// One-way latency.
    pub latency_us: Option<Pct>,
    /// Per-frame first-to-last reader skew on one loadgen core.
    pub fanout_skew_us: Option<Pct>,
    /// Connect to PLAY response.
    pub time_to_play_us: Option<Pct>,
    /// loadgen says it may have been the bottleneck.
    pub loadgen_limited: bool,
    /// Its warnings.
    pub warnings: Vec<String>,
    /// loadgen's own average CPU use, percent of one core.
    pub loadgen_cpu_pct: f64,
    /// Per second.
    pub timeline: Vec<Row>,
}

impl ReadRun {
    /// Reads the JSON report.
    pub fn parse(json: &Value) -> ReadRun {
        let r = &json["readers"];
        let u = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
        let timeline = json["timeline"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| Row {
                        t_s: u(row, "t_s"),
                        readers_up: u(row, "readers_up"),
                        rx_packets: u(row, "rx_packets"),
                        plays: u(row, "plays"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let error_kinds = r["error_kinds"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), u(v, "count"))).collect())
            .unwrap_or_default();
        let check = &json["self_check"];
        ReadRun {
            exit_code: None,
            started_ns: u(json, "started_unix_ms") * 1_000_000,
            wall_s: json["wall_s"].as_f64().unwrap_or(0.0),
            aborted: json["aborted"].as_str().map(str::to_owned),
            slots: u(r, "slots"),
            plays: u(r, "plays"),
            never_played: u(r, "never_played"),
            playing_at_end: u(r, "playing_at_end"),
            packets: u(r, "packets"),
            lost: u(r, "lost"),
            loss_ratio: r["loss_ratio"].as_f64().unwrap_or(0.0),
            errors: u(r, "errors"),
            error_kinds,
            latency_us: Pct::of(&r["latency_us"]),
            fanout_skew_us: Pct::of(&r["fanout_skew_us"]),
            time_to_play_us: Pct::of(&r["time_to_play_us"]),
            loadgen_limited: check["loadgen_limited"].as_bool().unwrap_or(false),
            warnings: check["warnings"]
                .as_array()
                .map(|w| w.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            loadgen_cpu_pct: check["cpu"]["process_avg_pct"].as_f64().unwrap_or(0.0),
            timeline,
        }
    }

    /// The steady part of the run: the rows after every reader that would come up was up, without
    /// the last row (the stop). Returns (window start ns, window end ns, packets received in it).
    pub fn steady_window(&self) -> Option<(u64, u64, u64)> {
        let most = self.timeline.iter().map(|r| r.readers_up).max()?;
        if most == 0 {
            return None;
        }
        let all_up = self.timeline.iter().position(|r| r.readers_up >= most)?;
        let rows = &self.timeline[..self.timeline.len().saturating_sub(1)];
        let steady = rows.get(all_up + 1..).filter(|s| !s.is_empty())?;
        let (first, last) = (steady.first()?.t_s, steady.last()?.t_s);
        let packets = steady.iter().map(|r| r.rx_packets).sum();
        let from = self.started_ns + first.saturating_sub(1) * 1_000_000_000;
        let to = self.started_ns + last * 1_000_000_000;
        Some((from, to, packets))
    }
}

/// What a `loadgen publish` run reported.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishRun {
    /// RECORD responses.
    pub records: u64,
    /// Packets sent.
    pub packets: u64,
    /// Length of the run, seconds.
    pub wall_s: f64,
    /// Frames sent late.
    pub late_frames: u64,
    /// Schedule resets.
    pub resyncs: u64,
    /// Longest time from connect to RECORD answered, ms (`None`: never recorded).
    pub time_to_record_ms: Option<f64>,
}

impl PublishRun {
    /// Reads the JSON report.
    pub fn parse(json: &Value) -> PublishRun {
        let p = &json["publishers"];
        let u = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
        PublishRun {
            records: u("records"),
            packets: u("packets"),
            wall_s: json["wall_s"].as_f64().unwrap_or(0.0),
            late_frames: u("late_frames"),
            resyncs: u("resyncs"),
            time_to_record_ms: p["time_to_record_us"]["max"].as_u64().map(|us| us as f64 / 1000.0),
        }
    }
}

/// Waits for `child` at most `limit`; kills it (SIGKILL) past that.
pub fn wait_or_kill(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                return child.wait().ok();
            }
        }
    }
}

/// Sends `signal` to a child this harness started.
pub fn signal(child: &Child, signal: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill with the id of our own child process, which has not been reaped yet.
        unsafe { libc::kill(pid, signal) };
    }
}

/// Stops a child with SIGTERM (SIGKILL after `grace`) and returns its stdout.
pub fn stop(mut child: Child, sig: libc::c_int, grace: Duration) -> (Option<ExitStatus>, String) {
    signal(&child, sig);
    let status = wait_or_kill(&mut child, grace);
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    (status, out)
}

/// Runs a command to completion (at most `limit`) with stdout captured and stderr appended to `log`.
pub fn run_captured(mut command: Command, limit: Duration, log: &Path) -> Result<(Option<i32>, String), String> {
    let err = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(err);
    let mut child = command.spawn().map_err(|e| format!("cannot start {command:?}: {e}"))?;
    // Read stdout on a thread: a large JSON report would fill the pipe and block the child.
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_string(&mut out);
        }
        out
    });
    let status = wait_or_kill(&mut child, limit);
    let out = reader.join().unwrap_or_default();
    Ok((status.and_then(|s| s.code()), out))
}

/// Whether `url` answers DESCRIBE with 200 at `addr`.
pub fn describe_ok(addr: SocketAddr, url: &str, timeout: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let request = format!("DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.windows(2).any(|w| w == b"\r\n") && got.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"RTSP/1.0 200")
}

/// Waits until `url` answers DESCRIBE with 200, at most `limit`.
pub fn wait_describe(addr: SocketAddr, url: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if describe_ok(addr, url, Duration::from_secs(1)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Waits until something accepts TCP connections at `addr`, at most `limit`.
pub fn wait_listening(addr: SocketAddr, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Three free local ports for a server: (RTSP TCP, RTP UDP even, RTCP = RTP + 1).
///
/// shardcast binds with SO_REUSEPORT, so a second server of the same user on a port in use binds
/// without error and silently shares the connections: the ports are checked free first, by binding
/// without SO_REUSEPORT.
pub fn free_ports(seed: u64) -> Option<(u16, u16, u16)> {
    // Below the usual ephemeral range (32768-60999), so no outgoing connection takes them meanwhile.
    for i in 0..2000u64 {
        let base = 20_000 + ((seed.wrapping_mul(2_654_435_761) + i * 4) % 12_000) as u16 / 4 * 4;
        let (rtsp, rtp, rtcp) = (base, base + 2, base + 3);
        let ok = TcpListener::bind((Ipv4Addr::LOCALHOST, rtsp)).is_ok()
            && TcpListener::bind((Ipv4Addr::UNSPECIFIED, rtsp)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, rtp)).is_ok()
            && UdpSocket::bind((Ipv4Addr::LOCALHOST, rtcp)).is_ok()
            && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, rtp)).is_ok()
            && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, rtcp)).is_ok();
        if ok {
            return Some((rtsp, rtp, rtcp));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_window_skips_the_ramp_and_the_stop() {
        let json = serde_json::json!({
            "started_unix_ms": 1000,
            "wall_s": 5.0,
            "readers": {"plays": 10, "latency_us": {"count": 3, "p50": 1, "p99": 2}},
            "self_check": {"loadgen_limited": false, "warnings": [], "cpu": {"process_avg_pct": 3.0}},
            "timeline": [
                {"t_s": 1, "readers_up": 4, "rx_packets": 10, "plays": 4},
                {"t_s": 2, "readers_up": 10, "rx_packets": 50, "plays": 6},
                {"t_s": 3, "readers_up": 10, "rx_packets": 100, "plays": 0},
                {"t_s": 4, "readers_up": 10, "rx_packets": 100, "plays": 0},
                {"t_s": 5, "readers_up": 10, "rx_packets": 30, "plays": 0}
            ]
        });
        let run = ReadRun::parse(&json);
        assert_eq!(run.plays, 10);
        assert_eq!(run.latency_us.map(|p| p.p99), Some(2));
        assert_eq!(
            run.steady_window(),
            Some((1_000_000_000 + 2_000_000_000, 1_000_000_000 + 4_000_000_000, 200))
        );
    }

    #[test]
    fn a_publish_report_keeps_the_time_to_record() {
        let json = serde_json::json!({
            "wall_s": 3.0,
            "publishers": {"records": 1, "packets": 500, "time_to_record_us": {"count": 1, "max": 12_500}}
        });
        let run = PublishRun::parse(&json);
        assert_eq!((run.records, run.packets), (1, 500));
        assert_eq!(run.time_to_record_ms, Some(12.5));
        let never = PublishRun::parse(&serde_json::json!({"publishers": {"records": 0}}));
        assert_eq!(never.time_to_record_ms, None);
    }

    #[test]
    fn free_ports_are_free_and_paired() {
        let (rtsp, rtp, rtcp) = free_ports(42).unwrap();
        assert_eq!(rtp % 2, 0);
        assert_eq!(rtcp, rtp + 1);
        assert!(TcpListener::bind((Ipv4Addr::LOCALHOST, rtsp)).is_ok());
    }
}
