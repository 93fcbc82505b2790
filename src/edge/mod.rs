//! Edge server building blocks: pulling paths from an origin RTSP server for local readers.

pub mod pull;
