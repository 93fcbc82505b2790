//! `shardcast-bench`: the fan-out benchmark harness (docs/benchmarks.md).
//!
//! ```sh
//! cargo run -p shardcast-bench --release -- --readers 100,500,1000 --rates 2M
//! cargo run -p shardcast-bench --release -- --smoke          # CI: seconds, tiny N, no timing checks
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use shardcast_bench::harness::{self, Bins, Peer, Scenario, Settings};
use shardcast_bench::limit::Transport;
use shardcast_bench::plot::{self, Series, PALETTE};
use shardcast_bench::report::{self, PeerResults, PlotInfo, Results, Scaling};
use shardcast_bench::sys;
use shardcast_loadgen::units::{format_rate, parse_duration, parse_rate};

/// Fan-out benchmark: the bare sendmmsg/writev limit, shardcast under loadgen, and optionally a
/// peer server, per transport × readers × bitrate; then set-up rate, memory per idle reader and
/// 1-to-2-core scaling. Writes a table, JSON and a PNG plot under results/DATE/.
#[derive(Debug, Parser)]
#[command(name = "shardcast-bench", version, about)]
struct Cli {
    /// CI-sized run: a few readers, short runs; checks the harness works end to end, asserts no timing.
    #[arg(long)]
    smoke: bool,
    /// Output folder (default: bench/results/DATE).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Reader counts.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,3000")]
    readers: Vec<usize>,
    /// Stream bitrates.
    #[arg(long, value_delimiter = ',', default_value = "2M", value_parser = parse_rate)]
    rates: Vec<u64>,
    /// Transports.
    #[arg(long, value_delimiter = ',', default_value = "udp,tcp")]
    transports: Vec<Transport>,
    /// Length of each loaded run.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// RTP packet size, header included.
    #[arg(long, default_value_t = 1200)]
    packet_size: usize,
    /// Readers of the set-up rate run (default: the largest of --readers).
    #[arg(long)]
    setup_readers: Option<usize>,
    /// Readers of the 1-core against 2-core run (default: the largest of --readers up to 500, so
    /// that one core shared with loadgen is not overloaded).
    #[arg(long)]
    scaling_readers: Option<usize>,
    /// CPUs for shardcast (and the limit's sender) in the scenario runs (default: every CPU this
    /// process may use).
    #[arg(long, value_delimiter = ',')]
    server_cpus: Option<Vec<usize>>,
    /// CPUs for loadgen (and the limit's receiver) (default: every CPU this process may use).
    #[arg(long, value_delimiter = ',')]
    loadgen_cpus: Option<Vec<usize>>,
    /// A peer server to run under the same load: its start command (run with `sh -c`).
    #[arg(long, requires = "peer_url")]
    peer_cmd: Option<String>,
    /// The peer's stream URL (it serves its own stream: loadgen `read`).
    #[arg(long, requires = "peer_cmd")]
    peer_url: Option<String>,
    /// Use the binaries in target/release as they are (no cargo build).
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shardcast-bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn say(m: &str) {
    eprintln!("shardcast-bench: {m}");
}

/// Runs everything; `Ok(false)` when some run failed (figures are still written).
fn run(mut cli: Cli) -> Result<bool, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("no workspace folder")?
        .to_path_buf();
    if cli.smoke {
        cli.readers = vec![4];
        cli.rates = vec![500_000];
        cli.duration = Duration::from_secs(2);
    }
    if cli.readers.is_empty() || cli.rates.is_empty() || cli.transports.is_empty() {
        return Err("--readers, --rates and --transports need at least one value each".into());
    }
    cli.readers.sort_unstable();
    cli.readers.dedup();
    let started = Instant::now();
    let (date, time) = sys::utc_date_time(sys::unix_ns() / 1_000_000_000);
    let out = cli
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("bench").join("results").join(&date));
    let stem = format!("{time}{}", if cli.smoke { "-smoke" } else { "" });
    let logs = out.join(format!("{stem}-logs"));
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;

    if !cli.no_build {
        say("building shardcast, loadgen and limit (release)");
        harness::build(&workspace)?;
    }
    let bins = Bins::beside_self()?;
    if let Some(missing) = bins.missing() {
        return Err(format!(
            "{} is missing: build it, or run without --no-build",
            missing.display()
        ));
    }

    let fd_limit = sys::raise_fd_limit();
    let machine = sys::Machine::describe(fd_limit);
    let cpus = machine.allowed_cpus.clone();
    let server_cpus = cli.server_cpus.clone().unwrap_or_else(|| cpus.clone());
    let loadgen_cpus = cli.loadgen_cpus.clone().unwrap_or_else(|| cpus.clone());
    for (name, list) in [("--server-cpus", &server_cpus), ("--loadgen-cpus", &loadgen_cpus)] {
        if let Some(c) = list.iter().find(|c| !cpus.contains(c)) {
            return Err(format!("{name}: CPU {c} is not available (available: {cpus:?})"));
        }
        if list.is_empty() {
            return Err(format!("{name}: give at least one CPU"));
        }
    }
    let biggest = cli.readers.iter().copied().max().unwrap_or(0);
    // loadgen: a TCP connection and 2 UDP sockets per UDP reader; the limit: one socket per reader.
    if biggest * 3 + 200 > usize::try_from(fd_limit).unwrap_or(usize::MAX) {
        say(&format!(
            "warning: {biggest} readers need about {} open files, the limit is {fd_limit}: the largest runs may fail",
            biggest * 3 + 200
        ));
    }
    let settings = Settings {
        logs: logs.clone(),
        duration: cli.duration,
        packet_size: cli.packet_size,
        server_cpus: server_cpus.clone(),
        loadgen_cpus: loadgen_cpus.clone(),
        smoke: cli.smoke,
    };

    let mut scenarios = Vec::new();
    for &transport in &cli.transports {
        for &bitrate in &cli.rates {
            for &readers in &cli.readers {
                scenarios.push(Scenario {
                    transport,
                    readers,
                    bitrate,
                });
            }
        }
    }
    let mut limit_runs = Vec::new();
    let mut shardcast_runs = Vec::new();
    for (i, &sc) in scenarios.iter().enumerate() {
        let step = format!("[{}/{}] {}", i + 1, scenarios.len(), sc.label());
        let l = harness::run_limit(&bins, &settings, sc);
        say(&format!(
            "{step}: limit {} µs/packet-reader{}",
            fmt(l.cost_us, 3),
            l.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
        ));
        limit_runs.push(l);
        let r = harness::run_shardcast(&bins, &settings, sc, &server_cpus);
        say(&format!(
            "{step}: shardcast {} µs/packet-reader, {} played{}",
            fmt(r.cost_us, 3),
            r.read.as_ref().map_or(0, |x| x.plays),
            r.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
        ));
        shardcast_runs.push(r);
    }

    let peer = match (&cli.peer_cmd, &cli.peer_url) {
        (Some(cmd), Some(url)) => Some(run_peer(&bins, &settings, cmd, url, &cli, &server_cpus)),
        _ => None,
    };

    let mut setup = Vec::new();
    let setup_readers = cli
        .setup_readers
        .unwrap_or(if cli.smoke { 20 } else { biggest.max(100) });
    let setup_transports: Vec<Transport> = if cli.smoke {
        vec![Transport::Tcp]
    } else {
        cli.transports.clone()
    };
    for t in setup_transports {
        let s = harness::run_setup(&bins, &settings, t, setup_readers);
        say(&format!(
            "setup {t} {setup_readers}: {} sessions per core-second, {} KiB per idle reader{}",
            fmt(s.sessions_per_core_s, 0),
            fmt(s.rss_per_idle_reader_kib, 2),
            s.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
        ));
        setup.push(s);
    }

    let scaling = if cli.smoke || server_cpus.len() < 2 {
        None
    } else {
        let n = cli.scaling_readers.unwrap_or_else(|| {
            cli.readers
                .iter()
                .copied()
                .filter(|&n| n <= 500)
                .max()
                .unwrap_or(cli.readers[0])
        });
        let transport = if cli.transports.contains(&Transport::Udp) {
            Transport::Udp
        } else {
            cli.transports[0]
        };
        let sc = Scenario {
            transport,
            readers: n,
            bitrate: cli.rates[0],
        };
        let two = match shardcast_runs.iter().find(|r| r.scenario == Some(sc)) {
            Some(r) => r.clone(),
            None => harness::run_shardcast(&bins, &settings, sc, &server_cpus),
        };
        let one = harness::run_shardcast(&bins, &settings, sc, &server_cpus[..1]);
        let ratio = match (two.capacity_per_s, one.capacity_per_s) {
            (Some(a), Some(b)) if b > 0.0 && two.error.is_none() && one.error.is_none() => Some(a / b),
            _ => None,
        };
        // The capacity estimate assumes the cost per packet-reader does not depend on the load: a run
        // that lost packets or never reached a steady state was overloaded, and its estimate is not one.
        let overloaded: Vec<String> = [("2 CPUs", &two), ("1 CPU", &one)]
            .iter()
            .filter_map(|(name, r)| {
                let loss = r.read.as_ref().map_or(1.0, |x| x.loss_ratio);
                (loss > 0.01 || r.window != "steady")
                    .then(|| format!("{name}: loss {:.1}%, {} window", loss * 100.0, r.window))
            })
            .collect();
        let invalid = (!overloaded.is_empty()).then(|| {
            format!(
                "overloaded ({}): give fewer --scaling-readers or CPUs of its own to loadgen",
                overloaded.join("; ")
            )
        });
        say(&format!(
            "scaling {}: 2 cores / 1 core = {}{}",
            sc.label(),
            fmt(ratio, 2),
            invalid.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
        ));
        Some(Scaling {
            scenario: sc,
            two_capacity_per_s: two.capacity_per_s,
            one_capacity_per_s: one.capacity_per_s,
            two_cost_us: two.cost_us,
            one_cost_us: one.cost_us,
            one,
            ratio,
            invalid,
        })
    };

    let rows = report::rows(&limit_runs, &shardcast_runs, peer.as_ref());
    let targets = report::targets(&rows, &setup, scaling.as_ref());
    let mut results = Results {
        date,
        time_utc: time,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        smoke: cli.smoke,
        machine,
        duration_s: cli.duration.as_secs_f64(),
        packet_size: cli.packet_size,
        server_cpus: server_cpus.clone(),
        loadgen_cpus,
        limit: limit_runs,
        shardcast: shardcast_runs,
        peer,
        setup,
        scaling,
        rows,
        targets,
        plots: Vec::new(),
    };
    results.plots = plots(&results, &cli.rates, &out, &stem);

    let text = report::markdown(&results);
    println!("{text}");
    let json_path = out.join(format!("{stem}-results.json"));
    let json = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&json_path, json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    let md_path = out.join(format!("{stem}-report.md"));
    std::fs::write(&md_path, &text).map_err(|e| format!("{}: {e}", md_path.display()))?;
    say(&format!(
        "wrote {}, {} and {} plot(s) in {:.0} s (logs: {})",
        json_path.display(),
        md_path.display(),
        results.plots.len(),
        started.elapsed().as_secs_f64(),
        logs.display()
    ));
    for p in &results.plots {
        say(&format!("plot {}", p.file));
    }
    let errors = report::errors(&results);
    let incomplete = results
        .rows
        .iter()
        .any(|r| r.limit_us.is_none() || r.shardcast_us.is_none())
        || results.setup.iter().any(|s| s.sessions_per_core_s.is_none());
    if !errors.is_empty() || incomplete {
        say("some runs failed or gave no figures (see above and the logs)");
        return Ok(false);
    }
    Ok(true)
}

fn run_peer(bins: &Bins, settings: &Settings, cmd: &str, url: &str, cli: &Cli, cpus: &[usize]) -> PeerResults {
    let mut results = PeerResults {
        command: cmd.to_owned(),
        url: url.to_owned(),
        error: None,
        baseline: Vec::new(),
        runs: Vec::new(),
        restarts: 0,
    };
    say(&format!("starting the peer: {cmd}"));
    let mut peer = match Peer::start(cmd, url, cpus, &settings.logs) {
        Ok(p) => p,
        Err(e) => {
            say(&format!("peer: {e}"));
            results.error = Some(e);
            return results;
        }
    };
    let revive = |peer: &mut Peer| match peer.revive() {
        Ok(true) => say("the peer had died (see its log): started it again"),
        Ok(false) => {}
        Err(e) => say(&format!("the peer had died and did not start again: {e}")),
    };
    for &t in &cli.transports {
        revive(&mut peer);
        let base = harness::run_peer(bins, settings, &peer, t, 1, cpus);
        say(&format!(
            "peer {t} 1 reader (baseline): {:.1}% CPU",
            base.cpu_s / base.window_s.max(1e-9) * 100.0
        ));
        results.baseline.push(base);
        for &n in &cli.readers {
            revive(&mut peer);
            let r = harness::run_peer(bins, settings, &peer, t, n, cpus);
            let marginal = report::peer_marginal_us(&r, results.baseline.last());
            say(&format!(
                "peer {t} {n}: {} µs/packet-reader (marginal), {} played{}",
                fmt(marginal, 3),
                r.read.as_ref().map_or(0, |x| x.plays),
                r.error.as_deref().map(|e| format!(" (error: {e})")).unwrap_or_default()
            ));
            results.runs.push(r);
        }
    }
    results.restarts = peer.restarts;
    peer.stop();
    results
}

/// One plot per bitrate.
fn plots(results: &Results, rates: &[u64], out: &Path, stem: &str) -> Vec<PlotInfo> {
    let mut infos = Vec::new();
    for &rate in rates {
        let mut series = Vec::new();
        for (k, t) in [Transport::Udp, Transport::Tcp].into_iter().enumerate() {
            let rows: Vec<_> = results
                .rows
                .iter()
                .filter(|r| r.scenario.transport == t && r.scenario.bitrate == rate)
                .collect();
            let line = |name: &str, color: usize, pick: &dyn Fn(&report::TableRow) -> Option<f64>| Series {
                name: format!("{name} {t}"),
                color: PALETTE[color].0,
                points: rows
                    .iter()
                    .filter_map(|r| pick(r).map(|v| (r.scenario.readers as f64, v)))
                    .collect(),
            };
            series.push(line("limit", k * 2, &|r| r.limit_us));
            series.push(line("shardcast", 1 + k * 2, &|r| r.shardcast_us));
            if results.peer.is_some() {
                series.push(line("peer", 4 + k, &|r| r.peer_us));
            }
        }
        series.retain(|s| !s.points.is_empty());
        if series.is_empty() {
            continue;
        }
        let file = out.join(format!("{stem}-cost-{}.png", format_rate(rate)));
        let title = format!(
            "CPU per (packet × reader), {} stream, {} B packets",
            format_rate(rate),
            results.packet_size
        );
        match plot::draw(&file, &title, &series) {
            Ok(has_text) => infos.push(PlotInfo {
                file: file.display().to_string(),
                has_text,
                legend: series
                    .iter()
                    .map(|s| {
                        let name = PALETTE.iter().find(|p| p.0 == s.color).map_or("", |p| p.1);
                        (s.name.clone(), name.to_owned())
                    })
                    .collect(),
            }),
            Err(e) => say(&format!("cannot draw {}: {e}", file.display())),
        }
    }
    infos
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}
