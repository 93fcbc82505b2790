//! The results of one harness run: the table with its ratios, the targets (pass/miss, never fatal),
//! and the JSON document.

use std::fmt::Write as _;

use serde::Serialize;

use crate::harness::{LimitRun, Scenario, ServerRun, SetupRun};
use crate::limit::Transport;
use crate::sys::Machine;
use shardcast_loadgen::units::format_rate;

/// Everything one invocation measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// UTC date of the run.
    pub date: String,
    /// UTC time of the run, HHMMSS.
    pub time_utc: String,
    /// The command line.
    pub command: String,
    /// CI-sized run.
    pub smoke: bool,
    /// Where it ran.
    pub machine: Machine,
    /// Length of each loaded run, seconds.
    pub duration_s: f64,
    /// RTP packet size.
    pub packet_size: usize,
    /// CPUs shardcast ran on in the scenario runs.
    pub server_cpus: Vec<usize>,
    /// CPUs loadgen ran on.
    pub loadgen_cpus: Vec<usize>,
    /// The bare fan-out program, per scenario.
    pub limit: Vec<LimitRun>,
    /// shardcast, per scenario.
    pub shardcast: Vec<ServerRun>,
    /// The peer, if one was given.
    pub peer: Option<PeerResults>,
    /// Session set-up rate and memory per idle reader, per transport.
    pub setup: Vec<SetupRun>,
    /// One executor against two.
    pub scaling: Option<Scaling>,
    /// The table, one row per scenario.
    pub rows: Vec<TableRow>,
    /// The targets.
    pub targets: Vec<TargetCheck>,
    /// Plot files and what their lines are.
    pub plots: Vec<PlotInfo>,
}

/// The peer server's runs.
#[derive(Debug, Serialize)]
pub struct PeerResults {
    /// How it was started.
    pub command: String,
    /// Its stream.
    pub url: String,
    /// Why it has no figures.
    pub error: Option<String>,
    /// One-reader runs per transport: what the peer spends besides fan-out (its own source, encoding).
    pub baseline: Vec<ServerRun>,
    /// The loaded runs.
    pub runs: Vec<ServerRun>,
    /// Times the peer was found dead before a run and started again.
    pub restarts: u32,
}

/// One executor against two on the same scenario.
#[derive(Debug, Serialize)]
pub struct Scaling {
    /// The load.
    pub scenario: Scenario,
    /// shardcast on one CPU.
    pub one: ServerRun,
    /// Capacity (delivery rate at which the busiest core is full) on two CPUs.
    pub two_capacity_per_s: Option<f64>,
    /// Capacity on one CPU.
    pub one_capacity_per_s: Option<f64>,
    /// CPU per packet-reader on two CPUs, µs.
    pub two_cost_us: Option<f64>,
    /// CPU per packet-reader on one CPU, µs.
    pub one_cost_us: Option<f64>,
    /// two / one.
    pub ratio: Option<f64>,
    /// Why the ratio does not measure scaling (a run was overloaded).
    pub invalid: Option<String>,
}

/// A plot and its legend.
#[derive(Debug, Serialize)]
pub struct PlotInfo {
    /// The PNG file.
    pub file: String,
    /// Whether text (title, axes, legend) could be drawn: it needs a TrueType font on the machine.
    pub has_text: bool,
    /// Each line's name and colour.
    pub legend: Vec<(String, String)>,
}

/// One scenario's figures side by side.
#[derive(Debug, Clone, Serialize)]
pub struct TableRow {
    /// The load.
    pub scenario: Scenario,
    /// Limit: sender CPU per delivered (packet × reader), µs.
    pub limit_us: Option<f64>,
    /// shardcast: server CPU per delivered (packet × reader), µs.
    pub shardcast_us: Option<f64>,
    /// shardcast / limit.
    pub ratio_to_limit: Option<f64>,
    /// Limit loss ratio.
    pub limit_loss: Option<f64>,
    /// shardcast loss ratio (loadgen).
    pub loss: Option<f64>,
    /// Latency p50, µs.
    pub latency_p50_us: Option<u64>,
    /// Latency p99, µs.
    pub latency_p99_us: Option<u64>,
    /// Fan-out skew p99, µs.
    pub skew_p99_us: Option<u64>,
    /// Server RSS per reader (with traffic), KiB.
    pub rss_per_reader_kib: Option<f64>,
    /// Readers that played.
    pub plays: Option<u64>,
    /// loadgen flagged itself as a possible bottleneck.
    pub loadgen_limited: bool,
    /// Peer: marginal CPU per delivered (packet × reader) above its one-reader run, µs.
    pub peer_us: Option<f64>,
    /// peer / shardcast, both marginal (shardcast's `cost_us_net`).
    pub peer_ratio: Option<f64>,
}

/// A target and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    /// What is targeted.
    pub name: String,
    /// The bound.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// `pass`, `miss` or `n/a`.
    pub status: String,
    /// Caveats.
    pub note: String,
}

/// Marginal cost of a peer run above the one-reader baseline of the same transport, µs.
pub fn peer_marginal_us(run: &ServerRun, baseline: Option<&ServerRun>) -> Option<f64> {
    if run.window_s <= 0.0 || run.delivered == 0 {
        return None;
    }
    let cpu_rate = run.cpu_s / run.window_s;
    let (base_cpu, base_rate) = match baseline {
        Some(b) if b.window_s > 0.0 && b.error.is_none() => (b.cpu_s / b.window_s, b.delivered_per_s),
        _ => (0.0, 0.0),
    };
    let extra = run.delivered_per_s - base_rate;
    (extra > 0.0).then(|| (cpu_rate - base_cpu).max(0.0) / extra * 1e6)
}

/// Builds the table rows.
pub fn rows(limit: &[LimitRun], shardcast: &[ServerRun], peer: Option<&PeerResults>) -> Vec<TableRow> {
    shardcast
        .iter()
        .filter_map(|run| {
            let sc = run.scenario?;
            let lim = limit.iter().find(|l| l.scenario == sc);
            let read = run.read.as_ref();
            let limit_us = lim.and_then(|l| l.cost_us);
            let shardcast_us = run.cost_us.filter(|_| run.error.is_none());
            let peer_us = peer.and_then(|p| {
                let r = p.runs.iter().find(|r| {
                    r.scenario
                        .is_some_and(|s| s.transport == sc.transport && s.readers == sc.readers)
                })?;
                let base = p
                    .baseline
                    .iter()
                    .find(|b| b.scenario.is_some_and(|s| s.transport == sc.transport));
                if r.error.is_some() {
                    return None;
                }
                peer_marginal_us(r, base)
            });
            Some(TableRow {
                scenario: sc,
                limit_us,
                shardcast_us,
                ratio_to_limit: ratio(shardcast_us, limit_us),
                limit_loss: lim.and_then(|l| l.loss),
                loss: read.map(|r| r.loss_ratio),
                latency_p50_us: read.and_then(|r| r.latency_us).map(|p| p.p50),
                latency_p99_us: read.and_then(|r| r.latency_us).map(|p| p.p99),
                skew_p99_us: read.and_then(|r| r.fanout_skew_us).map(|p| p.p99),
                rss_per_reader_kib: run.rss_per_reader_kib,
                plays: read.map(|r| r.plays),
                loadgen_limited: read.is_some_and(|r| r.loadgen_limited),
                peer_us,
                // Both marginal: the peer's above its one-reader run, shardcast's above its CPU use
                // before the readers joined.
                peer_ratio: ratio(peer_us, run.cost_us_net.filter(|_| run.error.is_none())),
            })
        })
        .collect()
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn check(name: &str, target: &str, measured: String, pass: Option<bool>, note: String) -> TargetCheck {
    TargetCheck {
        name: name.into(),
        target: target.into(),
        measured,
        status: match pass {
            Some(true) => "pass",
            Some(false) => "miss",
            None => "n/a",
        }
        .into(),
        note,
    }
}

/// The readers count in `rows` nearest `wanted`.
fn nearest(rows: &[&TableRow], wanted: usize) -> Option<usize> {
    rows.iter()
        .map(|r| r.scenario.readers)
        .min_by_key(|n| n.abs_diff(wanted))
}

/// Checks the targets of issue 6. They are reported, never enforced.
pub fn targets(rows: &[TableRow], setup: &[SetupRun], scaling: Option<&Scaling>) -> Vec<TargetCheck> {
    let mut out = Vec::new();

    let udp: Vec<&TableRow> = rows
        .iter()
        .filter(|r| r.scenario.transport == Transport::Udp && r.ratio_to_limit.is_some())
        .collect();
    let worst = udp
        .iter()
        .filter_map(|r| r.ratio_to_limit)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let each: Vec<String> = udp
        .iter()
        .map(|r| format!("{}: {:.2}", short(&r.scenario), r.ratio_to_limit.unwrap_or(0.0)))
        .collect();
    out.push(check(
        "UDP fan-out CPU against the bare sendmmsg limit",
        "shardcast <= 1.10 x limit",
        worst.map_or("not measured".into(), |w| {
            format!("worst {w:.2}x ({})", each.join(", "))
        }),
        worst.map(|w| w <= 1.10),
        String::new(),
    ));

    let tcp: Vec<&TableRow> = rows
        .iter()
        .filter(|r| r.scenario.transport == Transport::Tcp && r.shardcast_us.is_some())
        .collect();
    let n = nearest(&tcp, 1000);
    let at: Vec<&&TableRow> = tcp.iter().filter(|r| Some(r.scenario.readers) == n).collect();
    let worst = at
        .iter()
        .filter_map(|r| r.shardcast_us)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    out.push(check(
        "TCP fan-out CPU per packet-reader at 1000 readers",
        "<= 0.5 us",
        worst.map_or("not measured".into(), |w| {
            format!("{w:.2} us at {} readers", n.unwrap_or(0))
        }),
        worst.map(|w| w <= 0.5),
        match n {
            Some(n) if n != 1000 => format!("measured at {n} readers, the nearest run to 1000"),
            _ => String::new(),
        },
    ));

    let skew: Vec<&TableRow> = rows.iter().filter(|r| r.skew_p99_us.is_some()).collect();
    let n = skew
        .iter()
        .map(|r| r.scenario.readers)
        .filter(|&n| n >= 2000)
        .min()
        .or_else(|| skew.iter().map(|r| r.scenario.readers).max());
    let at: Vec<&&TableRow> = skew.iter().filter(|r| Some(r.scenario.readers) == n).collect();
    let worst = at.iter().filter_map(|r| r.skew_p99_us).max();
    let each: Vec<String> = at
        .iter()
        .map(|r| {
            format!(
                "{} {:.2} ms",
                short(&r.scenario),
                r.skew_p99_us.unwrap_or(0) as f64 / 1000.0
            )
        })
        .collect();
    out.push(check(
        "Per-frame fan-out skew p99 at 2000 readers (loadgen fanout_skew_us)",
        "< 2 ms",
        worst.map_or("not measured".into(), |_| each.join(", ")),
        worst.map(|w| w < 2000),
        match n {
            Some(n) if n < 2000 => format!("measured at {n} readers (the largest run), not 2000"),
            _ => String::new(),
        },
    ));

    let mem: Vec<&SetupRun> = setup.iter().filter(|s| s.rss_per_idle_reader_kib.is_some()).collect();
    let worst = mem
        .iter()
        .filter_map(|s| s.rss_per_idle_reader_kib)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    out.push(check(
        "Server memory per idle reader (VmRSS delta)",
        "<= 8 KiB",
        worst.map_or("not measured".into(), |_| {
            mem.iter()
                .map(|s| {
                    format!(
                        "{} {:.1} KiB ({} readers)",
                        s.transport.map_or(String::new(), |t| t.to_string()),
                        s.rss_per_idle_reader_kib.unwrap_or(0.0),
                        s.plays
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
        worst.map(|w| w <= 8.0),
        String::new(),
    ));

    let rate: Vec<&SetupRun> = setup.iter().filter(|s| s.sessions_per_core_s.is_some()).collect();
    let worst = rate
        .iter()
        .filter_map(|s| s.sessions_per_core_s)
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
    out.push(check(
        "Session set-up rate per core (OPTIONS/DESCRIBE/SETUP/PLAY)",
        ">= 5000 sessions/s",
        worst.map_or("not measured".into(), |_| {
            rate.iter()
                .map(|s| {
                    format!(
                        "{} {:.0}/s per core-second ({:.0}/s wall)",
                        s.transport.map_or(String::new(), |t| t.to_string()),
                        s.sessions_per_core_s.unwrap_or(0.0),
                        s.sessions_per_s_wall.unwrap_or(0.0)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        }),
        worst.map(|w| w >= 5000.0),
        "sessions per second of server CPU, one executor; the wall rate is bounded by loadgen on the other core".into(),
    ));

    let ratio = scaling.and_then(|s| s.ratio);
    let invalid = scaling.and_then(|s| s.invalid.clone());
    out.push(check(
        "Scaling from 1 to 2 executors",
        "2 cores >= 1.8 x 1 core",
        ratio.map_or("not measured".into(), |r| {
            format!("{r:.2}x ({})", scaling.map(|s| short(&s.scenario)).unwrap_or_default())
        }),
        ratio.filter(|_| invalid.is_none()).map(|r| r >= 1.8),
        match (invalid, scaling) {
            (Some(why), _) => format!("not a measure of scaling: {why}"),
            (None, Some(s)) if s.ratio.is_some_and(|r| r > 2.1) => format!(
                "capacity = delivered packet-readers/s divided by the busiest server thread's CPU share; above 2x \
                 because one CPU spent more per packet-reader ({} against {} µs) sharing its only CPU with \
                 loadgen: read it as 2x",
                f(s.one_cost_us, 2),
                f(s.two_cost_us, 2)
            ),
            _ => "capacity = delivered packet-readers/s divided by the busiest server thread's CPU share".into(),
        },
    ));
    out
}

fn short(s: &Scenario) -> String {
    format!("{} {} rd {}", s.transport, s.readers, format_rate(s.bitrate))
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

fn ms(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", v as f64 / 1000.0))
}

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.3}%", v * 100.0))
}

/// The table as Markdown.
pub fn markdown_table(rows: &[TableRow], with_peer: bool) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "| transport | bitrate | readers | limit µs | shardcast µs | shardcast / limit | limit loss | shardcast loss | latency p50 / p99 ms | skew p99 ms | RSS KiB / reader |"
    );
    if with_peer {
        out.push_str(" peer µs | peer / shardcast |");
    }
    out.push('\n');
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|");
    if with_peer {
        out.push_str("---|---|");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} / {} | {} | {} |",
            r.scenario.transport,
            format_rate(r.scenario.bitrate),
            r.scenario.readers,
            match r.plays {
                Some(p) if p < r.scenario.readers as u64 => format!(" ({p} played)"),
                _ => String::new(),
            },
            f(r.limit_us, 3),
            f(r.shardcast_us, 3),
            f(r.ratio_to_limit, 2),
            pct(r.limit_loss),
            pct(r.loss),
            ms(r.latency_p50_us),
            ms(r.latency_p99_us),
            ms(r.skew_p99_us),
            f(r.rss_per_reader_kib, 1),
        );
        if with_peer {
            let _ = write!(out, " {} | {} |", f(r.peer_us, 3), f(r.peer_ratio, 2));
        }
        out.push('\n');
    }
    out
}

/// The targets as Markdown.
pub fn markdown_targets(targets: &[TargetCheck]) -> String {
    let mut out = String::from("| target | bound | measured | result |\n|---|---|---|---|\n");
    for t in targets {
        let note = if t.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.note)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | **{}** |",
            t.name, t.target, t.measured, note, t.status
        );
    }
    out
}

/// The setup runs as Markdown.
pub fn markdown_setup(setup: &[SetupRun]) -> String {
    let mut out = String::from(
        "| transport | readers | played | server CPU s | sessions / core-second | sessions / s (wall) | time to PLAY p50 / p99 ms | RSS KiB / idle reader |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in setup {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {} | {} | {} / {} | {} |",
            s.transport.map_or(String::new(), |t| t.to_string()),
            s.readers,
            s.plays,
            s.setup_cpu_s,
            f(s.sessions_per_core_s, 0),
            f(s.sessions_per_s_wall, 0),
            ms(s.time_to_play_us.map(|p| p.p50)),
            ms(s.time_to_play_us.map(|p| p.p99)),
            f(s.rss_per_idle_reader_kib, 2),
        );
    }
    out
}

/// The whole report as Markdown (the same text the harness prints).
pub fn markdown(results: &Results) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "Run {} {} UTC on {} CPU(s) ({}), Linux {}, {} MiB; load average {:.2} at start; server CPUs {:?}, loadgen CPUs {:?}; {} s per run; {}-byte packets.\n",
        results.date,
        results.time_utc,
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.memory_mib,
        m.loadavg_1m,
        results.server_cpus,
        results.loadgen_cpus,
        results.duration_s,
        results.packet_size
    );
    out.push_str(&markdown_table(&results.rows, results.peer.is_some()));
    out.push('\n');
    out.push_str(&markdown_setup(&results.setup));
    out.push('\n');
    if let Some(s) = &results.scaling {
        let _ = writeln!(
            out,
            "Scaling ({}): capacity on 1 CPU {} packet-readers/s ({} µs each), on 2 CPUs {} ({} µs each): {}x{}.\n",
            short(&s.scenario),
            f(s.one_capacity_per_s, 0),
            f(s.one_cost_us, 3),
            f(s.two_capacity_per_s, 0),
            f(s.two_cost_us, 3),
            f(s.ratio, 2),
            s.invalid.as_deref().map(|w| format!(" — {w}")).unwrap_or_default()
        );
    }
    if let Some(p) = &results.peer {
        let _ = writeln!(
            out,
            "Peer `{}` ({}), restarted {} time(s) after dying:\n",
            p.command, p.url, p.restarts
        );
        for r in &p.runs {
            let Some(sc) = r.scenario else { continue };
            let base = p
                .baseline
                .iter()
                .find(|b| b.scenario.is_some_and(|s| s.transport == sc.transport));
            let read = r.read.as_ref();
            let _ = writeln!(
                out,
                "- {} {} readers: {} played, {} packet-readers/s, marginal {} µs per packet-reader, loss {}{}",
                sc.transport,
                sc.readers,
                read.map_or(0, |x| x.plays),
                f(Some(r.delivered_per_s), 0),
                f(peer_marginal_us(r, base), 3),
                pct(read.map(|x| x.loss_ratio)),
                read.and_then(|x| x.error_kinds.first())
                    .map(|(k, n)| format!("; errors: {k} ×{n}"))
                    .unwrap_or_default()
            );
        }
        out.push('\n');
    }
    out.push_str(&markdown_targets(&results.targets));
    let errors = errors(results);
    if !errors.is_empty() {
        out.push_str("\nRuns with errors:\n\n");
        for e in errors {
            let _ = writeln!(out, "- {e}");
        }
    }
    let warnings: Vec<String> = results
        .shardcast
        .iter()
        .filter_map(|r| {
            let read = r.read.as_ref()?;
            (!read.warnings.is_empty()).then(|| {
                format!(
                    "{}: loadgen: {}",
                    r.scenario.map(|s| s.label()).unwrap_or_default(),
                    read.warnings.join(" / ")
                )
            })
        })
        .collect();
    if !warnings.is_empty() {
        out.push_str("\nloadgen self-check warnings:\n\n");
        for w in warnings {
            let _ = writeln!(out, "- {w}");
        }
    }
    out
}

/// Every run's error, labelled.
pub fn errors(results: &Results) -> Vec<String> {
    let mut out = Vec::new();
    for l in &results.limit {
        if let Some(e) = &l.error {
            out.push(format!("limit {}: {e}", l.scenario.label()));
        }
    }
    let label = |r: &ServerRun| r.scenario.map(|s| s.label()).unwrap_or_default();
    for r in &results.shardcast {
        if let Some(e) = &r.error {
            out.push(format!("shardcast {}: {e}", label(r)));
        }
    }
    if let Some(p) = &results.peer {
        if let Some(e) = &p.error {
            out.push(format!("peer: {e}"));
        }
        for r in p.baseline.iter().chain(&p.runs) {
            if let Some(e) = &r.error {
                out.push(format!("peer {}: {e}", label(r)));
            }
        }
    }
    for s in &results.setup {
        if let Some(e) = &s.error {
            out.push(format!(
                "setup {}: {e}",
                s.transport.map(|t| t.to_string()).unwrap_or_default()
            ));
        }
    }
    if let Some(s) = &results.scaling {
        if let Some(e) = &s.one.error {
            out.push(format!("scaling (1 CPU) {}: {e}", s.scenario.label()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(transport: Transport, readers: usize, limit: f64, shardcast: f64, skew: u64) -> TableRow {
        TableRow {
            scenario: Scenario {
                transport,
                readers,
                bitrate: 2_000_000,
            },
            limit_us: Some(limit),
            shardcast_us: Some(shardcast),
            ratio_to_limit: Some(shardcast / limit),
            limit_loss: Some(0.0),
            loss: Some(0.0),
            latency_p50_us: Some(500),
            latency_p99_us: Some(1500),
            skew_p99_us: Some(skew),
            rss_per_reader_kib: Some(3.0),
            plays: Some(readers as u64),
            loadgen_limited: false,
            peer_us: None,
            peer_ratio: None,
        }
    }

    #[test]
    fn targets_pass_miss_and_not_measured() {
        let rows = vec![
            row(Transport::Udp, 100, 1.0, 1.05, 900),
            row(Transport::Udp, 1000, 1.0, 1.2, 1500),
            row(Transport::Tcp, 1000, 0.3, 0.4, 2500),
        ];
        let t = targets(&rows, &[], None);
        assert_eq!(t[0].status, "miss", "{:?}", t[0]);
        assert!(t[0].measured.starts_with("worst 1.20x"));
        assert_eq!(t[1].status, "pass");
        assert_eq!(t[2].status, "miss");
        assert!(t[2].note.contains("1000 readers"));
        assert_eq!(t[3].status, "n/a");
        assert_eq!(t[5].status, "n/a");
        let md = markdown_table(&rows, false);
        assert_eq!(md.lines().count(), 5);
    }

    #[test]
    fn peer_marginal_cost_removes_the_baseline() {
        let base = ServerRun {
            window_s: 2.0,
            cpu_s: 0.2,
            delivered: 200,
            delivered_per_s: 100.0,
            ..ServerRun::default()
        };
        let run = ServerRun {
            window_s: 2.0,
            cpu_s: 0.4,
            delivered: 20_200,
            delivered_per_s: 10_100.0,
            ..ServerRun::default()
        };
        let us = peer_marginal_us(&run, Some(&base)).unwrap();
        assert!((us - 10.0).abs() < 1e-9, "{us}");
    }
}
