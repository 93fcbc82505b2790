//! One executor per core: its sessions, its counters, and how the main thread steers it.
//!
//! Sessions on a core share its counters without locks (`RefCell`s, one thread). Once a second the
//! core's controller task moves the interval counters into a mutex-protected mailbox the main thread
//! empties for the progress line and the time series; the main thread steers the cores through a few
//! atomics (readers may start, readers stop, publishers stop) that the controller turns into local
//! events every session task waits on.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use hdrhistogram::Histogram;
use shardcast::client::{Client, ClientConfig, ClientTransport};

use crate::plan::{Plan, PublisherSpec, ReaderSpec};
use crate::stats::{self, ErrorCounts, PublisherReport, ReaderReport, SkewTracker};
use crate::{publisher, reader, sys};

/// Phases of a run, in order.
pub const RUNNING: u8 = 0;
/// Readers end their sessions.
pub const STOP_READERS: u8 = 1;
/// Publishers end theirs.
pub const STOP_PUBLISHERS: u8 = 2;

/// How often the controller looks at the main thread's orders.
const CONTROL_PERIOD: Duration = Duration::from_millis(10);
/// Longest wait for a TEARDOWN response at the end of a session.
const TEARDOWN_LIMIT: Duration = Duration::from_secs(2);

/// What the main thread and every core share.
pub struct Shared {
    /// Start of the run: the time origin of every figure.
    pub start: Instant,
    /// [`RUNNING`], [`STOP_READERS`] or [`STOP_PUBLISHERS`].
    pub phase: AtomicU8,
    /// Readers may start (their ramp counts from `readers_epoch_ns`).
    pub readers_go: AtomicBool,
    /// When the readers' ramp starts, in ns after `start`.
    pub readers_epoch_ns: AtomicU64,
    /// Whether each published path has a publisher recording.
    pub paths_up: Vec<AtomicBool>,
    /// The last failure of each publisher, for an early, explained stop.
    pub publisher_failures: Mutex<Vec<Option<String>>>,
    /// Per core.
    pub cores: Vec<CoreShared>,
    /// Publishers run outside the cores (ffmpeg) that are publishing.
    pub external_publishers_up: AtomicU64,
}

impl Shared {
    /// Shared state for `cores` cores and `paths` published paths.
    pub fn new(cores: usize, paths: usize, publishers: usize) -> Shared {
        Shared {
            start: Instant::now(),
            phase: AtomicU8::new(RUNNING),
            readers_go: AtomicBool::new(false),
            readers_epoch_ns: AtomicU64::new(0),
            paths_up: (0..paths).map(|_| AtomicBool::new(false)).collect(),
            publisher_failures: Mutex::new(vec![None; publishers]),
            cores: (0..cores).map(|_| CoreShared::default()).collect(),
            external_publishers_up: AtomicU64::new(0),
        }
    }

    /// Lets the readers start now.
    pub fn start_readers(&self) {
        let ns = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.readers_epoch_ns.store(ns, Ordering::Relaxed);
        self.readers_go.store(true, Ordering::Release);
    }

    /// When the readers' ramp started.
    pub fn readers_epoch(&self) -> Instant {
        self.start + Duration::from_nanos(self.readers_epoch_ns.load(Ordering::Relaxed))
    }

    /// Readers playing now, on every core.
    pub fn readers_up(&self) -> u64 {
        self.cores.iter().map(|c| c.readers_up.load(Ordering::Relaxed)).sum()
    }

    /// Publishers recording now, on every core.
    pub fn publishers_up(&self) -> u64 {
        let external = self.external_publishers_up.load(Ordering::Relaxed);
        external
            + self
                .cores
                .iter()
                .map(|c| c.publishers_up.load(Ordering::Relaxed))
                .sum::<u64>()
    }

    /// Reader tasks not finished yet.
    pub fn readers_running(&self) -> u64 {
        self.cores
            .iter()
            .map(|c| c.readers_running.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one core shares with the main thread.
#[derive(Default)]
pub struct CoreShared {
    /// Readers playing.
    pub readers_up: AtomicU64,
    /// Publishers recording.
    pub publishers_up: AtomicU64,
    /// Reader tasks not finished.
    pub readers_running: AtomicU64,
    /// The executor thread's kernel id (0 until it runs), for its CPU time.
    pub tid: AtomicI32,
    /// Counters of the last whole seconds, emptied by the main thread.
    pub mailbox: Mutex<Option<Interval>>,
}

impl CoreShared {
    /// Takes the counters gathered since the last call.
    pub fn take(&self) -> Option<Interval> {
        self.mailbox.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Counters of a time interval.
pub struct Interval {
    /// RTP packets received.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Packets newly missing (negative when late packets filled gaps).
    pub lost: i64,
    /// Duplicates received.
    pub duplicates: u64,
    /// Packets received out of order.
    pub reordered: u64,
    /// Failed sessions (readers and publishers).
    pub errors: u64,
    /// PLAY responses.
    pub plays: u64,
    /// Readers that left and rejoined.
    pub churned: u64,
    /// RTP packets sent by publishers.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// One-way latencies (microseconds).
    pub latency: Histogram<u64>,
}

impl Interval {
    /// Zero counters.
    pub fn new() -> Interval {
        Interval {
            rx_packets: 0,
            rx_bytes: 0,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            errors: 0,
            plays: 0,
            churned: 0,
            tx_packets: 0,
            tx_bytes: 0,
            latency: stats::histogram(),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Interval) {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.errors += other.errors;
        self.plays += other.plays;
        self.churned += other.churned;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        stats::merge(&mut self.latency, &other.latency);
    }

    fn clear(&mut self) {
        let mut latency = std::mem::replace(&mut self.latency, stats::histogram());
        latency.reset();
        *self = Interval {
            latency,
            ..Interval::new()
        };
    }
}

impl Default for Interval {
    fn default() -> Self {
        Interval::new()
    }
}

/// Distributions and failures of a whole run on one core.
pub struct Totals {
    /// One-way latency of every packet with a trailer (microseconds).
    pub latency: Histogram<u64>,
    /// Connect to PLAY response, per session.
    pub time_to_play: Histogram<u64>,
    /// Connect to first RTP packet, per session.
    pub time_to_first_packet: Histogram<u64>,
    /// Connect to RECORD response, per publisher session.
    pub time_to_record: Histogram<u64>,
    /// Fan-out skew per frame among this core's readers of a stream.
    pub skew: Histogram<u64>,
    /// RFC 3550 jitter at the end of each reader session.
    pub jitter: Histogram<u64>,
    /// Reader failures by kind.
    pub reader_errors: ErrorCounts,
    /// Publisher failures by kind.
    pub publisher_errors: ErrorCounts,
}

impl Totals {
    fn new() -> Totals {
        Totals {
            latency: stats::histogram(),
            time_to_play: stats::histogram(),
            time_to_first_packet: stats::histogram(),
            time_to_record: stats::histogram(),
            skew: stats::histogram(),
            jitter: stats::histogram(),
            reader_errors: ErrorCounts::default(),
            publisher_errors: ErrorCounts::default(),
        }
    }

    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Totals) {
        stats::merge(&mut self.latency, &other.latency);
        stats::merge(&mut self.time_to_play, &other.time_to_play);
        stats::merge(&mut self.time_to_first_packet, &other.time_to_first_packet);
        stats::merge(&mut self.time_to_record, &other.time_to_record);
        stats::merge(&mut self.skew, &other.skew);
        stats::merge(&mut self.jitter, &other.jitter);
        self.reader_errors.merge(&other.reader_errors);
        self.publisher_errors.merge(&other.publisher_errors);
    }
}

impl Default for Totals {
    fn default() -> Self {
        Totals::new()
    }
}

/// What a core hands back when it is done.
pub struct CoreResult {
    /// Every reader slot of the core.
    pub readers: Vec<ReaderReport>,
    /// Every publisher of the core.
    pub publishers: Vec<PublisherReport>,
    /// The core's distributions and failures.
    pub totals: Totals,
}

/// A one-shot broadcast within an executor: tasks wait until it is set.
pub struct Event {
    semaphore: Semaphore,
    set: Cell<bool>,
}

impl Event {
    fn new() -> Event {
        Event {
            semaphore: Semaphore::new(0),
            set: Cell::new(false),
        }
    }

    /// Sets the event, waking every waiter.
    pub fn set(&self) {
        if !self.set.replace(true) {
            // Closing fails every pending and future acquire: that is the broadcast.
            self.semaphore.close();
        }
    }

    /// Whether the event is set.
    pub fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes once the event is set.
    pub async fn wait(&self) {
        if !self.is_set() {
            let _ = self.semaphore.acquire(1).await;
        }
    }
}

/// Runs `f` unless (or until) `stop` is set: `None` when stopped.
pub async fn unless<F: Future>(stop: &Event, f: F) -> Option<F::Output> {
    if stop.is_set() {
        return None;
    }
    futures_lite::future::or(async { Some(f.await) }, async {
        stop.wait().await;
        None
    })
    .await
}

/// Sleeps until `at`.
pub async fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        glommio::timer::sleep(at - now).await;
    }
}

/// A reader's handle for churn: whether it is playing, and the order to leave.
#[derive(Default)]
pub struct ReaderCtl {
    /// Playing now.
    pub playing: Cell<bool>,
    /// Asked to leave (TEARDOWN) and rejoin.
    pub leave: Cell<bool>,
}

/// One core's state, shared by its tasks.
pub struct Core {
    /// Index of the core among loadgen's executors.
    pub index: usize,
    /// Shared with the main thread.
    pub shared: Arc<Shared>,
    /// The run's settings.
    pub plan: Arc<Plan>,
    /// Counters since the last tick.
    pub interval: RefCell<Interval>,
    /// Distributions of the whole run.
    pub totals: RefCell<Totals>,
    /// Fan-out skew trackers, by path.
    pub skew: RefCell<Vec<SkewTracker>>,
    /// Readers may start.
    pub readers_go: Event,
    /// Readers must stop.
    pub stop_readers: Event,
    /// Publishers must stop.
    pub stop_publishers: Event,
    /// Limits the sessions being set up at once.
    pub setup_slots: Semaphore,
    /// Every reader slot that has started, for churn.
    pub churn_targets: RefCell<Vec<Rc<ReaderCtl>>>,
}

impl Core {
    fn me(&self) -> &CoreShared {
        &self.shared.cores[self.index]
    }

    /// The client settings of a session with `transport`.
    pub fn client_config(&self, transport: ClientTransport) -> ClientConfig {
        ClientConfig {
            transport,
            read_timeout: self.plan.timeout,
            write_timeout: self.plan.timeout,
            user_agent: concat!("shardcast-loadgen/", env!("CARGO_PKG_VERSION")).to_owned(),
            ..ClientConfig::default()
        }
    }

    /// Adds `delta` to the playing readers gauge.
    pub fn readers_up(&self, up: bool) {
        let gauge = &self.me().readers_up;
        if up {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds `delta` to the recording publishers gauge.
    pub fn publishers_up(&self, up: bool) {
        let gauge = &self.me().publishers_up;
        if up {
            gauge.fetch_add(1, Ordering::Relaxed);
        } else {
            gauge.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Moves the interval counters to the mailbox (and the latencies into the totals).
    fn flush(&self) {
        let mut interval = self.interval.borrow_mut();
        stats::merge(&mut self.totals.borrow_mut().latency, &interval.latency);
        let mut mailbox = self.me().mailbox.lock().unwrap_or_else(PoisonError::into_inner);
        match mailbox.as_mut() {
            Some(m) => m.add(&interval),
            None => {
                let mut fresh = Interval::new();
                fresh.add(&interval);
                *mailbox = Some(fresh);
            }
        }
        interval.clear();
    }
}

/// Ends a session politely: TEARDOWN, waiting at most [`TEARDOWN_LIMIT`].
pub async fn teardown(client: &mut Client) {
    let _ = futures_lite::future::or(
        async {
            let _ = client.teardown().await;
        },
        glommio::timer::sleep(TEARDOWN_LIMIT),
    )
    .await;
}

/// The sessions of one core, from its executor thread.
pub async fn run_core(
    index: usize,
    shared: Arc<Shared>,
    plan: Arc<Plan>,
    readers: Vec<ReaderSpec>,
    publishers: Vec<PublisherSpec>,
) -> CoreResult {
    shared.cores[index].tid.store(sys::thread_id(), Ordering::Relaxed);
    shared.cores[index]
        .readers_running
        .store(readers.len() as u64, Ordering::Relaxed);
    let paths = shared.paths_up.len().max(plan.read_urls.len());
    let core = Rc::new(Core {
        index,
        setup_slots: Semaphore::new(plan.max_inflight.max(1) as u64),
        shared,
        interval: RefCell::new(Interval::new()),
        totals: RefCell::new(Totals::new()),
        skew: RefCell::new((0..paths).map(|_| SkewTracker::default()).collect()),
        readers_go: Event::new(),
        stop_readers: Event::new(),
        stop_publishers: Event::new(),
        churn_targets: RefCell::new(Vec::new()),
        plan,
    });
    let controller = glommio::spawn_local(control(core.clone()));
    let churn = (core.plan.churn > 0.0 && !readers.is_empty()).then(|| glommio::spawn_local(churn(core.clone())));
    let publisher_tasks: Vec<_> = publishers
        .into_iter()
        .map(|spec| glommio::spawn_local(publisher::run(core.clone(), spec)))
        .collect();
    let reader_tasks: Vec<_> = readers
        .into_iter()
        .map(|spec| {
            let core = core.clone();
            glommio::spawn_local(async move {
                let report = reader::run(core.clone(), spec).await;
                core.me().readers_running.fetch_sub(1, Ordering::Relaxed);
                report
            })
        })
        .collect();
    let mut reader_reports = Vec::with_capacity(reader_tasks.len());
    for task in reader_tasks {
        reader_reports.push(task.await);
    }
    if let Some(churn) = churn {
        churn.await;
    }
    let mut publisher_reports = Vec::with_capacity(publisher_tasks.len());
    for task in publisher_tasks {
        publisher_reports.push(task.await);
    }
    controller.await;
    core.flush();
    let mut totals = core.totals.replace(Totals::new());
    for tracker in core.skew.borrow_mut().iter_mut() {
        tracker.flush(&mut totals.skew);
    }
    CoreResult {
        readers: reader_reports,
        publishers: publisher_reports,
        totals,
    }
}

/// Turns the main thread's orders into local events and flushes the counters every second, until
/// the publishers are told to stop.
async fn control(core: Rc<Core>) {
    let start = core.shared.start;
    let mut next_tick = start + Duration::from_secs(1);
    loop {
        glommio::timer::sleep(CONTROL_PERIOD).await;
        let shared = &core.shared;
        if !core.readers_go.is_set() && shared.readers_go.load(Ordering::Acquire) {
            core.readers_go.set();
        }
        let phase = shared.phase.load(Ordering::Acquire);
        if phase >= STOP_READERS {
            core.stop_readers.set();
        }
        if Instant::now() >= next_tick {
            core.flush();
            while next_tick <= Instant::now() {
                next_tick += Duration::from_secs(1);
            }
        }
        if phase >= STOP_PUBLISHERS {
            core.stop_publishers.set();
            return;
        }
    }
}

/// Makes `churn / cores` readers of this core per second leave and rejoin, picked at random among
/// those playing.
async fn churn(core: Rc<Core>) {
    let cores = core.plan.cpus.len().max(1) as f64;
    let period = Duration::from_secs_f64(cores / core.plan.churn);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (core.index as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let mut next = Instant::now() + period;
    while unless(&core.stop_readers, sleep_until(next)).await.is_some() {
        next += period;
        let targets = core.churn_targets.borrow();
        if targets.is_empty() {
            continue;
        }
        // Random probes rather than a scan: most readers are playing most of the time.
        for _ in 0..64 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let target = &targets[(rng % targets.len() as u64) as usize];
            if target.playing.get() && !target.leave.get() {
                target.leave.set(true);
                break;
            }
        }
    }
}
