//! Server metrics over real sockets: the relay serves a TCP publisher and TCP readers, and
//! `ServerContext::metrics()` must count exactly what went in and out; the Prometheus endpoint is
//! scraped over HTTP like Prometheus would, with its refusals.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::http::{exchange, get, header, status};
use common::relay_fixtures::{
    play_tcp, publish_tcp, rtp_packet, send_frame, session_of, start_relay, with_udp, H264_SDP,
};
use common::{eventually, RawClient, Received};
use shardcast::edge::metrics::{render, BuildInfo};
use shardcast::edge::metrics_http::{MetricsClient, MetricsServer};
use shardcast::proto::rtsp::{Response, StatusCode};
use shardcast::proto::Method;
use shardcast::server::{
    status_response, Handler, RequestContext, Server, ServerConfig, ServerMetrics, ServerStream, SetupTransport,
};
use shardcast::session::{SessionState, TransportKind};

const SETTLE: Duration = Duration::from_secs(10);

fn metrics_until(server: &Server, what: &str, condition: impl Fn(&ServerMetrics) -> bool) -> ServerMetrics {
    let settled = eventually(SETTLE, || condition(&server.context().metrics()));
    let metrics = server.context().metrics();
    assert!(settled, "{what}: {metrics:#?}");
    metrics
}

fn tcp(metrics: &ServerMetrics, state: SessionState) -> u64 {
    metrics.sessions.get(state, Some(TransportKind::Tcp))
}

#[test]
fn a_tcp_publisher_and_reader_are_counted_exactly_and_gauges_return_to_zero_when_they_leave() {
    const PACKETS: u16 = 60;
    const PAYLOAD: usize = 100;
    const GAP: u16 = 5;
    // No sender reports: the reader then gets exactly the publisher's packets.
    let (server, paths) = start_relay(|c| c.disable_rtcp_sender_reports = true);
    let addr = server.local_addr();
    let (mut publisher, _) = publish_tcp(addr, "cam", H264_SDP);
    let (mut reader, _) = play_tcp(addr, "cam");
    let metrics = metrics_until(&server, "a publisher and a reader", |m| {
        m.connections_open == 2 && tcp(m, SessionState::Record) == 1 && tcp(m, SessionState::Play) == 1
    });
    assert_eq!(metrics.connections_accepted, 2);
    assert_eq!(metrics.sessions.total(), 2, "{:?}", metrics.sessions);

    // Sequence numbers skip GAP packets half way: the publisher lost them on its way here.
    let packets: Vec<Vec<u8>> = (0..PACKETS)
        .map(|i| if i < PACKETS / 2 { i } else { i + GAP })
        .map(|seq| rtp_packet(seq, &[0xab; PAYLOAD]))
        .collect();
    let packet_len = packets[0].len() as u64;
    for packet in &packets {
        send_frame(&mut publisher, 0, packet);
    }
    let mut got = 0u64;
    let mut got_bytes = 0u64;
    while got < u64::from(PACKETS) {
        match reader.receive() {
            Received::Frame { channel, payload } => {
                assert_eq!(channel, 0, "only RTP: sender reports are off");
                got += 1;
                got_bytes += payload.len() as u64;
            }
            Received::Response(r) => panic!("unexpected response {r:?}"),
            Received::Closed => panic!("the reader was closed after {got} packets"),
        }
    }
    let total = u64::from(PACKETS) * packet_len;
    let metrics = metrics_until(&server, "every packet counted", |m| {
        m.received_packets == u64::from(PACKETS) && m.sent_packets == got
    });
    assert_eq!(
        (metrics.received_packets, metrics.received_bytes),
        (u64::from(PACKETS), total)
    );
    assert_eq!((metrics.sent_packets, metrics.sent_bytes), (got, got_bytes));
    assert_eq!(got_bytes, total);
    assert_eq!(metrics.packets_lost, u64::from(GAP));
    assert_eq!(
        metrics.packets_lost,
        paths.packets_lost(),
        "the handler heard the same loss"
    );
    assert_eq!(metrics.packets_dropped_slow_reader, 0);
    assert_eq!(metrics.udp_ingress_dropped, 0);
    assert!(!metrics.core_busy_seconds.is_empty(), "one entry per core");

    drop(publisher);
    drop(reader);
    let metrics = metrics_until(&server, "gauges back to zero", |m| {
        m.connections_open == 0 && m.sessions.total() == 0
    });
    assert_eq!(metrics.connections_accepted, 2, "counters keep their totals");
    assert_eq!(metrics.received_packets, u64::from(PACKETS));
    server.close();
}

#[test]
fn cores_report_busy_time_once_a_second() {
    let (server, _paths) = start_relay(|_| {});
    let (_publisher, _) = publish_tcp(server.local_addr(), "cam", H264_SDP);
    let metrics = metrics_until(&server, "busy time on every core", |m| {
        !m.core_busy_seconds.is_empty() && m.core_busy_seconds.iter().all(|s| *s > 0.0)
    });
    assert!(metrics.core_busy_seconds.iter().all(|s| *s < 60.0), "{metrics:?}");
    server.close();
}

/// Sends an RTSP request over a plain socket and reads its response head; returns the Session id.
fn raw_request(stream: &mut TcpStream, cseq: u32, method: &str, url: &str, extra: &str) -> Option<String> {
    let text = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n{extra}\r\n");
    stream.write_all(text.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("RTSP/1.0 200"), "{method}: {head}");
    head.lines()
        .find_map(|l| l.strip_prefix("Session: "))
        .map(|s| s.split(';').next().unwrap().to_owned())
}

#[test]
fn a_reader_that_never_reads_makes_the_slow_reader_drop_counter_rise() {
    let (server, _paths) = start_relay(|c| {
        c.write_queue_size = 16;
        c.disable_rtcp_sender_reports = true;
    });
    let addr = server.local_addr();
    let (mut publisher, _) = publish_tcp(addr, "cam", H264_SDP);
    // A tiny receive buffer and MSS, so the server's writes to this reader block after a few
    // segments and its write queue fills (as in tests/fanout_tcp.rs).
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_mss(1000).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stalled: TcpStream = socket.into();
    stalled.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let base = format!("rtsp://{addr}/cam");
    let session = raw_request(
        &mut stalled,
        1,
        "SETUP",
        &format!("{base}/trackID=0"),
        "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n",
    )
    .unwrap();
    raw_request(&mut stalled, 2, "PLAY", &base, &format!("Session: {session}\r\n"));
    metrics_until(&server, "the reader plays", |m| tcp(m, SessionState::Play) == 1);

    let deadline = Instant::now() + SETTLE;
    let mut seq = 0u16;
    while server.context().metrics().packets_dropped_slow_reader == 0 {
        assert!(Instant::now() < deadline, "{:#?}", server.context().metrics());
        for _ in 0..50 {
            send_frame(&mut publisher, 0, &rtp_packet(seq, &[0x5a; 1200]));
            seq = seq.wrapping_add(1);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let metrics = server.context().metrics();
    assert!(
        metrics.sent_packets + metrics.packets_dropped_slow_reader + metrics.ring_overrun_packets <= u64::from(seq),
        "a reader cannot be sent or lose more than was published: {metrics:#?}"
    );
    server.close();
}

// ---- UDP, and a stream's reader count ----

/// Two UDP sockets on 127.0.0.1 (RTP, RTCP) and their `client_port` value.
fn client_sockets() -> (UdpSocket, UdpSocket, String) {
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let ports = format!(
        "{}-{}",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    );
    (rtp, rtcp, ports)
}

/// A reader of `path` over UDP at `ports`: SETUP, PLAY.
fn play_udp(addr: SocketAddr, path: &str, ports: &str) -> RawClient {
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let t = format!("RTP/AVP;unicast;client_port={ports}");
    let r = c.request("SETUP", &format!("{base}/trackID=0"), &[("Transport", &t)], b"");
    assert_eq!(r.status, 200, "SETUP: {r:?}");
    let session = session_of(&r);
    assert_eq!(c.request("PLAY", &base, &[("Session", &session)], b"").status, 200);
    c
}

#[test]
fn udp_ingest_and_udp_sends_are_counted_exactly() {
    const PACKETS: u16 = 40;
    let (server, _paths) = start_relay(|c| {
        with_udp(c);
        c.disable_rtcp_sender_reports = true;
    });
    let addr = server.local_addr();
    let (server_rtp, _) = server.context().udp_server_ports().unwrap();
    // The publisher: ANNOUNCE, SETUP with client ports and mode=record, RECORD.
    let (publisher_rtp, _publisher_rtcp, publisher_ports) = client_sockets();
    let mut publisher = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/cam");
    let r = publisher.request(
        "ANNOUNCE",
        &base,
        &[("Content-Type", "application/sdp")],
        H264_SDP.as_bytes(),
    );
    let session = session_of(&r);
    let t = format!("RTP/AVP;unicast;client_port={publisher_ports};mode=record");
    let r = publisher.request(
        "SETUP",
        &format!("{base}/streamid=0"),
        &[("Transport", &t), ("Session", &session)],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        publisher.request("RECORD", &base, &[("Session", &session)], b"").status,
        200
    );
    let (reader_rtp, _reader_rtcp, reader_ports) = client_sockets();
    let _reader = play_udp(addr, "cam", &reader_ports);
    metrics_until(&server, "a UDP publisher and a UDP reader", |m| {
        m.sessions.get(SessionState::Record, Some(TransportKind::Udp)) == 1
            && m.sessions.get(SessionState::Play, Some(TransportKind::Udp)) == 1
    });

    let to = SocketAddr::from(([127, 0, 0, 1], server_rtp));
    let packet_len = rtp_packet(0, &[7; 200]).len() as u64;
    let mut got = 0u64;
    let mut buf = [0u8; 2048];
    for seq in 0..PACKETS {
        publisher_rtp.send_to(&rtp_packet(seq, &[7; 200]), to).unwrap();
        // One at a time, so no socket buffer on the way can overflow and make the count inexact.
        let n = reader_rtp.recv(&mut buf).unwrap();
        assert_eq!(n as u64, packet_len);
        got += 1;
    }
    let metrics = metrics_until(&server, "every datagram counted", |m| {
        m.received_packets == u64::from(PACKETS) && m.sent_packets == got
    });
    assert_eq!(metrics.received_bytes, u64::from(PACKETS) * packet_len);
    assert_eq!(metrics.sent_bytes, got * packet_len);
    assert_eq!((metrics.packets_lost, metrics.udp_ingress_dropped), (0, 0));
    server.close();
}

/// A handler serving one stream to every reader, whatever the path.
struct OneStream {
    stream: ServerStream,
}

impl Handler for OneStream {
    fn supported_methods(&self) -> &[Method] {
        &[Method::Setup, Method::Play]
    }

    async fn on_setup(
        &self,
        _ctx: &RequestContext<'_>,
        _transport: &SetupTransport,
    ) -> (Response, Option<ServerStream>) {
        (status_response(StatusCode::OK), Some(self.stream.clone()))
    }

    async fn on_play(&self, _ctx: &RequestContext<'_>) -> Response {
        status_response(StatusCode::OK)
    }
}

#[test]
fn a_stream_reports_its_tcp_and_udp_readers_on_every_core() {
    let streams: Arc<OnceLock<ServerStream>> = Arc::default();
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    with_udp(&mut config);
    let server = Server::start(config, {
        let streams = streams.clone();
        move |ctx, _| {
            let stream = streams.get_or_init(|| {
                ServerStream::new(ctx, shardcast::proto::sdp::parse(H264_SDP.as_bytes()).unwrap()).unwrap()
            });
            OneStream { stream: stream.clone() }
        }
    })
    .unwrap();
    // The cores make their handlers as they start.
    assert!(eventually(SETTLE, || streams.get().is_some()));
    let stream = streams.get().unwrap().clone();
    let addr = server.local_addr();
    assert_eq!(stream.stats().readers, 0);
    let (first, _) = play_tcp(addr, "any");
    let (_second, _) = play_tcp(addr, "any");
    let (_rtp, _rtcp, ports) = client_sockets();
    let _udp = play_udp(addr, "any", &ports);
    assert!(
        eventually(SETTLE, || stream.stats().readers == 3),
        "{:?}",
        stream.stats()
    );
    drop(first);
    assert!(
        eventually(SETTLE, || stream.stats().readers == 2),
        "{:?}",
        stream.stats()
    );
    stream.close();
    assert!(
        eventually(SETTLE, || stream.stats().readers == 0),
        "{:?}",
        stream.stats()
    );
    server.close();
}

// ---- the HTTP endpoint ----

const USER: &str = "prometheus";
const PASSWORD: &str = "s3cret";

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// An endpoint rendering `server`'s metrics, open to `USER`/`PASSWORD` only.
fn endpoint(server: &Server) -> MetricsServer {
    let context = server.context().clone();
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        rustc: None,
    };
    MetricsServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(move || render(&context.metrics(), &[], &build)),
        Arc::new(|client: &MetricsClient| {
            client.ip.is_loopback() && client.basic == Some((USER.to_owned(), PASSWORD.to_owned()))
        }),
    )
    .unwrap()
}

#[test]
fn a_scrape_returns_prometheus_text_with_the_server_s_current_values() {
    let (server, _paths) = start_relay(|_| {});
    let endpoint = endpoint(&server);
    let mut rtsp = RawClient::connect(server.local_addr());
    let options = rtsp.request("OPTIONS", &format!("rtsp://{}/", server.local_addr()), &[], b"");
    assert_eq!(options.status, 200);

    let response = get(endpoint.local_addr(), "GET", "/metrics", Some(&basic(USER, PASSWORD)));
    assert_eq!(status(&response), "200", "{response}");
    assert_eq!(
        header(&response, "Content-Type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    assert_eq!(
        header(&response, "Content-Length"),
        Some(body.len().to_string().as_str())
    );
    assert!(body.lines().any(|l| l == "shardcast_connections 1"), "{body}");
    assert!(body.contains("# TYPE shardcast_sent_packets_total counter"), "{body}");
    let version_line = format!("shardcast_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    assert!(body.lines().any(|l| l == version_line), "{body}");

    let head = get(
        endpoint.local_addr(),
        "HEAD",
        "/metrics?x=1",
        Some(&basic(USER, PASSWORD)),
    );
    assert_eq!(status(&head), "200", "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body for HEAD: {head}");
    server.close();
}

#[test]
fn wrong_credentials_paths_methods_and_oversized_requests_are_refused() {
    let (server, _paths) = start_relay(|_| {});
    let endpoint = endpoint(&server);
    let addr = endpoint.local_addr();

    for authorization in [None, Some(basic(USER, "wrong")), Some("not base64!".to_owned())] {
        let response = get(addr, "GET", "/metrics", authorization.as_deref());
        assert_eq!(status(&response), "401", "{response}");
        assert_eq!(header(&response, "WWW-Authenticate"), Some("Basic realm=\"shardcast\""));
        assert!(!response.contains("shardcast_connections"), "{response}");
    }
    let response = get(addr, "GET", "/other", Some(&basic(USER, PASSWORD)));
    assert_eq!(status(&response), "404", "{response}");
    let response = get(addr, "POST", "/metrics", Some(&basic(USER, PASSWORD)));
    assert_eq!(status(&response), "405", "{response}");
    assert_eq!(header(&response, "Allow"), Some("GET, HEAD"));

    let response = exchange(addr, b"this is not http\r\n\r\n");
    assert_eq!(status(&response), "400", "{response}");
    let huge = format!("GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n", "a".repeat(9 * 1024));
    let response = exchange(addr, huge.as_bytes());
    assert_eq!(status(&response), "400", "{response}");
    server.close();
}

#[test]
fn a_silent_client_does_not_hold_up_the_next_scrape_and_close_stops_listening() {
    let (server, _paths) = start_relay(|_| {});
    let mut endpoint = endpoint(&server);
    let addr = endpoint.local_addr();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();

    let started = Instant::now();
    let response = get(addr, "GET", "/metrics", Some(&basic(USER, PASSWORD)));
    assert_eq!(status(&response), "200", "{response}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );

    // The silent client is dropped after the read timeout (5 s), without a response.
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let waited = Instant::now();
    let _ = silent.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    assert!(
        waited.elapsed() < Duration::from_secs(8),
        "closed after {:?}",
        waited.elapsed()
    );
    drop(half);

    endpoint.close();
    assert!(
        eventually(Duration::from_secs(2), || TcpStream::connect(addr).is_err()),
        "still accepting after close"
    );
    server.close();
}
