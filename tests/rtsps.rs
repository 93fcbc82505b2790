//! RTSPS: RTSP over TLS on the main listener or on a separate one beside plain RTSP, with a
//! self-signed certificate made at test time; real ffmpeg and GStreamer clients, a rustls client
//! for the raw protocol, and clients that are not TLS at all.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::relay_fixtures::{publish_tcp, rtp_packet, send_frame, start_relay, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, ChildGuard, RawClient, RawResponse, Received};
use rustls::pki_types::{CertificateDer, ServerName};
use shardcast::proto::Method;
use shardcast::server::{CloseReason, Handler, Server, ServerConfig, ServerConn, TlsConfig, TlsConfigError};

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in a directory removed on drop.
struct CertFiles {
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

impl CertFiles {
    fn new(test: &str) -> CertFiles {
        let dir = std::env::temp_dir().join(format!("shardcast-rtsps-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        CertFiles {
            dir,
            cert,
            key,
            der: made.cert.der().clone(),
        }
    }

    fn tls_config(&self) -> TlsConfig {
        TlsConfig::from_pem_files(&self.cert, &self.key).unwrap()
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A relay speaking RTSPS on its main listener only.
fn start_rtsps_only(certs: &CertFiles) -> Server {
    start_relay(|c| c.tls = Some(certs.tls_config())).0
}

/// A relay with plain RTSP on `local_addr` and RTSPS on `rtsps_local_addr`, with `config` applied.
fn start_both(certs: &CertFiles, config: impl FnOnce(&mut ServerConfig)) -> Server {
    start_relay(|c| {
        c.tls = Some(certs.tls_config());
        c.rtsps_address = Some("127.0.0.1:0".parse().unwrap());
        config(c);
    })
    .0
}

/// A hand-written RTSP client over rustls that trusts only the test's certificate.
struct TlsClient {
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    cseq: u32,
}

impl TlsClient {
    fn connect(addr: SocketAddr, certs: &CertFiles) -> TlsClient {
        Self::over(TcpStream::connect(addr).unwrap(), certs)
    }

    fn over(socket: TcpStream, certs: &CertFiles) -> TlsClient {
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(certs.der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        TlsClient {
            reader: BufReader::new(rustls::StreamOwned::new(conn, socket)),
            cseq: 0,
        }
    }

    fn socket(&self) -> &TcpStream {
        &self.reader.get_ref().sock
    }

    fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.cseq += 1;
        let mut text = format!("{method} {url} RTSP/1.0\r\nCSeq: {}\r\n", self.cseq);
        for (k, v) in headers {
            text.push_str(&format!("{k}: {v}\r\n"));
        }
        text.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(text.as_bytes()).unwrap();
        stream.flush().unwrap();
        loop {
            match self.receive() {
                Received::Response(r) => return r,
                Received::Frame { .. } => continue,
                Received::Closed => panic!("connection closed while waiting for the {method} response"),
            }
        }
    }

    /// The next response or interleaved frame (the same framing as `RawClient::receive`).
    fn receive(&mut self) -> Received {
        let first = match self.reader.fill_buf() {
            Ok([]) => return Received::Closed,
            Ok(buf) => buf[0],
            Err(e) => panic!("read from the server: {e}"),
        };
        if first == b'$' {
            let mut header = [0u8; 4];
            self.reader.read_exact(&mut header).unwrap();
            let mut payload = vec![0; usize::from(u16::from_be_bytes([header[2], header[3]]))];
            self.reader.read_exact(&mut payload).unwrap();
            return Received::Frame {
                channel: header[1],
                payload,
            };
        }
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let Some((k, v)) = line.trim_end().split_once(':') else {
                break;
            };
            headers
                .entry(k.trim().to_ascii_lowercase())
                .or_default()
                .push(v.trim().to_owned());
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.first())
            .map_or(0, |v| v.parse().unwrap());
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        Received::Response(RawResponse { status, headers, body })
    }

    /// SETUP of the first track on interleaved channels 0-1 and PLAY.
    fn play(&mut self, url: &str) {
        let r = self.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert_eq!(r.status, 200, "SETUP over TLS: {r:?}");
        let session = common::relay_fixtures::session_of(&r);
        let r = self.request("PLAY", url, &[("Session", &session)]);
        assert_eq!(r.status, 200, "PLAY over TLS: {r:?}");
    }

    /// True if the server ends the connection within `within`, reading and discarding what it
    /// still delivers; an unclean end (no close_notify) counts.
    fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.socket()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Waits until DESCRIBE of `url` over TLS answers 200.
fn wait_published_tls(addr: SocketAddr, certs: &CertFiles, url: &str) {
    let published = eventually(Duration::from_secs(15), || {
        TlsClient::connect(addr, certs).request("DESCRIBE", url, &[]).status == 200
    });
    assert!(published, "{url} was not published within 15 s");
}

/// Waits for a client process to exit by itself and checks it succeeded.
fn assert_succeeds(client: ChildGuard, what: &str) {
    let (out, exited) = client.wait_for(Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited, "{what} did not finish within 20 s: {stderr}");
    assert!(out.status.success(), "{what} failed: {stderr}");
}

#[test]
fn ffmpeg_publishes_and_reads_over_rtsps_on_the_main_listener() {
    let certs = CertFiles::new("ffmpeg");
    let server = start_rtsps_only(&certs);
    assert_eq!(server.rtsps_local_addr(), None);
    let url = format!("rtsps://{}/cam", server.local_addr());
    let mut publisher = ffmpeg_publish(&url, "tcp");
    wait_published_tls(server.local_addr(), &certs, &url);
    assert_succeeds(ffmpeg_read(&url, "tcp", 25), "ffmpeg reading 25 frames over rtsps");
    assert!(publisher.is_running(), "the publisher must keep publishing over rtsps");
}

#[test]
fn gstreamer_reads_over_rtsps_a_stream_published_over_plain_rtsp_on_the_same_server() {
    let certs = CertFiles::new("gst");
    let server = start_both(&certs, |_| {});
    let rtsps = server.rtsps_local_addr().unwrap();
    assert_ne!(rtsps, server.local_addr());
    let plain_url = format!("rtsp://{}/cam", server.local_addr());
    let _publisher = ffmpeg_publish(&plain_url, "tcp");
    assert!(
        eventually(Duration::from_secs(15), || {
            RawClient::connect(server.local_addr())
                .request("DESCRIBE", &plain_url, &[], b"")
                .status
                == 200
        }),
        "ffmpeg did not publish over plain RTSP within 15 s"
    );
    let mut gst = Command::new("gst-launch-1.0");
    gst.arg("rtspsrc")
        .arg(format!("location=rtsps://{rtsps}/cam"))
        .args(["protocols=tcp", "tls-validation-flags=0"])
        .args(["!", "rtph264depay", "!", "h264parse", "!", "avdec_h264"])
        .args(["!", "identity", "eos-after=25", "!", "fakesink"]);
    let (out, exited) = ChildGuard::spawn(gst).wait_for(Duration::from_secs(20));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(exited, "GStreamer did not finish within 20 s: {stdout} {stderr}");
    // The pipeline reaches end of stream only after 25 decoded frames, and only if nothing failed
    // before. The exit status is not used: when the pipeline stops, rtspsrc sends PAUSE and then
    // cancels it to send TEARDOWN, and reports the cancelled PAUSE as an error when the response
    // is not back within a fraction of a millisecond (a client race, seen more often over TLS).
    assert!(
        stdout.contains("Got EOS from element \"pipeline0\""),
        "GStreamer did not decode 25 frames over rtsps: {stdout} {stderr}"
    );
}

#[test]
fn plaintext_and_garbage_on_the_tls_port_close_only_those_connections() {
    let certs = CertFiles::new("garbage");
    let server = start_both(&certs, |_| {});
    let rtsps = server.rtsps_local_addr().unwrap();
    let (mut publisher, _) = publish_tcp(server.local_addr(), "live", H264_SDP);
    let mut reader = TlsClient::connect(rtsps, &certs);
    reader.play(&format!("rtsps://{rtsps}/live"));

    let mut plaintext = RawClient::connect(rtsps);
    plaintext.send("OPTIONS", &format!("rtsp://{rtsps}/live"), &[], b"");
    assert!(
        plaintext.closed_within(Duration::from_secs(5)),
        "plain RTSP on the TLS port must be refused"
    );
    let mut garbage = TcpStream::connect(rtsps).unwrap();
    garbage
        .write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5])
        .unwrap();
    garbage.write_all(&[0xde, 0xad, 0xbe, 0xef].repeat(64)).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    // The server may answer with an alert before closing; what matters is that it closes.
    let ended = garbage.read_to_end(&mut rest);
    assert!(
        ended.is_ok() || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "a broken TLS handshake must close the connection"
    );

    let payload = [0x65, 0x88, 0x84, 0x00, 0x33];
    send_frame(&mut publisher, 0, &rtp_packet(1, &payload));
    match reader.receive() {
        Received::Frame { channel, payload: got } => {
            assert_eq!(channel, 0);
            assert_eq!(&got[12..], &payload, "the TLS reader gets the published packet");
        }
        other => panic!("the TLS reader expected a frame, got {other:?}"),
    }
    let r = RawClient::connect(server.local_addr()).request("OPTIONS", "*", &[], b"");
    assert_eq!(r.status, 200, "plain RTSP keeps working");
}

#[test]
fn a_tls_reader_that_stops_reading_is_closed_after_the_write_timeout() {
    let certs = CertFiles::new("slow");
    let server = start_both(&certs, |c| c.write_timeout = Duration::from_secs(1));
    let rtsps = server.rtsps_local_addr().unwrap();
    let (mut publisher, _) = publish_tcp(server.local_addr(), "live", H264_SDP);
    // A small receive window, so the server's buffers fill after a few megabytes.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&rtsps.into()).unwrap();
    let mut reader = TlsClient::over(socket.into(), &certs);
    reader.play(&format!("rtsps://{rtsps}/live"));

    // The publisher keeps sending (about 14 MB/s, more than the kernel buffers and the reader's
    // queue hold) while the reader stalls for longer than the write timeout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let payload = vec![0x41; 1400];
            let mut seq = 0u16;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for _ in 0..10 {
                    send_frame(&mut publisher, 0, &rtp_packet(seq, &payload));
                    seq = seq.wrapping_add(1);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            publisher
        }
    });
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _publisher = publishing.join().unwrap();
    // Still without reading: the server lets go of the client's socket (a bridge blocked on a
    // stalled client forever would keep it).
    let (server_side, client_side) = (rtsps, reader.socket().local_addr().unwrap());
    assert!(
        eventually(Duration::from_secs(5), || !this_process_holds(server_side, client_side)),
        "the server still holds the stalled reader's socket"
    );
    assert!(
        reader.closed_within(Duration::from_secs(10)),
        "a TLS reader that stopped reading must be closed, not buffered for"
    );
    let r = RawClient::connect(server.local_addr()).request("OPTIONS", "*", &[], b"");
    assert_eq!(r.status, 200, "the server keeps serving");
}

#[test]
fn closing_the_server_ends_rtsps_connections_and_abandons_handshakes_in_progress() {
    let certs = CertFiles::new("close");
    let (server, _) = start_relay(|c| {
        c.tls = Some(certs.tls_config());
        // One core, so the silent client below is accepted before the established one; a
        // handshake that waited for its timeout would hold the close for 30 s.
        c.cpus = Some(vec![first_allowed_cpu()]);
        c.read_timeout = Duration::from_secs(30);
    });
    let mut silent = TcpStream::connect(server.local_addr()).unwrap();
    // The header of a handshake record whose body never comes.
    silent.write_all(&[0x16, 0x03, 0x01, 0x00, 0x50]).unwrap();
    let mut established = TlsClient::connect(server.local_addr(), &certs);
    assert_eq!(established.request("OPTIONS", "*", &[]).status, 200);

    let started = Instant::now();
    server.close();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "close took {:?}",
        started.elapsed()
    );
    assert!(
        established.closed_within(Duration::from_secs(2)),
        "the RTSPS connection stays open"
    );
    silent.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let ended = silent.read(&mut [0u8; 64]);
    assert!(
        matches!(ended, Ok(0)) || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the pending handshake's connection stays open"
    );
}

/// Whether a descriptor of this process (where the server runs) is the IPv4 TCP socket from
/// `local` to `remote`, found through its inode in /proc/net/tcp.
fn this_process_holds(local: SocketAddr, remote: SocketAddr) -> bool {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => unreachable!("the tests listen on 127.0.0.1"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 9 && fields[1] == local && fields[2] == remote)
        .map(|fields| format!("socket:[{}]", fields[9]))
        .collect();
    std::fs::read_dir("/proc/self/fd").unwrap().any(|fd| {
        std::fs::read_link(fd.unwrap().path())
            .is_ok_and(|target| inodes.iter().any(|inode| target.as_os_str() == inode.as_str()))
    })
}

/// A CPU this process may run on.
fn first_allowed_cpu() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim();
    list.split([',', '-']).next().unwrap().parse().unwrap()
}

/// Records the addresses and close reasons of connections, as a handler sees them.
#[derive(Clone, Default)]
struct ConnRecorder {
    opened: Arc<Mutex<Vec<(SocketAddr, SocketAddr)>>>,
    closed: Arc<Mutex<Vec<(SocketAddr, CloseReason)>>>,
}

impl Handler for ConnRecorder {
    fn supported_methods(&self) -> &[Method] {
        &[]
    }

    fn on_conn_open(&self, conn: &ServerConn) {
        self.opened
            .lock()
            .unwrap()
            .push((conn.remote_addr(), conn.local_addr()));
    }

    fn on_conn_close(&self, conn: &ServerConn, reason: &CloseReason) {
        self.closed.lock().unwrap().push((conn.remote_addr(), reason.clone()));
    }
}

#[test]
fn the_handler_sees_the_tls_clients_real_addresses_and_its_close() {
    let certs = CertFiles::new("addrs");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    config.tls = Some(certs.tls_config());
    let recorder = ConnRecorder::default();
    let server = Server::start(config, {
        let recorder = recorder.clone();
        move |_, _| recorder.clone()
    })
    .unwrap();
    let mut client = TlsClient::connect(server.local_addr(), &certs);
    let r = client.request("OPTIONS", "*", &[]);
    assert_eq!(r.status, 200);
    let client_addr = client.socket().local_addr().unwrap();
    assert_eq!(
        recorder.opened.lock().unwrap().as_slice(),
        &[(client_addr, server.local_addr())]
    );
    drop(client);
    assert!(
        eventually(Duration::from_secs(5), || {
            recorder.closed.lock().unwrap().as_slice() == [(client_addr, CloseReason::ClientClosed)]
        }),
        "closed: {:?}",
        recorder.closed.lock().unwrap()
    );
}

#[test]
fn loading_pem_files_names_the_file_that_is_missing_or_wrong() {
    let certs = CertFiles::new("pem");
    let missing = certs.dir.join("missing.pem");
    let err = TlsConfig::from_pem_files(&missing, &certs.key).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::Unreadable { path, .. } if path == &missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing.pem"), "{err}");

    // The key file holds no certificate, the certificate file no key.
    let err = TlsConfig::from_pem_files(&certs.key, &certs.key).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::NoCertificate { path } if path == &certs.key),
        "{err:?}"
    );
    assert!(err.to_string().contains("key.pem"), "{err}");
    let err = TlsConfig::from_pem_files(&certs.cert, &certs.cert).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::NoKey { path } if path == &certs.cert),
        "{err:?}"
    );

    let corrupt = write(
        &certs.dir,
        "corrupt.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let err = TlsConfig::from_pem_files(&corrupt, &certs.key).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::BadPem { path, .. } if path == &corrupt),
        "{err:?}"
    );

    let other_key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    let other_key = write(&certs.dir, "other-key.pem", &other_key);
    let err = TlsConfig::from_pem_files(&certs.cert, &other_key).unwrap_err();
    assert!(
        matches!(&err, TlsConfigError::Rejected { key, .. } if key == &other_key),
        "{err:?}"
    );
    assert!(err.to_string().contains("other-key.pem"), "{err}");

    certs.tls_config();
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}
