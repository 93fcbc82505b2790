//! The HTTP endpoint Prometheus scrapes: `GET /metrics`, behind an authorization check.
//!
//! It runs on its own threads (see the runtime's HTTP responder), never on the RTSP cores: a slow
//! or silent client costs one of its threads until the read timeout, and cannot delay RTSP work or
//! another scrape.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use super::metrics::CONTENT_TYPE;
use crate::runtime::http::{HttpLimits, HttpRequest, HttpResponse, HttpServer};

/// Largest request head accepted; a scrape's is a few hundred bytes.
pub const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Time a client has to send its request head.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Scrapes served at once; more connections are closed at once.
const MAX_CONNECTIONS: usize = 32;

/// The path metrics are served on.
pub const METRICS_PATH: &str = "/metrics";

/// The realm of the `WWW-Authenticate` challenge.
pub const REALM: &str = "shardcast";

/// Who is asking for metrics, for the authorization check.
#[derive(Clone, PartialEq, Eq)]
pub struct MetricsClient {
    /// The client's IP address.
    pub ip: IpAddr,
    /// User and password from an `Authorization: Basic` header, if one was sent and decodes.
    pub basic: Option<(String, String)>,
}

impl fmt::Debug for MetricsClient {
    /// Shows whether credentials were given but never them, so a client can be logged as it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsClient")
            .field("ip", &self.ip)
            .field("basic", &self.basic.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Renders the metrics text on each scrape.
pub type RenderFn = Arc<dyn Fn() -> String + Send + Sync>;

/// Decides whether a client may read the metrics.
pub type AuthorizeFn = Arc<dyn Fn(&MetricsClient) -> bool + Send + Sync>;

/// A running metrics endpoint. It stops when [`MetricsServer::close`]d or dropped.
pub struct MetricsServer {
    http: HttpServer,
}

impl fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsServer")
            .field("local_addr", &self.http.local_addr())
            .finish_non_exhaustive()
    }
}

impl MetricsServer {
    /// Listens on `address` and answers `GET /metrics` with `render()` for clients `authorize`
    /// accepts (401 with a Basic challenge otherwise). Other paths are 404, other methods 405,
    /// malformed or oversized requests 400.
    pub fn start(address: SocketAddr, render: RenderFn, authorize: AuthorizeFn) -> io::Result<MetricsServer> {
        let limits = HttpLimits {
            max_head: MAX_REQUEST_HEAD,
            read_timeout: READ_TIMEOUT,
            write_timeout: READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        };
        let http = HttpServer::start(
            address,
            limits,
            Arc::new(move |request: &HttpRequest| respond(request, &*render, &*authorize)),
        )?;
        tracing::info!(address = %http.local_addr(), "metrics endpoint listening");
        Ok(MetricsServer { http })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.http.local_addr()
    }

    /// Stops accepting scrapes; a scrape being answered finishes. Calling it again does nothing.
    pub fn close(&mut self) {
        self.http.close();
    }
}

fn respond(
    request: &HttpRequest,
    render: &(dyn Fn() -> String + Send + Sync),
    authorize: &(dyn Fn(&MetricsClient) -> bool + Send + Sync),
) -> HttpResponse {
    let path = request.target.split('?').next().unwrap_or_default();
    let response = if path != METRICS_PATH {
        HttpResponse::text(404, "not found\n")
    } else if request.method != "GET" && request.method != "HEAD" {
        let mut response = HttpResponse::text(405, "method not allowed\n");
        response.headers.push(("Allow", "GET, HEAD".to_owned()));
        response
    } else {
        let client = MetricsClient {
            ip: request.peer.ip(),
            basic: request.header("authorization").and_then(basic_credentials),
        };
        if authorize(&client) {
            HttpResponse {
                status: 200,
                headers: vec![("Content-Type", CONTENT_TYPE.to_owned())],
                body: render().into_bytes(),
            }
        } else {
            // Not the user name either: it is half of a credential, and may be a mistyped password.
            tracing::info!(ip = %client.ip, credentials_given = client.basic.is_some(), "metrics scrape refused");
            let mut response = HttpResponse::text(401, "unauthorized\n");
            response
                .headers
                .push(("WWW-Authenticate", format!("Basic realm=\"{REALM}\"")));
            response
        }
    };
    tracing::debug!(peer = %request.peer, method = %request.method, path, status = response.status, "metrics request");
    response
}

/// User and password of an `Authorization: Basic` header value; `None` for another scheme or a
/// value that does not decode to `user:password`.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode_user_and_password_and_refuse_other_schemes() {
        assert_eq!(
            basic_credentials("Basic dXNlcjpwYTpzcw=="),
            Some(("user".into(), "pa:ss".into()))
        );
        assert_eq!(basic_credentials("basic dTpw"), Some(("u".into(), "p".into())));
        assert_eq!(basic_credentials("Bearer dTpw"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
        assert_eq!(basic_credentials("Basic dXNlcg=="), None, "no colon");
    }

    #[test]
    fn a_client_s_debug_output_hides_its_credentials() {
        let client = MetricsClient {
            ip: IpAddr::from([127, 0, 0, 1]),
            basic: Some(("admin".into(), "hunter2".into())),
        };
        let shown = format!("{client:?}");
        assert!(!shown.contains("admin") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1") && shown.contains("redacted"), "{shown}");
    }
}
