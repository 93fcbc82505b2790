//! The RTSPS tests' fixtures: a self-signed certificate in PEM files, a rustls RTSP client, and
//! a look at this process's sockets.
#![allow(dead_code)] // each test binary that includes it uses a different subset

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use shardcast::server::TlsConfig;

use crate::common::{encode_request, ends_within, read_message, read_response, RawResponse, Received};

/// A self-signed certificate for 127.0.0.1 and its key, as PEM files in a directory removed on drop.
pub struct CertFiles {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    der: CertificateDer<'static>,
}

impl CertFiles {
    pub fn new(test: &str) -> CertFiles {
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

    pub fn tls_config(&self) -> TlsConfig {
        TlsConfig::from_pem_files(&self.cert, &self.key).unwrap()
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A hand-written RTSP client over rustls that trusts only the test's certificate.
pub struct TlsClient {
    reader: BufReader<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
    cseq: u32,
}

impl TlsClient {
    pub fn connect(addr: SocketAddr, certs: &CertFiles) -> TlsClient {
        Self::over(TcpStream::connect(addr).unwrap(), certs)
    }

    pub fn over(socket: TcpStream, certs: &CertFiles) -> TlsClient {
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

    pub fn socket(&self) -> &TcpStream {
        &self.reader.get_ref().sock
    }

    pub fn request(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> RawResponse {
        self.cseq += 1;
        let stream = self.reader.get_mut();
        stream
            .write_all(&encode_request(self.cseq, method, url, headers, b""))
            .unwrap();
        stream.flush().unwrap();
        read_response(&mut self.reader, method)
    }

    /// The next response or interleaved frame.
    pub fn receive(&mut self) -> Received {
        read_message(&mut self.reader)
    }

    /// SETUP of the first track on interleaved channels 0-1 and PLAY.
    pub fn play(&mut self, url: &str) {
        let r = self.request(
            "SETUP",
            &format!("{url}/trackID=0"),
            &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")],
        );
        assert_eq!(r.status, 200, "SETUP over TLS: {r:?}");
        let session = crate::common::relay_fixtures::session_of(&r);
        let r = self.request("PLAY", url, &[("Session", &session)]);
        assert_eq!(r.status, 200, "PLAY over TLS: {r:?}");
    }

    /// True if the server ends the connection within `within`, reading and discarding what it
    /// still delivers; an unclean end (no close_notify) counts.
    pub fn closed_within(&mut self, within: Duration) -> bool {
        self.socket()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        ends_within(&mut self.reader, within)
    }
}

/// Whether a descriptor of this process (where the server runs) is the IPv4 TCP socket from
/// `local` to `remote`, found through its inode in /proc/net/tcp.
pub fn this_process_holds(local: SocketAddr, remote: SocketAddr) -> bool {
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
