//! What the harness reads from Linux: process and thread CPU time, resident memory, host CPU
//! counters, CPU affinity, file descriptor limits, and a description of the machine.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Clock ticks per second of the `utime`/`stime` fields of `/proc/PID/stat`.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf reads a constant of the C library.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// Nanoseconds since the UNIX epoch, from the wall clock.
pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `utime + stime` of a process (all its threads, alive or exited), in clock ticks.
pub fn stat_ticks(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    ticks_of_stat(&text)
}

/// `utime + stime` from the text of a `stat` file (fields 14 and 15; the name may hold spaces).
fn ticks_of_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) is index 11 and stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent process id from `/proc/PID/stat`.
fn ppid_of(pid: u32) -> Option<u32> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// CPU time on CPU of each live thread of `pid`, in nanoseconds (`/proc/PID/task/TID/schedstat`,
/// the same clock that `utime + stime` are scaled to, at full resolution).
pub fn thread_cpu_ns(pid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(text) = fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        if let Some(ns) = text.split_whitespace().next().and_then(|s| s.parse().ok()) {
            out.push((tid, ns));
        }
    }
    out
}

/// Resident memory of a process in KiB (`VmRSS` of `/proc/PID/status`).
pub fn vm_rss_kib(pid: u32) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `pid` and every process descended from it.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(p) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) {
                if let Some(pp) = ppid_of(p) {
                    all.push((p, pp));
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|&&(_, pp)| pp == parent).map(|&(p, _)| p));
        i += 1;
    }
    tree
}

/// Host-wide CPU time from the first line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HostCpu {
    /// Time in user mode (with nice).
    pub user: u64,
    /// Time in kernel mode.
    pub system: u64,
    /// Time serving hard interrupts.
    pub irq: u64,
    /// Time serving soft interrupts (where loopback receive runs when it is not charged to a task).
    pub softirq: u64,
    /// Idle and waiting for I/O.
    pub idle: u64,
    /// Stolen by the hypervisor.
    pub steal: u64,
}

impl HostCpu {
    /// Reads `/proc/stat`.
    pub fn read() -> Option<HostCpu> {
        let text = fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?;
        let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
        Some(HostCpu {
            user: *v.first()? + v.get(1).copied().unwrap_or(0),
            system: *v.get(2)?,
            idle: *v.get(3)? + v.get(4).copied().unwrap_or(0),
            irq: v.get(5).copied().unwrap_or(0),
            softirq: v.get(6).copied().unwrap_or(0),
            steal: v.get(7).copied().unwrap_or(0),
        })
    }

    /// Ticks not idle.
    pub fn busy(&self) -> u64 {
        self.user + self.system + self.irq + self.softirq + self.steal
    }
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it for this thread.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the size passed is the size of `set`.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    }
    // SAFETY: CPU_ISSET reads the set within its size.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Makes the child of `command` start with CPU affinity `cpus` (as `taskset -c` does), so that a
/// thread-per-core program starts one executor per listed CPU.
pub fn pin_command(command: &mut Command, cpus: &[usize]) {
    // SAFETY: zeroed is a valid empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        // SAFETY: as above; `c` is below CPU_SETSIZE (it came from `allowed_cpus`).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the closure only makes one async-signal-safe system call on data copied into it.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Raises the soft open-file limit to the hard one (children inherit it); returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

/// The locked-memory limit in bytes (`ulimit -l`), `None` when unlimited.
pub fn memlock_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 || lim.rlim_cur == libc::RLIM_INFINITY {
        return None;
    }
    Some(lim.rlim_cur)
}

/// The machine a run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs (`nproc`).
    pub cpus: usize,
    /// CPUs this process may use.
    pub allowed_cpus: Vec<usize>,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
    /// `uname -r`.
    pub kernel: String,
    /// `MemTotal`, MiB.
    pub memory_mib: u64,
    /// 1-minute load average when the run started (other work on the host).
    pub loadavg_1m: f64,
    /// Open-file limit the children run with.
    pub fd_limit: u64,
    /// Locked-memory limit, bytes (none: unlimited).
    pub memlock_bytes: Option<u64>,
}

impl Machine {
    /// Reads the description from /proc.
    pub fn describe(fd_limit: u64) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count().max(1);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let memory_mib = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024);
        let loadavg_1m = fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            cpus,
            allowed_cpus: allowed_cpus(),
            cpu_model,
            kernel,
            memory_mib,
            loadavg_1m,
            fd_limit,
            memlock_bytes: memlock_limit(),
        }
    }
}

/// UTC calendar date and time of `unix_s`: (`YYYY-MM-DD`, `HHMMSS`).
pub fn utc_date_time(unix_s: u64) -> (String, String) {
    let days = i64::try_from(unix_s / 86_400).unwrap_or(0);
    let secs = unix_s % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}{:02}{:02}", secs / 3600, secs / 60 % 60, secs % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ticks_skip_names_with_spaces() {
        let line = "123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 40 2 0 0 20 0 1 0";
        assert_eq!(ticks_of_stat(line), Some(42));
    }

    #[test]
    fn own_process_is_measurable() {
        let pid = std::process::id();
        assert!(stat_ticks(pid).is_some());
        assert!(!thread_cpu_ns(pid).is_empty());
        assert!(vm_rss_kib(pid).is_some_and(|k| k > 0));
        assert!(process_tree(pid).contains(&pid));
        assert!(HostCpu::read().is_some_and(|h| h.busy() > 0));
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date_time(0), ("1970-01-01".into(), "000000".into()));
        assert_eq!(utc_date_time(1_709_210_096), ("2024-02-29".into(), "123456".into()));
    }
}
