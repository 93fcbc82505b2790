//! Host settings checked once at start-up and logged as warnings: the most consequential lines of
//! `tuning/check`, judged against this server's configuration.
//!
//! A setting below recommendation does not stop the server (the UDP receive buffer, which would be
//! silently clamped, is already a start-up error in the library); it costs drops or refused
//! connections under load, which an operator would otherwise discover in production. The reasons
//! behind each value are in docs/tuning.md.

use std::fmt;

use crate::server::ServerConfig;

/// The send buffer the server asks for on each UDP socket (`server::lifecycle`); `wmem_max` caps it.
const UDP_SEND_BUFFER: u64 = 4 * 1024 * 1024;
/// `rmem_default` below this overflows during one keyframe burst when no UDP buffer size is configured.
const RECOMMENDED_RMEM_DEFAULT: u64 = 1024 * 1024;
/// Packets a NIC queue may hold per CPU before the kernel drops them.
const RECOMMENDED_NETDEV_BACKLOG: u64 = 16_384;
/// Accept queue length: players join in bursts after an encoder restart or a balancer failover.
const RECOMMENDED_SOMAXCONN: u64 = 4096;
/// Open files: one per RTSP connection, plus sockets and io_uring rings per core.
const RECOMMENDED_NOFILE: u64 = 65_536;

/// What a check needs to know about the host; [`LiveHost`] reads the real one.
pub trait HostFacts {
    /// The value of a sysctl by its dotted name (`net.core.rmem_max`), whitespace-trimmed.
    fn sysctl(&self, name: &str) -> Option<String>;
    /// The soft limit on open files of this process; `None` when unknown or unlimited.
    fn open_files_limit(&self) -> Option<u64>;
}

/// The host this process runs on: `/proc/sys` and `/proc/self/limits`.
#[derive(Debug, Clone, Copy, Default)]
pub struct LiveHost;

impl HostFacts for LiveHost {
    fn sysctl(&self, name: &str) -> Option<String> {
        let path = format!("/proc/sys/{}", name.replace('.', "/"));
        std::fs::read_to_string(path).ok().map(|v| v.trim().to_owned())
    }

    fn open_files_limit(&self) -> Option<u64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        parse_open_files_soft_limit(&limits)
    }
}

/// The soft "Max open files" limit in the text of `/proc/<pid>/limits`.
fn parse_open_files_soft_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One setting below what this configuration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostWarning {
    /// The sysctl or limit, e.g. `net.core.wmem_max`.
    pub setting: &'static str,
    /// Its value on this host.
    pub current: u64,
    /// The recommended minimum.
    pub recommended: u64,
    /// What goes wrong under load because of it.
    pub consequence: &'static str,
}

impl fmt::Display for HostWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is {} (recommended at least {}): {}; see docs/tuning.md and tuning/check",
            self.setting, self.current, self.recommended, self.consequence
        )
    }
}

/// The settings below recommendation for a server running `config` on `host`, most important first.
/// Settings the host does not expose (another kernel, a container) are skipped.
pub fn check(host: &impl HostFacts, config: &ServerConfig) -> Vec<HostWarning> {
    let mut warnings = Vec::new();
    let sysctl = |name: &str| host.sysctl(name).and_then(|v| first_number(&v));
    let mut below = |setting: &'static str, current: Option<u64>, recommended: u64, consequence: &'static str| {
        if let Some(current) = current.filter(|c| *c < recommended) {
            warnings.push(HostWarning {
                setting,
                current,
                recommended,
                consequence,
            });
        }
    };
    below(
        "open files (RLIMIT_NOFILE)",
        host.open_files_limit(),
        RECOMMENDED_NOFILE,
        "each RTSP connection takes one file descriptor, so connections beyond the limit are refused",
    );
    if config.udp_enabled() || config.multicast_enabled() {
        below(
            "net.core.wmem_max",
            sysctl("net.core.wmem_max"),
            UDP_SEND_BUFFER,
            "the kernel caps the UDP send buffer below the 4 MiB fan-out asks for, so bursts to many readers wait or drop",
        );
        below(
            "net.core.netdev_max_backlog",
            sysctl("net.core.netdev_max_backlog"),
            RECOMMENDED_NETDEV_BACKLOG,
            "incoming packets beyond the backlog are dropped by the kernel before shardcast sees them",
        );
    }
    if config.udp_enabled() && config.udp_read_buffer_size.is_none() {
        below(
            "net.core.rmem_default",
            sysctl("net.core.rmem_default"),
            RECOMMENDED_RMEM_DEFAULT,
            "udp_read_buffer_size is unset, so UDP publishers get the default receive buffer, which a keyframe burst can overflow",
        );
    }
    below(
        "net.core.somaxconn",
        sysctl("net.core.somaxconn"),
        RECOMMENDED_SOMAXCONN,
        "players joining in a burst (encoder restart, balancer failover) overflow the accept queue and retry after a delay",
    );
    let cores = config.cpus.as_ref().map_or(2, Vec::len);
    if cores > 1 {
        below(
            "net.ipv4.tcp_migrate_req",
            sysctl("net.ipv4.tcp_migrate_req"),
            1,
            "connections waiting in one core's SO_REUSEPORT accept queue are reset when that listener closes instead of moving to another core",
        );
    }
    warnings
}

/// The first whitespace-separated number of a sysctl value (`tcp_rmem` has three).
fn first_number(value: &str) -> Option<u64> {
    value.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct FakeHost {
        sysctls: HashMap<&'static str, &'static str>,
        open_files: Option<u64>,
    }

    impl HostFacts for FakeHost {
        fn sysctl(&self, name: &str) -> Option<String> {
            self.sysctls.get(name).map(|v| (*v).to_owned())
        }
        fn open_files_limit(&self) -> Option<u64> {
            self.open_files
        }
    }

    fn tuned_host() -> FakeHost {
        FakeHost {
            sysctls: HashMap::from([
                ("net.core.wmem_max", "16777216"),
                ("net.core.rmem_default", "1048576"),
                ("net.core.netdev_max_backlog", "16384"),
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.tcp_migrate_req", "1"),
            ]),
            open_files: Some(1_048_576),
        }
    }

    fn udp_config() -> ServerConfig {
        let mut config = ServerConfig::new("127.0.0.1:8554".parse().unwrap());
        config.rtp_address = Some("127.0.0.1:8000".parse().unwrap());
        config.rtcp_address = Some("127.0.0.1:8001".parse().unwrap());
        config
    }

    #[test]
    fn a_host_tuned_as_recommended_gets_no_warning() {
        assert_eq!(check(&tuned_host(), &udp_config()), Vec::new());
    }

    #[test]
    fn a_stock_kernel_is_warned_about_each_setting_below_recommendation() {
        let stock = FakeHost {
            sysctls: HashMap::from([
                ("net.core.wmem_max", "212992"),
                ("net.core.rmem_default", "212992"),
                ("net.core.netdev_max_backlog", "1000"),
                ("net.core.somaxconn", "4096"),
                ("net.ipv4.tcp_migrate_req", "0"),
            ]),
            open_files: Some(1024),
        };
        let settings: Vec<_> = check(&stock, &udp_config()).iter().map(|w| w.setting).collect();
        assert_eq!(
            settings,
            [
                "open files (RLIMIT_NOFILE)",
                "net.core.wmem_max",
                "net.core.netdev_max_backlog",
                "net.core.rmem_default",
                "net.ipv4.tcp_migrate_req"
            ]
        );
    }

    #[test]
    fn udp_settings_are_not_checked_for_a_tcp_only_server() {
        let mut host = tuned_host();
        host.sysctls.insert("net.core.wmem_max", "212992");
        host.sysctls.insert("net.core.rmem_default", "212992");
        let tcp_only = ServerConfig::new("127.0.0.1:8554".parse().unwrap());
        assert_eq!(check(&host, &tcp_only), Vec::new());
    }

    #[test]
    fn rmem_default_does_not_matter_when_the_udp_buffer_is_configured() {
        let mut host = tuned_host();
        host.sysctls.insert("net.core.rmem_default", "212992");
        let mut config = udp_config();
        config.udp_read_buffer_size = Some(8 << 20);
        assert_eq!(check(&host, &config), Vec::new());
    }

    #[test]
    fn a_missing_sysctl_is_skipped_rather_than_reported() {
        let mut host = tuned_host();
        host.sysctls.remove("net.ipv4.tcp_migrate_req");
        host.open_files = None;
        assert_eq!(check(&host, &udp_config()), Vec::new());
    }

    #[test]
    fn the_warning_names_the_setting_its_value_and_the_recommendation() {
        let mut host = tuned_host();
        host.sysctls.insert("net.core.somaxconn", "128");
        let text = check(&host, &udp_config())[0].to_string();
        assert!(
            text.starts_with("net.core.somaxconn is 128 (recommended at least 4096)"),
            "{text}"
        );
    }

    #[test]
    fn the_open_files_soft_limit_is_read_from_proc_limits_text() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            20000                20000                files     \n";
        assert_eq!(parse_open_files_soft_limit(limits), Some(20000));
        assert_eq!(parse_open_files_soft_limit("nothing"), None);
    }
}
