//! Publishing a real file: one `ffmpeg -re -stream_loop -1 -i FILE -c copy -f rtsp URL` per path.
//!
//! ffmpeg's packets carry no loadgen trailer, so readers measure loss, jitter and timing but no
//! latency or fan-out skew.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cli::TransportArg;
use crate::stats::PublisherReport;

/// Lines of ffmpeg's stderr kept to explain an exit.
const TAIL: usize = 12;

/// A running ffmpeg publisher.
pub struct Ffmpeg {
    report: PublisherReport,
    child: Child,
    tail: Arc<Mutex<VecDeque<String>>>,
    exited: Option<String>,
}

impl Ffmpeg {
    /// Starts ffmpeg publishing `file` to `url`.
    pub fn spawn(
        ffmpeg: &str,
        file: &str,
        url: &str,
        shown_url: &str,
        transport: TransportArg,
        id: usize,
    ) -> Result<Ffmpeg, String> {
        let transport = match transport {
            TransportArg::Udp => "udp",
            TransportArg::Tcp | TransportArg::Multicast => "tcp",
        };
        let mut child = Command::new(ffmpeg)
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i"])
            .arg(file)
            .args(["-c", "copy", "-f", "rtsp", "-rtsp_transport", transport])
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    format!("--source-file needs ffmpeg, and `{ffmpeg}` was not found: install ffmpeg or pass --ffmpeg PATH")
                }
                _ => format!("cannot run {ffmpeg}: {e}"),
            })?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stderr) = child.stderr.take() {
            let tail = tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                    if tail.len() == TAIL {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        Ok(Ffmpeg {
            report: PublisherReport {
                id,
                core: None,
                url: shown_url.to_owned(),
                sessions: 1,
                ..PublisherReport::default()
            },
            child,
            tail,
            exited: None,
        })
    }

    /// Marks the publisher as recording (its path answered DESCRIBE) after `since`.
    pub fn recording(&mut self, since: Instant) {
        self.report.records = 1;
        self.report.time_to_record_us = Some(crate::stats::micros(since.elapsed()));
    }

    /// Whether its path answered DESCRIBE.
    pub fn is_recording(&self) -> bool {
        self.report.records > 0
    }

    /// `Some(reason)` once ffmpeg has exited.
    pub fn poll(&mut self) -> Option<&str> {
        if self.exited.is_none() {
            if let Ok(Some(status)) = self.child.try_wait() {
                let tail = self.tail.lock().unwrap_or_else(PoisonError::into_inner);
                let said: Vec<&str> = tail.iter().map(String::as_str).collect();
                let reason = format!("ffmpeg exited ({status}): {}", said.join(" | "));
                self.report.errors += 1;
                self.report.last_error = Some(reason.clone());
                self.exited = Some(reason);
            }
        }
        self.exited.as_deref()
    }

    /// Stops ffmpeg (SIGTERM, so that it sends TEARDOWN; SIGKILL after 2 s) and returns its report.
    pub fn stop(mut self) -> PublisherReport {
        if self.poll().is_none() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // SAFETY: kill with a pid we spawned and have not reaped yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return self.report;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.report
    }
}
