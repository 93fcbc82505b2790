//! The `shardcast` server binary: reads its configuration, serves the edge handler, reloads on
//! SIGHUP and closes on SIGTERM or SIGINT. The application itself is `shardcast::edge`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use shardcast::edge::config::{Config, LogFormat, LogSection, EMBEDDED_DEFAULT};
use shardcast::edge::exporter;
use shardcast::edge::host_checks::{self, LiveHost};
use shardcast::edge::state::Edge;
use shardcast::server::{Server, ServerConfig, TlsConfig};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Exit code for a configuration that cannot be read or is invalid.
const EXIT_BAD_CONFIG: u8 = 2;

/// How long a graceful shutdown may take before the process exits anyway (systemd's stop timeout
/// in tuning/shardcast.service is 15 s, so it never needs SIGKILL).
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// shardcast: a thread-per-core RTSP media server.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without it, the embedded default is used. `SHARDCAST_*`
    /// environment variables override its keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match read_config(args.config.as_deref()) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("shardcast: {message}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let server_config = match server_config(&config) {
        Ok(c) => c,
        Err(message) => {
            eprintln!("shardcast: {message}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if args.check_config {
        println!(
            "shardcast: configuration OK ({})",
            describe_source(args.config.as_deref())
        );
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    serve(config, server_config, args.config.as_deref())
}

/// The library's server configuration, with the RTSPS certificate loaded: files that cannot be
/// used are a configuration error, found by `--check-config` too.
fn server_config(config: &Config) -> Result<ServerConfig, String> {
    let mut server = config.server.to_server_config();
    if let (Some(cert), Some(key)) = (&config.server.tls_cert_file, &config.server.tls_key_file) {
        let tls = TlsConfig::from_pem_files(cert, key)
            .map_err(|e| format!("invalid configuration: [server] tls_cert_file / tls_key_file: {e}"))?;
        server.tls = Some(tls);
        server.rtsps_address = config.server.rtsps_address;
    }
    Ok(server)
}

fn describe_source(path: Option<&Path>) -> String {
    path.map_or_else(|| "embedded default".to_owned(), |p| p.display().to_string())
}

/// Reads the file (or the embedded default), applies the environment and validates.
fn read_config(path: Option<&Path>) -> Result<Config, String> {
    let text = match path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
        None => EMBEDDED_DEFAULT.to_owned(),
    };
    // Variables that are not Unicode cannot be ours (ours are checked by name); skip them.
    let vars = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    Config::load(&text, vars).map_err(|e| format!("invalid configuration ({}): {e}", describe_source(path)))
}

/// Text or JSON lines on stderr, filtered by `RUST_LOG` if set, else by `[log] level`.
fn init_logging(log: &LogSection) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads paths and users.
fn serve(config: Config, server_config: ServerConfig, path: Option<&Path>) -> ExitCode {
    for warning in host_checks::check(&LiveHost, &server_config) {
        tracing::warn!(
            setting = warning.setting,
            "host setting below recommendation: {warning}"
        );
    }
    let metrics_address = config.metrics.as_ref().map(|m| m.address);
    let edge = Edge::new(config);
    let tls_only = server_config.tls.is_some() && server_config.rtsps_address.is_none();
    let server = match Server::start(server_config, {
        let edge = edge.clone();
        move |context, _core| edge.handler(context)
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            return ExitCode::from(1);
        }
    };
    tracing::info!(address = %server.local_addr(), tls = tls_only, "serving RTSP");
    if let Some(address) = server.rtsps_local_addr() {
        tracing::info!(%address, "serving TLS (RTSPS)");
    }
    let metrics = match metrics_address.map(|a| exporter::start(a, &edge, server.context())) {
        Some(Ok(metrics)) => {
            tracing::info!(address = %metrics.local_addr(), "serving metrics");
            Some(metrics)
        }
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot serve metrics");
            server.close();
            return ExitCode::from(1);
        }
        None => None,
    };
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers");
            server.close();
            return ExitCode::from(1);
        }
    };
    for signal in signals.forever() {
        if signal == SIGHUP {
            reload(&edge, path);
            continue;
        }
        tracing::info!(signal, "shutting down");
        break;
    }
    std::thread::spawn(|| {
        std::thread::sleep(SHUTDOWN_DEADLINE);
        tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "connections did not close in time; exiting anyway");
        std::process::exit(0);
    });
    drop(metrics);
    edge.close_pulls();
    server.close();
    ExitCode::SUCCESS
}

/// Re-reads the configuration; an invalid one is logged and the running one kept.
fn reload(edge: &Edge, path: Option<&Path>) {
    let config = match read_config(path) {
        Ok(c) => c,
        Err(message) => {
            tracing::error!(error = %message, "reload refused; the running configuration stays");
            return;
        }
    };
    let report = edge.reload(config);
    for section in &report.ignored_sections {
        tracing::warn!(section, "[{section}] changed; it applies only after a restart");
    }
    tracing::info!(closed_paths = ?report.closed_paths, "configuration reloaded");
}
