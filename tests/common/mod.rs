//! Test fixtures shared by the integration tests: a raw RTSP client that does not use the crate's
//! own codec (so a codec bug cannot hide itself), and external client processes that are killed
//! when the test ends, pass or fail.
#![allow(dead_code)] // each test binary uses a different subset

pub mod backtraces;
pub mod binary;
pub mod http;
pub mod netns;
pub mod relay_fixtures;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A response as a test sees it: status, headers (lower-case names, all values), body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// How many times a header appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.get(&name.to_ascii_lowercase()).map_or(0, Vec::len)
    }
}

/// What the server sent next on a raw connection.
#[derive(Debug)]
pub enum Received {
    Response(RawResponse),
    Frame { channel: u8, payload: Vec<u8> },
    Closed,
}

/// A hand-written RTSP client over a plain socket.
pub struct RawClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    cseq: u32,
}

impl RawClient {
    pub fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let writer = stream.try_clone().unwrap();
        RawClient {
            reader: BufReader::new(stream),
            writer,
            cseq: 0,
        }
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write to the server");
    }

    /// Sends a request with the next CSeq and the given extra header lines; returns the CSeq used.
    pub fn send(&mut self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> u32 {
        self.cseq += 1;
        let bytes = encode_request(self.cseq, method, url, headers, body);
        self.send_raw(&bytes);
        self.cseq
    }

    /// Sends a request and reads its response (skipping interleaved frames); panics if the connection closes.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> RawResponse {
        self.send(method, url, headers, body);
        read_response(&mut self.reader, method)
    }

    /// Reads the next response or interleaved frame.
    pub fn receive(&mut self) -> Received {
        read_message(&mut self.reader)
    }

    /// True if the server closes the connection within `within` (reading and discarding anything else).
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ends_within(&mut self.reader, within)
    }
}

/// True if `reader` (whose socket has a short read timeout) reaches its end within `within`,
/// reading and discarding whatever still arrives; a reset or an unclean TLS end counts as an end.
pub fn ends_within(reader: &mut impl Read, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A CPU this process may run on.
pub fn first_allowed_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split([',', '-']).next().unwrap().parse().unwrap()
}

/// Reads the next response or interleaved frame from any byte stream (plain or TLS).
pub fn read_message(reader: &mut impl BufRead) -> Received {
    let first = match reader.fill_buf() {
        Ok([]) => return Received::Closed,
        Ok(buf) => buf[0],
        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => return Received::Closed,
        Err(e) => panic!("read from the server: {e}"),
    };
    if first == b'$' {
        let mut header = [0u8; 4];
        if reader.read_exact(&mut header).is_err() {
            return Received::Closed;
        }
        let mut payload = vec![0; usize::from(u16::from_be_bytes([header[2], header[3]]))];
        reader.read_exact(&mut payload).expect("frame payload");
        return Received::Frame {
            channel: header[1],
            payload,
        };
    }
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status line");
    let mut parts = status_line.split_whitespace();
    assert_eq!(parts.next(), Some("RTSP/1.0"), "status line {status_line:?}");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("status code");
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').expect("header has a colon");
        headers
            .entry(k.trim().to_ascii_lowercase())
            .or_default()
            .push(v.trim().to_owned());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.first())
        .map_or(0, |v| v.parse().expect("numeric Content-Length"));
    let mut body = vec![0; len];
    reader.read_exact(&mut body).expect("body");
    Received::Response(RawResponse { status, headers, body })
}

/// An RTSP request with `cseq` and extra header lines, and `Content-Length` when there is a body.
pub fn encode_request(cseq: u32, method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {cseq}\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Reads until the response to `method`, skipping interleaved frames; panics if the connection closes.
pub fn read_response(reader: &mut impl BufRead, method: &str) -> RawResponse {
    loop {
        match read_message(reader) {
            Received::Response(r) => return r,
            Received::Frame { .. } => continue,
            Received::Closed => panic!("connection closed while waiting for the {method} response"),
        }
    }
}

/// A player's control connection without read-ahead: each response is read to its end and no
/// further, so the socket can then be left idle or handed to a media reader with nothing lost.
pub struct PlayerControl {
    pub stream: TcpStream,
    cseq: u32,
}

impl PlayerControl {
    pub fn connect(addr: SocketAddr) -> PlayerControl {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        PlayerControl { stream, cseq: 0 }
    }

    /// Sends a request and reads its response: the head a byte at a time, then the body.
    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.cseq += 1;
        self.stream
            .write_all(&encode_request(self.cseq, method, url, headers, b""))
            .expect("write to the server");
        let mut message = Vec::new();
        let mut byte = [0u8; 1];
        while !message.ends_with(b"\r\n\r\n") {
            let n = self.stream.read(&mut byte).expect("read from the server");
            assert_eq!(n, 1, "connection closed during the {method} response");
            message.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&message).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:")?.trim().parse().ok());
        let mut body = vec![0; length.unwrap_or(0)];
        self.stream.read_exact(&mut body).expect("response body");
        message.extend_from_slice(&body);
        match read_message(&mut std::io::Cursor::new(message)) {
            Received::Response(r) => r,
            other => panic!("not a response to {method}: {other:?}"),
        }
    }

    /// What a player does before it waits for media: DESCRIBE when asked, SETUP of the first
    /// track with `transport`, PLAY; each must answer 200.
    pub fn play(addr: SocketAddr, path: &str, transport: &str, describe: bool) -> PlayerControl {
        let mut c = PlayerControl::connect(addr);
        let base = format!("rtsp://{addr}/{path}");
        if describe {
            let r = c.request("DESCRIBE", &base, &[("Accept", "application/sdp")]);
            assert_eq!(r.status, 200, "DESCRIBE: {r:?}");
        }
        let r = c.request("SETUP", &format!("{base}/trackID=0"), &[("Transport", transport)]);
        assert_eq!(r.status, 200, "SETUP {transport}: {r:?}");
        let session = relay_fixtures::session_of(&r);
        let r = c.request("PLAY", &base, &[("Session", &session)]);
        assert_eq!(r.status, 200, "PLAY {transport}: {r:?}");
        c
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct ChildGuard {
    child: Option<Child>,
    name: String,
}

impl ChildGuard {
    pub fn spawn(mut command: Command) -> ChildGuard {
        let name = format!("{command:?}");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name}: {e} (run scripts/test to install the test peers)"));
        ChildGuard {
            child: Some(child),
            name,
        }
    }

    /// Waits up to `limit` for the process to exit on its own; kills it after that.
    /// Returns its output and whether it exited by itself.
    pub fn wait_for(mut self, limit: Duration) -> (Output, bool) {
        let mut child = self.child.take().expect("child present");
        let deadline = Instant::now() + limit;
        let mut exited = false;
        while Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !exited {
            let _ = child.kill();
        }
        (child.wait_with_output().expect("collect output"), exited)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    condition()
}

/// ffmpeg publishing a live H.264 + AAC test source to `url` over `transport` ("tcp" or "udp").
pub fn ffmpeg_publish(url: &str, transport: &str) -> ChildGuard {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-tune",
            "zerolatency",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-b:a", "64k"])
        .args(["-f", "rtsp", "-rtsp_transport", transport, url]);
    ChildGuard::spawn(c)
}

/// ffmpeg reading `url` for `frames` video frames, decoding them; exits 0 when it got them all.
pub fn ffmpeg_read(url: &str, transport: &str, frames: u32) -> ChildGuard {
    let mut c = Command::new("ffmpeg");
    c.args(["-hide_banner", "-loglevel", "error", "-rtsp_transport", transport])
        .args(["-i", url])
        .args(["-map", "0:v", "-frames:v", &frames.to_string(), "-f", "null", "-"]);
    ChildGuard::spawn(c)
}

/// GStreamer reading `url` with `rtspsrc protocols=...` and decoding `buffers` video buffers.
pub fn gst_read(url: &str, protocols: &str, buffers: u32, credentials: Option<(&str, &str)>) -> ChildGuard {
    let mut c = Command::new("gst-launch-1.0");
    c.arg("-q")
        .arg("rtspsrc")
        .arg(format!("location={url}"))
        .arg(format!("protocols={protocols}"));
    if let Some((user, pass)) = credentials {
        c.arg(format!("user-id={user}")).arg(format!("user-pw={pass}"));
    }
    // identity ends the stream after `buffers` decoded frames, so gst-launch exits 0 on success.
    c.args([
        "!",
        "rtph264depay",
        "!",
        "h264parse",
        "!",
        "avdec_h264",
        "!",
        "identity",
    ])
    .arg(format!("eos-after={buffers}"))
    .args(["!", "fakesink"]);
    ChildGuard::spawn(c)
}
