//! The run's settings, checked and resolved from the command line, and the sessions each core runs.

use std::time::Duration;

use serde::Serialize;
use shardcast::client::ClientTransport;

use crate::cli::{ModeKind, Options, TransportArg};
use crate::url::RtspUrl;
use shardcast_loadgen::synth::StreamShape;

/// Everything a run does, as it is reported in the JSON `config`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// read, publish or mixed.
    pub mode: ModeKind,
    /// The URLs as given (credentials masked).
    pub urls: Vec<String>,
    /// The paths readers read, by path index (credentials masked).
    pub read_urls: Vec<String>,
    /// The paths publishers publish to, by publisher (credentials masked).
    pub publish_urls: Vec<String>,
    /// Reader slots in all.
    pub readers: usize,
    /// Readers per published path (mixed mode).
    pub readers_per_path: Option<usize>,
    /// Publishers in all.
    pub publishers: usize,
    /// Transport of the readers.
    pub read_transport: TransportArg,
    /// Transport of the publishers.
    pub publish_transport: TransportArg,
    /// Sessions started per second (0: no limit).
    pub ramp: f64,
    /// Length of the run in seconds.
    pub duration_s: f64,
    /// Readers leaving and rejoining per second.
    pub churn: f64,
    /// Video bitrate of a synthetic stream, bits/s.
    pub bitrate: u64,
    /// RTP packet size of a synthetic stream, bytes.
    pub packet_size: usize,
    /// Frames per second of a synthetic stream.
    pub fps: f64,
    /// Frames per GOP of a synthetic stream.
    pub gop: u32,
    /// The file ffmpeg publishes instead of a synthetic stream.
    pub source_file: Option<String>,
    /// The CPUs loadgen runs on, one executor each.
    pub cpus: Vec<usize>,
    /// Session timeout in seconds (connect, responses, packets).
    pub timeout_s: f64,
    /// Sessions set up at once per core, at most.
    pub max_inflight: usize,
    /// Tracks of the stream read (from DESCRIBE before the run; read mode).
    pub tracks: Option<usize>,
    /// The file descriptor limit loadgen runs with.
    pub fd_limit: u64,

    /// Run length.
    #[serde(skip)]
    pub duration: Duration,
    /// Session timeout.
    #[serde(skip)]
    pub timeout: Duration,
    /// Read URLs as sessions use them (host resolved, credentials kept), by path index.
    #[serde(skip)]
    pub read_targets: Vec<String>,
    /// Publish URLs as sessions use them, by publisher.
    #[serde(skip)]
    pub publish_targets: Vec<String>,
    /// The synthetic stream.
    #[serde(skip)]
    pub shape: StreamShape,
    /// The ffmpeg executable for --source-file.
    #[serde(skip)]
    pub ffmpeg: String,
    /// The server addresses, for the reachability check: (`host:port` as written, address).
    #[serde(skip)]
    pub servers: Vec<(String, std::net::SocketAddr)>,
}

/// A reader slot: which path it reads, when it starts, on which core.
#[derive(Debug, Clone)]
pub struct ReaderSpec {
    /// Slot number.
    pub id: usize,
    /// Path index (into `read_targets`).
    pub path: usize,
    /// Start after the readers' epoch.
    pub delay: Duration,
}

/// A publisher: where it publishes, when it starts.
#[derive(Debug, Clone)]
pub struct PublisherSpec {
    /// Publisher number (also its path index).
    pub id: usize,
    /// Start after the run's start.
    pub delay: Duration,
}

impl Plan {
    /// Checks `options` for `mode` and resolves the URLs and CPUs.
    pub fn build(mode: ModeKind, urls: &[String], o: &Options, allowed_cpus: &[usize]) -> Result<Plan, String> {
        let parsed: Vec<RtspUrl> = urls.iter().map(|u| RtspUrl::parse(u)).collect::<Result<_, _>>()?;
        // Resolve every host once, here: the client would resolve it (blocking) for every session.
        let mut servers = Vec::new();
        let mut resolved = Vec::with_capacity(parsed.len());
        for url in &parsed {
            let addrs = url.resolve()?;
            let addr = addrs.iter().find(|a| a.is_ipv4()).copied().unwrap_or(addrs[0]);
            if !servers.iter().any(|(_, a)| *a == addr) {
                servers.push((url.authority(), addr));
            }
            resolved.push(url.with_ip(addr.ip()));
        }
        let read_transport = o.read_transport.unwrap_or(o.transport);
        let publish_transport = o.publish_transport.unwrap_or(o.transport);
        let reads = mode != ModeKind::Publish;
        let publishes = mode != ModeKind::Read;
        if publishes && publish_transport == TransportArg::Multicast {
            return Err("multicast is for readers only: give --publish-transport tcp or udp".into());
        }
        if reads && o.readers == 0 {
            return Err("--readers must be at least 1".into());
        }
        for (name, value) in [("--ramp", o.ramp), ("--churn", o.churn)] {
            if !value.is_finite() || value < 0.0 {
                return Err(format!("{name} must be a rate of 0 or more per second"));
            }
        }
        if o.churn > 0.0 && !reads {
            return Err("--churn applies to readers: use it with read or mixed".into());
        }
        if o.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        if o.timeout < Duration::from_millis(100) {
            return Err("--timeout must be at least 100ms".into());
        }
        let shape = StreamShape {
            bitrate: o.bitrate,
            packet_size: o.packet_size,
            fps: o.fps,
            gop: o.gop,
        };
        if publishes && o.source_file.is_none() {
            shape.validate()?;
        }
        let source_file = match (&o.source_file, publishes) {
            (Some(_), false) => return Err("--source-file is for publishers: use it with publish or mixed".into()),
            (Some(path), true) => {
                if !path.is_file() {
                    return Err(format!("--source-file {}: no such file", path.display()));
                }
                Some(path.display().to_string())
            }
            (None, _) => None,
        };

        let mut read_targets = Vec::new();
        let mut read_urls = Vec::new();
        let mut publish_targets = Vec::new();
        let mut publish_urls = Vec::new();
        let mut publishers = 0;
        if publishes {
            publishers = match (urls.len(), o.publishers) {
                (1, Some(n)) => n,
                (1, None) => 1,
                (n, None) => n,
                (n, Some(p)) if p == n => n,
                (n, Some(p)) => {
                    return Err(format!(
                    "{n} URLs given with --publishers {p}: give one URL (paths get suffixes) or one URL per publisher"
                ))
                }
            };
            if publishers == 0 {
                return Err("--publishers must be at least 1".into());
            }
            for i in 0..publishers {
                let (target, shown) = if urls.len() == 1 {
                    (resolved[0].for_index(i, publishers), parsed[0].for_index(i, publishers))
                } else {
                    (resolved[i].clone(), parsed[i].clone())
                };
                publish_targets.push(target.to_string());
                publish_urls.push(shown.redacted());
            }
        }
        let (readers, readers_per_path) = match mode {
            ModeKind::Read => {
                read_targets = resolved.iter().map(ToString::to_string).collect();
                read_urls = parsed.iter().map(RtspUrl::redacted).collect();
                (o.readers, None)
            }
            ModeKind::Mixed => {
                read_targets = publish_targets.clone();
                read_urls = publish_urls.clone();
                (o.readers * publishers, Some(o.readers))
            }
            ModeKind::Publish => (0, None),
        };
        let mut duplicates = publish_targets.clone();
        duplicates.sort();
        if let Some(w) = duplicates.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("two publishers would publish to {}", w[0]));
        }

        let cpus = match (&o.cpus, o.cores) {
            (Some(list), _) => {
                if let Some(cpu) = list.0.iter().find(|c| !allowed_cpus.contains(c)) {
                    return Err(format!(
                        "--cpus: CPU {cpu} is not available to this process (available: {allowed_cpus:?})"
                    ));
                }
                list.0.clone()
            }
            (None, Some(0)) => return Err("--cores must be at least 1".into()),
            (None, Some(n)) if n > allowed_cpus.len() => {
                return Err(format!(
                    "--cores {n}: only {} CPUs are available to this process",
                    allowed_cpus.len()
                ))
            }
            (None, Some(n)) => allowed_cpus[..n].to_vec(),
            (None, None) => allowed_cpus.to_vec(),
        };

        Ok(Plan {
            mode,
            urls: parsed.iter().map(RtspUrl::redacted).collect(),
            read_urls,
            publish_urls,
            readers,
            readers_per_path,
            publishers,
            read_transport,
            publish_transport,
            ramp: o.ramp,
            duration_s: o.duration.as_secs_f64(),
            churn: o.churn,
            bitrate: o.bitrate,
            packet_size: o.packet_size,
            fps: o.fps,
            gop: o.gop,
            source_file,
            cpus,
            timeout_s: o.timeout.as_secs_f64(),
            max_inflight: o.max_inflight,
            tracks: None,
            fd_limit: 0,
            duration: o.duration,
            timeout: o.timeout,
            read_targets,
            publish_targets,
            shape,
            ffmpeg: o.ffmpeg.clone(),
            servers,
        })
    }

    /// Whether publishers are synthetic streams run by the cores (not ffmpeg).
    pub fn synthetic_publishers(&self) -> bool {
        self.mode != ModeKind::Read && self.source_file.is_none()
    }

    /// The sessions of core `index`: (readers, publishers), spread round-robin.
    pub fn assignment(&self, index: usize) -> (Vec<ReaderSpec>, Vec<PublisherSpec>) {
        let cores = self.cpus.len();
        let step = |k: usize| {
            if self.ramp > 0.0 {
                Duration::from_secs_f64(k as f64 / self.ramp)
            } else {
                Duration::ZERO
            }
        };
        let paths = self.read_targets.len().max(1);
        // Reader `id` reads path `id % paths`; the core also moves on with each round of paths, so
        // that every core reads every path and the cores get equal shares.
        let core_of = |id: usize| (id / paths + id % paths) % cores;
        let readers = (0..self.readers)
            .filter(|&id| core_of(id) == index)
            .map(|id| ReaderSpec {
                id,
                path: id % paths,
                delay: step(id),
            })
            .collect();
        let publishers = if self.synthetic_publishers() {
            (index..self.publishers)
                .step_by(cores)
                .map(|id| PublisherSpec {
                    id,
                    // In mixed mode the ramp is the readers'; publishers start at once.
                    delay: if self.mode == ModeKind::Publish {
                        step(id)
                    } else {
                        Duration::ZERO
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        (readers, publishers)
    }

    /// File descriptors the run needs at most: per session a TCP connection and, over UDP or
    /// multicast, two sockets per track; plus each executor's rings and some slack.
    pub fn fds_needed(&self, tracks: usize) -> u64 {
        let per_session = |t: TransportArg, tracks: usize| match t {
            TransportArg::Tcp => 1,
            TransportArg::Udp | TransportArg::Multicast => 1 + 2 * tracks as u64,
        };
        let readers = self.readers as u64 * per_session(self.read_transport, tracks);
        let publishers = if self.synthetic_publishers() {
            self.publishers as u64 * per_session(self.publish_transport, 1)
        } else {
            0
        };
        readers + publishers + 16 * self.cpus.len() as u64 + 64
    }
}

/// The client's transport for a command-line transport.
pub fn client_transport(t: TransportArg) -> ClientTransport {
    match t {
        TransportArg::Tcp => ClientTransport::Tcp,
        TransportArg::Udp => ClientTransport::Udp,
        TransportArg::Multicast => ClientTransport::UdpMulticast,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied())).unwrap();
        let (mode, urls, options) = cli.mode.parts();
        Plan::build(mode, urls, options, &[0, 1])
    }

    #[test]
    fn mixed_mode_reads_every_published_path() {
        let p = plan(&[
            "mixed",
            "rtsp://127.0.0.1:8554/live",
            "-p",
            "2",
            "-n",
            "3",
            "--ramp",
            "10",
        ])
        .unwrap();
        assert_eq!(
            p.publish_urls,
            ["rtsp://127.0.0.1:8554/live/0", "rtsp://127.0.0.1:8554/live/1"]
        );
        assert_eq!((p.readers, p.read_urls.len()), (6, 2));
        let (r0, p0) = p.assignment(0);
        let (r1, p1) = p.assignment(1);
        assert_eq!((r0.len(), r1.len(), p0.len(), p1.len()), (3, 3, 1, 1));
        assert_eq!(r1[0].delay, Duration::from_millis(100));
        assert_eq!(p1[0].delay, Duration::ZERO);
        assert_eq!(r0.iter().map(|r| r.path).collect::<Vec<_>>(), [0, 1, 0]);
        assert_eq!(r1.iter().map(|r| r.path).collect::<Vec<_>>(), [1, 0, 1]);
        // Many paths with one reader each still spread over the cores.
        let p = plan(&["mixed", "rtsp://127.0.0.1:8554/live", "-p", "10", "-n", "1"]).unwrap();
        assert_eq!((p.assignment(0).0.len(), p.assignment(1).0.len()), (5, 5));
    }

    #[test]
    fn file_descriptors_per_transport() {
        let tcp = plan(&["read", "rtsp://127.0.0.1/x", "-n", "100", "--cores", "1"]).unwrap();
        assert_eq!(tcp.fds_needed(2), 100 + 16 + 64);
        let udp = plan(&["read", "rtsp://127.0.0.1/x", "-n", "100", "-t", "udp", "--cores", "1"]).unwrap();
        assert_eq!(udp.fds_needed(2), 500 + 16 + 64);
    }

    #[test]
    fn bad_combinations_are_explained() {
        assert!(plan(&["publish", "rtsp://127.0.0.1/x", "-t", "multicast"])
            .unwrap_err()
            .contains("readers only"));
        assert!(plan(&["read", "rtsp://127.0.0.1/x", "--cpus", "7"])
            .unwrap_err()
            .contains("CPU 7"));
        assert!(plan(&["read", "rtsp://127.0.0.1/x", "--cores", "3"]).is_err());
        assert!(plan(&["publish", "rtsp://127.0.0.1/x", "--churn", "1"]).is_err());
        assert!(plan(&["publish", "rtsp://127.0.0.1/a", "rtsp://127.0.0.1/a"])
            .unwrap_err()
            .contains("two publishers"));
        assert!(plan(&["publish", "rtsp://127.0.0.1/x", "--packet-size", "9000"]).is_err());
        assert!(plan(&["read", "http://127.0.0.1/x"]).is_err());
    }
}
