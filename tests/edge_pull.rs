//! Edge pull (`shardcast::edge::pull`) between two in-process servers on 127.0.0.1: an origin
//! running the relay (wrapped to count its reader sessions) and an edge whose minimal handler
//! answers DESCRIBE and SETUP from an `OnDemandPull` of one origin path.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::relay_fixtures::{play_tcp, publish_tcp, relay, rtp_packet, send_frame, with_udp, H264_AAC_SDP, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, RawClient, Received};
use shardcast::client::ClientTransport;
use shardcast::edge::pull::{OnDemandPull, PullConfig, PullState};
use shardcast::proto::rtsp::{Response, StatusCode};
use shardcast::proto::sdp::SessionDescription;
use shardcast::proto::Method;
use shardcast::server::{
    Handler, RequestContext, Server, ServerConfig, ServerContext, ServerSession, ServerStream, SessionCloseReason,
    SetupTransport, StartError,
};

/// The path the edge serves and pulls from the origin.
const PATH: &str = "cam";

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// A port that was free a moment ago, for a server that must come back on the same port.
///
/// It is taken below the kernel's ephemeral range (32768 and up by default): there no other test's
/// `bind(0)` or outgoing connection can take it while the origin is down between two starts.
fn free_port() -> u16 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let offset = (seed ^ std::process::id().wrapping_mul(7919)) % 10_000;
    (0..10_000)
        .map(|i| 20_000 + ((offset + i) % 10_000) as u16)
        .find(|&port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port between 20000 and 30000")
}

/// The relay, counting the sessions that read from it (SETUP without mode=record).
struct CountingOrigin {
    relay: relay::Relay,
    readers: Arc<Mutex<HashSet<String>>>,
}

impl Handler for CountingOrigin {
    fn supported_methods(&self) -> &[Method] {
        self.relay.supported_methods()
    }

    async fn on_describe(&self, ctx: &RequestContext<'_>) -> (Response, Option<ServerStream>) {
        self.relay.on_describe(ctx).await
    }

    async fn on_announce(&self, ctx: &RequestContext<'_>, description: &SessionDescription) -> Response {
        self.relay.on_announce(ctx, description).await
    }

    async fn on_setup(&self, ctx: &RequestContext<'_>, transport: &SetupTransport) -> (Response, Option<ServerStream>) {
        let answer = self.relay.on_setup(ctx, transport).await;
        if answer.0.status == StatusCode::OK && !transport.record {
            if let Some(session) = ctx.session {
                self.readers.lock().unwrap().insert(session.id().to_owned());
            }
        }
        answer
    }

    async fn on_play(&self, ctx: &RequestContext<'_>) -> Response {
        self.relay.on_play(ctx).await
    }

    async fn on_record(&self, ctx: &RequestContext<'_>) -> Response {
        self.relay.on_record(ctx).await
    }

    async fn on_pause(&self, ctx: &RequestContext<'_>) -> Response {
        self.relay.on_pause(ctx).await
    }

    fn on_session_close(&self, session: &ServerSession, reason: &SessionCloseReason) {
        self.readers.lock().unwrap().remove(session.id());
        self.relay.on_session_close(session, reason);
    }
}

struct Origin {
    server: Server,
    readers: Arc<Mutex<HashSet<String>>>,
}

impl Origin {
    /// An origin on 127.0.0.1:`port` (0: any), with UDP when `udp`.
    fn start(port: u16, udp: bool) -> Origin {
        let mut config = ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], port)));
        if udp {
            with_udp(&mut config);
        }
        let paths = relay::Paths::default();
        let readers = Arc::new(Mutex::new(HashSet::new()));
        let make_handler = {
            let readers = readers.clone();
            move |ctx: &ServerContext, _| CountingOrigin {
                relay: relay::Relay::new(ctx, paths.clone()),
                readers: readers.clone(),
            }
        };
        // A server that just closed on this port may still hold it for a moment (its executors'
        // io_uring teardown releases the listener asynchronously): retry until it is free.
        let deadline = Instant::now() + Duration::from_secs(5);
        let server = loop {
            match Server::start(config.clone(), make_handler.clone()) {
                Ok(server) => break server,
                Err(StartError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse && port != 0 && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("the origin does not start: {e}"),
            }
        };
        Origin { server, readers }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn url(&self, path: &str) -> String {
        format!("rtsp://{}/{path}", self.addr())
    }

    /// Sessions reading from the origin now.
    fn reader_count(&self) -> usize {
        self.readers.lock().unwrap().len()
    }
}

/// The edge's handler: `PATH` comes from the pull; every reader session is reported to it once.
struct EdgeHandler {
    pull: Arc<OnceLock<OnDemandPull>>,
    counted: RefCell<HashSet<String>>,
}

impl EdgeHandler {
    async fn acquire(&self, ctx: &RequestContext<'_>) -> Result<ServerStream, Response> {
        let Some(pull) = self.pull.get().filter(|_| ctx.path == PATH) else {
            return Err(Response::new(StatusCode::NOT_FOUND));
        };
        pull.acquire().await.map_err(|e| Response::new(e.status()))
    }
}

impl Handler for EdgeHandler {
    fn supported_methods(&self) -> &[Method] {
        &[Method::Describe, Method::Setup, Method::Play, Method::Pause]
    }

    async fn on_describe(&self, ctx: &RequestContext<'_>) -> (Response, Option<ServerStream>) {
        match self.acquire(ctx).await {
            Ok(stream) => (Response::new(StatusCode::OK), Some(stream)),
            Err(refused) => (refused, None),
        }
    }

    async fn on_setup(&self, ctx: &RequestContext<'_>, transport: &SetupTransport) -> (Response, Option<ServerStream>) {
        if transport.record {
            return (Response::new(StatusCode::METHOD_NOT_ALLOWED), None);
        }
        let stream = match self.acquire(ctx).await {
            Ok(stream) => stream,
            Err(refused) => return (refused, None),
        };
        if let (Some(session), Some(pull)) = (ctx.session, self.pull.get()) {
            if self.counted.borrow_mut().insert(session.id().to_owned()) {
                pull.reader_added();
            }
        }
        (Response::new(StatusCode::OK), Some(stream))
    }

    async fn on_play(&self, _ctx: &RequestContext<'_>) -> Response {
        Response::new(StatusCode::OK)
    }

    async fn on_pause(&self, _ctx: &RequestContext<'_>) -> Response {
        Response::new(StatusCode::OK)
    }

    fn on_session_close(&self, session: &ServerSession, _reason: &SessionCloseReason) {
        if self.counted.borrow_mut().remove(session.id()) {
            if let Some(pull) = self.pull.get() {
                pull.reader_removed();
            }
        }
    }
}

struct Edge {
    server: Server,
    pull: OnDemandPull,
}

impl Edge {
    /// An edge on 127.0.0.1:0 pulling `url` with short timers, adjusted by `tweak`.
    fn start(url: &str, tweak: impl FnOnce(&mut PullConfig)) -> Edge {
        Edge::start_configured(url, |_| {}, tweak)
    }

    /// [`Edge::start`] with the edge server's configuration adjusted by `server`.
    fn start_configured(
        url: &str,
        server: impl FnOnce(&mut ServerConfig),
        tweak: impl FnOnce(&mut PullConfig),
    ) -> Edge {
        let cell = Arc::new(OnceLock::new());
        let mut server_config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        server(&mut server_config);
        let server = Server::start(server_config, {
            let cell = cell.clone();
            move |_, _| EdgeHandler {
                pull: cell.clone(),
                counted: RefCell::new(HashSet::new()),
            }
        })
        .expect("edge starts");
        let mut config = PullConfig::new(url);
        config.start_timeout = Duration::from_secs(5);
        config.close_after_idle = Duration::from_secs(1);
        config.backoff_min = Duration::from_millis(100);
        config.backoff_max = Duration::from_millis(400);
        tweak(&mut config);
        let pull = OnDemandPull::new(server.context().clone(), config);
        cell.set(pull.clone()).unwrap();
        Edge { server, pull }
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }
}

/// The payload of packet `seq`: depends on `seq`, so a reader can tell every packet apart.
fn payload(seq: u16) -> Vec<u8> {
    (0..300u16).map(|i| (i.wrapping_mul(31) ^ seq) as u8).collect()
}

/// A publisher on the origin sending packet after packet (`rtp_packet(seq, payload(seq))` from
/// `first_seq` on, one every 10 ms) on a thread until stopped or dropped.
struct Publisher {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Publisher {
    fn start(origin: SocketAddr, path: &str, first_seq: u16) -> Publisher {
        Publisher::start_with(origin, path, H264_SDP, first_seq)
    }

    /// A publisher announcing `sdp`; packets go to its first media.
    fn start_with(origin: SocketAddr, path: &str, sdp: &str, first_seq: u16) -> Publisher {
        let (mut client, _session) = publish_tcp(origin, path, sdp);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            let paused = paused.clone();
            move || {
                let mut seq = first_seq;
                while !stop.load(Ordering::Relaxed) {
                    if !paused.load(Ordering::Relaxed) {
                        send_frame(&mut client, 0, &rtp_packet(seq, &payload(seq)));
                        seq = seq.wrapping_add(1);
                    }
                    // Pacing like a live source, not a wait for a condition.
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Publisher {
            stop,
            paused,
            thread: Some(thread),
        }
    }

    /// Stops (`true`) or resumes sending, keeping the connection and session open.
    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Stops sending and closes the publisher's connection (the origin then ends its stream).
    fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the publisher thread ran without error");
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.finish();
        } else {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
}

/// Reads a TCP reader's RTP (channel 0) until `done` says the sequence numbers so far suffice,
/// checking that every packet is exactly the one the publisher sent with that number.
fn read_rtp_until(reader: &mut RawClient, limit: Duration, mut done: impl FnMut(&[u16]) -> bool) -> Vec<u16> {
    let deadline = Instant::now() + limit;
    let mut seqs = Vec::new();
    while !done(&seqs) {
        assert!(
            Instant::now() < deadline,
            "the reader did not get the packets within {limit:?}; got {seqs:?}"
        );
        match reader.receive() {
            Received::Frame { channel: 0, payload: p } => {
                let seq = u16::from_be_bytes([p[2], p[3]]);
                assert_eq!(p, rtp_packet(seq, &payload(seq)), "packet {seq} arrived altered");
                seqs.push(seq);
            }
            Received::Frame { .. } | Received::Response(_) => {}
            Received::Closed => panic!("the edge closed the reader's connection; got {seqs:?}"),
        }
    }
    seqs
}

/// Reads until `count` RTP packets arrived and checks they are consecutive.
fn read_consecutive(reader: &mut RawClient, count: usize) -> Vec<u16> {
    let seqs = read_rtp_until(reader, Duration::from_secs(10), |s| s.len() >= count);
    for pair in seqs.windows(2) {
        assert_eq!(
            pair[1],
            pair[0].wrapping_add(1),
            "a packet is missing or reordered: {seqs:?}"
        );
    }
    seqs
}

/// Sends TEARDOWN for a reader's session.
fn teardown(reader: &mut RawClient, edge: SocketAddr, session: &str) {
    let r = reader.request(
        "TEARDOWN",
        &format!("rtsp://{edge}/{PATH}"),
        &[("Session", session)],
        b"",
    );
    assert_eq!(r.status, 200, "TEARDOWN: {r:?}");
}

fn pulled_over(transport: ClientTransport) {
    let origin = Origin::start(0, transport == ClientTransport::Udp);
    let _publisher = Publisher::start(origin.addr(), PATH, 1000);
    let edge = Edge::start(&origin.url(PATH), |c| c.transport = transport);
    assert_eq!(
        edge.pull.state(),
        PullState::Idle,
        "nothing is pulled before a reader comes"
    );
    let (mut reader, _session) = play_tcp(edge.addr(), PATH);
    assert_eq!(edge.pull.state(), PullState::Ready);
    let seqs = read_consecutive(&mut reader, 50);
    assert!(seqs[0] >= 1000, "{seqs:?}");
    let stats = edge.pull.stats();
    assert_eq!(stats.readers, 1);
    assert_eq!(stats.upstream_sessions, 1);
    assert!(stats.packets >= 50 && stats.bytes >= 50 * 312, "{stats:?}");
}

#[test]
fn an_edge_reader_receives_the_packets_the_origins_publisher_sends_pulled_over_tcp() {
    init_logs();
    pulled_over(ClientTransport::Tcp);
}

#[test]
fn an_edge_reader_receives_the_packets_the_origins_publisher_sends_pulled_over_udp() {
    init_logs();
    pulled_over(ClientTransport::Udp);
}

#[test]
fn two_edge_readers_share_one_upstream_session() {
    init_logs();
    let origin = Origin::start(0, false);
    let _publisher = Publisher::start(origin.addr(), PATH, 0);
    let edge = Edge::start(&origin.url(PATH), |_| {});
    let (mut first, _) = play_tcp(edge.addr(), PATH);
    let (mut second, _) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut first, 20);
    read_consecutive(&mut second, 20);
    assert_eq!(
        origin.reader_count(),
        1,
        "the origin must see one reader for both edge readers"
    );
    let stats = edge.pull.stats();
    assert_eq!(stats.readers, 2);
    assert_eq!(stats.upstream_sessions, 1);
}

#[test]
fn a_path_the_origin_does_not_have_is_404_at_once() {
    init_logs();
    let origin = Origin::start(0, false);
    let edge = Edge::start(&origin.url("missing"), |c| c.start_timeout = Duration::from_secs(10));
    let mut client = RawClient::connect(edge.addr());
    let started = Instant::now();
    let r = client.request("DESCRIBE", &format!("rtsp://{}/{PATH}", edge.addr()), &[], b"");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a 404 must not wait for the start timeout: {:?}",
        started.elapsed()
    );
}

#[test]
fn an_unreachable_origin_is_503_after_the_start_timeout_and_the_pull_goes_idle() {
    init_logs();
    let nobody = format!("rtsp://user:secret@127.0.0.1:{}/{PATH}", free_port());
    let start_timeout = Duration::from_millis(1500);
    let edge = Edge::start(&nobody, |c| {
        c.start_timeout = start_timeout;
        c.close_after_idle = Duration::from_millis(300);
    });
    assert!(!edge.pull.url().contains("secret"), "{}", edge.pull.url());
    let mut client = RawClient::connect(edge.addr());
    let started = Instant::now();
    let r = client.request("DESCRIBE", &format!("rtsp://{}/{PATH}", edge.addr()), &[], b"");
    let waited = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        waited >= start_timeout && waited < start_timeout + Duration::from_secs(2),
        "answered after {waited:?}"
    );
    assert!(
        edge.pull.stats().upstream_failures >= 2,
        "it kept retrying while waiting"
    );
    assert!(
        eventually(Duration::from_secs(5), || edge.pull.state() == PullState::Idle),
        "with nobody waiting the pull stops: {:?}",
        edge.pull.state()
    );
}

#[test]
fn the_upstream_session_ends_after_close_after_idle_and_a_new_reader_starts_it_again() {
    init_logs();
    let origin = Origin::start(0, false);
    let _publisher = Publisher::start(origin.addr(), PATH, 0);
    let close_after_idle = Duration::from_millis(1500);
    let edge = Edge::start(&origin.url(PATH), |c| c.close_after_idle = close_after_idle);

    let (mut reader, session) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut reader, 10);
    assert_eq!(origin.reader_count(), 1);
    let left = Instant::now();
    teardown(&mut reader, edge.addr(), &session);
    assert_eq!(edge.pull.stats().readers, 0);
    assert_eq!(
        edge.pull.state(),
        PullState::Ready,
        "the pull lingers for close_after_idle"
    );

    assert!(
        eventually(Duration::from_secs(6), || origin.reader_count() == 0
            && edge.pull.state() == PullState::Idle),
        "the upstream session must end: origin readers {}, state {:?}",
        origin.reader_count(),
        edge.pull.state()
    );
    assert!(
        left.elapsed() >= close_after_idle,
        "stopped after {:?}, before close_after_idle",
        left.elapsed()
    );

    let (mut again, _) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut again, 10);
    assert_eq!(origin.reader_count(), 1);
    assert_eq!(edge.pull.stats().upstream_sessions, 2);
}

#[test]
fn an_edge_reader_stays_connected_through_an_origin_restart_and_gets_the_new_packets() {
    init_logs();
    let port = free_port();
    let origin = Origin::start(port, false);
    let publisher = Publisher::start(origin.addr(), PATH, 0);
    let edge = Edge::start(&origin.url(PATH), |_| {});
    let (mut reader, _) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut reader, 10);

    publisher.stop();
    drop(origin);
    assert!(
        eventually(Duration::from_secs(5), || edge.pull.state() == PullState::Reconnecting),
        "the edge notices the origin left: {:?}",
        edge.pull.state()
    );
    assert_eq!(edge.pull.stats().readers, 1, "the edge reader stays");

    let origin = Origin::start(port, false);
    let _publisher = Publisher::start(origin.addr(), PATH, 20_000);
    let seqs = read_rtp_until(&mut reader, Duration::from_secs(10), |s| {
        s.iter().filter(|&&seq| seq >= 20_000).count() >= 10
    });
    let new: Vec<u16> = seqs.into_iter().filter(|&s| s >= 20_000).collect();
    for pair in new.windows(2) {
        assert_eq!(
            pair[1],
            pair[0] + 1,
            "after the restart packets arrive in order: {new:?}"
        );
    }
    assert_eq!(edge.pull.state(), PullState::Ready);
    assert_eq!(edge.pull.stats().upstream_sessions, 2);
    assert_eq!(origin.reader_count(), 1);
}

#[test]
fn a_stalled_origin_is_reconnected_and_the_edge_reader_resumes_when_packets_flow_again() {
    init_logs();
    let origin = Origin::start(0, false);
    let publisher = Publisher::start(origin.addr(), PATH, 0);
    // The pull gives up on a silent session after the edge server's read timeout (at most 5 s).
    let edge = Edge::start_configured(&origin.url(PATH), |s| s.read_timeout = Duration::from_secs(1), |_| {});
    let (mut reader, _) = play_tcp(edge.addr(), PATH);
    let before = read_consecutive(&mut reader, 10);

    publisher.pause(true);
    assert!(
        eventually(Duration::from_secs(5), || edge.pull.stats().upstream_sessions >= 2),
        "a silent origin session must be replaced: {:?}",
        edge.pull.stats()
    );
    assert!(edge.pull.stats().upstream_failures >= 1);

    publisher.pause(false);
    let last_before = *before.last().unwrap();
    let after = read_rtp_until(&mut reader, Duration::from_secs(10), |s| {
        s.iter().filter(|&&seq| seq > last_before + 10).count() >= 10
    });
    assert!(after.iter().all(|&seq| seq > last_before), "{after:?}");
    assert_eq!(edge.pull.stats().readers, 1, "the edge reader stayed");
}

#[test]
fn an_origin_coming_back_with_other_tracks_disconnects_the_edge_readers_and_serves_the_new_layout() {
    init_logs();
    let port = free_port();
    let origin = Origin::start(port, false);
    let publisher = Publisher::start(origin.addr(), PATH, 0);
    let edge = Edge::start(&origin.url(PATH), |_| {});
    let (mut reader, _) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut reader, 5);

    publisher.stop();
    drop(origin);
    let origin = Origin::start(port, false);
    let _publisher = Publisher::start_with(origin.addr(), PATH, H264_AAC_SDP, 30_000);
    assert!(
        reader.closed_within(Duration::from_secs(10)),
        "a reader of the old layout must be disconnected"
    );

    let mut client = RawClient::connect(edge.addr());
    let r = client.request("DESCRIBE", &format!("rtsp://{}/{PATH}", edge.addr()), &[], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let sdp = String::from_utf8_lossy(&r.body).into_owned();
    assert_eq!(sdp.matches("m=").count(), 2, "the edge describes the new layout: {sdp}");
    let (mut again, _) = play_tcp(edge.addr(), PATH);
    let seqs = read_consecutive(&mut again, 5);
    assert!(seqs[0] >= 30_000, "{seqs:?}");
}

#[test]
fn an_always_on_pull_starts_without_readers_and_close_ends_it() {
    init_logs();
    let origin = Origin::start(0, false);
    let _publisher = Publisher::start(origin.addr(), PATH, 0);
    let edge = Edge::start(&origin.url(PATH), |c| {
        c.on_demand = false;
        c.close_after_idle = Duration::from_millis(100);
    });
    assert!(
        eventually(Duration::from_secs(5), || edge.pull.state() == PullState::Ready
            && origin.reader_count() == 1),
        "pulling starts with no reader: {:?}",
        edge.pull.state()
    );
    let (mut reader, _) = play_tcp(edge.addr(), PATH);
    read_consecutive(&mut reader, 5);
    assert_eq!(
        edge.pull.stats().upstream_sessions,
        1,
        "the reader joined the running pull"
    );

    edge.pull.close();
    assert!(
        reader.closed_within(Duration::from_secs(5)),
        "closing the pull disconnects its readers"
    );
    assert!(
        eventually(Duration::from_secs(5), || origin.reader_count() == 0),
        "closing the pull ends the upstream session"
    );
    assert_eq!(edge.pull.state(), PullState::Idle);
    let mut client = RawClient::connect(edge.addr());
    let r = client.request("DESCRIBE", &format!("rtsp://{}/{PATH}", edge.addr()), &[], b"");
    assert_eq!(r.status, 404, "a closed pull serves nothing: {r:?}");
}

#[test]
fn ffmpeg_reads_and_decodes_from_the_edge_what_ffmpeg_publishes_to_the_origin() {
    init_logs();
    let origin = Origin::start(0, false);
    let _publisher = ffmpeg_publish(&origin.url(PATH), "tcp");
    let published = eventually(Duration::from_secs(15), || {
        let mut c = RawClient::connect(origin.addr());
        c.request("DESCRIBE", &origin.url(PATH), &[], b"").status == 200
    });
    assert!(published, "ffmpeg did not publish to the origin within 15 s");
    let edge = Edge::start(&origin.url(PATH), |_| {});
    let reader = ffmpeg_read(&format!("rtsp://{}/{PATH}", edge.addr()), "tcp", 10);
    let (out, exited) = reader.wait_for(Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "ffmpeg did not decode 10 frames from the edge: {stderr}");
    assert!(out.status.success(), "ffmpeg failed reading the edge: {stderr}");
    assert_eq!(edge.pull.stats().upstream_sessions, 1);
}
