//! Forwarding a packet allocates nothing in steady state (DESIGN.md §1: the owner parses the RTP
//! header without allocating, the fan-out shares one buffer between readers).
//!
//! The whole test binary runs on a global allocator that counts allocations, so it lives in a file of
//! its own. The server runs in this process with one TCP publisher, UDP readers and TCP readers, all
//! hand-written over plain sockets; the test's own threads allocate nothing while the counter is
//! watched (packets are built beforehand, receive buffers are allocated once, nothing is printed).
//!
//! A backtrace of every fourth allocation in the measured window tells whose it is. glommio 0.9's
//! reactor allocates a few objects on every wake-up (timers, preemption timers, ring submissions,
//! a source per socket read); that cost is per wake-up, not per packet, and outside this project,
//! so it is reported but not held against the server. Everything else counts. Set
//! `ZERO_ALLOC_BACKTRACES=1` to print the allocation sites, most frequent first.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::collections::HashMap;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::backtraces::application_frames;
use common::relay_fixtures::{publish_tcp, rtp_packet, start_relay, with_udp, H264_SDP};
use common::{PlayerControl, RawClient};

/// Counts every allocation and reallocation of the process.
struct Counting;

/// Allocations (`alloc`, `alloc_zeroed`, `realloc`) since the process started.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Whether to record a backtrace of each allocation (see the module documentation).
static TRACING: AtomicBool = AtomicBool::new(false);
/// Backtraces recorded while `TRACING` was set.
static TRACES: Mutex<Vec<Backtrace>> = Mutex::new(Vec::new());
/// One allocation in this many is traced: a sample over the whole window, cheap enough to resolve.
const TRACE_EVERY: u64 = 10;
/// Backtraces kept at most.
const MAX_TRACES: usize = 5000;

/// Of [`ALLOCATIONS`], those made by the test's own threads (the test body and its reading thread).
static TEST_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set while this thread records a backtrace, whose own allocations are neither counted nor traced.
    static RECORDING: Cell<bool> = const { Cell::new(false) };
    /// Set on the test's own threads, whose allocations are also counted in [`TEST_ALLOCATIONS`].
    static TEST_THREAD: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    fn note(&self) {
        if RECORDING.with(Cell::get) {
            return;
        }
        if TEST_THREAD.with(Cell::get) {
            TEST_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        let n = ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) && n % TRACE_EVERY == 0 {
            RECORDING.with(|r| r.set(true));
            let trace = Backtrace::force_capture();
            let mut traces = TRACES.lock().unwrap_or_else(PoisonError::into_inner);
            if traces.len() < MAX_TRACES {
                traces.push(trace);
            }
            drop(traces);
            RECORDING.with(|r| r.set(false));
        }
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged, so
// it upholds exactly the contract `System` does; counting touches only an atomic and a thread-local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.note();
        // SAFETY: forwarded unchanged; the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.note();
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const UDP_READERS: usize = 10;
const TCP_READERS: usize = 10;
/// Packets sent before the measurement, so every buffer, queue and table has reached its size.
const WARM_UP: usize = 2000;
/// Packets sent while the allocation counter is watched.
const MEASURED: usize = 5000;
/// RTP payload bytes per packet.
const PAYLOAD: usize = 1000;
/// One packet per millisecond, each written on its own: the server handles every packet as a
/// separate arrival, which is the hardest case for "nothing per packet".
const PERIOD: Duration = Duration::from_millis(1);
/// Packets written together every [`PERIOD`].
const BURST: usize = 1;
/// Allocations per forwarded packet tolerated outside glommio's reactor: arena refills and
/// once-a-second housekeeping, not packets.
const MAX_PER_PACKET: f64 = 0.05;

/// The non-standard-library frames of a backtrace, innermost first.
fn frames(trace: &Backtrace) -> Vec<String> {
    trace
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| l.split_once(": ").is_some_and(|(n, _)| n.parse::<u32>().is_ok()))
        .map(|l| l.split_once(": ").map_or(l, |(_, f)| f).to_owned())
        .filter(|f| {
            ![
                "std::",
                "core::",
                "alloc::",
                "<alloc::",
                "<core::",
                "<std::",
                "__rust",
                "zero_alloc::Counting",
                "<zero_alloc::Counting",
            ]
            .iter()
            .any(|p| f.starts_with(p))
        })
        .collect()
}

/// Whether an allocation was made by glommio's reactor for its own bookkeeping: the innermost frame
/// outside the standard library and container crates (smallvec, hashbrown) is glommio's. An
/// allocation in our code called from a glommio task has one of ours innermost instead.
fn by_glommio_reactor(frames: &[String]) -> bool {
    frames
        .iter()
        .find(|f| {
            !["smallvec::", "<smallvec::", "hashbrown::", "<hashbrown::"]
                .iter()
                .any(|p| f.starts_with(p))
        })
        .is_some_and(|f| f.starts_with("glommio::") || f.starts_with("<glommio::"))
}

/// RTP packet `seq` whose payload differs from one packet to the next.
fn packet(seq: u16) -> Vec<u8> {
    let payload: Vec<u8> = (0..PAYLOAD).map(|i| (i * 7 + usize::from(seq) * 13) as u8).collect();
    rtp_packet(seq, &payload)
}

/// The byte a reader checks: the last payload byte of packet `seq`.
fn last_byte(seq: u16) -> u8 {
    ((PAYLOAD - 1) * 7 + usize::from(seq) * 13) as u8
}

/// Where a reader's packets come from.
enum Source {
    Udp {
        rtp: UdpSocket,
        _rtcp: UdpSocket,
    },
    Tcp {
        stream: TcpStream,
        buf: Vec<u8>,
        filled: usize,
    },
}

/// A reader checking that packets arrive in order and intact, without allocating.
struct Reader {
    source: Source,
    _control: PlayerControl,
    /// The sequence number the next packet must have.
    next: u16,
}

/// What the reading thread publishes: packets received per reader, and the first error seen.
struct Tally {
    received: Vec<AtomicUsize>,
    /// reader index + 1 of the first bad packet, 0 if none.
    bad_reader: AtomicUsize,
    /// Sequence number that packet had (or `u64::MAX` when it was not RTP of the expected size).
    bad_seq: AtomicU64,
    /// Sequence number it should have had.
    bad_expected: AtomicU64,
}

impl Tally {
    fn new(readers: usize) -> Tally {
        Tally {
            received: (0..readers).map(|_| AtomicUsize::new(0)).collect(),
            bad_reader: AtomicUsize::new(0),
            bad_seq: AtomicU64::new(0),
            bad_expected: AtomicU64::new(0),
        }
    }

    /// True when every reader has received at least `count` packets.
    fn all_have(&self, count: usize) -> bool {
        self.received.iter().all(|r| r.load(Ordering::Relaxed) >= count)
    }

    fn counts(&self) -> Vec<usize> {
        self.received.iter().map(|r| r.load(Ordering::Relaxed)).collect()
    }

    fn error(&self) -> Option<String> {
        let reader = self.bad_reader.load(Ordering::Relaxed).checked_sub(1)?;
        let seq = self.bad_seq.load(Ordering::Relaxed);
        Some(format!(
            "reader {reader} got {} where seq {} was due",
            if seq == u64::MAX {
                "a packet of the wrong size or kind".to_owned()
            } else {
                format!("seq {seq}")
            },
            self.bad_expected.load(Ordering::Relaxed)
        ))
    }
}

/// Checks that `packet` is RTP packet `*next`, intact; counts it for reader `index` and moves
/// `next` on, or records the first error in the tally.
fn check(index: usize, next: &mut u16, packet: &[u8], tally: &Tally) {
    let right_size = packet.len() == 12 + PAYLOAD;
    if right_size && packet[2..4] == next.to_be_bytes() && packet[packet.len() - 1] == last_byte(*next) {
        *next = next.wrapping_add(1);
        tally.received[index].fetch_add(1, Ordering::Relaxed);
    } else if tally.bad_reader.load(Ordering::Relaxed) == 0 {
        let seq = if right_size {
            u64::from(u16::from_be_bytes([packet[2], packet[3]]))
        } else {
            u64::MAX
        };
        tally.bad_seq.store(seq, Ordering::Relaxed);
        tally.bad_expected.store(u64::from(*next), Ordering::Relaxed);
        tally.bad_reader.store(index + 1, Ordering::Relaxed);
    }
}

impl Reader {
    /// Reads what is there without blocking; returns whether anything was read.
    fn poll(&mut self, index: usize, scratch: &mut [u8], tally: &Tally) -> bool {
        let mut progressed = false;
        match &mut self.source {
            Source::Udp { rtp, .. } => loop {
                match rtp.recv(scratch) {
                    Ok(n) => {
                        progressed = true;
                        check(index, &mut self.next, &scratch[..n], tally);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("UDP reader {index}: {e}"),
                }
            },
            Source::Tcp { stream, buf, filled } => {
                while *filled < buf.len() {
                    match stream.read(&mut buf[*filled..]) {
                        Ok(0) => panic!("TCP reader {index}: the server closed the connection"),
                        Ok(n) => {
                            *filled += n;
                            progressed = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => panic!("TCP reader {index}: {e}"),
                    }
                }
                let mut at = 0;
                while *filled - at >= 4 {
                    let frame = &buf[at..*filled];
                    assert_eq!(frame[0], b'$', "TCP reader {index}: not an interleaved frame");
                    let len = usize::from(u16::from_be_bytes([frame[2], frame[3]]));
                    if frame.len() < 4 + len {
                        break;
                    }
                    // Channel 1 carries the server's sender reports.
                    if frame[1] == 0 {
                        check(index, &mut self.next, &frame[4..4 + len], tally);
                    }
                    at += 4 + len;
                }
                buf.copy_within(at..*filled, 0);
                *filled -= at;
            }
        }
        progressed
    }
}

/// A UDP reader of `path`: its own RTP and RTCP sockets, SETUP with their ports, PLAY.
fn udp_reader(addr: SocketAddr, path: &str) -> Reader {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let transport = format!(
        "RTP/AVP;unicast;client_port={}-{}",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    );
    let control = PlayerControl::play(addr, path, &transport, false);
    rtp.set_nonblocking(true).unwrap();
    Reader {
        source: Source::Udp { rtp, _rtcp: rtcp },
        _control: control,
        next: 0,
    }
}

/// A TCP reader of `path`: SETUP interleaved on channels 0-1, PLAY, then frames on that connection.
fn tcp_reader(addr: SocketAddr, path: &str) -> Reader {
    let control = PlayerControl::play(addr, path, "RTP/AVP/TCP;unicast;interleaved=0-1", false);
    let stream = control.stream.try_clone().unwrap();
    stream.set_nonblocking(true).unwrap();
    Reader {
        source: Source::Tcp {
            stream,
            buf: vec![0; 256 * 1024],
            filled: 0,
        },
        _control: control,
        next: 0,
    }
}

/// Polls every reader until `stop` is set, sleeping briefly when none had anything.
fn spawn_reading(mut readers: Vec<Reader>, tally: Arc<Tally>, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        TEST_THREAD.with(|t| t.set(true));
        let mut scratch = vec![0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let mut progressed = false;
            for (index, reader) in readers.iter_mut().enumerate() {
                progressed |= reader.poll(index, &mut scratch, &tally);
            }
            if !progressed {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    })
}

/// Writes the frames `range` of `wire`, [`BURST`] frames in one write every [`PERIOD`], on the
/// schedule rather than after the previous write, so a late wake-up does not slow the whole run.
fn send_paced(publisher: &mut RawClient, wire: &[u8], offsets: &[usize], range: std::ops::Range<usize>) {
    let start = Instant::now();
    for (k, first) in range.clone().step_by(BURST).enumerate() {
        let due = start + PERIOD * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let end = (first + BURST).min(range.end);
        publisher.send_raw(&wire[offsets[first]..offsets[end]]);
    }
}

/// Waits until every reader has `count` packets, a reader saw a bad packet, or `limit` passes;
/// returns whether they all got there. Allocates nothing.
fn wait_for(tally: &Tally, count: usize, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !tally.all_have(count) && tally.bad_reader.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    tally.all_have(count)
}

/// The recorded backtraces grouped by their first frames outside the allocator and the standard
/// library, most frequent first, each count scaled back up by the sampling rate.
fn allocation_sites(traces: &[Backtrace]) -> String {
    let mut sites: HashMap<String, usize> = HashMap::new();
    for trace in traces {
        let text = trace.to_string();
        let frames = application_frames(&text, &["zero_alloc::Counting"]);
        // The innermost frames say what allocated, the innermost shardcast frame on whose behalf.
        let mut key: Vec<&str> = frames.iter().take(3).copied().collect();
        if let Some(ours) = frames.iter().skip(3).find(|f| f.starts_with("shardcast::")) {
            key.push("...");
            key.push(ours);
        }
        *sites.entry(key.join("\n    <- ")).or_default() += 1;
    }
    let mut sites: Vec<(String, usize)> = sites.into_iter().collect();
    sites.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    sites
        .iter()
        .map(|(site, n)| format!("{} x {site}", *n as u64 * TRACE_EVERY))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn forwarding_a_packet_allocates_nothing_in_steady_state() {
    TEST_THREAD.with(|t| t.set(true));
    let (server, _paths) = start_relay(with_udp);
    let addr = server.local_addr();
    let (mut publisher, _) = publish_tcp(addr, "steady", H264_SDP);
    let mut readers: Vec<Reader> = (0..UDP_READERS).map(|_| udp_reader(addr, "steady")).collect();
    readers.extend((0..TCP_READERS).map(|_| tcp_reader(addr, "steady")));

    // Every frame the publisher will write, built now: one buffer, frame i at offsets[i]..offsets[i + 1].
    let total = WARM_UP + MEASURED;
    let mut wire = Vec::with_capacity(total * (4 + 12 + PAYLOAD));
    let mut offsets = Vec::with_capacity(total + 1);
    for seq in 0..total {
        let packet = packet(seq as u16);
        offsets.push(wire.len());
        wire.extend_from_slice(&[b'$', 0]);
        wire.extend_from_slice(&u16::try_from(packet.len()).unwrap().to_be_bytes());
        wire.extend_from_slice(&packet);
    }
    offsets.push(wire.len());

    let tally = Arc::new(Tally::new(readers.len()));
    let stop = Arc::new(AtomicBool::new(false));
    let reading = spawn_reading(readers, tally.clone(), stop.clone());

    send_paced(&mut publisher, &wire, &offsets, 0..WARM_UP);
    let warmed = wait_for(&tally, WARM_UP, Duration::from_secs(20));
    assert!(
        warmed,
        "warm-up: not every reader got {WARM_UP} packets intact: {:?} {}",
        tally.counts(),
        tally.error().unwrap_or_default()
    );
    // Let the last writes and wake-ups of the warm-up finish before the counter is read.
    std::thread::sleep(Duration::from_millis(100));

    let print_sites = std::env::var_os("ZERO_ALLOC_BACKTRACES").is_some();
    let started = Instant::now();
    TRACING.store(true, Ordering::Relaxed);
    let before = (
        ALLOCATIONS.load(Ordering::Relaxed),
        TEST_ALLOCATIONS.load(Ordering::Relaxed),
    );
    send_paced(&mut publisher, &wire, &offsets, WARM_UP..total);
    let delivered = wait_for(&tally, total, Duration::from_secs(20));
    let after = (
        ALLOCATIONS.load(Ordering::Relaxed),
        TEST_ALLOCATIONS.load(Ordering::Relaxed),
    );
    TRACING.store(false, Ordering::Relaxed);
    let window = started.elapsed();

    stop.store(true, Ordering::Relaxed);
    reading.join().unwrap();
    assert!(
        delivered,
        "not every reader got all {total} packets intact: {:?} {}",
        tally.counts(),
        tally.error().unwrap_or_default()
    );
    // The test's own threads are meant to allocate nothing in the window; whatever they do is
    // reported but not held against the server.
    let ours = after.1 - before.1;
    let allocations = after.0 - before.0 - ours;
    let traces = std::mem::take(&mut *TRACES.lock().unwrap_or_else(PoisonError::into_inner));
    let sampled: Vec<Vec<String>> = traces.iter().map(frames).collect();
    let reactor_samples = sampled.iter().filter(|f| by_glommio_reactor(f)).count();
    let server_samples = sampled.len() - reactor_samples;
    // Scale the sample back up to the whole window.
    let reactor = allocations as f64 * reactor_samples as f64 / sampled.len().max(1) as f64;
    let server_own = allocations as f64 - reactor;
    let per_packet = server_own / MEASURED as f64;
    println!(
        "{allocations} allocations in the server while {MEASURED} packets went to {UDP_READERS} UDP and \
         {TCP_READERS} TCP readers in {window:.2?}: about {reactor:.0} by glommio's reactor (per wake-up), \
         {server_own:.0} by the server's own code: {per_packet:.4} per packet ({ours} more by the test's own \
         threads; {} of {} sampled backtraces were the server's)",
        server_samples,
        sampled.len()
    );
    if print_sites {
        println!(
            "allocation sites (1 in {TRACE_EVERY} sampled, {} backtraces):\n{}",
            traces.len(),
            allocation_sites(&traces)
        );
    }
    assert!(
        per_packet < MAX_PER_PACKET,
        "the server's own code made about {server_own:.0} allocations for {MEASURED} forwarded packets \
         ({per_packet:.3} per packet, at most {MAX_PER_PACKET} allowed); rerun with ZERO_ALLOC_BACKTRACES=1 to \
         see where they come from"
    );
    drop(server);
}
