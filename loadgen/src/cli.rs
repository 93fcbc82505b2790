//! Command line: three modes (`read`, `publish`, `mixed`) sharing one set of options, and the parser
//! of CPU lists (`0,2-3`). Durations (`10s`) and rates (`2M`) are parsed by the library's
//! [`units`](shardcast_loadgen::units), shared with the benchmark harness.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;
use shardcast_loadgen::synth::{DEFAULT_FPS, DEFAULT_GOP};
use shardcast_loadgen::units::{parse_duration, parse_rate};

/// Thread-per-core RTSP load generator: many readers and/or synthetic publishers against any RTSP
/// server, with loss, jitter, latency and fan-out figures, and a check that loadgen itself is not the
/// bottleneck.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

/// The three ways to load a server.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// N readers (DESCRIBE, SETUP, PLAY) of existing streams, spread over the URLs.
    Read {
        /// The stream URL(s), `rtsp://[user:pass@]host[:port]/path`.
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
    /// M publishers (ANNOUNCE, SETUP, RECORD) of synthetic H.264-shaped streams.
    ///
    /// Or of a file, through ffmpeg, with --source-file. With one URL and M > 1, paths are suffixed
    /// `/0` .. `/M-1` (or `{i}` in the URL is replaced by the index); several URLs publish one
    /// stream each.
    Publish {
        /// The URL(s) to publish to.
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
    /// P publishers (paths as for `publish`), each path read by N readers.
    ///
    /// End-to-end latency and fan-out skew are measured with a timestamp trailer in every packet.
    Mixed {
        /// The URL(s) to publish to and read from.
        #[arg(required = true)]
        urls: Vec<String>,
        #[command(flatten)]
        options: Options,
    },
}

impl Mode {
    /// The mode's name and its URLs and options.
    pub fn parts(&self) -> (ModeKind, &[String], &Options) {
        match self {
            Mode::Read { urls, options } => (ModeKind::Read, urls, options),
            Mode::Publish { urls, options } => (ModeKind::Publish, urls, options),
            Mode::Mixed { urls, options } => (ModeKind::Mixed, urls, options),
        }
    }
}

/// Which mode runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ModeKind {
    /// Readers only.
    Read,
    /// Publishers only.
    Publish,
    /// Publishers and their readers.
    Mixed,
}

/// How RTP travels (RTSP SETUP transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportArg {
    /// Interleaved in the RTSP TCP connection.
    Tcp,
    /// Unicast UDP, one port pair per track.
    Udp,
    /// UDP multicast (readers only).
    Multicast,
}

/// Options of every mode; those that do not apply to a mode are ignored.
#[derive(Debug, Clone, Args)]
pub struct Options {
    /// Readers: in `read` mode in all (spread over the URLs), in `mixed` mode per published path.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub readers: usize,
    /// Publishers (`publish` and `mixed` with a single URL); default 1, or one per URL given.
    #[arg(long, short = 'p')]
    pub publishers: Option<usize>,
    /// Transport of every session.
    #[arg(long, short = 't', value_enum, default_value_t = TransportArg::Tcp)]
    pub transport: TransportArg,
    /// Transport of the readers (overrides --transport).
    #[arg(long, value_enum)]
    pub read_transport: Option<TransportArg>,
    /// Transport of the publishers (overrides --transport); tcp or udp.
    #[arg(long, value_enum)]
    pub publish_transport: Option<TransportArg>,
    /// Sessions started per second (0: as fast as --max-inflight allows).
    #[arg(long, default_value_t = 0.0)]
    pub ramp: f64,
    /// Length of the run, from the first session started: `10s`, `500ms`, `2m`, `1h`.
    #[arg(long, short = 'd', default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Readers leaving (TEARDOWN) and rejoining (new session) per second, picked at random.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Video bitrate of each synthetic stream (bits/s, `k`/`M`/`G` suffixes).
    #[arg(long, default_value = "2M", value_parser = parse_rate)]
    pub bitrate: u64,
    /// RTP packet size in bytes, header included (64..=1472).
    #[arg(long, default_value_t = 1200)]
    pub packet_size: usize,
    /// Frames per second of each synthetic stream.
    #[arg(long, default_value_t = DEFAULT_FPS)]
    pub fps: f64,
    /// Frames per group of pictures: a keyframe (larger, with SPS/PPS) every GOP frames.
    #[arg(long, default_value_t = DEFAULT_GOP)]
    pub gop: u32,
    /// Print the configuration and every figure as JSON on stdout (the summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write a per-second time series as CSV to this file.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Publish this media file (`ffmpeg -re -stream_loop -1 -i FILE -c copy -f rtsp URL`) instead of
    /// a synthetic stream. Such packets carry no timestamp trailer: no latency or fan-out skew.
    #[arg(long)]
    pub source_file: Option<PathBuf>,
    /// The ffmpeg executable used by --source-file.
    #[arg(long, default_value = "ffmpeg")]
    pub ffmpeg: String,
    /// Run on this many cores (the first ones this process may use), one executor each.
    #[arg(long, conflicts_with = "cpus")]
    pub cores: Option<usize>,
    /// Run on exactly these CPUs, e.g. `2,3` or `4-7`.
    #[arg(long, value_parser = parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Longest wait for a connection, a response or the next packet before a session fails.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Sessions being set up at once per core, at most.
    #[arg(long, default_value_t = 64)]
    pub max_inflight: usize,
    /// No progress output on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// A list of CPU numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

/// Parses `0,2,4-7`.
pub fn parse_cpu_list(s: &str) -> Result<CpuList, String> {
    let mut cpus = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("`{part}` is not a CPU number or range (examples: 0,1 or 2-5)");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.trim().parse().map_err(|_| bad())?,
                    b.trim().parse().map_err(|_| bad())?,
                );
                if a > b || b - a > 4096 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cpus.is_empty() {
        return Err("the CPU list is empty".into());
    }
    let mut sorted = cpus.clone();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("CPU {} is listed twice", w[0]));
    }
    Ok(CpuList(cpus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,1"), Ok(CpuList(vec![0, 1])));
        assert_eq!(parse_cpu_list("2-4,7"), Ok(CpuList(vec![2, 3, 4, 7])));
        assert!(parse_cpu_list("1,1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }
}
