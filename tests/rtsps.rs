//! RTSPS: RTSP over TLS on the main listener or on a separate one beside plain RTSP, with a
//! self-signed certificate made at test time; real ffmpeg and GStreamer clients, a rustls client
//! for the raw protocol, and clients that are not TLS at all.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
#[path = "rtsps/fixtures.rs"]
mod fixtures;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::first_allowed_cpu;
use common::relay_fixtures::{publish_tcp, rtp_packet, send_frame, session_of, start_relay, with_udp, H264_SDP};
use common::{eventually, ffmpeg_publish, ffmpeg_read, ChildGuard, RawClient, Received};
use fixtures::{this_process_holds, CertFiles, TlsClient};
use shardcast::proto::Method;
use shardcast::server::{CloseReason, Handler, Server, ServerConfig, ServerConn, TlsConfig, TlsConfigError};

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

#[test]
fn rtsps_connections_that_name_a_session_of_another_core_move_there_and_keep_working() {
    let certs = CertFiles::new("moving");
    let server = start_both(&certs, with_udp);
    let rtsps = server.rtsps_local_addr().unwrap();
    let (mut publisher, _) = publish_tcp(server.local_addr(), "moving", H264_SDP);
    let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rtcp = UdpSocket::bind("127.0.0.1:0").unwrap();
    rtp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let url = format!("rtsps://{rtsps}/moving");
    let mut control = TlsClient::connect(rtsps, &certs);
    let transport = format!(
        "RTP/AVP;unicast;client_port={}-{}",
        rtp.local_addr().unwrap().port(),
        rtcp.local_addr().unwrap().port()
    );
    let r = control.request("SETUP", &format!("{url}/trackID=0"), &[("Transport", &transport)]);
    assert_eq!(r.status, 200, "UDP SETUP over TLS: {r:?}");
    let session = session_of(&r);
    assert_eq!(control.request("PLAY", &url, &[("Session", &session)]).status, 200);
    drop(control);
    // New connections land on either core; a moved one is served on the session's core while
    // its bridge stays where it was accepted.
    for round in 0..8 {
        let mut c = TlsClient::connect(rtsps, &certs);
        let r = c.request("GET_PARAMETER", &url, &[("Session", &session)]);
        assert_eq!(r.status, 200, "keepalive over new RTSPS connection {round}: {r:?}");
        let r = c.request("OPTIONS", &url, &[("Session", &session)]);
        assert_eq!(r.status, 200, "a second request on RTSPS connection {round}");
    }
    send_frame(&mut publisher, 0, &rtp_packet(9, b"still"));
    let mut buf = [0u8; 2048];
    let n = rtp.recv(&mut buf).unwrap();
    assert_eq!(&buf[12..n], b"still", "the UDP reader still receives");
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
