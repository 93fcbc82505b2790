//! The `shardcast` server binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shardcast::config::{Config, EMBEDDED_DEFAULT};
use shardcast::server::Server;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

// The relay example's handler serves until the edge configuration (paths, users) replaces it.
#[allow(dead_code)] // each user of the relay needs a different part
#[path = "../examples/relay/handler.rs"]
mod relay;

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
    if args.check_config {
        println!("shardcast: configuration OK ({source})");
        return ExitCode::SUCCESS;
    }
    init_logging();
    serve(&config)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Runs the relay until SIGTERM or SIGINT, then closes the server.
fn serve(config: &Config) -> ExitCode {
    let server_config = config.server.to_server_config();
    let paths = relay::Paths::default();
    let server = match Server::start(server_config, move |context, _core| {
        relay::Relay::new(context, paths.clone())
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardcast: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(address = %server.local_addr(), "serving RTSP");
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("shardcast: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "shutting down");
    }
    server.close();
    ExitCode::SUCCESS
}
