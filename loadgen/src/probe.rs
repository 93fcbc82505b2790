//! Checks before (and between) the phases of a run, from the main thread: is anything listening at
//! the server's address, and does DESCRIBE of a path answer.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use shardcast::client::{Client, ClientConfig, ClientError, ClientTransport};
use shardcast::proto::sdp::SessionDescription;

/// Longest wait for a TCP connection in the reachability check.
const CONNECT_LIMIT: Duration = Duration::from_secs(3);

/// Fails with a clear message unless something accepts TCP connections at every server address.
pub fn reachable(servers: &[(String, SocketAddr)], timeout: Duration) -> Result<(), String> {
    for (authority, addr) in servers {
        if let Err(e) = TcpStream::connect_timeout(addr, timeout.min(CONNECT_LIMIT)) {
            let shown = if authority == &addr.to_string() {
                authority.clone()
            } else {
                format!("{authority} ({addr})")
            };
            let hint = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => "nothing is listening there: is the server running?",
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    "no answer: is the address right, is a firewall in the way?"
                }
                _ => "is the address right?",
            };
            return Err(format!("cannot connect to the RTSP server at {shown}: {e}; {hint}"));
        }
    }
    Ok(())
}

/// DESCRIBE of `url` (and, with a transport, SETUP of every track and TEARDOWN) on a short-lived
/// executor of its own. The message explains the usual failures.
pub fn describe(url: &str, timeout: Duration, setup: Option<ClientTransport>) -> Result<SessionDescription, String> {
    let url = url.to_owned();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name("loadgen-probe")
        .io_memory(512 * 1024)
        .spawn(move || async move {
            let config = ClientConfig {
                transport: setup.unwrap_or_default(),
                read_timeout: timeout,
                write_timeout: timeout,
                user_agent: concat!("shardcast-loadgen/", env!("CARGO_PKG_VERSION")).to_owned(),
                ..ClientConfig::default()
            };
            let mut client = Client::connect(&url, config).await?;
            let description = client.describe().await?;
            if setup.is_some() {
                client.setup_all().await?;
            }
            let _ = client.teardown().await;
            Ok::<_, ClientError>(description)
        })
        .map_err(|e| format!("cannot start an executor: {e}"))?;
    match handle.join() {
        Ok(result) => result.map_err(|e| explain(&e)),
        Err(e) => Err(format!("the probe executor failed: {e}")),
    }
}

/// A client error with a hint at the usual cause.
pub fn explain(e: &ClientError) -> String {
    let hint = match e {
        ClientError::Status { status, .. } if status.0 == 404 => "nothing is published at this path (yet)",
        ClientError::Status { status, .. } if status.0 == 401 => {
            "the server wants credentials: put them in the URL, rtsp://user:password@host/path"
        }
        ClientError::Status { status, .. } if status.0 == 454 || status.0 == 455 => {
            "the server lost or refused the session state"
        }
        ClientError::UnsupportedTransport => {
            "the server refused this transport (461 Unsupported Transport): try another --transport \
             (--read-transport/--publish-transport); tcp works with every server"
        }
        ClientError::Auth(_) => "check the user name and password in the URL",
        _ => return e.to_string(),
    };
    format!("{e}: {hint}")
}

/// DESCRIBE of `url` until it answers, or until `deadline` (then the last failure).
pub fn describe_until(url: &str, timeout: Duration, deadline: Instant) -> Result<SessionDescription, String> {
    loop {
        match describe(url, timeout, None) {
            Ok(d) => return Ok(d),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
