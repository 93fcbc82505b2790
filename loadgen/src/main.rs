//! `loadgen`: a thread-per-core RTSP load generator.
//!
//! Like the server, it runs one pinned glommio executor per core it is given; each runs its share of
//! the reader and publisher sessions (shardcast's RTSP client) as tasks. The main thread checks the
//! server is there, steers the phases of the run (publishers, then readers, then stop), gathers the
//! cores' counters once a second, and at the end prints every figure, with a check of whether
//! loadgen itself was the bottleneck. See docs/loadgen.md.

mod cli;
mod core;
mod ffmpeg;
mod monitor;
mod plan;
mod probe;
mod publisher;
mod reader;
mod report;
mod stats;
mod sys;
mod url;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use shardcast::proto::sdp::SessionDescription;

use crate::cli::{Cli, ModeKind};
use crate::core::{run_core, CoreResult, Shared, STOP_PUBLISHERS, STOP_READERS};
use crate::ffmpeg::Ffmpeg;
use crate::monitor::Monitor;
use crate::plan::Plan;
use crate::report::RunInfo;

/// Memory for each executor's io_uring buffers: the client needs no registered buffers, and
/// memlock is small (8 MiB here) for many executors of 10 MiB (glommio's default).
const IO_MEMORY: usize = 512 * 1024;
/// Longest wait for the readers to end their sessions after the run.
const READERS_STOP_LIMIT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(&cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("loadgen: {message}");
            ExitCode::from(2)
        }
    }
}

/// Runs the whole thing; `Err` is a failure before the run started (exit code 2).
fn run(cli: &Cli) -> Result<ExitCode, String> {
    let (mode, urls, options) = cli.mode.parts();
    let allowed = sys::allowed_cpus();
    let mut plan = Plan::build(mode, urls, options, &allowed)?;
    let say = |m: &str| {
        if !options.quiet {
            eprintln!("loadgen: {m}");
        }
    };

    let (soft, hard) = sys::raise_fd_limit().map_err(|e| format!("cannot read the open file limit: {e}"))?;
    plan.fd_limit = soft;
    probe::reachable(&plan.servers, plan.timeout)?;
    if mode == ModeKind::Read {
        let mut tracks = 0;
        for (target, shown) in plan.read_targets.iter().zip(&plan.read_urls) {
            let transport = plan::client_transport(plan.read_transport);
            let d = probe::describe(target, plan.timeout, Some(transport)).map_err(|e| format!("{shown}: {e}"))?;
            say(&format!("{shown}: {}", describe_tracks(&d)));
            tracks = tracks.max(d.medias.len());
        }
        plan.tracks = Some(tracks);
    }
    let tracks = plan.tracks.unwrap_or(if plan.source_file.is_some() { 2 } else { 1 });
    let needed = plan.fds_needed(tracks);
    if needed > soft {
        return Err(format!(
            "this run needs about {needed} open files ({} readers and {} publishers, each a TCP connection plus, \
             over UDP, 2 sockets per track; {tracks} track(s)), but the limit is {soft} (hard limit {hard}). \
             Raise the hard limit (ulimit -Hn, LimitNOFILE=, /etc/security/limits.conf) or run fewer sessions",
            plan.readers, plan.publishers
        ));
    }

    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    let mut monitor = Monitor::new(&plan, options.quiet, options.csv.as_deref())?;
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let plan = Arc::new(plan);
    let paths = if plan.mode == ModeKind::Read {
        0
    } else {
        plan.publishers
    };
    let shared = Arc::new(Shared::new(plan.cpus.len(), paths, plan.publishers));

    let mut ffmpegs = Vec::new();
    if let Some(file) = &plan.source_file {
        for (i, (target, shown)) in plan.publish_targets.iter().zip(&plan.publish_urls).enumerate() {
            match Ffmpeg::spawn(&plan.ffmpeg, file, target, shown, plan.publish_transport, i) {
                Ok(f) => ffmpegs.push(f),
                Err(e) => {
                    ffmpegs.into_iter().for_each(|f| drop(f.stop()));
                    return Err(e);
                }
            }
        }
    }

    let mut handles: Vec<ExecutorJoinHandle<CoreResult>> = Vec::new();
    for (i, &cpu) in plan.cpus.iter().enumerate() {
        let (readers, publishers) = plan.assignment(i);
        let (core_shared, core_plan) = (shared.clone(), plan.clone());
        let spawned = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("loadgen-{i}"))
            .io_memory(IO_MEMORY)
            .spawn(move || run_core(i, core_shared, core_plan, readers, publishers));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(e) => {
                shared.phase.store(STOP_PUBLISHERS, Ordering::Release);
                handles.into_iter().for_each(|h| drop(h.join()));
                ffmpegs.into_iter().for_each(|f| drop(f.stop()));
                return Err(format!(
                    "cannot start an executor on CPU {cpu}: {e} (io_uring needs locked memory: check ulimit -l)"
                ));
            }
        }
    }

    let deadline = shared.start + plan.duration;
    let mut aborted = None;
    if !ffmpegs.is_empty() {
        // Readers may start once every path answers DESCRIBE.
        let limit = Instant::now() + plan.timeout.max(Duration::from_secs(15));
        for (f, (target, shown)) in ffmpegs
            .iter_mut()
            .zip(plan.publish_targets.iter().zip(&plan.publish_urls))
        {
            match probe::describe_until(target, plan.timeout, limit) {
                Ok(_) => {
                    f.recording(shared.start);
                    shared.external_publishers_up.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    let said = f.poll().map(|r| format!("; {r}")).unwrap_or_default();
                    aborted = Some(format!("ffmpeg did not get {shown} published: {e}{said}"));
                    break;
                }
            }
        }
    }
    let mut waiting_publishers = plan.mode == ModeKind::Mixed && ffmpegs.is_empty();
    let publishers_limit = Instant::now() + plan.timeout + Duration::from_secs(5);
    if aborted.is_none() && (plan.mode == ModeKind::Read || !waiting_publishers) {
        shared.start_readers();
    }
    let mut ffmpeg_noted = vec![false; ffmpegs.len()];
    let mut publishers_seen_up = false;
    while aborted.is_none() && !interrupted.load(Ordering::Relaxed) && Instant::now() < deadline {
        publishers_seen_up |= shared.publishers_up() > 0;
        if plan.synthetic_publishers() && !publishers_seen_up {
            // Every publisher failed before any recorded: the server refuses them; retrying is pointless.
            if let Some(reasons) = all_publishers_failed(&shared) {
                aborted = Some(format!("every publisher failed to start: {reasons}"));
                break;
            }
        }
        if waiting_publishers {
            if shared.paths_up.iter().all(|p| p.load(Ordering::Acquire)) {
                waiting_publishers = false;
                shared.start_readers();
            } else if Instant::now() >= publishers_limit {
                aborted = Some(format!(
                    "the publishers were not all recording after {:.0} s, so no reader was started{}",
                    publishers_limit.duration_since(shared.start).as_secs_f64(),
                    all_publishers_failed(&shared)
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                ));
                break;
            }
        }
        monitor.wait_tick(&shared, deadline);
        for (f, noted) in ffmpegs.iter_mut().zip(ffmpeg_noted.iter_mut()) {
            let recording = f.is_recording();
            if let (Some(reason), false) = (f.poll(), *noted) {
                *noted = true;
                if recording {
                    shared.external_publishers_up.fetch_sub(1, Ordering::Relaxed);
                }
                monitor.note(&format!("loadgen: {reason}"));
            }
        }
    }

    if waiting_publishers && aborted.is_none() && !interrupted.load(Ordering::Relaxed) {
        aborted = Some(format!(
            "the run ended before the publishers were all recording, so no reader was started{}",
            all_publishers_failed(&shared)
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ));
    }
    let (readers_up, publishers_up) = monitor.at_end(&shared);
    let wall_s = shared.start.elapsed().as_secs_f64();
    shared.phase.store(STOP_READERS, Ordering::Release);
    let stop_limit = Instant::now() + READERS_STOP_LIMIT;
    while shared.readers_running() > 0 && Instant::now() < stop_limit {
        std::thread::sleep(Duration::from_millis(10));
    }
    shared.phase.store(STOP_PUBLISHERS, Ordering::Release);
    let ffmpeg_reports: Vec<_> = ffmpegs.into_iter().map(Ffmpeg::stop).collect();
    let mut results = Vec::with_capacity(handles.len());
    for (handle, cpu) in handles.into_iter().zip(&plan.cpus) {
        match handle.join() {
            Ok(result) => results.push(result),
            Err(e) => {
                let reason = format!("the executor on CPU {cpu} failed: {e}");
                aborted.get_or_insert(reason);
            }
        }
    }
    let watch = monitor.finish(readers_up, publishers_up, plan.cpus.len());
    let interrupted = interrupted.load(Ordering::Relaxed);
    let info = RunInfo {
        plan: Plan::clone(&plan),
        started_unix_ms,
        wall_s,
        interrupted,
        aborted,
        watch,
        ffmpeg: ffmpeg_reports,
    };
    let report = report::build(info, results);
    let summary = report::human(&report);
    if options.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => eprintln!("loadgen: cannot write the JSON report: {e}"),
        }
        if !options.quiet {
            eprint!("{summary}");
        }
    } else {
        print!("{summary}");
    }

    if let Some(reason) = &report.aborted {
        eprintln!("loadgen: the run failed: {reason}");
        return Ok(ExitCode::from(1));
    }
    if let Some(r) = &report.readers {
        if r.plays == 0 {
            let why = r
                .error_kinds
                .0
                .iter()
                .next()
                .map(|(k, e)| format!(": {k} ({})", e.example));
            eprintln!("loadgen: no reader got to play{}", why.unwrap_or_default());
            return Ok(ExitCode::from(1));
        }
    }
    if let Some(p) = &report.publishers {
        if p.records == 0 {
            let why = p
                .error_kinds
                .0
                .iter()
                .next()
                .map(|(k, e)| format!(": {k} ({})", e.example));
            eprintln!("loadgen: no publisher got to record{}", why.unwrap_or_default());
            return Ok(ExitCode::from(1));
        }
    }
    if interrupted {
        return Ok(ExitCode::from(130));
    }
    Ok(ExitCode::SUCCESS)
}

/// When every publisher has a failure recorded: the first few, else `None`.
fn all_publishers_failed(shared: &Shared) -> Option<String> {
    let failures = shared
        .publisher_failures
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if failures.is_empty() || failures.iter().any(Option::is_none) {
        return None;
    }
    let shown: Vec<String> = failures
        .iter()
        .enumerate()
        .take(3)
        .filter_map(|(i, f)| f.as_ref().map(|f| format!("publisher {i}: {f}")))
        .collect();
    Some(shown.join("; "))
}

/// `1 track: video H264/90000`.
fn describe_tracks(d: &SessionDescription) -> String {
    let tracks: Vec<String> = d
        .medias
        .iter()
        .map(|m| {
            let codec = m
                .payload_type()
                .and_then(|pt| m.rtpmap(pt))
                .map(|r| format!("{}/{}", r.encoding, r.clock_rate))
                .unwrap_or_else(|| m.formats.join(","));
            format!("{} {codec}", m.media_type)
        })
        .collect();
    format!(
        "{} track{}: {}",
        tracks.len(),
        if tracks.len() == 1 { "" } else { "s" },
        tracks.join(", ")
    )
}
