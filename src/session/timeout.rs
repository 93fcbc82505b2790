//! When a connection or session is dead, per DESIGN.md §2 "Timeouts", with `now` passed in.
//!
//! - A reader over UDP is alive while RTSP requests or RTCP receiver reports arrive (idle timeout).
//! - A publisher is alive while it sends media (read timeout): ffmpeg sends no keepalive requests
//!   while recording over UDP, so requests alone must not be required, but they count too.
//! - A TCP session lives and dies with its connection; the connection itself has the idle timeout
//!   until it streams, and a TCP publisher the read timeout.

use std::time::{Duration, Instant};

/// How a session's media travels, which decides what keeps it alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// Interleaved in the RTSP TCP connection.
    Tcp,
    /// Unicast UDP.
    Udp,
    /// UDP multicast (reading only).
    Multicast,
}

/// Tracks the last sign of life and answers whether the deadline has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    last_activity: Instant,
    timeout: Duration,
}

impl Liveness {
    /// Starts tracking at `now` with the given timeout.
    pub fn new(now: Instant, timeout: Duration) -> Self {
        Liveness {
            last_activity: now,
            timeout,
        }
    }

    /// The timeout that applies to a session: the read timeout for a publisher, else the idle timeout.
    pub fn timeout_for(is_publisher: bool, read_timeout: Duration, idle_timeout: Duration) -> Duration {
        if is_publisher {
            read_timeout
        } else {
            idle_timeout
        }
    }

    /// Records a sign of life (a request, an RTCP report, a media packet) at `now`.
    /// Out-of-order `now` values never move the deadline backwards.
    pub fn touch(&mut self, now: Instant) {
        if now > self.last_activity {
            self.last_activity = now;
        }
    }

    /// Changes the timeout (for example when a session starts recording), keeping the last activity.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The instant after which the session is dead, unless touched again.
    pub fn deadline(&self) -> Instant {
        self.last_activity + self.timeout
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activity_pushes_the_deadline_and_silence_expires_it() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, Duration::from_secs(10));
        assert!(!l.expired(t0 + Duration::from_secs(9)));
        l.touch(t0 + Duration::from_secs(9));
        assert!(!l.expired(t0 + Duration::from_secs(18)));
        assert!(l.expired(t0 + Duration::from_secs(19)));
    }

    #[test]
    fn a_stale_timestamp_does_not_move_the_deadline_back() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0 + Duration::from_secs(5), Duration::from_secs(10));
        l.touch(t0);
        assert_eq!(l.deadline(), t0 + Duration::from_secs(15));
    }

    #[test]
    fn publishers_use_the_read_timeout_and_readers_the_idle_timeout() {
        let (read, idle) = (Duration::from_secs(10), Duration::from_secs(60));
        assert_eq!(Liveness::timeout_for(true, read, idle), read);
        assert_eq!(Liveness::timeout_for(false, read, idle), idle);
    }
}
