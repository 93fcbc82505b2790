//! The main thread during a run: once a second it gathers the cores' counters into a row of the time
//! series (CSV and JSON), updates the progress line, and watches loadgen's own limits: the CPU time
//! of each executor thread, and UDP datagrams dropped for full receive buffers (host-wide, and at
//! loadgen's own sockets).

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::core::{Interval, Shared};
use crate::plan::Plan;
use crate::sys;

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Seconds since the start.
    pub t_s: u64,
    /// Readers playing.
    pub readers_up: u64,
    /// Publishers recording.
    pub publishers_up: u64,
    /// RTP packets received by all readers.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Received bits per second, in Mbit/s.
    pub rx_mbps: f64,
    /// Packets newly missing (negative when late packets filled earlier gaps).
    pub lost: i64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets received out of order.
    pub reordered: u64,
    /// Sessions that failed.
    pub errors: u64,
    /// PLAY responses.
    pub plays: u64,
    /// Readers that left and rejoined.
    pub churned: u64,
    /// RTP packets sent by publishers.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Median one-way latency this second (microseconds).
    pub latency_p50_us: Option<u64>,
    /// 99th percentile latency this second.
    pub latency_p99_us: Option<u64>,
    /// Largest latency this second.
    pub latency_max_us: Option<u64>,
    /// loadgen's CPU use, in % of the cores it runs on.
    pub cpu_pct: f64,
    /// The busiest executor thread, in % of one core.
    pub cpu_max_core_pct: f64,
    /// UDP datagrams dropped host-wide for full receive buffers (RcvbufErrors).
    pub udp_rcvbuf_errors: u64,
}

const CSV_HEADER: &str = "t_s,readers_up,publishers_up,rx_packets,rx_bytes,rx_mbps,lost,duplicates,reordered,\
errors,plays,churned,tx_packets,tx_bytes,latency_p50_us,latency_p99_us,latency_max_us,cpu_pct,cpu_max_core_pct,\
udp_rcvbuf_errors";

impl Row {
    fn csv(&self) -> String {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{},{},{:.1},{:.1},{}",
            self.t_s,
            self.readers_up,
            self.publishers_up,
            self.rx_packets,
            self.rx_bytes,
            self.rx_mbps,
            self.lost,
            self.duplicates,
            self.reordered,
            self.errors,
            self.plays,
            self.churned,
            self.tx_packets,
            self.tx_bytes,
            opt(self.latency_p50_us),
            opt(self.latency_p99_us),
            opt(self.latency_max_us),
            self.cpu_pct,
            self.cpu_max_core_pct,
            self.udp_rcvbuf_errors
        )
    }
}

/// loadgen's CPU use over the run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuUse {
    /// Whole process, in % of the cores it runs on, averaged over the run.
    pub process_avg_pct: f64,
    /// Each executor thread, in % of its core, averaged over the run.
    pub per_core_avg_pct: Vec<f64>,
    /// Each executor thread's busiest second.
    pub per_core_max_pct: Vec<f64>,
    /// Seconds in which some executor thread used 95% of its core or more.
    pub saturated_seconds: u64,
    /// Each executor thread, % of the run it was ready to run but waited for its CPU (taken by
    /// another program, such as a server on the same CPU).
    pub per_core_wait_pct: Vec<f64>,
}

/// What the main thread saw during the run.
pub struct Watch {
    /// One row per second.
    pub timeline: Vec<Row>,
    /// CPU use.
    pub cpu: CpuUse,
    /// Host-wide RcvbufErrors during the run.
    pub rcvbuf_errors: u64,
    /// Datagrams dropped at loadgen's own sockets.
    pub own_drops: u64,
    /// Readers playing when the run ended.
    pub readers_up_at_end: u64,
    /// Publishers recording when the run ended.
    pub publishers_up_at_end: u64,
}

/// CPU time samples.
struct CpuClock {
    ticks_per_s: f64,
    start: Instant,
    process_start: u64,
    last: Instant,
    last_process: u64,
    threads_start: Vec<Option<u64>>,
    threads_last: Vec<Option<u64>>,
    /// Run-queue wait of each thread (ns): first and last sample.
    waits: Vec<Option<(u64, u64)>>,
    /// When the first sample of each thread was taken.
    threads_since: Vec<Option<Instant>>,
    max: Vec<f64>,
    saturated_seconds: u64,
}

impl CpuClock {
    fn new(cores: usize) -> CpuClock {
        let now = Instant::now();
        let process = sys::process_cpu_ticks().unwrap_or(0);
        CpuClock {
            ticks_per_s: sys::clock_ticks() as f64,
            start: now,
            process_start: process,
            last: now,
            last_process: process,
            threads_start: vec![None; cores],
            threads_last: vec![None; cores],
            waits: vec![None; cores],
            threads_since: vec![None; cores],
            max: vec![0.0; cores],
            saturated_seconds: 0,
        }
    }

    /// Samples now: (process % of `cores` cores, busiest thread %) since the last sample.
    fn sample(&mut self, shared: &Shared) -> (f64, f64) {
        let now = Instant::now();
        let wall = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let cores = shared.cores.len() as f64;
        let process = sys::process_cpu_ticks().unwrap_or(self.last_process);
        let process_pct = (process.saturating_sub(self.last_process)) as f64 / self.ticks_per_s / wall / cores * 100.0;
        self.last_process = process;
        let mut busiest: f64 = 0.0;
        for (i, core) in shared.cores.iter().enumerate() {
            let tid = core.tid.load(std::sync::atomic::Ordering::Relaxed);
            let Some(ticks) = (tid != 0).then(|| sys::thread_cpu_ticks(tid)).flatten() else {
                continue;
            };
            if self.threads_start[i].is_none() {
                self.threads_start[i] = Some(ticks);
                self.threads_since[i] = Some(now);
            }
            if let Some(wait) = sys::thread_run_delay_ns(tid) {
                let first = self.waits[i].map_or(wait, |(first, _)| first);
                self.waits[i] = Some((first, wait));
            }
            if let Some(last) = self.threads_last[i] {
                let pct = ticks.saturating_sub(last) as f64 / self.ticks_per_s / wall * 100.0;
                self.max[i] = self.max[i].max(pct);
                busiest = busiest.max(pct);
            }
            self.threads_last[i] = Some(ticks);
        }
        if busiest >= 95.0 {
            self.saturated_seconds += 1;
        }
        (process_pct, busiest)
    }

    fn summary(&self, cores: usize) -> CpuUse {
        let wall = self.last.duration_since(self.start).as_secs_f64().max(1e-3);
        let round = |v: f64| (v * 10.0).round() / 10.0;
        let process = self.last_process.saturating_sub(self.process_start) as f64 / self.ticks_per_s;
        CpuUse {
            process_avg_pct: round(process / wall / cores as f64 * 100.0),
            per_core_avg_pct: self
                .threads_start
                .iter()
                .zip(&self.threads_last)
                .map(|(s, l)| match (s, l) {
                    (Some(s), Some(l)) => round(l.saturating_sub(*s) as f64 / self.ticks_per_s / wall * 100.0),
                    _ => 0.0,
                })
                .collect(),
            per_core_max_pct: self.max.iter().map(|&m| round(m)).collect(),
            saturated_seconds: self.saturated_seconds,
            per_core_wait_pct: self
                .waits
                .iter()
                .zip(&self.threads_since)
                .map(|(w, since)| match (w, since) {
                    (Some((first, last)), Some(since)) => {
                        let wall = self.last.duration_since(*since).as_secs_f64().max(1e-3);
                        round(last.saturating_sub(*first) as f64 / 1e9 / wall * 100.0)
                    }
                    _ => 0.0,
                })
                .collect(),
        }
    }
}

/// The live progress line: indicatif on a terminal, a plain line every 5 s otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    last_plain: Instant,
}

impl Progress {
    fn new(quiet: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = (!quiet && terminal).then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress {
            bar,
            plain: !quiet && !terminal,
            last_plain: Instant::now(),
        }
    }

    fn show(&mut self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        } else if self.plain && self.last_plain.elapsed() >= Duration::from_secs(5) {
            self.last_plain = Instant::now();
            eprintln!("loadgen: {message}");
        }
    }

    fn println(&self, message: &str) {
        match &self.bar {
            Some(bar) => bar.println(message),
            None => eprintln!("{message}"),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The main thread's view of a run in progress.
pub struct Monitor {
    cpu: CpuClock,
    progress: Progress,
    csv: Option<BufWriter<File>>,
    timeline: Vec<Row>,
    totals: Interval,
    rcvbuf_start: Option<u64>,
    rcvbuf_last: Option<u64>,
    own_drops: sys::OwnUdpDrops,
    last_own_sample: Option<Instant>,
    next_tick: u64,
    readers: usize,
    publishers: usize,
}

impl Monitor {
    /// Starts watching; opens the CSV file.
    pub fn new(plan: &Plan, quiet: bool, csv: Option<&Path>) -> Result<Monitor, String> {
        let csv = match csv {
            Some(path) => {
                let file = File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                let mut w = BufWriter::new(file);
                writeln!(w, "{CSV_HEADER}").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                Some(w)
            }
            None => None,
        };
        let rcvbuf = sys::udp_rcvbuf_errors();
        Ok(Monitor {
            cpu: CpuClock::new(plan.cpus.len()),
            progress: Progress::new(quiet),
            csv,
            timeline: Vec::new(),
            totals: Interval::new(),
            rcvbuf_start: rcvbuf,
            rcvbuf_last: rcvbuf,
            own_drops: sys::OwnUdpDrops::default(),
            last_own_sample: None,
            next_tick: 1,
            readers: plan.readers,
            publishers: plan.publishers,
        })
    }

    /// A message above the progress line.
    pub fn note(&self, message: &str) {
        self.progress.println(message);
    }

    /// Sleeps until the next second's counters are in (or `until`, if earlier); returns after
    /// recording a row when a second was complete.
    pub fn wait_tick(&mut self, shared: &Shared, until: Instant) {
        // The cores flush at each whole second; read a little after.
        let at = shared.start + Duration::from_secs(self.next_tick) + Duration::from_millis(150);
        let now = Instant::now();
        let wake = at.min(until);
        if wake > now {
            std::thread::sleep((wake - now).min(Duration::from_millis(100)));
        }
        if Instant::now() >= at {
            self.tick(shared);
            self.next_tick = shared.start.elapsed().as_secs().max(self.next_tick) + 1;
        }
    }

    fn tick(&mut self, shared: &Shared) {
        let mut interval = Interval::new();
        for core in &shared.cores {
            if let Some(i) = core.take() {
                interval.add(&i);
            }
        }
        self.totals.add(&interval);
        let (cpu_pct, busiest) = self.cpu.sample(shared);
        let rcvbuf = sys::udp_rcvbuf_errors();
        let rcvbuf_delta = match (rcvbuf, self.rcvbuf_last) {
            (Some(now), Some(last)) => now.saturating_sub(last),
            _ => 0,
        };
        self.rcvbuf_last = rcvbuf.or(self.rcvbuf_last);
        if rcvbuf_delta > 0
            && self
                .last_own_sample
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
        {
            self.last_own_sample = Some(Instant::now());
            self.own_drops.sample();
        }
        let latency = |q: f64| (!interval.latency.is_empty()).then(|| interval.latency.value_at_quantile(q));
        let row = Row {
            t_s: self.next_tick,
            readers_up: shared.readers_up(),
            publishers_up: shared.publishers_up(),
            rx_packets: interval.rx_packets,
            rx_bytes: interval.rx_bytes,
            rx_mbps: interval.rx_bytes as f64 * 8.0 / 1e6,
            lost: interval.lost,
            duplicates: interval.duplicates,
            reordered: interval.reordered,
            errors: interval.errors,
            plays: interval.plays,
            churned: interval.churned,
            tx_packets: interval.tx_packets,
            tx_bytes: interval.tx_bytes,
            latency_p50_us: latency(0.5),
            latency_p99_us: latency(0.99),
            latency_max_us: (!interval.latency.is_empty()).then(|| interval.latency.max()),
            cpu_pct: (cpu_pct * 10.0).round() / 10.0,
            cpu_max_core_pct: (busiest * 10.0).round() / 10.0,
            udp_rcvbuf_errors: rcvbuf_delta,
        };
        if let Some(csv) = &mut self.csv {
            if writeln!(csv, "{}", row.csv()).and_then(|()| csv.flush()).is_err() {
                self.progress
                    .println("loadgen: cannot write the CSV file; no more rows");
                self.csv = None;
            }
        }
        self.progress.show(self.line(&row));
        self.timeline.push(row);
    }

    fn line(&self, row: &Row) -> String {
        let mut parts = Vec::new();
        if self.readers > 0 {
            let lost = self.totals.lost.max(0);
            let received = self.totals.rx_packets;
            let pct = if received + lost as u64 > 0 {
                lost as f64 * 100.0 / (received + lost as u64) as f64
            } else {
                0.0
            };
            parts.push(format!("readers {}/{}", row.readers_up, self.readers));
            parts.push(format!("{} pkt/s {:.1} Mbit/s", si(row.rx_packets as f64), row.rx_mbps));
            parts.push(format!("lost {lost} ({pct:.3}%)"));
            if let Some(p99) = row.latency_p99_us {
                parts.push(format!("p99 {}", fmt_us(p99)));
            }
        }
        if self.publishers > 0 {
            parts.push(format!(
                "publishers {}/{} {} pkt/s",
                row.publishers_up,
                self.publishers,
                si(row.tx_packets as f64)
            ));
        }
        parts.push(format!(
            "cpu {:.0}% (max core {:.0}%)",
            row.cpu_pct, row.cpu_max_core_pct
        ));
        if self.totals.errors > 0 {
            parts.push(format!("errors {}", self.totals.errors));
        }
        if row.udp_rcvbuf_errors > 0 {
            parts.push(format!("UDP rcvbuf drops {}", row.udp_rcvbuf_errors));
        }
        parts.join(" | ")
    }

    /// Samples what must be read while the sessions are still open: gauges and own socket drops.
    pub fn at_end(&mut self, shared: &Shared) -> (u64, u64) {
        let rcvbuf = sys::udp_rcvbuf_errors();
        if let (Some(now), Some(start)) = (rcvbuf, self.rcvbuf_start) {
            if now > start {
                self.own_drops.sample();
            }
        }
        self.rcvbuf_last = rcvbuf.or(self.rcvbuf_last);
        self.cpu.sample(shared);
        (shared.readers_up(), shared.publishers_up())
    }

    /// Ends the progress line and hands over what was seen.
    pub fn finish(mut self, readers_up_at_end: u64, publishers_up_at_end: u64, cores: usize) -> Watch {
        self.progress.finish();
        if let Some(csv) = &mut self.csv {
            let _ = csv.flush();
        }
        let rcvbuf_errors = match (self.rcvbuf_last, self.rcvbuf_start) {
            (Some(now), Some(start)) => now.saturating_sub(start),
            _ => 0,
        };
        Watch {
            cpu: self.cpu.summary(cores),
            timeline: self.timeline,
            rcvbuf_errors,
            own_drops: self.own_drops.total(),
            readers_up_at_end,
            publishers_up_at_end,
        }
    }
}

/// `12.3k`-style number.
pub fn si(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2}G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Microseconds in a readable unit.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2} s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2} ms", us as f64 / 1e3)
    } else {
        format!("{us} us")
    }
}
