//! Rendering a server's metrics as Prometheus text exposition format 0.0.4.
//!
//! Every family gets one `# HELP` and one `# TYPE` line followed by its samples; names carry the
//! `shardcast_` prefix, counters end in `_total`, and quantities are in base units (bytes,
//! seconds). Label values are escaped as the format requires.

use std::fmt::Write as _;

use crate::server::ServerMetrics;
use crate::session::{SessionState, TransportKind};

/// The content type of what [`render`] produces.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Where a path's stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSource {
    /// A client publishes it (ANNOUNCE/RECORD).
    Publisher,
    /// The server pulls it from an RTSP source.
    Rtsp,
    /// Anything else, by the label value to show.
    Other(String),
}

impl PathSource {
    /// The value of the `source` label.
    pub fn label(&self) -> &str {
        match self {
            PathSource::Publisher => "publisher",
            PathSource::Rtsp => "rtsp",
            PathSource::Other(label) => label,
        }
    }
}

/// What one path reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMetrics {
    /// The path's name, as clients request it (without the leading slash).
    pub name: String,
    /// Readers playing the path now.
    pub readers: u64,
    /// Publishers (or pulling sources) feeding the path now: 0 or 1 in practice.
    pub publishers: u64,
    /// Bytes of RTP and RTCP written to the path's stream since it was created.
    pub bytes_received: u64,
    /// RTP and RTCP packets written to the path's stream since it was created.
    pub packets_received: u64,
    /// Where the stream comes from.
    pub source: PathSource,
}

/// Which build is running, for `shardcast_build_info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// The crate version, such as `env!("CARGO_PKG_VERSION")`.
    pub version: String,
    /// The compiler version, if known.
    pub rustc: Option<String>,
}

/// The label value of a session state.
pub fn state_label(state: SessionState) -> &'static str {
    match state {
        SessionState::Initial => "initial",
        SessionState::PrePlay => "pre_play",
        SessionState::Play => "play",
        SessionState::PreRecord => "pre_record",
        SessionState::Record => "record",
    }
}

/// The label value of a session transport; `none` before the first SETUP succeeded.
pub fn transport_label(transport: Option<TransportKind>) -> &'static str {
    match transport {
        None => "none",
        Some(TransportKind::Tcp) => "tcp",
        Some(TransportKind::Udp) => "udp",
        Some(TransportKind::Multicast) => "multicast",
    }
}

/// Renders the server's counters, each path's and the build's, as Prometheus text.
pub fn render(server: &ServerMetrics, paths: &[PathMetrics], build: &BuildInfo) -> String {
    let mut out = Exposition::default();

    let mut build_labels = vec![("version", build.version.as_str())];
    if let Some(rustc) = build.rustc.as_deref() {
        build_labels.push(("rustc", rustc));
    }
    out.family(
        "shardcast_build_info",
        Kind::Gauge,
        "Which shardcast build runs; always 1.",
    );
    out.sample("shardcast_build_info", &build_labels, 1);

    out.single(
        "shardcast_connections",
        Kind::Gauge,
        "Open RTSP connections.",
        server.connections_open,
    );
    out.single(
        "shardcast_connections_accepted_total",
        Kind::Counter,
        "RTSP connections accepted.",
        server.connections_accepted,
    );
    out.family(
        "shardcast_sessions",
        Kind::Gauge,
        "Open RTSP sessions by state and transport.",
    );
    for (state, transport, count) in server.sessions.iter() {
        let labels = [("state", state_label(state)), ("transport", transport_label(transport))];
        out.sample("shardcast_sessions", &labels, count);
    }
    for (name, help, value) in [
        (
            "shardcast_received_bytes_total",
            "Bytes of RTP and RTCP received from publishers over TCP and UDP, without transport framing.",
            server.received_bytes,
        ),
        (
            "shardcast_received_packets_total",
            "RTP and RTCP packets received from publishers over TCP and UDP.",
            server.received_packets,
        ),
        (
            "shardcast_sent_bytes_total",
            "Bytes of RTP and RTCP sent to readers over TCP, UDP and multicast, without transport framing.",
            server.sent_bytes,
        ),
        (
            "shardcast_sent_packets_total",
            "RTP and RTCP packets sent to readers over TCP, UDP and multicast.",
            server.sent_packets,
        ),
        (
            "shardcast_packets_lost_total",
            "RTP packets publishers' sequence numbers show were lost before reaching the server.",
            server.packets_lost,
        ),
        (
            "shardcast_packets_dropped_slow_reader_total",
            "Packets dropped for TCP readers whose write queue was full, once per reader and packet.",
            server.packets_dropped_slow_reader,
        ),
        (
            "shardcast_ring_overruns_total",
            "Times a core fell a whole stream ring behind and skipped packets.",
            server.ring_overruns,
        ),
        (
            "shardcast_ring_overrun_packets_total",
            "Packets cores skipped when they fell a stream ring behind, once per core and stream.",
            server.ring_overrun_packets,
        ),
        (
            "shardcast_udp_ingress_dropped_total",
            "UDP datagrams from publishers dropped because their session's core fell behind.",
            server.udp_ingress_dropped,
        ),
    ] {
        out.single(name, Kind::Counter, help, value);
    }
    out.family(
        "shardcast_core_busy_seconds_total",
        Kind::Counter,
        "Time each core's executor spent running tasks and polling I/O rather than parked.",
    );
    for (core, seconds) in server.core_busy_seconds.iter().enumerate() {
        let core = core.to_string();
        out.sample_f64("shardcast_core_busy_seconds_total", &[("core", &core)], *seconds);
    }

    if !paths.is_empty() {
        out.family(
            "shardcast_path_info",
            Kind::Gauge,
            "Each path and where its stream comes from; always 1.",
        );
        for path in paths {
            let labels = [("path", path.name.as_str()), ("source", path.source.label())];
            out.sample("shardcast_path_info", &labels, 1);
        }
        type Field = fn(&PathMetrics) -> u64;
        let per_path: [(&str, Kind, &str, Field); 4] = [
            (
                "shardcast_path_readers",
                Kind::Gauge,
                "Readers playing each path.",
                |p| p.readers,
            ),
            (
                "shardcast_path_publishers",
                Kind::Gauge,
                "Publishers or pulled sources feeding each path.",
                |p| p.publishers,
            ),
            (
                "shardcast_path_received_bytes_total",
                Kind::Counter,
                "Bytes of RTP and RTCP written to each path's stream.",
                |p| p.bytes_received,
            ),
            (
                "shardcast_path_received_packets_total",
                Kind::Counter,
                "RTP and RTCP packets written to each path's stream.",
                |p| p.packets_received,
            ),
        ];
        for (name, kind, help, field) in per_path {
            out.family(name, kind, help);
            for path in paths {
                out.sample(name, &[("path", path.name.as_str())], field(path));
            }
        }
    }
    out.text
}

/// A metric family's type.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn single(&mut self, name: &str, kind: Kind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.labelled(name, labels);
        let _ = writeln!(self.text, " {value}");
    }

    fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.labelled(name, labels);
        let value = if value.is_nan() {
            "NaN".to_owned()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            value.to_string()
        };
        let _ = writeln!(self.text, " {value}");
    }

    fn labelled(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.text.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.text.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                self.text.push(',');
            }
            let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
        }
        self.text.push('}');
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// HELP text with `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
