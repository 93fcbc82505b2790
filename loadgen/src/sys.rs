//! What loadgen asks of the OS: the file descriptor limit, the CPUs it may run on, its own CPU time,
//! and UDP receive drops (host-wide from /proc/net/snmp, and at its own sockets from /proc/net/udp).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) as they are afterwards.
pub fn raise_fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a valid rlimit into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!("cannot raise the open file limit: {}", io::Error::last_os_error());
        }
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// The CPUs this process may run on (`Cpus_allowed_list` of /proc/self/status).
pub fn allowed_cpus() -> Vec<usize> {
    let fallback = || (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
    let Ok(status) = fs::read_to_string("/proc/self/status") else {
        return fallback();
    };
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(str::trim)
    else {
        return fallback();
    };
    match crate::cli::parse_cpu_list(list) {
        Ok(cpus) => cpus.0,
        Err(_) => fallback(),
    }
}

/// The calling thread's kernel id.
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Clock ticks per second of the /proc CPU times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime of a /proc `stat` file, in clock ticks.
fn stat_cpu_ticks(path: &str) -> Option<u64> {
    let stat = fs::read_to_string(path).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime 14 and stime 15 (1-based in proc(5)).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// CPU time of the whole process, in clock ticks.
pub fn process_cpu_ticks() -> Option<u64> {
    stat_cpu_ticks("/proc/self/stat")
}

/// CPU time of one thread of this process, in clock ticks.
pub fn thread_cpu_ticks(tid: i32) -> Option<u64> {
    stat_cpu_ticks(&format!("/proc/self/task/{tid}/stat"))
}

/// Time one thread of this process spent runnable but waiting for a CPU (ns), from the second field
/// of /proc/self/task/TID/schedstat: the delay other programs on its CPU caused it.
pub fn thread_run_delay_ns(tid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    stat.split_whitespace().nth(1)?.parse().ok()
}

/// Host-wide UDP `RcvbufErrors` (datagrams dropped because a receive buffer was full), from
/// /proc/net/snmp (IPv4) and /proc/net/snmp6 (IPv6).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let snmp = fs::read_to_string("/proc/net/snmp").ok()?;
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let column = names.iter().position(|n| *n == "RcvbufErrors")?;
    let mut total: u64 = values.get(column)?.parse().ok()?;
    if let Ok(snmp6) = fs::read_to_string("/proc/net/snmp6") {
        if let Some(v) = snmp6.lines().find_map(|l| l.strip_prefix("Udp6RcvbufErrors")) {
            total += v.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(total)
}

/// Datagrams the kernel dropped at this process's own UDP sockets, as the sum of the `drops` column
/// of /proc/net/udp{,6} over the sockets open now. Sockets closed since the last call keep the last
/// count seen, so the sum only grows.
#[derive(Default)]
pub struct OwnUdpDrops {
    seen: HashMap<u64, u64>,
}

impl OwnUdpDrops {
    /// Samples the drops of the sockets open now; returns the total so far.
    pub fn sample(&mut self) -> u64 {
        let inodes = own_socket_inodes();
        for table in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(text) = fs::read_to_string(table) else { continue };
            for line in text.lines().skip(1) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                let (Some(inode), Some(drops)) = (fields.get(9), fields.last()) else {
                    continue;
                };
                let (Ok(inode), Ok(drops)) = (inode.parse::<u64>(), drops.parse::<u64>()) else {
                    continue;
                };
                if inodes.contains(&inode) {
                    let entry = self.seen.entry(inode).or_default();
                    *entry = (*entry).max(drops);
                }
            }
        }
        self.total()
    }

    /// The total of the last samples.
    pub fn total(&self) -> u64 {
        self.seen.values().sum()
    }
}

/// Inodes of this process's sockets (`socket:[N]` links in /proc/self/fd).
fn own_socket_inodes() -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return inodes;
    };
    for entry in dir.flatten() {
        if let Ok(target) = fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(n) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    inodes.insert(n);
                }
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_figures_are_readable() {
        assert!(process_cpu_ticks().is_some());
        assert!(thread_cpu_ticks(thread_id()).is_some());
        assert!(thread_run_delay_ns(thread_id()).is_some());
        assert!(udp_rcvbuf_errors().is_some());
        assert!(!allowed_cpus().is_empty());
        let (soft, hard) = raise_fd_limit().unwrap();
        assert_eq!(soft, hard);
    }

    #[test]
    fn own_socket_drops_are_found() {
        // A socket that receives more than its buffer holds, never read.
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for _ in 0..2000 {
            let _ = tx.send_to(&[0u8; 1400], to);
        }
        let mut drops = OwnUdpDrops::default();
        assert!(drops.sample() > 0, "the kernel dropped datagrams at our full socket");
        drop(rx);
    }
}
