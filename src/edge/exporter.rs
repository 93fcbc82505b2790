//! The binary's `/metrics`: the server's counters and the edge's per-path numbers rendered for
//! Prometheus, with scrapes authorized against the running user table (so a reload that changes
//! users applies to scrapes at once).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::config::Config;
use super::metrics::{render, BuildInfo, PathMetrics, PathSource as MetricsSource};
use super::metrics_http::{MetricsClient, MetricsServer};
use super::paths::PathSource;
use super::state::{Edge, PathStats};
use super::users::Action;
use crate::server::ServerContext;

/// Serves `/metrics` on `address` for the server `context` belongs to and the edge `edge`.
pub fn start(address: SocketAddr, edge: &Edge, context: &ServerContext) -> io::Result<MetricsServer> {
    let build = BuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        rustc: None,
    };
    let render_edge = edge.clone();
    let context = context.clone();
    let authorize_edge = edge.clone();
    MetricsServer::start(
        address,
        Arc::new(move || {
            let paths = path_metrics(&render_edge.path_stats());
            render(&context.metrics(), &paths, &build)
        }),
        Arc::new(move |client| authorize(&authorize_edge.config(), client)),
    )
}

/// The edge's per-path statistics as the renderer takes them.
pub fn path_metrics(stats: &[PathStats]) -> Vec<PathMetrics> {
    stats
        .iter()
        .map(|s| PathMetrics {
            name: s.name.clone(),
            readers: s.readers as u64,
            publishers: s.publishers as u64,
            bytes_received: s.stream.bytes,
            packets_received: s.stream.packets,
            source: match s.source {
                PathSource::Publisher => MetricsSource::Publisher,
                PathSource::Origin(_) => MetricsSource::Rtsp,
            },
        })
        .collect()
}

/// Whether a scrape may see the metrics: everyone when no users are configured; otherwise a user
/// with the `metrics` permission, by Basic credentials or, for the `any` user, anonymously, from
/// an address the user may connect from.
pub fn authorize(config: &Config, client: &MetricsClient) -> bool {
    match &client.basic {
        Some((name, password)) => config.user(name).is_some_and(|user| {
            user.password.as_ref().is_some_and(|p| p.matches_clear(password))
                && config.permits(Some(name), client.ip, Action::Metrics, "")
        }),
        None => config.permits(None, client.ip, Action::Metrics, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(users: &str) -> Config {
        Config::from_toml(&format!(
            "[server]\nrtsp_address = '127.0.0.1:0'\n[[paths]]\npattern = '^.+$'\n{users}"
        ))
        .unwrap()
    }

    fn client(basic: Option<(&str, &str)>) -> MetricsClient {
        MetricsClient {
            ip: "10.1.2.3".parse().unwrap(),
            basic: basic.map(|(u, p)| (u.to_owned(), p.to_owned())),
        }
    }

    const USERS: &str = "[[users]]\nname = 'prom'\npassword = 'scrape'\npermissions = [{ action = 'metrics' }]\n\
                         [[users]]\nname = 'cam'\npassword = 'pub'\npermissions = [{ action = 'publish' }]\n";

    #[test]
    fn without_users_anyone_may_scrape() {
        assert!(authorize(&config(""), &client(None)));
    }

    #[test]
    fn with_users_a_scrape_needs_a_user_with_the_metrics_permission_and_its_password() {
        let config = config(USERS);
        assert!(authorize(&config, &client(Some(("prom", "scrape")))));
        assert!(!authorize(&config, &client(Some(("prom", "wrong")))));
        assert!(!authorize(&config, &client(Some(("cam", "pub")))));
        assert!(!authorize(&config, &client(Some(("nobody", "x")))));
        assert!(!authorize(&config, &client(None)));
    }

    #[test]
    fn the_any_user_with_the_metrics_permission_allows_anonymous_scrapes_from_its_addresses() {
        let config = config(&format!(
            "{USERS}[[users]]\nname = 'any'\nips = ['10.0.0.0/8']\npermissions = [{{ action = 'metrics' }}]\n"
        ));
        assert!(authorize(&config, &client(None)));
        let outside = MetricsClient {
            ip: "192.0.2.1".parse().unwrap(),
            basic: None,
        };
        assert!(!authorize(&config, &outside));
    }
}
