//! What faces operators rather than RTSP clients: the Prometheus text renderer ([`metrics`]) and
//! the HTTP endpoint that serves it ([`metrics_http`]).

pub mod metrics;
pub mod metrics_http;
