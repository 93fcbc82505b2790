//! Fan-out over TCP with real sockets: many interleaved readers of one published stream each get
//! every packet, in order and intact; a reader that stops reading loses packets alone and is closed
//! after the write timeout, while the publisher, the other readers and the server carry on.
//!
//! The readers are hand-written (their own RTSP handshake, their own `$`-frame parser) so that a
//! bug in the crate's codec cannot hide itself.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::relay_fixtures::relay;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{eventually, RawClient};
use shardcast::server::{Server, ServerConfig};

/// One H.264 video track, as a camera would announce it.
const SDP: &str = "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=fanout\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n\
m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:streamid=0\r\n";

/// The tests load both cores of a small machine; running them one at a time keeps each one's
/// timing its own.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config(&mut c);
    let paths = relay::Paths::default();
    Server::start(c, move |ctx, _| relay::Relay::new(ctx, paths.clone())).expect("server starts")
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("rtsp://{addr}/{path}")
}

/// A publisher of `path` over TCP (ANNOUNCE, SETUP interleaved=0-1 mode=record, RECORD).
fn publish(addr: SocketAddr, path: &str) -> (RawClient, String) {
    let mut c = RawClient::connect(addr);
    let base = url(addr, path);
    let r = c.request(
        "ANNOUNCE",
        &base,
        &[("Content-Type", "application/sdp")],
        SDP.as_bytes(),
    );
    assert_eq!(r.status, 200, "ANNOUNCE: {r:?}");
    let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
    let r = c.request(
        "SETUP",
        &format!("{base}/streamid=0"),
        &[
            ("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1;mode=record"),
            ("Session", &session),
        ],
        b"",
    );
    assert_eq!(r.status, 200, "SETUP: {r:?}");
    let r = c.request("RECORD", &base, &[("Session", &session)], b"");
    assert_eq!(r.status, 200, "RECORD: {r:?}");
    (c, session)
}

/// RTP packet `seq` with `payload_len` payload bytes that differ from one packet to the next.
fn rtp_packet(seq: u16, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i * 7 + usize::from(seq) * 13) as u8));
    p
}

/// Sends `packets` on channel 0 in bursts of `burst`, one burst every `period`, like an encoder
/// sending one video frame at a time, calling `after_burst` after each; returns when the last burst
/// is written. A late burst does not make the next one early, so a descheduled test thread never
/// sends two bursts back to back.
fn send_paced(
    publisher: &mut RawClient,
    packets: &[Vec<u8>],
    burst: usize,
    period: Duration,
    mut after_burst: impl FnMut(),
) {
    let mut due = Instant::now();
    for chunk in packets.chunks(burst) {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        due = due.max(Instant::now()) + period;
        let mut bytes = Vec::with_capacity(chunk.iter().map(|p| p.len() + 4).sum());
        for p in chunk {
            bytes.extend_from_slice(&[b'$', 0]);
            bytes.extend_from_slice(&u16::try_from(p.len()).unwrap().to_be_bytes());
            bytes.extend_from_slice(p);
        }
        publisher.send_raw(&bytes);
        after_burst();
    }
}

/// An RTSP response as a player sees it.
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// What one read from a player's socket gave.
enum Pull {
    Data,
    Idle,
    Closed(String),
}

/// A player over a plain socket: DESCRIBE, SETUP, PLAY by hand, then interleaved frames parsed from
/// its own buffer (which keeps whatever followed the PLAY response).
struct Player {
    stream: TcpStream,
    buf: Vec<u8>,
    cseq: u32,
}

impl Player {
    /// Describes, sets up the video track over TCP (channels 0-1) and plays `path` on `stream`.
    fn play(addr: SocketAddr, path: &str, stream: TcpStream) -> Player {
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut p = Player {
            stream,
            buf: Vec::new(),
            cseq: 0,
        };
        let base = url(addr, path);
        let r = p.request("DESCRIBE", &base, &[("Accept", "application/sdp")]);
        assert_eq!(r.status, 200, "DESCRIBE: {}", r.head);
        let sdp = String::from_utf8_lossy(&r.body).into_owned();
        assert!(sdp.contains("a=control:trackID=0"), "{sdp}");
        let r = p.request(
            "SETUP",
            &format!("{base}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert_eq!(r.status, 200, "SETUP: {}", r.head);
        assert!(
            r.header("Transport").is_some_and(|t| t.contains("interleaved=0-1")),
            "{}",
            r.head
        );
        let session = r.header("Session").unwrap().split(';').next().unwrap().to_owned();
        let r = p.request("PLAY", &base, &[("Session", &session)]);
        assert_eq!(r.status, 200, "PLAY: {}", r.head);
        p
    }

    /// Sends a request and waits (blocking) for its response, skipping interleaved frames.
    fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.cseq += 1;
        let request = common::encode_request(self.cseq, method, url, headers, b"");
        self.stream.write_all(&request).unwrap();
        let mut scratch = vec![0u8; 16 * 1024];
        loop {
            self.frames(|_, _| {}).ok();
            if let Some(reply) = self.take_response() {
                assert_eq!(
                    reply.header("CSeq"),
                    Some(self.cseq.to_string().as_str()),
                    "{}",
                    reply.head
                );
                return reply;
            }
            match self.pull(&mut scratch) {
                Pull::Data => {}
                Pull::Idle => panic!("no response to {method} within the read timeout"),
                Pull::Closed(why) => panic!("connection {why} while waiting for the {method} response"),
            }
        }
    }

    /// Removes a complete response from the front of the buffer, if there is one.
    fn take_response(&mut self) -> Option<Reply> {
        if self.buf.first() == Some(&b'$') {
            return None;
        }
        let end = self.buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let status_line = head.lines().next().unwrap_or_default();
        let mut parts = status_line.split_whitespace();
        assert_eq!(parts.next(), Some("RTSP/1.0"), "status line {status_line:?}");
        let status = parts.next().and_then(|s| s.parse().ok()).expect("status code");
        let mut reply = Reply {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = reply.header("Content-Length").map_or(0, |v| v.parse().unwrap());
        if self.buf.len() < end + len {
            return None;
        }
        reply.body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        Some(reply)
    }

    /// One read from the socket into the buffer.
    fn pull(&mut self, scratch: &mut [u8]) -> Pull {
        match self.stream.read(scratch) {
            Ok(0) => Pull::Closed("closed by the server".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&scratch[..n]);
                Pull::Data
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Pull::Idle,
            Err(e) if e.kind() == ErrorKind::Interrupted => Pull::Data,
            Err(e) => Pull::Closed(format!("failed: {e}")),
        }
    }

    /// Hands every complete interleaved frame at the front of the buffer to `f` (channel, packet)
    /// and removes it; an incomplete frame stays for the next read. Anything that is not a frame is
    /// an error.
    fn frames(&mut self, mut f: impl FnMut(u8, &[u8])) -> Result<(), String> {
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            if rest.len() < 4 {
                break Ok(());
            }
            if rest[0] != b'$' {
                break Err(format!(
                    "expected an interleaved frame, got {:?}",
                    String::from_utf8_lossy(&rest[..rest.len().min(60)])
                ));
            }
            let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            if rest.len() < 4 + len {
                break Ok(());
            }
            f(rest[1], &rest[4..4 + len]);
            at += 4 + len;
        };
        self.buf.drain(..at);
        result
    }
}

/// A reader's packets checked one by one against what was published.
struct Check {
    expected: Arc<Vec<Vec<u8>>>,
    /// Index of the next packet that may arrive.
    next: usize,
    /// Packets received intact on channel 0.
    received: usize,
    /// Whether gaps are allowed (a reader that is expected to lose packets).
    lossy: bool,
    error: Option<String>,
}

impl Check {
    fn new(expected: Arc<Vec<Vec<u8>>>, lossy: bool) -> Check {
        Check {
            expected,
            next: 0,
            received: 0,
            lossy,
            error: None,
        }
    }

    fn frame(&mut self, channel: u8, packet: &[u8]) {
        if self.error.is_some() {
            return;
        }
        match channel {
            0 => {
                let seq = packet.get(2..4).map(|s| usize::from(u16::from_be_bytes([s[0], s[1]])));
                let index = if self.lossy {
                    seq.filter(|&s| s >= self.next).unwrap_or(self.next)
                } else {
                    self.next
                };
                match self.expected.get(index) {
                    Some(p) if p.as_slice() == packet => {
                        self.next = index + 1;
                        self.received += 1;
                    }
                    Some(_) => {
                        self.fail(format!(
                            "after {} packets: expected seq {} or later, got {} bytes with seq {seq:?}",
                            self.received,
                            self.next,
                            packet.len()
                        ));
                    }
                    None => self.fail(format!("a packet after the last one published (seq {seq:?})")),
                }
            }
            1 => {} // an RTCP sender report
            other => self.fail(format!("a frame on channel {other}, which was not set up")),
        }
    }

    fn fail(&mut self, why: String) {
        self.error.get_or_insert(why);
    }

    fn complete(&self) -> bool {
        self.received == self.expected.len()
    }
}

/// Reads `players` without blocking until each has every packet or failed, or `stop` is set;
/// counts each finished player in `finished`.
fn spawn_readers(
    mut players: Vec<Player>,
    expected: &Arc<Vec<Vec<u8>>>,
    finished: &Arc<AtomicUsize>,
    stop: &Arc<AtomicBool>,
) -> JoinHandle<Vec<(Player, Check)>> {
    let mut checks: Vec<Check> = players.iter().map(|_| Check::new(expected.clone(), false)).collect();
    let (finished, stop) = (finished.clone(), stop.clone());
    std::thread::spawn(move || {
        for p in &players {
            p.stream.set_nonblocking(true).unwrap();
        }
        let mut done = vec![false; players.len()];
        let mut scratch = vec![0u8; 64 * 1024];
        while !stop.load(Ordering::Relaxed) && done.iter().any(|d| !d) {
            let mut progressed = false;
            for ((player, check), done) in players.iter_mut().zip(&mut checks).zip(&mut done) {
                if *done {
                    continue;
                }
                loop {
                    match player.pull(&mut scratch) {
                        Pull::Data => progressed = true,
                        Pull::Idle => break,
                        Pull::Closed(why) => {
                            check.fail(format!("connection {why}"));
                            break;
                        }
                    }
                }
                if let Err(e) = player.frames(|channel, packet| check.frame(channel, packet)) {
                    check.fail(e);
                }
                if check.complete() || check.error.is_some() {
                    *done = true;
                    finished.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for p in &players {
            p.stream.set_nonblocking(false).unwrap();
        }
        players.into_iter().zip(checks).collect()
    })
}

/// What a reader missed, for a failure message.
fn shortfall(i: usize, check: &Check) -> Option<String> {
    if check.complete() && check.error.is_none() {
        return None;
    }
    Some(format!(
        "reader {i}: {} of {} packets{}",
        check.received,
        check.expected.len(),
        check.error.as_deref().map(|e| format!(", {e}")).unwrap_or_default()
    ))
}

#[test]
fn two_hundred_tcp_readers_each_receive_every_packet_in_order() {
    const READERS: usize = 200;
    const PER_THREAD: usize = 20;
    const PACKETS: u16 = 2000;
    // 25 "video frames" a second of 20 packets of ~1 kB: about 4 Mbit/s, 800 Mbit/s out of the server.
    const BURST: usize = 20;
    const PERIOD: Duration = Duration::from_millis(40);
    let _serial = serial();
    let began = Instant::now();
    let server = start_with(|_| {});
    let addr = server.local_addr();
    let (mut publisher, session) = publish(addr, "fanout");
    let expected: Arc<Vec<Vec<u8>>> = Arc::new((0..PACKETS).map(|seq| rtp_packet(seq, 1000)).collect());

    // Separate connections: SO_REUSEPORT spreads them over the server's cores.
    let mut players: Vec<Player> = (0..READERS)
        .map(|_| Player::play(addr, "fanout", TcpStream::connect(addr).unwrap()))
        .collect();
    let ready = began.elapsed();
    let finished = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    while !players.is_empty() {
        let rest = players.split_off(players.len().min(PER_THREAD));
        threads.push(spawn_readers(players, &expected, &finished, &stop));
        players = rest;
    }

    let sending = Instant::now();
    send_paced(&mut publisher, &expected, BURST, PERIOD, || {});
    let sent = sending.elapsed();
    let all_finished = eventually(Duration::from_secs(8), || finished.load(Ordering::Relaxed) == READERS);
    let delivered = sending.elapsed();
    stop.store(true, Ordering::Relaxed);
    let results: Vec<(Player, Check)> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert_eq!(results.len(), READERS);

    let failures: Vec<String> = results
        .iter()
        .enumerate()
        .filter_map(|(i, (_, check))| shortfall(i, check))
        .collect();
    assert!(
        failures.is_empty() && all_finished,
        "{} of {READERS} readers did not receive all {PACKETS} packets intact and in order:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // The publisher was not disturbed by the fan-out.
    let r = publisher.request("OPTIONS", &url(addr, "fanout"), &[("Session", &session)], b"");
    assert_eq!(r.status, 200);
    eprintln!(
        "{READERS} readers set up in {ready:?}; {PACKETS} packets sent in {sent:?}, all delivered \
         {delivered:?} after the first; test took {:?}",
        began.elapsed()
    );
}

#[test]
fn a_reader_that_stops_reading_loses_packets_alone_and_is_closed_after_the_write_timeout() {
    const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
    // 5 s at 1000 packets/s (~10 Mbit/s): the stalled reader's socket buffers and queue fill in a
    // fraction of a second, and the stream keeps flowing for twice the write timeout after. The
    // 64-frame queue is 64 ms of this stream for the other reader.
    const PACKETS: u16 = 5000;
    const BURST: usize = 5;
    const PERIOD: Duration = Duration::from_millis(5);
    let _serial = serial();
    let began = Instant::now();
    let server = start_with(|c| {
        c.write_timeout = WRITE_TIMEOUT;
        c.write_queue_size = 64;
    });
    let addr = server.local_addr();
    let (mut publisher, session) = publish(addr, "cam");
    let expected: Arc<Vec<Vec<u8>>> = Arc::new((0..PACKETS).map(|seq| rtp_packet(seq, 1200)).collect());

    let normal = Player::play(addr, "cam", TcpStream::connect(addr).unwrap());
    // The stalled reader's receive buffer is tiny and its MSS small (Linux sizes the server's send
    // buffer from the MSS: 64 KiB segments on loopback make it megabytes), so that the server's
    // writes to it block after about 100 kB.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.set_mss(1000).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stalled = Player::play(addr, "cam", socket.into());
    let stalled_addr = stalled.stream.local_addr().unwrap();
    assert_eq!(
        server_socket(addr, stalled_addr).map(|(state, _)| state),
        Some(TCP_ESTABLISHED),
        "the server's side of the stalled connection is visible in /proc/net/tcp"
    );

    let finished = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reading = spawn_readers(vec![normal], &expected, &finished, &stop);
    // While publishing, watch the server's side of the stalled connection: when its send queue last
    // grew (between two samples) and when the server closed it (between two samples).
    let sending = Instant::now();
    let mut queued = 0;
    let (mut previous_sample, mut grew_after, mut grew_by, mut open_at) = (sending, sending, sending, sending);
    let mut closed_by = None;
    let mut bursts = 0;
    send_paced(&mut publisher, &expected, BURST, PERIOD, || {
        // Every 50 ms: that is precise enough, and the table is not free to read.
        bursts += 1;
        if closed_by.is_some() || bursts % 10 != 0 {
            return;
        }
        let now = Instant::now();
        match server_socket(addr, stalled_addr) {
            Some((TCP_ESTABLISHED, send_queue)) => {
                if send_queue != queued {
                    (queued, grew_after, grew_by) = (send_queue, previous_sample, now);
                }
                open_at = now;
            }
            _ => closed_by = Some(now),
        }
        previous_sample = now;
    });
    let sent = sending.elapsed();
    eventually(Duration::from_secs(5), || finished.load(Ordering::Relaxed) == 1);
    stop.store(true, Ordering::Relaxed);
    let (mut normal, normal_check) = reading.join().unwrap().pop().unwrap();
    if let Some(failure) = shortfall(0, &normal_check) {
        panic!(
            "the reader that kept reading lost packets: {failure} (packets were sent at {} per \
             second; the server closed the stalled reader {:?} after the first packet)",
            BURST as f64 / PERIOD.as_secs_f64(),
            closed_by.map(|c| c - sending)
        );
    }
    let Some(closed_by) = closed_by else {
        panic!(
            "the server did not close the stalled reader within {sent:?} of streaming (write timeout \
             {WRITE_TIMEOUT:?}); its send queue last grew {:?} after the first packet, to {queued} bytes",
            grew_by - sending
        );
    };
    // How long the server went without writing to the stalled reader before closing it, bounded by
    // the sampling on both sides.
    let (at_least, at_most) = (open_at.saturating_duration_since(grew_by), closed_by - grew_after);
    assert!(
        at_most >= WRITE_TIMEOUT && at_least <= WRITE_TIMEOUT + Duration::from_secs(2),
        "the server closed the stalled reader between {at_least:?} and {at_most:?} after it last \
         accepted bytes for it (write timeout {WRITE_TIMEOUT:?})"
    );

    // What the client sees: draining the stalled socket gives what the server had queued before it
    // gave up, intact and in order but with packets missing, then end of stream (or a reset).
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut stalled_check = Check::new(expected.clone(), true);
    let mut scratch = vec![0u8; 64 * 1024];
    let draining = Instant::now();
    let give_up = draining + Duration::from_secs(5);
    let eof = loop {
        match stalled.pull(&mut scratch) {
            Pull::Closed(_) => break true,
            Pull::Data | Pull::Idle if Instant::now() > give_up => break false,
            Pull::Data | Pull::Idle => {}
        }
        if let Err(e) = stalled.frames(|channel, packet| stalled_check.frame(channel, packet)) {
            stalled_check.fail(e);
        }
    };
    let drained = draining.elapsed();
    // A frame cut short by the close may stay in the buffer: the server gave up mid-write.
    stalled
        .frames(|channel, packet| stalled_check.frame(channel, packet))
        .ok();
    assert!(
        eof,
        "draining the stalled reader's socket did not end in end-of-stream; it received {} packets",
        stalled_check.received
    );
    assert_eq!(
        stalled_check.error, None,
        "what the stalled reader did receive must be intact and in order"
    );
    assert!(
        stalled_check.received > 0 && stalled_check.received < usize::from(PACKETS),
        "the stalled reader received {} of {PACKETS} packets: it should have lost all but the \
         first ones",
        stalled_check.received
    );

    // Only the stalled reader was closed: the other reader, the publisher and the server carry on.
    let r = normal.request("OPTIONS", &url(addr, "cam"), &[]);
    assert_eq!(r.status, 200, "the reader that kept reading is still served");
    let r = publisher.request("OPTIONS", &url(addr, "cam"), &[("Session", &session)], b"");
    assert_eq!(r.status, 200, "the publisher is still served");
    let mut fresh = RawClient::connect(addr);
    assert_eq!(fresh.request("OPTIONS", "*", &[], b"").status, 200);
    eprintln!(
        "stalled reader: send queue full ({queued} bytes) {:?} after the first packet, closed \
         {at_least:?} to {at_most:?} later; it received {} of {PACKETS} packets (drained in \
         {drained:?}); the other reader all of them; test took {:?}",
        grew_by - sending,
        stalled_check.received,
        began.elapsed()
    );
}

/// TCP state "established" in /proc/net/tcp.
const TCP_ESTABLISHED: u8 = 1;

/// The server's side of the connection from `client`, as Linux reports it in /proc/net/tcp: its TCP
/// state and the bytes in its send queue; `None` once the socket is gone.
fn server_socket(server: SocketAddr, client: SocketAddr) -> Option<(u8, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let port = |field: &str| u16::from_str_radix(field.rsplit(':').next()?, 16).ok();
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || port(f[1])? != server.port() || port(f[2])? != client.port() {
            return None;
        }
        let state = u8::from_str_radix(f[3], 16).ok()?;
        let send_queue = u64::from_str_radix(f[4].split(':').next()?, 16).ok()?;
        Some((state, send_queue))
    })
}
