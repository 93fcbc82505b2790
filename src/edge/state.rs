//! What every core's edge handler shares: the running configuration (swapped on reload) and the
//! active paths (their streams, publishers and reader counts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::config::Config;
use super::handler::EdgeHandler;
use super::paths::{find, PathSource};
use crate::server::{ServerContext, ServerStream, StreamStats};

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
            *self.inner.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(applied);
            self.inner.generation.fetch_add(1, Ordering::AcqRel);
        }
        report.closed_paths.sort();
        report
    }

    /// Every active path's readers, publishers and stream counters, sorted by name.
    pub fn path_stats(&self) -> Vec<PathStats> {
        let mut stats: Vec<PathStats> = self
            .paths()
            .iter()
            .map(|(name, active)| PathStats {
                name: name.clone(),
                readers: active.readers,
                publishers: usize::from(active.publisher.is_some()),
                stream: active.stream.as_ref().map(ServerStream::stats).unwrap_or_default(),
                source: active.identity.1.clone(),
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }

    /// The active paths, locked.
    pub(crate) fn paths(&self) -> MutexGuard<'_, HashMap<String, ActivePath>> {
        self.inner.paths.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
