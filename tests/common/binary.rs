//! The `shardcast` binary run as a user runs it: a temporary config file, its stderr captured
//! line by line, killed (and its file removed) when the test ends, pass or fail.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{eventually, RawClient, RawResponse};
use shardcast::proto::auth::Authorization;

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_shardcast");

/// A configuration file in the temporary directory, removed on drop.
pub struct TempConfig {
    pub path: PathBuf,
}

impl TempConfig {
    pub fn new(text: &str) -> TempConfig {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("shardcast-edge-test-{}-{n}.toml", std::process::id()));
        std::fs::write(&path, text).expect("write the test config");
        TempConfig { path }
    }

    pub fn rewrite(&self, text: &str) {
        std::fs::write(&self.path, text).expect("rewrite the test config");
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A command for the binary with a clean environment for what it reads: no `RUST_LOG`, no
/// `SHARDCAST_*` from the test runner, plus `env`.
pub fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BINARY);
    c.args(args).env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SHARDCAST_") {
            c.env_remove(key);
        }
    }
    c.envs(env.iter().copied());
    c
}

/// Runs the binary to completion (for `--check-config` and invalid configurations).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env)
        .stdin(Stdio::null())
        .output()
        .expect("run the shardcast binary")
}

/// A running `shardcast`, serving its config on the address it logged.
pub struct EdgeProcess {
    child: Child,
    pub config: TempConfig,
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl EdgeProcess {
    /// Starts the binary on `config_text` (whose `rtsp_address` should be `127.0.0.1:0`) and
    /// waits for the line that gives its address.
    pub fn start(config_text: &str, env: &[(&str, &str)]) -> EdgeProcess {
        match EdgeProcess::try_start(config_text, env) {
            Ok(process) => process,
            Err(log) => panic!("the binary did not log its address: {log:#?}"),
        }
    }

    /// Like [`EdgeProcess::start`], but a binary that exits or logs no address within 15 s is an
    /// `Err` with its log (a fixed port still held by a previous process, say).
    pub fn try_start(config_text: &str, env: &[(&str, &str)]) -> Result<EdgeProcess, Vec<String>> {
        let config = TempConfig::new(config_text);
        let path = config.path.to_string_lossy().into_owned();
        let mut child = command(&["--config", &path], env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the shardcast binary");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let log = log.clone();
            move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push(line);
                }
            }
        });
        let mut process = EdgeProcess {
            child,
            config,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let mut addr = None;
        eventually(Duration::from_secs(15), || {
            addr = process.log_lines().iter().find_map(|l| serving_address(l));
            addr.is_some() || !process.is_running()
        });
        match addr {
            Some(addr) => {
                process.addr = addr;
                Ok(process)
            }
            None => Err(process.log_lines()),
        }
    }

    /// Every stderr line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until a stderr line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        eventually(limit, || self.log_lines().iter().any(|l| l.contains(needle)))
    }

    /// How many stderr lines contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log_lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Sends SIGHUP, as `systemctl reload` does.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Sends a signal by name (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `limit` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        eventually(limit, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// The address logged in a `serving WHAT` line (`serving metrics`), waiting up to 10 s for it.
    pub fn logged_address(&self, what: &str) -> Option<SocketAddr> {
        let mut addr = None;
        eventually(Duration::from_secs(10), || {
            addr = self.log_lines().iter().find_map(|l| address_after(l, what));
            addr.is_some()
        });
        addr
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// `rtsp://127.0.0.1:port/path`, with credentials when given.
    pub fn url(&self, path: &str, credentials: Option<(&str, &str)>) -> String {
        match credentials {
            Some((user, pass)) => format!("rtsp://{user}:{pass}@{}/{path}", self.addr),
            None => format!("rtsp://{}/{path}", self.addr),
        }
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in a `serving RTSP` line, text (`address=...`) or JSON (`"address":"..."`).
fn serving_address(line: &str) -> Option<SocketAddr> {
    address_after(line, "serving RTSP")
}

/// The address in a log line containing `what`, text (`address=...`) or JSON (`"address":"..."`).
fn address_after(line: &str, what: &str) -> Option<SocketAddr> {
    if !line.contains(what) {
        return None;
    }
    let rest = match line.split_once("address=") {
        Some((_, rest)) => rest,
        None => line.split_once("\"address\":\"")?.1,
    };
    rest.split(|c: char| c.is_whitespace() || c == '"').next()?.parse().ok()
}

/// A `Basic` Authorization header value.
pub fn basic(user: &str, password: &str) -> String {
    Authorization::Basic {
        username: user.to_owned(),
        password: password.to_owned(),
    }
    .encode()
}

/// Headers with an Authorization header when credentials are given.
fn with_auth<'a>(auth: &'a Option<String>, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = more.to_vec();
    if let Some(value) = auth {
        headers.push(("Authorization", value));
    }
    headers
}

/// ANNOUNCE `sdp` on `path` (with Basic credentials if given), SETUP each media interleaved,
/// RECORD; every step must answer 200. Returns the connection.
pub fn publish(addr: SocketAddr, path: &str, sdp: &str, credentials: Option<(&str, &str)>) -> RawClient {
    let auth = credentials.map(|(u, p)| basic(u, p));
    let mut c = RawClient::connect(addr);
    let base = format!("rtsp://{addr}/{path}");
    let r = c.request(
        "ANNOUNCE",
        &base,
        &with_auth(&auth, &[("Content-Type", "application/sdp")]),
        sdp.as_bytes(),
    );
    assert_eq!(r.status, 200, "ANNOUNCE: {r:?}");
    let session = super::relay_fixtures::session_of(&r);
    for i in 0..sdp.matches("m=").count() {
        let t = format!("RTP/AVP/TCP;unicast;interleaved={}-{};mode=record", 2 * i, 2 * i + 1);
        let url = format!("{base}/streamid={i}");
        let r = c.request(
            "SETUP",
            &url,
            &with_auth(&auth, &[("Transport", &t), ("Session", &session)]),
            b"",
        );
        assert_eq!(r.status, 200, "SETUP {i}: {r:?}");
    }
    let r = c.request("RECORD", &base, &with_auth(&auth, &[("Session", &session)]), b"");
    assert_eq!(r.status, 200, "RECORD: {r:?}");
    c
}

/// SETUP of the first track of `path` over TCP (with Basic credentials if given); returns the
/// connection and the response, for the test to judge.
pub fn setup_reader(addr: SocketAddr, path: &str, credentials: Option<(&str, &str)>) -> (RawClient, RawResponse) {
    let auth = credentials.map(|(u, p)| basic(u, p));
    let mut c = RawClient::connect(addr);
    let url = format!("rtsp://{addr}/{path}/trackID=0");
    let r = c.request(
        "SETUP",
        &url,
        &with_auth(&auth, &[("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]),
        b"",
    );
    (c, r)
}

/// A reader of `path` that must be admitted: SETUP and PLAY both answer 200.
pub fn play(addr: SocketAddr, path: &str, credentials: Option<(&str, &str)>) -> RawClient {
    let (mut c, r) = setup_reader(addr, path, credentials);
    assert_eq!(r.status, 200, "SETUP: {r:?}");
    let session = super::relay_fixtures::session_of(&r);
    let auth = credentials.map(|(u, p)| basic(u, p));
    let r = c.request(
        "PLAY",
        &format!("rtsp://{addr}/{path}"),
        &with_auth(&auth, &[("Session", &session)]),
        b"",
    );
    assert_eq!(r.status, 200, "PLAY: {r:?}");
    c
}
