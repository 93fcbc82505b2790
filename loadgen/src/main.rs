//! The shardcast load generator (thread-per-core RTSP reader/publisher swarm).
//!
//! Not built yet: this binary only states so, so nobody mistakes it for a working tool.

use std::process::ExitCode;

use clap::Parser;

/// Thread-per-core RTSP load generator.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {}

fn main() -> ExitCode {
    let _ = Args::parse();
    eprintln!("loadgen: not implemented yet; it needs the RTSP client (src/client)");
    ExitCode::from(1)
}
