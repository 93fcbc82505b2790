//! The puller's shared state and its transitions, kept free of I/O so the rules (when to stop,
//! which stream readers get, how long to back off) can be read and tested alone.

use std::time::{Duration, Instant};

use super::{PullError, PullState};
use crate::server::ServerStream;

/// The outcome of the last failed upstream attempt, for waiting acquires.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) error: PullError,
    /// Retrying will not help (404, 401, an unusable description): acquires fail at once instead of
    /// waiting out their start timeout.
    pub(super) definitive: bool,
}

/// Everything behind the puller's lock.
#[derive(Debug)]
pub(super) struct PullInner {
    pub(super) state: PullState,
    /// The stream readers play; `Some` from the first PLAY of a run to the end of the run.
    pub(super) stream: Option<ServerStream>,
    pub(super) readers: usize,
    /// Acquires waiting for the stream.
    pub(super) waiting: usize,
    /// Since when there have been neither readers nor waiting acquires.
    pub(super) idle_since: Option<Instant>,
    /// Counts runs (one per worker thread), so that a worker of a finished run changes nothing.
    pub(super) generation: u64,
    /// A worker thread owns the current run.
    pub(super) running: bool,
    pub(super) closed: bool,
    /// An acquire arrived while the worker waits out a backoff: attempt again now.
    pub(super) retry_now: bool,
    /// Failed attempts so far; acquires compare it with the count when they started.
    pub(super) failures: u64,
    pub(super) last_failure: Option<Failure>,
}

impl Default for PullInner {
    fn default() -> Self {
        PullInner {
            state: PullState::Idle,
            stream: None,
            readers: 0,
            waiting: 0,
            idle_since: Some(Instant::now()),
            generation: 0,
            running: false,
            closed: false,
            retry_now: false,
            failures: 0,
            last_failure: None,
        }
    }
}

/// What the worker should do about stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopCheck {
    /// The run is over (closed, idle long enough, or superseded); it was already marked so.
    Stop,
    /// Keep going; check again at this instant (the idle deadline) or on the next notification.
    Until(Option<Instant>),
}

impl PullInner {
    /// Marks a new run as started and returns its generation.
    pub(super) fn begin_run(&mut self) -> u64 {
        self.generation += 1;
        self.running = true;
        self.retry_now = false;
        self.state = PullState::Starting;
        self.generation
    }

    /// Marks the current run as over: state Idle, stream closed (its readers, if any, are
    /// disconnected). The worker tears the upstream session down after this.
    pub(super) fn end_run(&mut self) {
        self.running = false;
        self.retry_now = false;
        self.state = PullState::Idle;
        if let Some(stream) = self.stream.take() {
            stream.close();
        }
    }

    /// Whether `generation` is the run in progress.
    pub(super) fn is_current(&self, generation: u64) -> bool {
        self.running && !self.closed && self.generation == generation
    }

    /// The stream when the upstream session plays.
    pub(super) fn ready_stream(&self) -> Option<ServerStream> {
        match self.state {
            PullState::Ready => self.stream.clone(),
            _ => None,
        }
    }

    /// Starts or clears the idle timer after readers or waiting acquires changed.
    pub(super) fn update_idle(&mut self, now: Instant) {
        if self.readers == 0 && self.waiting == 0 {
            self.idle_since.get_or_insert(now);
        } else {
            self.idle_since = None;
        }
    }

    /// Whether the run of `generation` must stop at `now`; ends the run when it stops for
    /// idleness (an on-demand pull with no readers and no waiting acquire for `close_after_idle`).
    pub(super) fn stop_check(
        &mut self,
        generation: u64,
        now: Instant,
        on_demand: bool,
        close_after_idle: Duration,
    ) -> StopCheck {
        if !self.is_current(generation) {
            return StopCheck::Stop;
        }
        if !on_demand {
            return StopCheck::Until(None);
        }
        match self.idle_since {
            Some(since) if now.saturating_duration_since(since) >= close_after_idle => {
                self.end_run();
                StopCheck::Stop
            }
            Some(since) => StopCheck::Until(Some(since + close_after_idle)),
            None => StopCheck::Until(None),
        }
    }

    /// Records a failed attempt or a lost session of `generation`; the state says whether readers
    /// already have a stream (Reconnecting) or not (Starting).
    pub(super) fn record_failure(&mut self, generation: u64, failure: Failure) {
        if !self.is_current(generation) {
            return;
        }
        self.failures += 1;
        self.last_failure = Some(failure);
        self.state = match self.stream {
            Some(_) => PullState::Reconnecting,
            None => PullState::Starting,
        };
    }
}

/// The delay after `current`: doubled, at most `max` (and at least `min`).
pub(super) fn next_backoff(current: Duration, min: Duration, max: Duration) -> Duration {
    current.saturating_mul(2).min(max).max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(5);

    fn running() -> (PullInner, u64) {
        let mut inner = PullInner::default();
        let generation = inner.begin_run();
        (inner, generation)
    }

    #[test]
    fn an_on_demand_pull_stops_only_after_being_idle_for_close_after_idle() {
        let (mut inner, generation) = running();
        let start = Instant::now();
        inner.readers = 1;
        inner.update_idle(start);
        assert_eq!(inner.stop_check(generation, start, true, IDLE), StopCheck::Until(None));
        inner.readers = 0;
        inner.update_idle(start);
        assert_eq!(
            inner.stop_check(generation, start + Duration::from_secs(1), true, IDLE),
            StopCheck::Until(Some(start + IDLE))
        );
        assert!(inner.running, "still within the idle grace");
        assert_eq!(inner.stop_check(generation, start + IDLE, true, IDLE), StopCheck::Stop);
        assert!(!inner.running);
        assert_eq!(inner.state, PullState::Idle);
    }

    #[test]
    fn a_waiting_acquire_keeps_the_pull_from_stopping() {
        let (mut inner, generation) = running();
        let start = Instant::now();
        inner.waiting = 1;
        inner.update_idle(start);
        assert_eq!(
            inner.stop_check(generation, start + IDLE * 10, true, IDLE),
            StopCheck::Until(None)
        );
    }

    #[test]
    fn an_always_on_pull_never_stops_for_idleness_but_stops_when_closed() {
        let (mut inner, generation) = running();
        let later = Instant::now() + IDLE * 10;
        assert_eq!(inner.stop_check(generation, later, false, IDLE), StopCheck::Until(None));
        inner.closed = true;
        inner.end_run();
        assert_eq!(inner.stop_check(generation, later, false, IDLE), StopCheck::Stop);
    }

    #[test]
    fn a_worker_of_an_older_run_is_told_to_stop_and_its_failures_are_ignored() {
        let (mut inner, old) = running();
        inner.end_run();
        let new = inner.begin_run();
        assert_eq!(inner.stop_check(old, Instant::now(), false, IDLE), StopCheck::Stop);
        inner.record_failure(
            old,
            Failure {
                error: PullError::NotFound { url: "u".into() },
                definitive: true,
            },
        );
        assert_eq!(inner.failures, 0);
        assert_eq!(
            inner.stop_check(new, Instant::now(), false, IDLE),
            StopCheck::Until(None)
        );
    }

    #[test]
    fn a_failure_before_any_stream_keeps_the_pull_starting() {
        let (mut inner, generation) = running();
        inner.record_failure(
            generation,
            Failure {
                error: PullError::NotFound { url: "u".into() },
                definitive: true,
            },
        );
        assert_eq!(inner.state, PullState::Starting);
        assert_eq!(inner.failures, 1);
        assert!(inner.ready_stream().is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(350);
        let mut delay = min;
        let mut delays = Vec::new();
        for _ in 0..4 {
            delays.push(delay);
            delay = next_backoff(delay, min, max);
        }
        assert_eq!(
            delays,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec(),
            "doubling, capped"
        );
    }
}
