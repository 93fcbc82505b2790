//! A background sampler of a process's CPU time (per thread), resident memory and the host's CPU
//! counters, and the interpolation that turns its samples into figures over a time window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::{self, HostCpu};

/// One observation.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Wall clock, ns since the UNIX epoch.
    pub t_ns: u64,
    /// CPU time of every live thread of the watched processes, summed, in ns.
    pub cpu_ns: u64,
    /// `utime + stime` of the watched processes, in clock ticks.
    pub ticks: u64,
    /// CPU time per thread id, in ns.
    pub threads: HashMap<u32, u64>,
    /// Resident memory of the watched processes, summed, in KiB.
    pub rss_kib: u64,
    /// Host-wide counters.
    pub host: HostCpu,
}

/// Samples a process (and, with `tree`, its descendants) every `interval` until stopped.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Vec<Sample>>>,
}

impl Sampler {
    /// Starts sampling `pid`.
    pub fn start(pid: u32, tree: bool, interval: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = Vec::new();
            let mut pids = vec![pid];
            let mut n = 0u64;
            loop {
                // Finding descendants scans /proc: do it every 10th sample.
                if tree && n % 10 == 0 {
                    pids = sys::process_tree(pid);
                }
                n += 1;
                samples.push(take(&pids));
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(interval);
            }
            samples
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops and returns the samples (a last one is taken at the stop).
    pub fn finish(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.handle.take().and_then(|h| h.join().ok()).unwrap_or_default();
        Samples(samples)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn take(pids: &[u32]) -> Sample {
    let t_ns = sys::unix_ns();
    let mut threads = HashMap::new();
    let mut ticks = 0;
    let mut rss_kib = 0;
    for &pid in pids {
        for (tid, ns) in sys::thread_cpu_ns(pid) {
            threads.insert(tid, ns);
        }
        ticks += sys::stat_ticks(pid).unwrap_or(0);
        rss_kib += sys::vm_rss_kib(pid).unwrap_or(0);
    }
    Sample {
        t_ns,
        cpu_ns: threads.values().sum(),
        ticks,
        threads,
        rss_kib,
        host: HostCpu::read().unwrap_or_default(),
    }
}

/// Samples in time order.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Sample>);

/// What a process used over a window.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowUse {
    /// Window length, seconds.
    pub wall_s: f64,
    /// CPU seconds of the watched processes (schedstat, interpolated at the window's ends).
    pub cpu_s: f64,
    /// The same from `utime + stime` (clock-tick resolution, interpolated the same way).
    pub cpu_s_ticks: f64,
    /// CPU seconds of the busiest thread.
    pub busiest_thread_s: f64,
    /// Host softirq seconds (all CPUs).
    pub host_softirq_s: f64,
    /// Host busy seconds (all CPUs).
    pub host_busy_s: f64,
    /// Largest resident memory seen in the window, KiB.
    pub rss_max_kib: u64,
}

impl Samples {
    /// Linear interpolation of `f` at time `t`; clamps outside the samples.
    fn at(&self, t: u64, f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
        let s = &self.0;
        let after = s.iter().position(|x| x.t_ns >= t)?;
        if after == 0 {
            return f(&s[0]);
        }
        let (a, b) = (&s[after - 1], &s[after]);
        let (fa, fb) = (f(a)?, f(b)?);
        let span = (b.t_ns - a.t_ns).max(1) as f64;
        Some(fa + (fb - fa) * (t - a.t_ns) as f64 / span)
    }

    /// The sample nearest `t`.
    fn nearest(&self, t: u64) -> Option<&Sample> {
        self.0.iter().min_by_key(|s| s.t_ns.abs_diff(t))
    }

    /// CPU and memory over `[from, to]` (ns since the epoch).
    pub fn window(&self, from: u64, to: u64) -> Option<WindowUse> {
        if to <= from || self.0.len() < 2 {
            return None;
        }
        let cpu = |s: &Sample| Some(s.cpu_ns as f64);
        let live_threads_s = (self.at(to, cpu)? - self.at(from, cpu)?) / 1e9;
        let tick = sys::clock_ticks() as f64;
        let (na, nb) = (self.nearest(from)?, self.nearest(to)?);
        let ticks = |s: &Sample| Some(s.ticks as f64);
        let cpu_s_ticks = (self.at(to, ticks)? - self.at(from, ticks)?).max(0.0) / tick;
        // Per-thread counters lose the time of threads that ended between two samples (thread
        // pools); `utime + stime` keeps it, at clock-tick resolution. Take the latter when it is
        // clearly larger.
        let dead_threads = cpu_s_ticks > live_threads_s * 1.1 + 3.0 / tick;
        let cpu_s = if dead_threads { cpu_s_ticks } else { live_threads_s };
        let busiest_thread_s = nb
            .threads
            .keys()
            .filter_map(|tid| {
                let v = |s: &Sample| s.threads.get(tid).map(|&ns| ns as f64);
                Some((self.at(to, v)? - self.at(from, v).unwrap_or(0.0)) / 1e9)
            })
            .fold(0.0, f64::max);
        let host_softirq_s = nb.host.softirq.saturating_sub(na.host.softirq) as f64 / tick;
        let host_busy_s = nb.host.busy().saturating_sub(na.host.busy()) as f64 / tick;
        let rss_max_kib = self
            .0
            .iter()
            .filter(|s| s.t_ns >= from && s.t_ns <= to)
            .map(|s| s.rss_kib)
            .max()
            .unwrap_or(nb.rss_kib);
        Some(WindowUse {
            wall_s: (to - from) as f64 / 1e9,
            cpu_s,
            cpu_s_ticks,
            busiest_thread_s,
            host_softirq_s,
            host_busy_s,
            rss_max_kib,
        })
    }

    /// The end of the last sample interval before `until` in which the processes used more than
    /// `busy_fraction` of one CPU, and the start of the first such interval after `from`.
    pub fn busy_span(&self, from: u64, until: u64, busy_fraction: f64) -> Option<(u64, u64)> {
        let busy: Vec<(u64, u64)> = self
            .0
            .windows(2)
            .filter(|w| w[0].t_ns >= from && w[1].t_ns <= until)
            .filter(|w| {
                let dt = (w[1].t_ns - w[0].t_ns).max(1) as f64;
                (w[1].cpu_ns.saturating_sub(w[0].cpu_ns)) as f64 / dt > busy_fraction
            })
            .map(|w| (w[0].t_ns, w[1].t_ns))
            .collect();
        Some((busy.first()?.0, busy.last()?.1))
    }

    /// Resident memory at the sample nearest `t`, KiB.
    pub fn rss_at(&self, t: u64) -> Option<u64> {
        self.nearest(t).map(|s| s.rss_kib)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t_s: u64, cpu_ms: u64) -> Sample {
        Sample {
            t_ns: t_s * 1_000_000_000,
            cpu_ns: cpu_ms * 1_000_000,
            ticks: cpu_ms / 10,
            threads: HashMap::from([(1, cpu_ms * 1_000_000)]),
            rss_kib: 100 + t_s,
            host: HostCpu::default(),
        }
    }

    #[test]
    fn window_interpolates_between_samples() {
        let s = Samples(vec![sample(0, 0), sample(2, 1000), sample(4, 1000)]);
        let w = s.window(1_000_000_000, 3_000_000_000).unwrap();
        assert!((w.cpu_s - 0.5).abs() < 1e-9, "{w:?}");
        assert!((w.busiest_thread_s - 0.5).abs() < 1e-9);
        assert_eq!(w.rss_max_kib, 102);
        assert_eq!(s.busy_span(0, 4_000_000_000, 0.1), Some((0, 2_000_000_000)));
    }

    #[test]
    fn sampler_sees_its_own_process() {
        let sampler = Sampler::start(std::process::id(), true, Duration::from_millis(5));
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(20));
        let s = sampler.finish();
        assert!(s.0.len() >= 2);
        assert!(s.0.last().unwrap().cpu_ns > 0);
    }
}
