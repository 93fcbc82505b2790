//! The runs: the limit, shardcast under loadgen, a peer server under loadgen, the session set-up
//! rate with memory per idle reader, and the figures each run yields.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use shardcast_loadgen::synth::StreamShape;
use shardcast_loadgen::units::format_rate;

use crate::limit::{self, Destinations, RecvReport, SendReport, Transport};
use crate::loadgen::{self, PublishRun, ReadRun};
use crate::sample::{Sampler, Samples};
use crate::sys;

/// The server's broadcast ring (src/server/stream.rs): RSS is taken once it has wrapped.
const SERVER_RING_SLOTS: f64 = 1024.0;

/// The programs the harness runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The server.
    pub shardcast: PathBuf,
    /// The load generator.
    pub loadgen: PathBuf,
    /// The bare fan-out program.
    pub limit: PathBuf,
}

impl Bins {
    /// The binaries beside this one (target/release).
    pub fn beside_self() -> Result<Bins, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
        let dir = exe.parent().ok_or("this program has no directory")?;
        Ok(Bins {
            shardcast: dir.join("shardcast"),
            loadgen: dir.join("loadgen"),
            limit: dir.join("limit"),
        })
    }

    /// The first binary that is missing.
    pub fn missing(&self) -> Option<&Path> {
        [&self.shardcast, &self.loadgen, &self.limit]
            .into_iter()
            .find(|p| !p.is_file())
            .map(PathBuf::as_path)
    }
}

/// Builds the server, loadgen and the limit program in release mode.
pub fn build(workspace: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .current_dir(workspace)
        .args(["build", "--release", "--quiet"])
        .args(["-p", "shardcast", "--bin", "shardcast"])
        .args(["-p", "shardcast-loadgen", "--bin", "loadgen"])
        .args(["-p", "shardcast-bench", "--bin", "limit"])
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build failed ({status})"));
    }
    Ok(())
}

/// What every run shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where logs and configuration files go.
    pub logs: PathBuf,
    /// Length of each loaded run.
    pub duration: Duration,
    /// RTP packet size.
    pub packet_size: usize,
    /// CPUs of the server (and of the limit's sender) in the scenario runs.
    pub server_cpus: Vec<usize>,
    /// CPUs of loadgen's readers and publisher (and of the limit's receiver).
    pub loadgen_cpus: Vec<usize>,
    /// Short waits (CI).
    pub smoke: bool,
}

impl Settings {
    fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }

    /// The CPU loadgen's publisher runs on: the last of loadgen's.
    fn publisher_cpu(&self) -> usize {
        self.loadgen_cpus.last().copied().unwrap_or(0)
    }

    fn cpu_list(cpus: &[usize]) -> String {
        cpus.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

/// One load: readers of one transport at one bitrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Scenario {
    /// Transport of the readers (and of the publisher).
    pub transport: Transport,
    /// Readers.
    pub readers: usize,
    /// Stream bitrate, bits/s.
    pub bitrate: u64,
}

impl Scenario {
    /// `udp-1000-2M` (`udp-1000-own` for a peer's own stream).
    pub fn label(&self) -> String {
        let rate = if self.bitrate == 0 {
            "own".to_owned()
        } else {
            format_rate(self.bitrate)
        };
        format!("{}-{}-{}", self.transport, self.readers, rate)
    }
}

/// The bare fan-out program on one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct LimitRun {
    /// The load.
    pub scenario: Scenario,
    /// Why it has no figures.
    pub error: Option<String>,
    /// What the sender did and its CPU time.
    pub sender: Option<SendReport>,
    /// What the readers received.
    pub receiver: Option<RecvReport>,
    /// Sender CPU per delivered (packet × reader), microseconds.
    pub cost_us: Option<f64>,
    /// 1 - received / handed to the kernel.
    pub loss: Option<f64>,
    /// Packets per second of the stream.
    pub packets_per_s: Option<f64>,
}

/// Runs the limit: a receiver process holding the readers' sockets, then the sender.
pub fn run_limit(bins: &Bins, s: &Settings, sc: Scenario) -> LimitRun {
    let mut run = LimitRun {
        scenario: sc,
        error: None,
        sender: None,
        receiver: None,
        cost_us: None,
        loss: None,
        packets_per_s: None,
    };
    if let Err(e) = limit_inner(bins, s, sc, &mut run) {
        run.error = Some(e);
    }
    run
}

fn limit_inner(bins: &Bins, s: &Settings, sc: Scenario, run: &mut LimitRun) -> Result<(), String> {
    let label = format!("limit-{}", sc.label());
    let log = s.log(&label);
    let err = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    // The receiver where loadgen's readers run, the sender where the server runs.
    let threads = s.loadgen_cpus.len().clamp(1, 2);
    let mut recv = Command::new(&bins.limit);
    recv.args(["recv", "--transport", &sc.transport.to_string()])
        .args(["--readers", &sc.readers.to_string(), "--threads", &threads.to_string()])
        .args(["--max-seconds", &(s.duration.as_secs_f64() + 120.0).to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(err);
    sys::pin_command(&mut recv, &s.loadgen_cpus);
    let mut recv = recv
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bins.limit.display()))?;
    let result = (|| {
        let stdout = recv.stdout.take().ok_or("no stdout")?;
        let mut reader = BufReader::new(stdout);
        let dest = limit::read_announcement(&mut reader)
            .map_err(|e| format!("limit recv: {e}"))?
            .ok_or_else(|| format!("limit recv ended before it was ready (see {})", log.display()))?;
        let mut send = Command::new(&bins.limit);
        send.args(["send", "--transport", &sc.transport.to_string()])
            .args(["--threads", &s.server_cpus.len().max(1).to_string()])
            .args(["--bitrate", &sc.bitrate.to_string()])
            .args(["--packet-size", &s.packet_size.to_string()])
            .args(["--duration", &format!("{}ms", s.duration.as_millis())]);
        match dest {
            Destinations::Udp { ports, .. } => {
                let file = s.logs.join(format!("{label}.ports"));
                let list: Vec<String> = ports.iter().map(ToString::to_string).collect();
                fs::write(&file, list.join("\n")).map_err(|e| format!("{}: {e}", file.display()))?;
                send.arg("--ports").arg(format!("@{}", file.display()));
            }
            Destinations::Tcp { port, .. } => {
                send.args(["--port", &port.to_string(), "--readers", &sc.readers.to_string()]);
            }
        }
        sys::pin_command(&mut send, &s.server_cpus);
        let (code, out) = loadgen::run_captured(send, s.duration + Duration::from_secs(120), &log)?;
        let sender: SendReport = serde_json::from_str(out.trim()).map_err(|e| {
            format!(
                "limit send exited {code:?} without a report ({e}); see {}",
                log.display()
            )
        })?;
        // Let the receivers drain, then tell the receiver to report.
        std::thread::sleep(Duration::from_millis(300));
        drop(recv.stdin.take());
        let mut line = String::new();
        let mut receiver = None;
        while reader.read_line(&mut line).map_err(|e| e.to_string())? > 0 {
            if let Ok(r) = serde_json::from_str::<RecvReport>(line.trim()) {
                receiver = Some(r);
            }
            line.clear();
        }
        let receiver = receiver.ok_or_else(|| format!("limit recv gave no report; see {}", log.display()))?;
        Ok::<_, String>((sender, receiver))
    })();
    drop(recv.stdin.take());
    loadgen::wait_or_kill(&mut recv, Duration::from_secs(10));
    let (sender, receiver) = result?;
    if receiver.packets > 0 {
        run.cost_us = Some(sender.cpu_s / receiver.packets as f64 * 1e6);
    }
    if sender.sends_ok > 0 {
        run.loss = Some(1.0 - receiver.packets as f64 / sender.sends_ok as f64);
    }
    if sender.wall_s > 0.0 {
        run.packets_per_s = Some(sender.packets as f64 / sender.wall_s);
    }
    run.sender = Some(sender);
    run.receiver = Some(receiver);
    Ok(())
}

/// A server under N loadgen readers: shardcast (with a loadgen publisher) or a peer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerRun {
    /// `shardcast` or `peer`.
    pub server: String,
    /// The load (a peer serves its own stream: its bitrate is whatever that is).
    pub scenario: Option<Scenario>,
    /// CPUs the server ran on.
    pub server_cpus: Vec<usize>,
    /// Why figures are missing.
    pub error: Option<String>,
    /// How the measuring window was chosen: `steady` (all readers up, ramp and stop excluded) or
    /// `whole run`.
    pub window: String,
    /// Window length, seconds.
    pub window_s: f64,
    /// (packet × reader) received by loadgen in the window.
    pub delivered: u64,
    /// Server CPU in the window (schedstat), seconds.
    pub cpu_s: f64,
    /// The same from `utime + stime`, seconds.
    pub cpu_s_ticks: f64,
    /// Server CPU per delivered (packet × reader), microseconds.
    pub cost_us: Option<f64>,
    /// The same less the server's CPU rate before readers joined (ingest, timers), microseconds.
    pub cost_us_net: Option<f64>,
    /// Server CPU use before readers joined, percent of one core.
    pub idle_cpu_pct: f64,
    /// Busiest server thread's share of one core in the window.
    pub busiest_thread_util: f64,
    /// Delivered (packet × reader) per second in the window.
    pub delivered_per_s: f64,
    /// `delivered_per_s / busiest_thread_util`: the delivery rate at which the busiest core would be
    /// full (the capacity estimate the scaling ratio compares).
    pub capacity_per_s: Option<f64>,
    /// Host softirq time per delivered (packet × reader), microseconds (all processes).
    pub host_softirq_us: Option<f64>,
    /// Server RSS before the readers, KiB.
    pub rss_before_kib: u64,
    /// Largest server RSS with the readers, KiB.
    pub rss_with_kib: u64,
    /// (with - before) / readers playing, KiB.
    pub rss_per_reader_kib: Option<f64>,
    /// The readers' report.
    pub read: Option<ReadRun>,
    /// The publisher's report (shardcast runs).
    pub publish: Option<PublishRun>,
}

/// How to reach and measure a server already started.
struct Target<'a> {
    url: String,
    pid: u32,
    tree: bool,
    name: &'a str,
}

/// Starts shardcast on `cpus` with a configuration on free ports. Returns the child and the
/// RTSP address.
fn start_shardcast(bins: &Bins, s: &Settings, cpus: &[usize], label: &str) -> Result<(Child, SocketAddr), String> {
    let seed = sys::unix_ns() ^ u64::from(std::process::id());
    let (rtsp, rtp, rtcp) = loadgen::free_ports(seed).ok_or("no free ports for the server")?;
    let config = s.logs.join(format!("{label}.toml"));
    // Only keys every version of the binary's configuration has (src/edge/config/); no [[paths]]
    // means every path is publishable.
    let text = format!(
        "[server]\nrtsp_address = \"127.0.0.1:{rtsp}\"\nrtp_address = \"127.0.0.1:{rtp}\"\nrtcp_address = \"127.0.0.1:{rtcp}\"\n"
    );
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let log = s.log(label);
    let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut command = Command::new(&bins.shardcast);
    command
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    sys::pin_command(&mut command, cpus);
    let mut child = command.spawn().map_err(|e| format!("cannot start shardcast: {e}"))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], rtsp));
    if !loadgen::wait_listening(addr, Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "shardcast did not listen on {addr} within 10 s: {}",
            tail(&log)
        ));
    }
    Ok((child, addr))
}

/// The last lines of a log, for error messages.
pub fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    let shown: Vec<&str> = lines.into_iter().rev().collect();
    format!("{} (log: {})", shown.join(" | "), path.display())
}

fn loadgen_read(bins: &Bins, s: &Settings, url: &str, transport: Transport, readers: usize) -> Command {
    let mut c = Command::new(&bins.loadgen);
    c.args(["read", url, "--json", "--quiet"])
        .args(["--readers", &readers.to_string()])
        .args(["--transport", &transport.to_string()])
        .args(["--duration", &format!("{}ms", s.duration.as_millis())])
        .args(["--timeout", "5s"])
        .args(["--cpus", &Settings::cpu_list(&s.loadgen_cpus)]);
    c
}

fn start_publisher(
    bins: &Bins,
    s: &Settings,
    url: &str,
    transport: Transport,
    bitrate: u64,
    fps: f64,
    label: &str,
) -> Result<Child, String> {
    let log = s.log(&format!("{label}-publisher"));
    let err = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    Command::new(&bins.loadgen)
        .args(["publish", url, "--json", "--quiet"])
        .args(["--transport", &transport.to_string()])
        .args(["--bitrate", &bitrate.to_string()])
        .args(["--fps", &fps.to_string()])
        .args(["--packet-size", &s.packet_size.to_string()])
        .args(["--duration", "1h", "--timeout", "5s"])
        .args(["--cpus", &s.publisher_cpu().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start loadgen: {e}"))
}

fn stop_publisher(child: Child) -> Option<PublishRun> {
    let (_, out) = loadgen::stop(child, libc::SIGINT, Duration::from_secs(10));
    serde_json::from_str(out.trim()).ok().map(|v| PublishRun::parse(&v))
}

fn thread_sum(pid: u32) -> u64 {
    sys::thread_cpu_ns(pid).iter().map(|t| t.1).sum()
}

/// Runs shardcast with one loadgen publisher and N loadgen readers.
pub fn run_shardcast(bins: &Bins, s: &Settings, sc: Scenario, server_cpus: &[usize]) -> ServerRun {
    let mut run = ServerRun {
        server: "shardcast".into(),
        scenario: Some(sc),
        server_cpus: server_cpus.to_vec(),
        ..ServerRun::default()
    };
    let label = format!("shardcast-{}-cpus{}", sc.label(), server_cpus.len());
    let (server, addr) = match start_shardcast(bins, s, server_cpus, &label) {
        Ok(x) => x,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let url = format!("rtsp://{addr}/bench");
    let result = (|| {
        let publisher = start_publisher(bins, s, &url, sc.transport, sc.bitrate, 25.0, &label)?;
        let mut publisher = Some(publisher);
        let r = (|| {
            if !loadgen::wait_describe(addr, &url, Duration::from_secs(15)) {
                return Err(format!(
                    "the publisher did not get {url} published in 15 s: {}",
                    tail(&s.log(&format!("{label}-publisher")))
                ));
            }
            // RSS before readers once the ring has wrapped (every slot touched).
            let pps = StreamShape::new(sc.bitrate, s.packet_size).packets_per_second();
            let fill = if s.smoke {
                0.5
            } else {
                (SERVER_RING_SLOTS / pps + 0.5).min(6.0)
            };
            let (t0, c0) = (Instant::now(), thread_sum(server.id()));
            std::thread::sleep(Duration::from_secs_f64(fill));
            let idle_rate = (thread_sum(server.id()).saturating_sub(c0)) as f64 / 1e9 / t0.elapsed().as_secs_f64();
            let target = Target {
                url: url.clone(),
                pid: server.id(),
                tree: false,
                name: "shardcast",
            };
            measure_readers(bins, s, &target, sc.transport, sc.readers, idle_rate, &label, &mut run)
        })();
        if let Some(p) = publisher.take() {
            run.publish = stop_publisher(p);
        }
        r
    })();
    let (status, _) = loadgen::stop(server, libc::SIGTERM, Duration::from_secs(5));
    if let Err(e) = result {
        run.error = Some(e);
    } else if status.is_some_and(|st| !st.success()) {
        let log = s.log(&label);
        run.error = Some(format!("shardcast exited with {status:?}: {}", tail(&log)));
    }
    run
}

/// Runs loadgen readers against a started server and fills `run` with the figures.
#[allow(clippy::too_many_arguments)]
fn measure_readers(
    bins: &Bins,
    s: &Settings,
    target: &Target<'_>,
    transport: Transport,
    readers: usize,
    idle_rate: f64,
    label: &str,
    run: &mut ServerRun,
) -> Result<(), String> {
    run.idle_cpu_pct = idle_rate * 100.0;
    run.rss_before_kib = if target.tree {
        sys::process_tree(target.pid)
            .iter()
            .filter_map(|&p| sys::vm_rss_kib(p))
            .sum()
    } else {
        sys::vm_rss_kib(target.pid).unwrap_or(0)
    };
    let sampler = Sampler::start(target.pid, target.tree, Duration::from_millis(100));
    let command = loadgen_read(bins, s, &target.url, transport, readers);
    let log = s.log(&format!("{label}-readers"));
    let outcome = loadgen::run_captured(command, s.duration + Duration::from_secs(60), &log);
    let samples = sampler.finish();
    let (code, out) = outcome?;
    let json: serde_json::Value = serde_json::from_str(out.trim())
        .map_err(|_| format!("loadgen read exited {code:?} without a report: {}", tail(&log)))?;
    let mut read = ReadRun::parse(&json);
    read.exit_code = code;
    figures(&samples, &read, readers, idle_rate, run);
    if read.plays == 0 {
        run.error = Some(format!(
            "no {} reader got to play: {:?}",
            target.name,
            read.error_kinds.first()
        ));
    }
    run.read = Some(read);
    Ok(())
}

fn figures(samples: &Samples, read: &ReadRun, readers: usize, idle_rate: f64, run: &mut ServerRun) {
    let (from, to, delivered, window) = match read.steady_window() {
        Some((from, to, packets)) if packets > 0 => (from, to, packets, "steady"),
        _ => {
            let to = read.started_ns + (read.wall_s * 1e9) as u64;
            (read.started_ns, to, read.packets, "whole run")
        }
    };
    run.window = window.into();
    let Some(w) = samples.window(from, to) else {
        return;
    };
    run.window_s = w.wall_s;
    run.delivered = delivered;
    run.cpu_s = w.cpu_s;
    run.cpu_s_ticks = w.cpu_s_ticks;
    run.rss_with_kib = w.rss_max_kib;
    let playing = read.playing_at_end.max(read.plays.min(readers as u64));
    if playing > 0 {
        run.rss_per_reader_kib = Some(w.rss_max_kib.saturating_sub(run.rss_before_kib) as f64 / playing as f64);
    }
    if delivered > 0 && w.wall_s > 0.0 {
        let d = delivered as f64;
        run.cost_us = Some(w.cpu_s / d * 1e6);
        run.cost_us_net = Some((w.cpu_s - idle_rate * w.wall_s).max(0.0) / d * 1e6);
        run.delivered_per_s = d / w.wall_s;
        run.busiest_thread_util = w.busiest_thread_s / w.wall_s;
        if run.busiest_thread_util > 0.0 {
            run.capacity_per_s = Some(run.delivered_per_s / run.busiest_thread_util);
        }
        run.host_softirq_us = Some(w.host_softirq_s / d * 1e6);
    }
}

/// A peer server started from a command.
pub struct Peer {
    child: Child,
    /// Its stream's URL.
    pub url: String,
    cmd: String,
    cpus: Vec<usize>,
    logs: PathBuf,
    /// Times it was found dead and started again.
    pub restarts: u32,
}

impl Peer {
    /// Starts `cmd` (through `sh -c exec`) on `cpus` and waits until `url` answers DESCRIBE.
    pub fn start(cmd: &str, url: &str, cpus: &[usize], logs: &Path) -> Result<Peer, String> {
        let authority = url
            .strip_prefix("rtsp://")
            .ok_or_else(|| format!("{url}: not an rtsp:// URL"))?
            .split('/')
            .next()
            .unwrap_or_default();
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let with_port = if authority.contains(':') {
            authority.to_owned()
        } else {
            format!("{authority}:554")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| format!("{with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{with_port}: no address"))?;
        let log = logs.join("peer.log");
        let out = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("exec {cmd}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        sys::pin_command(&mut command, cpus);
        let mut child = command.spawn().map_err(|e| format!("cannot start the peer: {e}"))?;
        if !loadgen::wait_describe(addr, url, Duration::from_secs(30)) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the peer did not answer DESCRIBE {url} within 30 s: {}",
                tail(&log)
            ));
        }
        Ok(Peer {
            child,
            url: url.to_owned(),
            cmd: cmd.to_owned(),
            cpus: cpus.to_vec(),
            logs: logs.to_path_buf(),
            restarts: 0,
        })
    }

    /// Starts the peer again if it died (a crash under the previous load); returns whether it did.
    pub fn revive(&mut self) -> Result<bool, String> {
        if matches!(self.child.try_wait(), Ok(None)) {
            return Ok(false);
        }
        let old = self.logs.join("peer.log");
        let kept = self.logs.join(format!("peer-{}.log", self.restarts));
        let _ = fs::rename(&old, &kept);
        let fresh = Peer::start(&self.cmd, &self.url, &self.cpus, &self.logs)?;
        self.child = fresh.child;
        self.restarts += 1;
        Ok(true)
    }

    /// Stops the peer and every process it started.
    pub fn stop(mut self) {
        let tree = sys::process_tree(self.child.id());
        loadgen::signal(&self.child, libc::SIGTERM);
        if loadgen::wait_or_kill(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
        }
        // Descendants the peer started and left behind (ids read before it stopped).
        for pid in tree.into_iter().skip(1) {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                if fs::metadata(format!("/proc/{pid}")).is_ok() {
                    // SAFETY: kill with the id of a process this harness's child started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Runs N loadgen readers against the peer's own stream.
pub fn run_peer(
    bins: &Bins,
    s: &Settings,
    peer: &Peer,
    transport: Transport,
    readers: usize,
    cpus: &[usize],
) -> ServerRun {
    let mut run = ServerRun {
        server: "peer".into(),
        scenario: Some(Scenario {
            transport,
            readers,
            bitrate: 0,
        }),
        server_cpus: cpus.to_vec(),
        ..ServerRun::default()
    };
    let pid = peer.child.id();
    let tree_sum = || -> u64 { sys::process_tree(pid).iter().map(|&p| thread_sum(p)).sum() };
    let (t0, c0) = (Instant::now(), tree_sum());
    std::thread::sleep(Duration::from_millis(if s.smoke { 200 } else { 1000 }));
    let idle_rate = tree_sum().saturating_sub(c0) as f64 / 1e9 / t0.elapsed().as_secs_f64();
    let target = Target {
        url: peer.url.clone(),
        pid,
        tree: true,
        name: "peer",
    };
    let label = format!("peer-{transport}-{readers}");
    if let Err(e) = measure_readers(bins, s, &target, transport, readers, idle_rate, &label, &mut run) {
        run.error = Some(e);
    }
    run
}

/// The session set-up rate and memory per idle reader.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SetupRun {
    /// Transport of the readers.
    pub transport: Option<Transport>,
    /// Readers asked for.
    pub readers: usize,
    /// CPUs the server ran on (one: the figures are per core).
    pub server_cpus: Vec<usize>,
    /// CPUs loadgen ran on.
    pub loadgen_cpus: Vec<usize>,
    /// Why figures are missing.
    pub error: Option<String>,
    /// Sessions that reached PLAY.
    pub plays: u64,
    /// Failed sessions.
    pub errors: u64,
    /// Server CPU from the first session to the last PLAY, seconds.
    pub setup_cpu_s: f64,
    /// Sessions per CPU-second of the server: sessions/s one core sustains.
    pub sessions_per_core_s: Option<f64>,
    /// Wall time from the first to the last server activity of the set-up burst, seconds.
    pub setup_wall_s: f64,
    /// plays / setup_wall_s (bounded by loadgen and the shared cores).
    pub sessions_per_s_wall: Option<f64>,
    /// Connect to PLAY response.
    pub time_to_play_us: Option<loadgen::Pct>,
    /// Server RSS before the readers, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every reader idle, KiB.
    pub rss_after_kib: u64,
    /// (after - before) / readers playing, KiB.
    pub rss_per_idle_reader_kib: Option<f64>,
}

/// Sets up N readers as fast as loadgen goes against a one-core shardcast whose stream sends one
/// small frame every 5 s, so that the server's CPU is set-up work and the readers are idle once up.
pub fn run_setup(bins: &Bins, s: &Settings, transport: Transport, readers: usize) -> SetupRun {
    let server_cpus = vec![s.server_cpus.first().copied().unwrap_or(0)];
    let others: Vec<usize> = s
        .loadgen_cpus
        .iter()
        .copied()
        .filter(|c| !server_cpus.contains(c))
        .collect();
    let loadgen_cpus = if others.is_empty() {
        s.loadgen_cpus.clone()
    } else {
        others
    };
    let mut run = SetupRun {
        transport: Some(transport),
        readers,
        server_cpus: server_cpus.clone(),
        loadgen_cpus: loadgen_cpus.clone(),
        ..SetupRun::default()
    };
    let label = format!("setup-{transport}-{readers}");
    let (server, addr) = match start_shardcast(bins, s, &server_cpus, &label) {
        Ok(x) => x,
        Err(e) => {
            run.error = Some(e);
            return run;
        }
    };
    let url = format!("rtsp://{addr}/idle");
    let result = (|| {
        let publisher = start_publisher(bins, s, &url, Transport::Tcp, 8_000, 0.2, &label)?;
        let r = (|| {
            if !loadgen::wait_describe(addr, &url, Duration::from_secs(15)) {
                return Err(format!("the publisher did not get {url} published in 15 s"));
            }
            std::thread::sleep(Duration::from_millis(500));
            run.rss_before_kib = sys::vm_rss_kib(server.id()).unwrap_or(0);
            let duration = if s.smoke {
                Duration::from_secs(2)
            } else {
                Duration::from_secs_f64(3.0 + readers as f64 / 1000.0)
            };
            let sampler = Sampler::start(server.id(), false, Duration::from_millis(20));
            let mut command = Command::new(&bins.loadgen);
            command
                .args(["read", &url, "--json", "--quiet"])
                .args(["--readers", &readers.to_string()])
                .args(["--transport", &transport.to_string()])
                .args(["--duration", &format!("{}ms", duration.as_millis())])
                .args(["--max-inflight", "256", "--timeout", "30s"])
                .args(["--cpus", &Settings::cpu_list(&loadgen_cpus)]);
            let log = s.log(&format!("{label}-readers"));
            let outcome = loadgen::run_captured(command, duration + Duration::from_secs(60), &log);
            let samples = sampler.finish();
            let (code, out) = outcome?;
            let json: serde_json::Value = serde_json::from_str(out.trim())
                .map_err(|_| format!("loadgen read exited {code:?} without a report: {}", tail(&log)))?;
            let read = ReadRun::parse(&json);
            setup_figures(&samples, &read, duration, &mut run);
            Ok(())
        })();
        stop_publisher(publisher);
        r
    })();
    loadgen::stop(server, libc::SIGTERM, Duration::from_secs(5));
    if let Err(e) = result {
        run.error = Some(e);
    }
    run
}

fn setup_figures(samples: &Samples, read: &ReadRun, duration: Duration, run: &mut SetupRun) {
    run.plays = read.plays;
    run.errors = read.errors;
    run.time_to_play_us = read.time_to_play_us;
    let start = read.started_ns;
    // Teardown starts at the end of the run: stay clear of it.
    let end = start + duration.as_nanos() as u64 - 150_000_000;
    // The set-up ends in the second of the last PLAY: a frame sent to the idle readers later is not
    // set-up work.
    let last_play = read.timeline.iter().filter(|r| r.plays > 0).map(|r| r.t_s).max();
    let until = last_play.map_or(end, |t| (start + t * 1_000_000_000).min(end));
    // The burst of set-up work: from the first to the last 20 ms in which the server used more than
    // 5% of its core. A tiny run may never reach that: then the whole span up to the last PLAY.
    let (busy_from, busy_to) = samples.busy_span(start, until, 0.05).unwrap_or((start, until));
    if let Some(w) = samples.window(start, busy_to) {
        run.setup_cpu_s = w.cpu_s;
        if w.cpu_s > 0.0 {
            run.sessions_per_core_s = Some(read.plays as f64 / w.cpu_s);
        }
    }
    run.setup_wall_s = (busy_to - busy_from) as f64 / 1e9;
    if run.setup_wall_s > 0.0 {
        run.sessions_per_s_wall = Some(read.plays as f64 / run.setup_wall_s);
    }
    run.rss_after_kib = samples.rss_at(end).unwrap_or(0);
    let playing = read.playing_at_end.max(1);
    run.rss_per_idle_reader_kib = Some(run.rss_after_kib.saturating_sub(run.rss_before_kib) as f64 / playing as f64);
    if read.plays < read.slots {
        run.error = Some(format!(
            "{} of {} readers reached PLAY before the end ({} errors)",
            read.plays, read.slots, read.errors
        ));
    }
}
