//! The end of a run: every figure gathered from the cores, the self-check that tells whether loadgen
//! itself was the bottleneck, and their rendering as JSON and as a human summary.

use std::fmt::Write as _;

use serde::Serialize;

use crate::cli::ModeKind;
use crate::core::{CoreResult, Totals};
use crate::monitor::{fmt_us, CpuUse, Row, Watch};
use crate::plan::Plan;
use crate::stats::{ErrorCounts, Percentiles, PublisherReport, ReaderReport};

/// An executor thread busier than this on average is a bottleneck.
const CPU_AVG_LIMIT: f64 = 85.0;
/// An executor thread that waited for its CPU this much of the run shares it too much.
const WAIT_LIMIT: f64 = 10.0;

/// Everything a run measured, as printed by `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// loadgen's version.
    pub loadgen_version: &'static str,
    /// The settings of the run.
    pub config: Plan,
    /// Wall-clock start, in ms since the UNIX epoch.
    pub started_unix_ms: u64,
    /// Length of the run in seconds (start to stop order).
    pub wall_s: f64,
    /// Stopped early by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// Why the run was cut short, if it was.
    pub aborted: Option<String>,
    /// Reader figures (read and mixed modes).
    pub readers: Option<ReadersSummary>,
    /// Publisher figures (publish and mixed modes).
    pub publishers: Option<PublishersSummary>,
    /// Whether loadgen itself limited the figures.
    pub self_check: SelfCheck,
    /// One row per second.
    pub timeline: Vec<Row>,
}

/// The readers, together and one by one.
#[derive(Debug, Serialize)]
pub struct ReadersSummary {
    /// Reader slots.
    pub slots: usize,
    /// Sessions attempted.
    pub sessions: u64,
    /// Sessions that got a PLAY response.
    pub plays: u64,
    /// Readers playing when the run ended.
    pub playing_at_end: u64,
    /// Slots that never got a PLAY response.
    pub never_played: usize,
    /// Slots that never received an RTP packet.
    pub without_packets: usize,
    /// Sessions ended by churn.
    pub churned: u64,
    /// RTP packets received by all readers.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Average received bit rate of all readers together, bits/s.
    pub bitrate_bps: f64,
    /// RTCP packets received.
    pub rtcp_packets: u64,
    /// RTP packets missing.
    pub lost: u64,
    /// lost / (received + lost).
    pub loss_ratio: f64,
    /// Readers that lost at least one packet.
    pub readers_with_loss: usize,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets received out of order.
    pub reordered: u64,
    /// Packets too late to be placed.
    pub too_late: u64,
    /// Datagrams or frames that were not RTP.
    pub invalid: u64,
    /// One-way latency of every packet with a loadgen trailer (microseconds).
    pub latency_us: Option<Percentiles>,
    /// Why there is no latency, when there is none.
    pub latency_note: Option<String>,
    /// Trailers from the future (clocks out of step).
    pub negative_latency: u64,
    /// Packets sent before the reader's PLAY request (a server's cache replay): not latency samples.
    pub sent_before_play: u64,
    /// RFC 3550 jitter at the end of each session, across sessions (microseconds).
    pub jitter_us: Option<Percentiles>,
    /// Connect to PLAY response, per session (microseconds).
    pub time_to_play_us: Option<Percentiles>,
    /// Connect to first RTP packet, per session (microseconds).
    pub time_to_first_packet_us: Option<Percentiles>,
    /// Per frame, the first to the last reader of one loadgen core receiving it (microseconds).
    pub fanout_skew_us: Option<Percentiles>,
    /// Failed sessions.
    pub errors: u64,
    /// Failures by kind.
    pub error_kinds: ErrorCounts,
    /// Every reader slot.
    pub per_reader: Vec<ReaderReport>,
}

/// The publishers, together and one by one.
#[derive(Debug, Serialize)]
pub struct PublishersSummary {
    /// Publishers.
    pub count: usize,
    /// `synthetic` (loadgen's own streams) or `ffmpeg` (--source-file: frames, packets and bytes
    /// sent are not known to loadgen and stay 0).
    pub source: &'static str,
    /// Sessions attempted.
    pub sessions: u64,
    /// Sessions that got a RECORD response.
    pub records: u64,
    /// Publishers recording when the run ended.
    pub recording_at_end: u64,
    /// Frames sent.
    pub frames: u64,
    /// RTP packets sent.
    pub packets: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Average sent bit rate of all publishers together, bits/s.
    pub bitrate_bps: f64,
    /// Frames sent more than a frame interval late.
    pub late_frames: u64,
    /// Largest delay behind schedule (microseconds).
    pub max_lateness_us: u64,
    /// Schedule resets after falling a second behind.
    pub resyncs: u64,
    /// Connect to RECORD response (microseconds).
    pub time_to_record_us: Option<Percentiles>,
    /// Failed sessions.
    pub errors: u64,
    /// Failures by kind.
    pub error_kinds: ErrorCounts,
    /// Every publisher.
    pub per_publisher: Vec<PublisherReport>,
}

/// Whether loadgen was its own bottleneck.
#[derive(Debug, Serialize)]
pub struct SelfCheck {
    /// loadgen's CPU use.
    pub cpu: CpuUse,
    /// UDP datagrams dropped host-wide for full receive buffers during the run.
    pub udp_rcvbuf_errors_host: u64,
    /// Of which at loadgen's own sockets (sampled while they were open).
    pub udp_drops_own_sockets: u64,
    /// True when some figure may show loadgen's limits rather than the server's.
    pub loadgen_limited: bool,
    /// What to make of it.
    pub warnings: Vec<String>,
}

/// What the main thread passes on besides the cores' results.
pub struct RunInfo {
    pub plan: Plan,
    pub started_unix_ms: u64,
    pub wall_s: f64,
    pub interrupted: bool,
    pub aborted: Option<String>,
    pub watch: Watch,
    pub ffmpeg: Vec<PublisherReport>,
}

/// Builds the report from the cores' results.
pub fn build(info: RunInfo, cores: Vec<CoreResult>) -> Report {
    let RunInfo {
        plan,
        started_unix_ms,
        wall_s,
        interrupted,
        aborted,
        watch,
        ffmpeg,
    } = info;
    let mut totals = Totals::default();
    let mut readers = Vec::new();
    let mut publishers = ffmpeg;
    for p in &publishers {
        if let Some(us) = p.time_to_record_us {
            totals.time_to_record.saturating_record(us);
        }
    }
    for core in cores {
        totals.add(&core.totals);
        readers.extend(core.readers);
        publishers.extend(core.publishers);
    }
    readers.sort_by_key(|r| r.id);
    publishers.sort_by_key(|p| p.id);
    let wall = wall_s.max(1e-3);

    let readers_summary = (plan.mode != ModeKind::Publish).then(|| {
        let sum = |f: fn(&ReaderReport) -> u64| readers.iter().map(f).sum::<u64>();
        let packets = sum(|r| r.packets);
        let lost = sum(|r| r.lost);
        let bytes = sum(|r| r.bytes);
        let latency = Percentiles::of(&totals.latency);
        let latency_note = latency.is_none().then(|| {
            if packets == 0 {
                "no packet was received".to_owned()
            } else {
                "the packets carry no loadgen timestamp trailer: latency is measured only when loadgen \
                 publishes (mixed mode, or `loadgen publish` on the same host)"
                    .to_owned()
            }
        });
        ReadersSummary {
            slots: readers.len(),
            sessions: sum(|r| r.sessions),
            plays: sum(|r| r.plays),
            playing_at_end: watch.readers_up_at_end,
            never_played: readers.iter().filter(|r| r.plays == 0).count(),
            without_packets: readers.iter().filter(|r| r.packets == 0).count(),
            churned: sum(|r| r.churned),
            packets,
            bytes,
            bitrate_bps: (bytes as f64 * 8.0 / wall).round(),
            rtcp_packets: sum(|r| r.rtcp_packets),
            lost,
            loss_ratio: if packets + lost > 0 {
                lost as f64 / (packets + lost) as f64
            } else {
                0.0
            },
            readers_with_loss: readers.iter().filter(|r| r.lost > 0).count(),
            duplicates: sum(|r| r.duplicates),
            reordered: sum(|r| r.reordered),
            too_late: sum(|r| r.too_late),
            invalid: sum(|r| r.invalid),
            latency_us: latency,
            latency_note,
            negative_latency: sum(|r| r.negative_latency),
            sent_before_play: sum(|r| r.sent_before_play),
            jitter_us: Percentiles::of(&totals.jitter),
            time_to_play_us: Percentiles::of(&totals.time_to_play),
            time_to_first_packet_us: Percentiles::of(&totals.time_to_first_packet),
            fanout_skew_us: Percentiles::of(&totals.skew),
            errors: sum(|r| r.errors),
            error_kinds: totals.reader_errors.clone(),
            per_reader: readers,
        }
    });

    let publishers_summary = (plan.mode != ModeKind::Read).then(|| {
        let sum = |f: fn(&PublisherReport) -> u64| publishers.iter().map(f).sum::<u64>();
        let bytes = sum(|p| p.bytes);
        let mut error_kinds = totals.publisher_errors.clone();
        for p in publishers.iter().filter(|p| p.core.is_none()) {
            if let Some(e) = &p.last_error {
                error_kinds.add("ffmpeg exited".into(), e);
            }
        }
        PublishersSummary {
            count: publishers.len(),
            source: if plan.source_file.is_some() {
                "ffmpeg"
            } else {
                "synthetic"
            },
            sessions: sum(|p| p.sessions),
            records: sum(|p| p.records),
            recording_at_end: watch.publishers_up_at_end,
            frames: sum(|p| p.frames),
            packets: sum(|p| p.packets),
            bytes,
            bitrate_bps: (bytes as f64 * 8.0 / wall).round(),
            late_frames: sum(|p| p.late_frames),
            max_lateness_us: publishers.iter().map(|p| p.max_lateness_us).max().unwrap_or(0),
            resyncs: sum(|p| p.resyncs),
            time_to_record_us: Percentiles::of(&totals.time_to_record),
            errors: sum(|p| p.errors),
            error_kinds,
            per_publisher: publishers,
        }
    });

    let self_check = self_check(&plan, &watch, readers_summary.as_ref(), publishers_summary.as_ref());
    Report {
        loadgen_version: env!("CARGO_PKG_VERSION"),
        config: plan,
        started_unix_ms,
        wall_s: (wall_s * 1000.0).round() / 1000.0,
        interrupted,
        aborted,
        readers: readers_summary,
        publishers: publishers_summary,
        self_check,
        timeline: watch.timeline,
    }
}

fn self_check(
    plan: &Plan,
    watch: &Watch,
    readers: Option<&ReadersSummary>,
    publishers: Option<&PublishersSummary>,
) -> SelfCheck {
    let mut warnings = Vec::new();
    let mut limited = false;
    let cpu = &watch.cpu;
    let seconds = watch.timeline.len() as u64;
    let hot_core = cpu
        .per_core_avg_pct
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, &pct)| (i, pct));
    if let Some((core, pct)) = hot_core.filter(|&(_, pct)| pct >= CPU_AVG_LIMIT) {
        limited = true;
        warnings.push(format!(
            "loadgen's own CPU was saturated: its executor on CPU {} was busy {pct:.0}% of the run. Loss, \
             latency and jitter may show loadgen's limits, not the server's: give loadgen more cores \
             (--cores/--cpus, apart from the server's) or fewer sessions",
            plan.cpus.get(core).copied().unwrap_or(core)
        ));
    } else if cpu.saturated_seconds >= 2.max(seconds / 10) {
        limited = true;
        warnings.push(format!(
            "loadgen's own CPU was saturated (an executor at 95% or more) for {} of {seconds} s: figures from \
             those seconds may show loadgen's limits, not the server's",
            cpu.saturated_seconds
        ));
    }
    let waited = cpu
        .per_core_wait_pct
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .filter(|&(_, &pct)| pct >= WAIT_LIMIT);
    if let Some((core, pct)) = waited {
        limited = true;
        warnings.push(format!(
            "loadgen's executor on CPU {} waited for its CPU {pct:.0}% of the run (other programs, such as the \
             server, ran there): packets waited in loadgen's sockets meanwhile, so latency, jitter and skew \
             include that wait. Give loadgen CPUs of its own (--cpus) and the server others",
            plan.cpus.get(core).copied().unwrap_or(core)
        ));
    }
    if watch.own_drops > 0 {
        limited = true;
        warnings.push(format!(
            "the kernel dropped {} datagrams at loadgen's own UDP sockets (receive buffer full): they count as \
             loss here but the server did send them. Give loadgen more cores, or raise net.core.rmem_default",
            watch.own_drops
        ));
    }
    let elsewhere = watch.rcvbuf_errors.saturating_sub(watch.own_drops);
    if elsewhere > 0 {
        warnings.push(format!(
            "{elsewhere} UDP datagrams were dropped host-wide for full receive buffers outside loadgen's sockets \
             (the server's, if it runs on this host, or another program's)"
        ));
    }
    if let Some(p) = publishers {
        if p.resyncs > 0 || p.late_frames * 100 > p.frames.max(1) {
            limited = true;
            warnings.push(format!(
                "loadgen's publishers fell behind their schedule ({} late frames, up to {} behind{}): they sent \
                 less or later than asked, and latency includes that delay",
                p.late_frames,
                fmt_us(p.max_lateness_us),
                if p.resyncs > 0 {
                    format!(", {} resets skipping frames", p.resyncs)
                } else {
                    String::new()
                }
            ));
        }
    }
    if let Some(r) = readers {
        let not_found = r
            .error_kinds
            .0
            .get("setup: DESCRIBE answered 404")
            .map_or(0, |e| e.count);
        if plan.mode == ModeKind::Mixed && not_found > 0 {
            warnings.push(format!(
                "readers got 404 for paths loadgen was publishing ({not_found} times): if that went on after the \
                 publishers were recording, more than one server may be listening on this port (SO_REUSEPORT \
                 lets a second instance bind it silently, and the kernel splits connections between them)"
            ));
        }
        if r.negative_latency > 0 {
            warnings.push(format!(
                "{} packets arrived before they were sent by the publisher's clock: publisher and readers are on \
                 hosts whose clocks disagree, so latency figures are off by that difference",
                r.negative_latency
            ));
        }
    }
    SelfCheck {
        cpu: cpu.clone(),
        udp_rcvbuf_errors_host: watch.rcvbuf_errors,
        udp_drops_own_sockets: watch.own_drops,
        loadgen_limited: limited,
        warnings,
    }
}

/// The human summary.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let c = &report.config;
    let _ = writeln!(
        out,
        "loadgen {} — {:?} mode, {:.1} s on {} core(s) {:?}{}",
        report.loadgen_version,
        c.mode,
        report.wall_s,
        c.cpus.len(),
        c.cpus,
        if report.interrupted { " (interrupted)" } else { "" }
    );
    if let Some(reason) = &report.aborted {
        let _ = writeln!(out, "ABORTED: {reason}");
    }
    let pct = |p: &Option<Percentiles>| match p {
        Some(p) => format!(
            "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  (n={})",
            fmt_us(p.p50),
            fmt_us(p.p90),
            fmt_us(p.p99),
            fmt_us(p.p99_9),
            fmt_us(p.p99_99),
            fmt_us(p.max),
            p.count
        ),
        None => "n/a".to_owned(),
    };
    if let Some(p) = &report.publishers {
        let _ = writeln!(
            out,
            "\npublishers: {} to {} ({:?}), {} recording at the end, {} sessions, {} errors",
            p.count,
            c.publish_urls.first().map_or("", String::as_str),
            c.publish_transport,
            p.recording_at_end,
            p.sessions,
            p.errors
        );
        if p.source == "ffmpeg" {
            let _ = writeln!(
                out,
                "  sent        by ffmpeg from {} (not counted by loadgen)",
                c.source_file.as_deref().unwrap_or("?")
            );
        } else {
            let _ = writeln!(
                out,
                "  sent        {} frames, {} packets, {} bytes, {:.2} Mbit/s",
                p.frames,
                p.packets,
                p.bytes,
                p.bitrate_bps / 1e6
            );
        }
        let _ = writeln!(out, "  to RECORD   {}", pct(&p.time_to_record_us));
        if p.late_frames > 0 {
            let _ = writeln!(
                out,
                "  late frames {} (max {} behind)",
                p.late_frames,
                fmt_us(p.max_lateness_us)
            );
        }
        for (kind, e) in &p.error_kinds.0 {
            let _ = writeln!(out, "  error       {} x {kind} (e.g. {})", e.count, e.example);
        }
    }
    if let Some(r) = &report.readers {
        let _ = writeln!(
            out,
            "\nreaders: {} slots ({:?}), {} playing at the end, {} sessions, {} never played, {} without packets, {} churned",
            r.slots, c.read_transport, r.playing_at_end, r.sessions, r.never_played, r.without_packets, r.churned
        );
        let _ = writeln!(
            out,
            "  received    {} packets, {} bytes, {:.2} Mbit/s in all, {} RTCP",
            r.packets,
            r.bytes,
            r.bitrate_bps / 1e6,
            r.rtcp_packets
        );
        let _ = writeln!(
            out,
            "  lost        {} ({:.4}%), {} readers with loss; duplicates {}, reordered {}, too late {}, invalid {}",
            r.lost,
            r.loss_ratio * 100.0,
            r.readers_with_loss,
            r.duplicates,
            r.reordered,
            r.too_late,
            r.invalid
        );
        let _ = writeln!(out, "  latency     {}", pct(&r.latency_us));
        if r.sent_before_play > 0 {
            let _ = writeln!(
                out,
                "              ({} packets sent before the reader's PLAY, replayed from a server cache, left out)",
                r.sent_before_play
            );
        }
        if let Some(note) = &r.latency_note {
            let _ = writeln!(out, "              ({note})");
        }
        let _ = writeln!(out, "  jitter      {}", pct(&r.jitter_us));
        let _ = writeln!(out, "  to PLAY     {}", pct(&r.time_to_play_us));
        let _ = writeln!(out, "  to 1st pkt  {}", pct(&r.time_to_first_packet_us));
        let _ = writeln!(out, "  fan-out skew {}", pct(&r.fanout_skew_us));
        for (kind, e) in &r.error_kinds.0 {
            let _ = writeln!(out, "  error       {} x {kind} (e.g. {})", e.count, e.example);
        }
    }
    let s = &report.self_check;
    let _ = writeln!(
        out,
        "\nloadgen itself: CPU {:.0}% of its cores (per core avg {:?}%, max {:?}%, waiting for the CPU {:?}%), UDP \
         receive-buffer drops: {} host-wide, {} at loadgen's sockets",
        s.cpu.process_avg_pct,
        s.cpu.per_core_avg_pct,
        s.cpu.per_core_max_pct,
        s.cpu.per_core_wait_pct,
        s.udp_rcvbuf_errors_host,
        s.udp_drops_own_sockets
    );
    if s.warnings.is_empty() {
        let _ = writeln!(out, "  OK: loadgen was not the bottleneck");
    }
    for w in &s.warnings {
        let _ = writeln!(out, "  WARNING: {w}");
    }
    out
}
