//! What every core's edge handler shares: the running configuration (swapped on reload) and the
//! active paths (their streams, publishers and reader counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use super::config::Config;
use super::handler::EdgeHandler;
use super::paths::{find, PathConfig, PathMatch, PathMatcher, PathSource, SourceTransport};
use super::pull::{OnDemandPull, PullConfig, PullState};
use crate::client::ClientTransport;
use crate::server::{ServerContext, ServerStream, StreamStats};

/// How long a pull must have been idle before it is forgotten: longer than the moment between
/// handing a puller out and its `acquire` starting it, which runs on another core.
const FORGET_IDLE_PULL_AFTER: Duration = Duration::from_secs(2);

/// The edge application's shared state. Cheap to clone; usable from any thread.
#[derive(Clone)]
pub struct Edge {
    inner: Arc<EdgeInner>,
}

struct EdgeInner {
    config: RwLock<Arc<Config>>,
    /// Bumped by every reload; each core compares it with the one it last applied.
    generation: AtomicU64,
    paths: Mutex<HashMap<String, ActivePath>>,
    /// Pullers by path: one per pulled path, shared by every core's readers.
    pulls: Mutex<HashMap<String, Pulled>>,
    /// The server the pulled streams belong to, known once the first core made its handler.
    context: OnceLock<ServerContext>,
}

/// A path's puller and the entry it was made from.
struct Pulled {
    pull: OnDemandPull,
    identity: (String, PathSource),
    /// Since when housekeeping has seen it idle with no readers.
    idle_since: Option<Instant>,
}

/// One path with a stream or readers.
pub(crate) struct ActivePath {
    /// The stream readers play, while someone publishes (or, later, while it is pulled).
    pub(crate) stream: Option<ServerStream>,
    /// The publishing session's id.
    pub(crate) publisher: Option<String>,
    /// Reader sessions set up on this path, on every core.
    pub(crate) readers: usize,
    /// The identity of the `[[paths]]` entry that served it.
    pub(crate) identity: (String, PathSource),
}

/// A path's numbers, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStats {
    /// The request path.
    pub name: String,
    /// Reader sessions set up on it.
    pub readers: usize,
    /// Publishers (0 or 1).
    pub publishers: usize,
    /// What went through its stream (zero without one).
    pub stream: StreamStats,
    /// Where the path's stream comes from.
    pub source: PathSource,
}

/// What a reload changed that only a restart applies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sections whose new values were ignored (`server`, `metrics`, `log`).
    pub ignored_sections: Vec<&'static str>,
    /// Active paths whose entry vanished or changed source; their streams were closed.
    pub closed_paths: Vec<String>,
}

impl Edge {
    /// Shared state serving `config`.
    pub fn new(config: Config) -> Edge {
        Edge {
            inner: Arc::new(EdgeInner {
                config: RwLock::new(Arc::new(config)),
                generation: AtomicU64::new(0),
                paths: Mutex::new(HashMap::new()),
                pulls: Mutex::new(HashMap::new()),
                context: OnceLock::new(),
            }),
        }
    }

    /// The running configuration.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// How many reloads were applied.
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// A handler for one core of the server `context` belongs to.
    pub fn handler(&self, context: &ServerContext) -> EdgeHandler {
        if self.inner.context.set(context.clone()).is_ok() {
            self.start_always_on_pulls();
        }
        EdgeHandler::new(context, self.clone())
    }

    /// Applies a new, validated configuration's paths and users. Its `[server]`, `[metrics]` and
    /// `[log]` sections need a restart: they are kept as they run and reported. Streams of
    /// active paths whose entry vanished or changed source close now; each core closes the
    /// sessions the new configuration no longer allows within about a second.
    pub fn reload(&self, new: Config) -> ReloadReport {
        let mut report = ReloadReport::default();
        let running = self.config();
        let mut applied = new;
        if applied.server != running.server {
            report.ignored_sections.push("server");
            applied.server = running.server.clone();
        }
        if applied.metrics != running.metrics {
            report.ignored_sections.push("metrics");
            applied.metrics = running.metrics.clone();
        }
        if applied.log != running.log {
            report.ignored_sections.push("log");
            applied.log = running.log.clone();
        }
        {
            let mut paths = self.paths();
            for (name, active) in paths.iter_mut() {
                let same = find(&applied.paths, name).is_some_and(|m| m.entry.identity() == active.identity);
                if !same {
                    if let Some(stream) = active.stream.take() {
                        stream.close();
                    }
                    active.publisher = None;
                    report.closed_paths.push(name.clone());
                }
            }
            paths.retain(|_, a| a.stream.is_some() || a.readers > 0);
            self.pulls().retain(|name, pulled| {
                let same = find(&applied.paths, name).is_some_and(|m| m.entry.identity() == pulled.identity);
                if !same {
                    pulled.pull.close();
                    report.closed_paths.push(name.clone());
                }
                same
            });
            *self.inner.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(applied);
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.start_always_on_pulls();
        report.closed_paths.sort();
        report.closed_paths.dedup();
        report
    }

    /// The puller of `path`, which `matched` (an entry with an origin source) serves: the running
    /// one, or a new one when there is none or its entry changed. `None` for published paths and
    /// before the server started.
    pub(crate) fn pull_for(&self, path: &str, matched: &PathMatch<'_>) -> Option<OnDemandPull> {
        let url = matched.source_url()?;
        let context = self.inner.context.get()?;
        let identity = matched.entry.identity();
        let mut pulls = self.pulls();
        if let Some(pulled) = pulls.get_mut(path) {
            if pulled.identity == identity {
                pulled.idle_since = None;
                return Some(pulled.pull.clone());
            }
            pulled.pull.close();
        }
        let pull = OnDemandPull::new(context.clone(), pull_config(url, matched.entry));
        pulls.insert(
            path.to_owned(),
            Pulled {
                pull: pull.clone(),
                identity,
                idle_since: None,
            },
        );
        Some(pull)
    }

    /// Forgets pullers that have been idle, with no readers, for a while: a pattern entry would
    /// otherwise keep one for every name a client ever asked for.
    pub(crate) fn forget_idle_pulls(&self) {
        let now = Instant::now();
        self.pulls().retain(|_, pulled| {
            let idle = pulled.pull.state() == PullState::Idle && pulled.pull.stats().readers == 0;
            if !idle {
                pulled.idle_since = None;
                return true;
            }
            let since = *pulled.idle_since.get_or_insert(now);
            now.duration_since(since) < FORGET_IDLE_PULL_AFTER
        });
    }

    /// Starts the pulls of `on_demand = false` entries that are not running.
    fn start_always_on_pulls(&self) {
        let config = self.config();
        for entry in config.paths.iter().filter(|e| !e.on_demand) {
            if let PathMatcher::Exact(name) = &entry.matcher {
                if let Some(matched) = find(&config.paths, name) {
                    // Only when this entry is the one serving the name (an earlier one may shadow it).
                    if std::ptr::eq(matched.entry, entry) {
                        self.pull_for(name, &matched);
                    }
                }
            }
        }
    }

    /// Stops every pull (shutdown): their upstream sessions end and their readers are closed.
    pub fn close_pulls(&self) {
        for (_, pulled) in self.pulls().drain() {
            pulled.pull.close();
        }
    }

    /// Every active path's readers, publishers and stream counters, sorted by name. A pulled
    /// path counts its origin as its publisher while the pull plays.
    pub fn path_stats(&self) -> Vec<PathStats> {
        let mut stats: HashMap<String, PathStats> = self
            .paths()
            .iter()
            .map(|(name, active)| {
                let stats = PathStats {
                    name: name.clone(),
                    readers: active.readers,
                    publishers: usize::from(active.publisher.is_some()),
                    stream: active.stream.as_ref().map(ServerStream::stats).unwrap_or_default(),
                    source: active.identity.1.clone(),
                };
                (name.clone(), stats)
            })
            .collect();
        for (name, pulled) in self.pulls().iter() {
            let state = pulled.pull.state();
            let pull = pulled.pull.stats();
            if state == PullState::Idle && pull.readers == 0 {
                continue;
            }
            let entry = stats.entry(name.clone()).or_insert_with(|| PathStats {
                name: name.clone(),
                readers: pull.readers,
                publishers: 0,
                stream: StreamStats::default(),
                source: pulled.identity.1.clone(),
            });
            entry.publishers = usize::from(state == PullState::Ready);
            entry.stream.packets = pull.packets;
            entry.stream.bytes = pull.bytes;
        }
        let mut stats: Vec<PathStats> = stats.into_values().collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    fn pulls(&self) -> MutexGuard<'_, HashMap<String, Pulled>> {
        self.inner.pulls.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The active paths, locked.
    pub(crate) fn paths(&self) -> MutexGuard<'_, HashMap<String, ActivePath>> {
        self.inner.paths.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How an entry's pull runs.
fn pull_config(url: String, entry: &PathConfig) -> PullConfig {
    PullConfig {
        transport: match entry.source_transport {
            SourceTransport::Tcp => ClientTransport::Tcp,
            SourceTransport::Udp => ClientTransport::Udp,
        },
        start_timeout: entry.start_timeout,
        close_after_idle: entry.close_after_idle,
        on_demand: entry.on_demand,
        ..PullConfig::new(url)
    }
}
