//! The `shardcast` server binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardcast::config::{Config, EMBEDDED_DEFAULT};

/// shardcast: a thread-per-core RTSP media server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it, the embedded default is used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (source, text) = match &args.config {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(t) => (path.display().to_string(), t),
            Err(e) => {
                eprintln!("shardcast: cannot read {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => ("embedded default".to_owned(), EMBEDDED_DEFAULT.to_owned()),
    };
    let config = match Config::from_toml(&text) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shardcast: invalid configuration ({source}): {e}");
            return ExitCode::from(2);
        }
    };
    println!(
        "shardcast: configuration OK ({source}); RTSP address {}",
        config.server.rtsp_address
    );
    if args.check_config {
        return ExitCode::SUCCESS;
    }
    // Say plainly what this build does not do yet rather than pretend to serve.
    eprintln!("shardcast: the RTSP server is not part of this build yet (protocol core only); exiting");
    ExitCode::from(1)
}
