//! UDP fan-out at scale: one TCP publisher, a thousand raw UDP readers in this process, each of
//! which must receive every packet of a 2 Mbit/s stream intact (DESIGN.md §1, §4).
//!
//! The readers are plain `std` sockets drained by a few threads that poll them without blocking, so
//! the test measures the server, not a client library. Should a reader miss packets, the failure
//! message says whether the kernel dropped them (the socket's `drops` in `/proc/net/udp`,
//! `RcvbufErrors` in `/proc/net/snmp`, the loopback backlog in `/proc/net/softnet_stat`) or the
//! server never sent them, and whether the server still answers on a control connection of a reader
//! that missed packets (and whether that request got datagrams flowing again).
//!
//! Set `UDP_SCALE_LOG=1` to see the server's debug log (reader losses, send failures).
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::relay_fixtures::{publish_tcp, rtp_packet, session_of, start_relay, with_udp, H264_SDP};
use common::{RawClient, Received};

/// UDP readers of the one stream.
const READERS: usize = 1000;
/// RTP payload bytes per packet.
const PAYLOAD: usize = 1000;
/// One packet every 4 ms: 250 packets/s of 1000 payload bytes is 2 Mbit/s.
const PERIOD: Duration = Duration::from_millis(4);
/// Five seconds of stream.
const PACKETS: usize = 1250;
/// Threads that perform the readers' SETUP and PLAY.
const SETUP_THREADS: usize = 4;
/// Threads that drain the readers' sockets.
const DRAIN_THREADS: usize = 4;
/// Longest wait for the readers to catch up after the last packet was sent.
const GRACE: Duration = Duration::from_secs(15);
/// The wait also ends once no datagram arrived for this long.
const QUIET: Duration = Duration::from_secs(3);

/// Kernel receive buffer asked for each reader's RTP socket: the kernel doubles it, so about 2 MiB,
/// some 900 datagrams or 3.6 s of this stream. The default (212 KiB, 0.4 s) drops datagrams as soon
/// as the draining threads lose the CPU for a moment on a loaded 2-core machine, which tests the
/// machine rather than the server.
const READER_RCVBUF: usize = 1 << 20;

/// RTP packet `seq` whose payload differs from one packet to the next.
fn packet(seq: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + usize::from(seq) * 13) as u8).collect();
    rtp_packet(seq, &payload)
}

/// SETUP (UDP, `client_port=rtp-rtcp`) and PLAY of `path` on a new connection, kept open.
fn play_udp(addr: SocketAddr, path: &str, rtp_port: u16, rtcp_port: u16) -> RawClient {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let t = format!("RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port}");
    let r = c.request("SETUP", &format!("{base}/trackID=0"), &[("Transport", &t)], b"");
    assert_eq!(r.status, 200, "SETUP of client port {rtp_port}: {r:?}");
    let session = session_of(&r);
    let r = c.request("PLAY", &base, &[("Session", &session)], b"");
    assert_eq!(r.status, 200, "PLAY of client port {rtp_port}: {r:?}");
    c
}

/// One reader's sockets and what arrived on its RTP socket.
struct Reader {
    rtp: UdpSocket,
    /// Bound so the server's sender reports have somewhere to go; not read.
    rtcp: UdpSocket,
    seen: Vec<bool>,
    received: usize,
    duplicates: usize,
    /// The first packet that was not one of those published.
    wrong: Option<String>,
}

impl Reader {
    fn bind() -> Reader {
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_nonblocking(true).unwrap();
        // socket2 is one of the crate's own dependencies, so the test can use it without adding any.
        let rcvbuf = socket2::SockRef::from(&rtp);
        rcvbuf.set_recv_buffer_size(READER_RCVBUF).unwrap();
        assert!(
            rcvbuf.recv_buffer_size().unwrap() >= READER_RCVBUF,
            "the kernel clamped SO_RCVBUF to {} bytes (net.core.rmem_max too small?)",
            rcvbuf.recv_buffer_size().unwrap()
        );
        Reader {
            rtp,
            rtcp,
            seen: vec![false; PACKETS],
            received: 0,
            duplicates: 0,
            wrong: None,
        }
    }

    fn ports(&self) -> (u16, u16) {
        (
            self.rtp.local_addr().unwrap().port(),
            self.rtcp.local_addr().unwrap().port(),
        )
    }

    fn complete(&self) -> bool {
        self.received == PACKETS
    }

    /// Checks a datagram against what was published and counts it.
    fn record(&mut self, packet: &[u8], expected: &[Vec<u8>]) {
        let seq = packet.get(2..4).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])));
        match seq.filter(|&s| expected.get(s).is_some_and(|p| p.as_slice() == packet)) {
            Some(s) if self.seen[s] => self.duplicates += 1,
            Some(s) => {
                self.seen[s] = true;
                self.received += 1;
            }
            None => {
                self.wrong
                    .get_or_insert_with(|| format!("{} bytes with seq {seq:?}", packet.len()));
            }
        }
    }

    /// Sequence numbers that never arrived, as ranges, for a failure message.
    fn missing(&self) -> String {
        let mut ranges = Vec::new();
        let mut start = None;
        for (s, &seen) in self.seen.iter().chain([&true]).enumerate() {
            match (seen, start) {
                (false, None) => start = Some(s),
                (true, Some(a)) => {
                    ranges.push(if a + 1 == s {
                        format!("{a}")
                    } else {
                        format!("{a}-{}", s - 1)
                    });
                    start = None;
                }
                _ => {}
            }
        }
        ranges.join(",")
    }
}

/// What the draining threads report while they run.
struct Progress {
    /// Readers that have every packet.
    complete: AtomicUsize,
    /// Whether each reader has every packet, by index.
    done: Vec<AtomicBool>,
    /// Datagrams received by all readers.
    datagrams: AtomicUsize,
}

impl Progress {
    fn new(readers: usize) -> Progress {
        Progress {
            complete: AtomicUsize::new(0),
            done: (0..readers).map(|_| AtomicBool::new(false)).collect(),
            datagrams: AtomicUsize::new(0),
        }
    }
}

/// What a draining thread hands back: its readers, how late their datagrams were, its CPU time.
struct Drained {
    readers: Vec<Reader>,
    lateness: Lateness,
    cpu: (f64, f64),
}

/// Drains `readers` (numbered from `first`) without blocking, round robin, until each has every
/// packet or `stop` is set.
fn spawn_drain(
    mut readers: Vec<Reader>,
    first: usize,
    expected: &Arc<Vec<Vec<u8>>>,
    first_due: Instant,
    progress: &Arc<Progress>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Drained> {
    let (expected, progress, stop) = (expected.clone(), progress.clone(), stop.clone());
    std::thread::spawn(move || {
        let mut lateness = Lateness::default();
        let mut buf = [0u8; 2048];
        let mut done = vec![false; readers.len()];
        let mut remaining = readers.len();
        while remaining > 0 && !stop.load(Ordering::Relaxed) {
            let mut datagrams = 0;
            for (i, (reader, done)) in readers.iter_mut().zip(&mut done).enumerate() {
                loop {
                    match reader.rtp.recv(&mut buf) {
                        Ok(n) => {
                            lateness.record(&buf[..n], first_due);
                            reader.record(&buf[..n], &expected);
                            datagrams += 1;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => panic!("receive on a reader's RTP socket: {e}"),
                    }
                }
                if !*done && reader.complete() {
                    *done = true;
                    remaining -= 1;
                    progress.complete.fetch_add(1, Ordering::Relaxed);
                    progress.done[first + i].store(true, Ordering::Relaxed);
                }
            }
            progress.datagrams.fetch_add(datagrams, Ordering::Relaxed);
            if datagrams == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Drained {
            readers,
            lateness,
            cpu: thread_cpu("/proc/thread-self/stat").unwrap_or_default(),
        }
    })
}

/// User and system CPU seconds of the thread whose `stat` file is at `path`.
fn thread_cpu(path: impl AsRef<std::path::Path>) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok();
    Some((ticks(11)? / 100.0, ticks(12)? / 100.0))
}

/// CPU time of this process's threads whose name starts with `prefix`, summed: (threads, user, sys).
fn threads_cpu(prefix: &str) -> (usize, f64, f64) {
    let mut total = (0, 0.0, 0.0);
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if let (true, Some((user, sys))) = (name.starts_with(prefix), thread_cpu(task.path().join("stat"))) {
            total = (total.0 + 1, total.1 + user, total.2 + sys);
        }
    }
    total
}

/// How late datagrams arrived after the publisher's schedule said their packet was due, in 10 ms
/// buckets (the last one holds everything later than 10 s).
struct Lateness(Vec<u64>);

/// Buckets of [`Lateness`], each 10 ms wide.
const LATENESS_BUCKETS: usize = 1001;

impl Default for Lateness {
    fn default() -> Lateness {
        Lateness(vec![0; LATENESS_BUCKETS])
    }
}

impl Lateness {
    fn record(&mut self, packet: &[u8], first_due: Instant) {
        let Some(seq) = packet.get(2..4).map(|s| u16::from_be_bytes([s[0], s[1]])) else {
            return;
        };
        let due = first_due + PERIOD * u32::from(seq);
        let tens = Instant::now().saturating_duration_since(due).as_millis() / 10;
        self.0[usize::try_from(tens).unwrap_or(usize::MAX).min(LATENESS_BUCKETS - 1)] += 1;
    }

    fn add(&mut self, other: &Lateness) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The lateness (rounded up to 10 ms) within which `fraction` of the datagrams arrived.
    fn quantile(&self, fraction: f64) -> String {
        let total: u64 = self.0.iter().sum();
        let mut below = 0;
        for (bucket, count) in self.0.iter().enumerate() {
            below += count;
            if below as f64 >= fraction * total as f64 {
                return if bucket == LATENESS_BUCKETS - 1 {
                    "over 10 s".into()
                } else {
                    format!("{} ms", (bucket + 1) * 10)
                };
            }
        }
        "-".into()
    }

    fn summary(&self) -> String {
        format!(
            "median {}, 99% {}, 99.9% {}, max {}",
            self.quantile(0.5),
            self.quantile(0.99),
            self.quantile(0.999),
            self.quantile(1.0)
        )
    }
}

/// The `Udp:` counters of `/proc/net/snmp` by name (InErrors, RcvbufErrors, ...), system-wide.
fn udp_counters() -> HashMap<String, u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        return HashMap::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .skip(1)
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

/// Kernel drops per local UDP port, from the `drops` column of `/proc/net/udp`.
fn socket_drops() -> HashMap<u16, u64> {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(fields.get(1)?.split(':').nth(1)?, 16).ok()?;
            Some((port, fields.last()?.parse().ok()?))
        })
        .collect()
}

/// How the server answers an OPTIONS on `control` within 3 s: tells a stalled fan-out from a
/// stalled core.
fn probe_control(mut control: RawClient, addr: SocketAddr) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        control.send("OPTIONS", &format!("rtsp://{addr}/scale"), &[], b"");
        let answer = loop {
            match control.receive() {
                Received::Response(r) => break format!("answered OPTIONS with {}", r.status),
                Received::Frame { .. } => continue,
                Received::Closed => break "was closed by the server".to_owned(),
            }
        };
        let _ = tx.send(answer);
    });
    rx.recv_timeout(Duration::from_secs(3))
        .unwrap_or_else(|_| "did not answer OPTIONS within 3 s".to_owned())
}

/// Packets the kernel dropped because a CPU's input backlog was full (`net.core.netdev_max_backlog`;
/// loopback delivers through it), summed over CPUs from `/proc/net/softnet_stat`.
fn backlog_drops() -> u64 {
    let table = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    table
        .lines()
        .filter_map(|line| u64::from_str_radix(line.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// How `after` grew over `before`, counter by counter, for the names given.
fn grown(before: &HashMap<String, u64>, after: &HashMap<String, u64>, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let (a, b) = (after.get(*name).copied(), before.get(*name).copied());
            let delta = a.unwrap_or(0).saturating_sub(b.unwrap_or(0));
            format!("{name} +{delta}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn a_thousand_udp_readers_receive_every_packet_at_2_mbit() {
    if std::env::var_os("UDP_SCALE_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("shardcast=debug"))
            .try_init()
            .ok();
    }
    let began = Instant::now();
    let (server, _paths) = start_relay(with_udp);
    let addr = server.local_addr();
    let (mut publisher, _) = publish_tcp(addr, "scale", H264_SDP);

    let readers: Vec<Reader> = (0..READERS).map(|_| Reader::bind()).collect();
    let ports: Vec<(u16, u16)> = readers.iter().map(Reader::ports).collect();
    let setups: Vec<JoinHandle<Vec<RawClient>>> = ports
        .chunks(READERS.div_ceil(SETUP_THREADS))
        .map(|chunk| {
            let chunk = chunk.to_vec();
            std::thread::spawn(move || {
                chunk
                    .iter()
                    .map(|&(rtp, rtcp)| play_udp(addr, "scale", rtp, rtcp))
                    .collect()
            })
        })
        .collect();
    let controls: Vec<RawClient> = setups.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let set_up_in = began.elapsed();

    let expected: Arc<Vec<Vec<u8>>> = Arc::new((0..PACKETS).map(|s| packet(s as u16)).collect());
    let progress = Arc::new(Progress::new(READERS));
    let stop = Arc::new(AtomicBool::new(false));
    let counters_before = udp_counters();
    let drops_before = socket_drops();
    let backlog_before = backlog_drops();
    let start = Instant::now() + Duration::from_millis(50);
    let mut readers = readers.into_iter();
    let share = READERS.div_ceil(DRAIN_THREADS);
    let drains: Vec<JoinHandle<Drained>> = (0..DRAIN_THREADS)
        .map(|k| {
            let readers: Vec<Reader> = readers.by_ref().take(share).collect();
            spawn_drain(readers, k * share, &expected, start, &progress, &stop)
        })
        .collect();

    let mut frame = Vec::with_capacity(4 + PAYLOAD + 12);
    for (k, packet) in expected.iter().enumerate() {
        let due = start + PERIOD * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        frame.clear();
        frame.extend_from_slice(&[b'$', 0]);
        frame.extend_from_slice(&u16::try_from(packet.len()).unwrap().to_be_bytes());
        frame.extend_from_slice(packet);
        publisher.send_raw(&frame);
    }
    let sent_in = Instant::now().saturating_duration_since(start);

    // Wait for the stragglers while datagrams keep coming: a loaded machine delays them, it must
    // not lose them.
    let sent = Instant::now();
    let (mut last_count, mut last_change) = (0, Instant::now());
    while progress.complete.load(Ordering::Relaxed) < READERS && last_change.elapsed() < QUIET && sent.elapsed() < GRACE
    {
        std::thread::sleep(Duration::from_millis(10));
        let count = progress.datagrams.load(Ordering::Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
    }
    let caught_up_in = Instant::now().saturating_duration_since(start);
    let waited = sent.elapsed();
    let quiet = last_change.elapsed();

    // Some readers are missing packets: ask the server something on the control connection of one of
    // them (is its core alive?) and watch whether datagrams start flowing again (was it stalled?),
    // then the same with a reader that got everything.
    let mut probe = String::new();
    if progress.complete.load(Ordering::Relaxed) < READERS {
        let incomplete = progress.done.iter().position(|d| !d.load(Ordering::Relaxed));
        let complete = progress.done.iter().position(|d| d.load(Ordering::Relaxed));
        let mut controls: Vec<Option<RawClient>> = controls.into_iter().map(Some).collect();
        for (what, index) in [("missed packets", incomplete), ("got them all", complete)] {
            let Some(i) = index else { continue };
            let before = progress.datagrams.load(Ordering::Relaxed);
            let answer = probe_control(controls[i].take().unwrap(), addr);
            std::thread::sleep(Duration::from_secs(2));
            let after = progress.datagrams.load(Ordering::Relaxed);
            probe.push_str(&format!(
                "; the control connection of reader {i}, which {what}, {answer}, and {} datagrams arrived in the \
                 next 2 s",
                after - before
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut readers = Vec::with_capacity(READERS);
    let mut lateness = Lateness::default();
    let mut drain_cpu = (0.0, 0.0);
    for drain in drains {
        let drained = drain.join().unwrap();
        readers.extend(drained.readers);
        lateness.add(&drained.lateness);
        drain_cpu = (drain_cpu.0 + drained.cpu.0, drain_cpu.1 + drained.cpu.1);
    }
    let counters_after = udp_counters();
    let drops_after = socket_drops();
    let backlog_dropped = backlog_drops().saturating_sub(backlog_before);
    let (executors, server_user, server_sys) = threads_cpu("shardcast");

    let received: usize = readers.iter().map(|r| r.received).sum();
    let report = format!(
        "{READERS} UDP readers set up in {set_up_in:.2?}; {PACKETS} packets of {PAYLOAD} B sent in {sent_in:.2?}; \
         {received} of {} datagrams received, the last reader complete {caught_up_in:.2?} after the first packet \
         was due; lateness after the publisher's schedule: {}; CPU: {executors} server threads user {server_user:.2} \
         s sys {server_sys:.2} s, {DRAIN_THREADS} draining threads user {:.2} s sys {:.2} s",
        READERS * PACKETS,
        lateness.summary(),
        drain_cpu.0,
        drain_cpu.1,
    );
    println!("{report}");

    let dropped_at = |r: &Reader| {
        let port = r.ports().0;
        let (after, before) = (drops_after.get(&port), drops_before.get(&port));
        after.copied().unwrap_or(0).saturating_sub(before.copied().unwrap_or(0))
    };
    // Failing readers grouped by what they missed, most common first.
    let mut patterns: HashMap<String, usize> = HashMap::new();
    for r in &readers {
        if !r.complete() || r.duplicates > 0 || r.wrong.is_some() {
            let pattern = format!(
                "{} of {PACKETS} packets, {} duplicates, kernel drops at its socket: {}{}; missing seq {}",
                r.received,
                r.duplicates,
                if dropped_at(r) > 0 { "some" } else { "none" },
                r.wrong
                    .as_deref()
                    .map(|w| format!(", unexpected packet: {w}"))
                    .unwrap_or_default(),
                r.missing()
            );
            *patterns.entry(pattern).or_default() += 1;
        }
    }
    if !patterns.is_empty() {
        let failing: usize = patterns.values().sum();
        let mut patterns: Vec<(String, usize)> = patterns.into_iter().collect();
        patterns.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let socket_dropped: u64 = readers.iter().map(dropped_at).sum();
        let missing = READERS * PACKETS - received;
        panic!(
            "{failing} of {READERS} readers did not get every packet exactly once; {missing} datagrams missing in \
             all, {socket_dropped} of them dropped by the kernel at the readers' sockets (/proc/net/udp drops), so \
             {} never reached those sockets; waited {:.2?} after the last packet was sent, the last datagram \
             arrived {:.2?} before the wait ended; system-wide UDP counters during the test: {}; loopback backlog \
             drops (softnet_stat): +{backlog_dropped}{probe}\n{report}\n{}",
            missing.saturating_sub(usize::try_from(socket_dropped).unwrap()),
            waited,
            quiet,
            grown(
                &counters_before,
                &counters_after,
                &["RcvbufErrors", "InErrors", "SndbufErrors", "MemErrors"]
            ),
            patterns
                .iter()
                .take(12)
                .map(|(pattern, n)| format!("{n} readers: {pattern}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    drop(server);
}
