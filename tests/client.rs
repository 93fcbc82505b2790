//! The RTSP client (`shardcast::client`) against the relay example over real sockets: publishing
//! and reading over TCP and UDP, authentication, errors, keepalives; and against a GStreamer RTSP
//! server, so that it is not only tuned to our own server.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use common::netns::rerun_in_network_namespace;
use common::relay_fixtures::relay;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::ops::Range;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shardcast::client::{Client, ClientConfig, ClientError, ClientTransport};
use shardcast::proto::auth::AuthMethod;
use shardcast::proto::rtp::{RtpHeader, RtpView};
use shardcast::proto::rtsp::StatusCode;
use shardcast::proto::sdp;
use shardcast::server::{Server, ServerConfig};

/// One H.264 track and no `a=control`: `announce` adds `trackID=0`.
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=test\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n";

const PACKETS: u16 = 300;

fn start(config: impl FnOnce(&mut ServerConfig), credentials: Option<(&str, &str)>) -> Server {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    c.rtp_address = Some("127.0.0.1:0".parse().unwrap());
    c.rtcp_address = Some("127.0.0.1:0".parse().unwrap());
    config(&mut c);
    let paths = relay::Paths::default();
    let credentials = credentials.map(|(u, p)| (u.to_owned(), p.to_owned()));
    Server::start(c, move |ctx, _| {
        let relay = relay::Relay::new(ctx, paths.clone());
        match &credentials {
            Some((user, password)) => relay.with_credentials(user, password),
            None => relay,
        }
    })
    .expect("server starts")
}

/// Runs `f` on a glommio executor in the test thread.
fn run<T>(f: impl Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(64 * 1024)
        .make()
        .unwrap()
        .run(f)
}

fn config(transport: ClientTransport) -> ClientConfig {
    ClientConfig {
        transport,
        read_timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    }
}

/// RTP packet `seq`: a fixed header and 600 bytes that depend on `seq`.
fn packet(seq: u16) -> Vec<u8> {
    let mut p = vec![0u8; RtpHeader::LEN + 600];
    let header = RtpHeader {
        marker: seq % 10 == 9,
        payload_type: 96,
        sequence_number: seq,
        timestamp: u32::from(seq) * 3000,
        ssrc: 0x5EED_0001,
    };
    header.write(&mut p).unwrap();
    for (i, b) in p[RtpHeader::LEN..].iter_mut().enumerate() {
        *b = (i as u16).wrapping_mul(7) as u8 ^ seq as u8;
    }
    p
}

/// ANNOUNCE, SETUP and RECORD of one H.264 track at `url`.
async fn publisher(url: &str, transport: ClientTransport) -> Client {
    let mut c = Client::connect(url, config(transport)).await.unwrap();
    c.options().await.unwrap();
    c.announce(&sdp::parse(SDP.as_bytes()).unwrap()).await.unwrap();
    c.setup_all().await.unwrap();
    c.record().await.unwrap();
    c
}

/// DESCRIBE, SETUP and PLAY of every track at `url`.
async fn reader(url: &str, config: ClientConfig) -> Result<Client, ClientError> {
    let mut c = Client::connect(url, config).await?;
    c.options().await?;
    let description = c.describe().await?;
    assert_eq!(description.medias.len(), 1);
    c.setup_all().await?;
    c.play().await?;
    Ok(c)
}

/// Sends packets `seqs`, pausing every 10 so that no socket buffer or reader queue overflows.
async fn send(publisher: &mut Client, seqs: Range<u16>) {
    for seq in seqs {
        publisher.write_packet(0, false, &packet(seq)).await.unwrap();
        if seq % 10 == 9 {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Reads until `count` RTP packets arrived (RTCP, such as sender reports, is skipped).
async fn receive(reader: &mut Client, count: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        let p = reader.read_packet().await.unwrap();
        assert_eq!(p.track, 0);
        if !p.is_rtcp {
            got.push(p.data.to_vec());
        }
    }
    got
}

fn assert_every_packet(got: &[Vec<u8>], seqs: Range<u16>) {
    assert_eq!(got.len(), seqs.len());
    for (seq, p) in seqs.zip(got) {
        let received = RtpView::parse(p).map(|v| v.sequence_number());
        assert!(
            *p == packet(seq),
            "packet {seq} altered or out of order (got {received:?})"
        );
    }
}

/// A publisher over `publish` and a reader over `read` of one path: the reader gets every packet
/// in order and intact, and counts them.
fn relay_every_packet(publish: ClientTransport, read: ClientTransport) {
    let server = start(|_| {}, None);
    let url = format!("rtsp://{}/cam", server.local_addr());
    run(async move {
        let mut publisher = publisher(&url, publish).await;
        let mut reader = reader(&url, config(read)).await.unwrap();
        let receiving = glommio::spawn_local(async move {
            let got = receive(&mut reader, usize::from(PACKETS)).await;
            (got, reader)
        });
        send(&mut publisher, 0..PACKETS).await;
        let (got, mut reader) = receiving.await;
        assert_every_packet(&got, 0..PACKETS);
        let stats = reader.stats();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].packets, stats[0].lost), (u64::from(PACKETS), 0));
        assert_eq!(stats[0].bytes, u64::from(PACKETS) * packet(0).len() as u64);
        assert_eq!(publisher.stats()[0].packets, u64::from(PACKETS));
        reader.teardown().await.unwrap();
        publisher.teardown().await.unwrap();
    });
}

#[test]
fn tcp_publisher_to_tcp_reader_every_packet_in_order() {
    relay_every_packet(ClientTransport::Tcp, ClientTransport::Tcp);
}

#[test]
fn tcp_publisher_to_udp_reader_every_packet_in_order() {
    relay_every_packet(ClientTransport::Tcp, ClientTransport::Udp);
}

#[test]
fn udp_publisher_to_tcp_reader_every_packet_in_order() {
    relay_every_packet(ClientTransport::Udp, ClientTransport::Tcp);
}

/// With only `method` enabled, credentials in the URL publish and read; a wrong password and no
/// password at all get 401.
fn authenticate(method: AuthMethod) {
    let server = start(|c| c.auth_methods = vec![method], Some(("alice", "s3cret")));
    let addr = server.local_addr();
    run(async move {
        let good = format!("rtsp://alice:s3cret@{addr}/cam");
        let mut publisher = publisher(&good, ClientTransport::Tcp).await;
        let mut good_reader = reader(&good, config(ClientTransport::Udp)).await.unwrap();
        assert!(
            !good_reader.url().contains("alice"),
            "credentials stay out of request URLs"
        );
        let receiving = glommio::spawn_local(async move { receive(&mut good_reader, 20).await });
        send(&mut publisher, 0..20).await;
        assert_every_packet(&receiving.await, 0..20);

        for url in [format!("rtsp://{addr}/cam"), format!("rtsp://alice:wrong@{addr}/cam")] {
            let err = reader(&url, config(ClientTransport::Tcp)).await.err().unwrap();
            assert!(
                matches!(
                    err,
                    ClientError::Status {
                        status: StatusCode::UNAUTHORIZED,
                        ..
                    }
                ),
                "{method} with {url}: {err}"
            );
        }
    });
}

#[test]
fn basic_auth_from_the_url() {
    authenticate(AuthMethod::Basic);
}

#[test]
fn digest_md5_auth_from_the_url() {
    authenticate(AuthMethod::DigestMd5);
}

#[test]
fn digest_sha256_auth_from_the_url() {
    authenticate(AuthMethod::DigestSha256);
}

#[test]
fn nothing_listening_is_a_connect_error_at_once() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = Instant::now();
    let err = run(async move {
        Client::connect(&format!("rtsp://127.0.0.1:{port}/cam"), config(ClientTransport::Tcp))
            .await
            .err()
            .unwrap()
    });
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
}

#[test]
fn describe_of_an_unpublished_path_is_404() {
    let server = start(|_| {}, None);
    let url = format!("rtsp://{}/nobody", server.local_addr());
    let err = run(async move { reader(&url, config(ClientTransport::Tcp)).await.err().unwrap() });
    assert!(
        matches!(
            err,
            ClientError::Status {
                status: StatusCode::NOT_FOUND,
                ..
            }
        ),
        "{err}"
    );
}

/// Reads one request head (the client sends no body with OPTIONS) and returns it.
fn read_request_head(reader: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "client closed: {head}");
        head.push_str(&line);
        if line == "\r\n" {
            return head;
        }
    }
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn a_digest_challenge_with_qop_is_answered_with_a_client_nonce_and_an_increasing_count() {
    use shardcast::proto::auth::{verify, Authorization, Credentials};
    use std::io::Write;

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("rtsp://{addr}/cam");
    let camera = std::thread::spawn({
        let url = url.clone();
        move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut counts = Vec::new();
            for round in 0..3 {
                let head = read_request_head(&mut reader);
                let cseq = header_value(&head, "CSeq").unwrap().to_owned();
                let reply = match header_value(&head, "Authorization") {
                    None => format!(
                        "RTSP/1.0 401 Unauthorized\r\nCSeq: {cseq}\r\n\
                         WWW-Authenticate: Digest realm=\"cam\", nonce=\"n0nce\", qop=\"auth\"\r\n\r\n"
                    ),
                    Some(value) => {
                        let a = Authorization::parse(value).unwrap();
                        let creds = Credentials {
                            username: "admin",
                            password: "12345",
                        };
                        let ok = verify(&a, &[AuthMethod::DigestMd5], "OPTIONS", &url, "cam", "n0nce", &creds);
                        let Authorization::Digest(d) = &a else {
                            panic!("not Digest: {value}")
                        };
                        assert!(ok, "round {round}: {value}");
                        assert_eq!(d.qop.as_deref(), Some("auth"), "{value}");
                        counts.push((d.nc.clone().unwrap(), d.cnonce.clone().unwrap()));
                        format!("RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")
                    }
                };
                writer.write_all(reply.as_bytes()).unwrap();
            }
            counts
        }
    });
    run(async move {
        let mut client = Client::connect(&format!("rtsp://admin:12345@{addr}/cam"), ClientConfig::default())
            .await
            .unwrap();
        client.options().await.unwrap();
        client.options().await.unwrap();
    });
    let counts = camera.join().unwrap();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!((counts[0].0.as_str(), counts[1].0.as_str()), ("00000001", "00000002"));
    assert_eq!(counts[0].1, counts[1].1, "one client nonce per challenge");
    assert!(counts[0].1.len() >= 8, "{counts:?}");
}

#[test]
fn a_silent_server_is_a_timeout_after_the_read_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // Read the request and say nothing, until the client gives up and closes.
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        sink
    });
    let start = Instant::now();
    let err = run(async move {
        let config = ClientConfig {
            read_timeout: Duration::from_millis(500),
            ..ClientConfig::default()
        };
        let mut client = Client::connect(&format!("rtsp://{addr}/cam"), config).await.unwrap();
        client.describe().await.err().unwrap()
    });
    let elapsed = start.elapsed();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("DESCRIBE"), "{err}");
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    let request = String::from_utf8(holder.join().unwrap()).unwrap();
    assert!(
        request.starts_with(&format!("DESCRIBE rtsp://{addr}/cam RTSP/1.0\r\n")),
        "{request}"
    );
    assert!(
        request.contains("CSeq: 1\r\n") && request.contains("User-Agent: shardcast/"),
        "{request}"
    );
}

#[test]
fn keepalives_keep_a_udp_reader_alive_past_the_idle_timeout() {
    let server = start(|c| c.idle_timeout = Duration::from_secs(1), None);
    let url = format!("rtsp://{}/cam", server.local_addr());
    run(async move {
        let mut publisher = publisher(&url, ClientTransport::Tcp).await;
        let kept = ClientConfig {
            transport: ClientTransport::Udp,
            keepalive_interval: Duration::from_millis(300),
            read_timeout: Duration::from_secs(1),
            ..ClientConfig::default()
        };
        // The control: the same reader with keepalives off must be dropped by the server.
        let silent = ClientConfig {
            keepalive_interval: Duration::ZERO,
            ..kept.clone()
        };
        // No OPTIONS first: PLAY must find out by itself which keepalive this server takes.
        let play = |config: ClientConfig| {
            let url = url.clone();
            async move {
                let mut c = Client::connect(&url, config).await.unwrap();
                c.describe().await.unwrap();
                c.setup_all().await.unwrap();
                c.play().await.unwrap();
                c
            }
        };
        let mut kept = play(kept).await;
        let mut silent = play(silent).await;
        let start = Instant::now();
        let sending = glommio::spawn_local(async move {
            let mut seq = 0u16;
            while start.elapsed() < Duration::from_millis(3500) {
                publisher.write_packet(0, false, &packet(seq)).await.unwrap();
                seq += 1;
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        });
        let silent_end = glommio::spawn_local(async move {
            loop {
                if let Err(e) = silent.read_packet().await {
                    return (e, start.elapsed());
                }
            }
        });
        let mut last = 0;
        while start.elapsed() < Duration::from_secs(3) {
            let p = kept.read_packet().await.unwrap();
            if !p.is_rtcp {
                last = RtpView::parse(p.data).unwrap().sequence_number();
            }
        }
        assert!(
            last > 200,
            "the kept reader got packets until the end (last seq {last})"
        );
        let stats = kept.stats();
        assert_eq!(stats[0].lost, 0, "{stats:?}");
        let (err, at) = silent_end.await;
        assert!(
            matches!(err, ClientError::Timeout { .. } | ClientError::Closed),
            "{err}"
        );
        assert!(
            at < Duration::from_secs(3),
            "the reader without keepalives was dropped at {at:?}"
        );
        sending.await;
        kept.teardown().await.unwrap();
    });
}

#[test]
fn two_multicast_readers_on_one_host_get_every_packet() {
    if rerun_in_network_namespace("two_multicast_readers_on_one_host_get_every_packet") {
        return;
    }
    let server = start(
        |c| {
            c.multicast_ip_range = Some("239.6.0.0/16".parse().unwrap());
            c.multicast_rtp_port = Some(19102);
            c.multicast_rtcp_port = Some(19103);
        },
        None,
    );
    let url = format!("rtsp://{}/cam", server.local_addr());
    run(async move {
        let mut publisher = publisher(&url, ClientTransport::Tcp).await;
        let mut first = reader(&url, config(ClientTransport::UdpMulticast)).await.unwrap();
        let mut second = reader(&url, config(ClientTransport::UdpMulticast)).await.unwrap();
        let first_receives = glommio::spawn_local(async move { receive(&mut first, 100).await });
        let second_receives = glommio::spawn_local(async move { receive(&mut second, 100).await });
        send(&mut publisher, 0..100).await;
        assert_every_packet(&first_receives.await, 0..100);
        assert_every_packet(&second_receives.await, 0..100);
    });
}

/// A GStreamer RTSP server (tests/tools/gst_rtsp_server.py) killed when dropped.
struct GstServer {
    child: Child,
    port: u16,
}

impl GstServer {
    fn start() -> GstServer {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/gst_rtsp_server.py");
        let mut child = Command::new("/usr/bin/python3")
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run /usr/bin/python3 (python3-gi and gir1.2-gst-rtsp-server-1.0 must be installed)");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = GstServer { child, port };
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.trim() == "ready" => server,
            other => {
                let _ = server.child.kill();
                let mut stderr = String::new();
                if let Some(mut e) = server.child.stderr.take() {
                    let _ = e.read_to_string(&mut stderr);
                }
                panic!("the GStreamer RTSP server did not start ({other:?}): {stderr}");
            }
        }
    }
}

impl Drop for GstServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn reads_from_a_gstreamer_rtsp_server_over_tcp_and_udp() {
    let gst = GstServer::start();
    let url = format!("rtsp://127.0.0.1:{}/test", gst.port);
    for transport in [ClientTransport::Tcp, ClientTransport::Udp] {
        let url = url.clone();
        let (sequences, info, stats) = run(async move {
            let mut client = Client::connect(&url, config(transport)).await.unwrap();
            let methods = client.options().await.unwrap();
            assert!(methods.contains(&shardcast::proto::Method::Describe), "{methods:?}");
            let description = client.describe().await.unwrap();
            assert_eq!(description.medias[0].clock_rate(), Some(90_000));
            client.setup_all().await.unwrap();
            let info = client.play().await.unwrap();
            let mut sequences = Vec::new();
            while sequences.len() < 50 {
                let p = client.read_packet().await.unwrap();
                if !p.is_rtcp {
                    let view = RtpView::parse(p.data).unwrap();
                    assert_eq!(view.payload_type(), 96);
                    sequences.push(view.sequence_number());
                }
            }
            let stats = client.stats();
            client.teardown().await.unwrap();
            (sequences, info, stats)
        });
        let first = sequences[0];
        let expected: Vec<u16> = (0..50).map(|i| first.wrapping_add(i)).collect();
        assert_eq!(sequences, expected, "{transport:?}: 50 packets in order");
        assert_eq!(info.rtp_info.len(), 1, "{transport:?}: {info:?}");
        assert_eq!(stats[0].packets, 50, "{transport:?}: {stats:?}");
    }
}
