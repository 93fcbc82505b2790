//! RTSPS: loading a certificate and key into a [`TlsConfig`], and serving a connection accepted
//! on a TLS listener through the runtime's bridge (docs/decisions/0005-rtsps-bridge.md).

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::config::TlsConfig;
use super::conn::{serve_connection, ConnAddrs};
use super::core::CoreState;
use super::handler::Handler;
use super::signal::CloseSignal;
use crate::runtime::tls::{plaintext_pair, TlsBridge};

/// Why a certificate or key file could not be loaded; each variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM section of the file is malformed.
    #[error("{} is not valid PEM: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// What the PEM parser reported.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key section (PKCS#8, PKCS#1 or SEC1).
    #[error("{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)", path.display())]
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the pair: the key does not match the certificate, or is of a kind it
    /// cannot sign with.
    #[error("the key in {} does not fit the certificate in {}: {source}", key.display(), cert.display())]
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls reported.
        source: rustls::Error,
    },
}

impl TlsConfig {
    /// Loads a PEM certificate chain (end-entity certificate first) and its PEM private key into
    /// a rustls configuration with safe defaults (TLS 1.2 and 1.3, no client certificates).
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsConfig, TlsConfigError> {
        let cert_pem = read(cert)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad_pem(cert, &e))?;
        if chain.is_empty() {
            return Err(TlsConfigError::NoCertificate { path: cert.into() });
        }
        let key_pem = read(key)?;
        let private_key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::NoKey { path: key.into() },
            other => bad_pem(key, &other),
        })?;
        let rejected = |source| TlsConfigError::Rejected {
            cert: cert.into(),
            key: key.into(),
            source,
        };
        // An explicit provider: the process-wide default is ambiguous when another crate in the
        // build enables a second one.
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(rejected)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(rejected)?;
        Ok(TlsConfig(Arc::new(config)))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsConfigError> {
    std::fs::read(path).map_err(|source| TlsConfigError::Unreadable {
        path: path.into(),
        source,
    })
}

fn bad_pem(path: &Path, error: &rustls::pki_types::pem::Error) -> TlsConfigError {
    TlsConfigError::BadPem {
        path: path.into(),
        reason: error.to_string(),
    }
}

/// Serves a connection accepted on a TLS listener: handshake (bounded by the read timeout, and
/// abandoned when the core stops), then the RTSP connection on one end of a local socket pair
/// while the bridge pumps the other end to the client. When the core stops, the bridge gets the
/// write timeout to deliver what the closing connection flushes.
pub(crate) async fn serve_tls_connection<H: Handler>(
    state: Rc<CoreState<H>>,
    stream: TcpStream,
    tls: Arc<rustls::ServerConfig>,
    stopping: Rc<CloseSignal>,
) {
    let addrs = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(remote), Ok(local)) => ConnAddrs { remote, local },
        (r, l) => {
            tracing::debug!(remote = ?r.err(), local = ?l.err(), "accepted RTSPS connection has no address; dropping it");
            return;
        }
    };
    let config = state.context.config();
    let (handshake_limit, write_timeout) = (config.read_timeout, config.write_timeout);
    let handshake = async { Some(TlsBridge::accept(stream, tls, write_timeout).await) };
    let expire = async {
        glommio::timer::sleep(handshake_limit).await;
        None
    };
    let abandon = async {
        stopping.closed().await;
        None
    };
    let bridge = match futures_lite::future::or(handshake, futures_lite::future::or(expire, abandon)).await {
        Some(Ok(bridge)) => bridge,
        Some(Err(e)) => {
            tracing::info!(remote = %addrs.remote, error = %e, "TLS handshake failed; closing the connection");
            return;
        }
        None => {
            tracing::info!(remote = %addrs.remote, "TLS handshake did not complete in time; closing the connection");
            return;
        }
    };
    let (server_end, bridge_end) = match plaintext_pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!(remote = %addrs.remote, error = %e, "cannot make a socket pair for an RTSPS connection");
            return;
        }
    };
    tracing::trace!(remote = %addrs.remote, "TLS handshake done");
    let pump = async {
        let grace = async {
            stopping.closed().await;
            glommio::timer::sleep(write_timeout).await;
            Ok(())
        };
        if let Err(e) = futures_lite::future::or(bridge.pump(bridge_end), grace).await {
            tracing::debug!(remote = %addrs.remote, error = %e, "RTSPS connection ended");
        }
    };
    // The connection may move to another core and return early: the pump keeps serving it.
    futures_lite::future::zip(serve_connection(state, server_end, None, Some(addrs)), pump).await;
}
