//! `limit`: the bare fan-out program the benchmark compares shardcast with (see
//! `shardcast_bench::limit`). Two roles, run as two processes so that the sender's CPU time is its own:
//!
//! ```sh
//! limit recv --transport udp --readers 1000        # prints `ports ...` and `ready`, counts until stdin closes
//! limit send --transport udp --ports 40000,40001 --bitrate 2M --duration 10s
//! ```
//!
//! Across two hosts: `limit recv --bind ADDR` on the readers' host, `limit send --host ADDR` on the
//! server's.

use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use shardcast_bench::limit::{self, Destinations, Transport};
use shardcast_loadgen::synth::StreamShape;
use shardcast_loadgen::units::{parse_duration, parse_rate};

/// The least work that delivers a packet stream to N local readers: sendmmsg (UDP) or writev (TCP).
#[derive(Debug, Parser)]
#[command(name = "limit", version, about)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// Hold N reader sockets on 127.0.0.1 and count what arrives until stdin closes.
    Recv {
        /// udp or tcp.
        #[arg(long, default_value = "udp")]
        transport: Transport,
        /// Reader sockets (UDP) or connections to accept (TCP).
        #[arg(long)]
        readers: usize,
        /// Address the reader sockets bind to.
        #[arg(long, default_value = "127.0.0.1")]
        bind: Ipv4Addr,
        /// Receiving threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Stop by itself after this many seconds.
        #[arg(long, default_value_t = 600.0)]
        max_seconds: f64,
    },
    /// Send the stream to the receiver's sockets and print what it cost.
    Send {
        /// udp or tcp.
        #[arg(long, default_value = "udp")]
        transport: Transport,
        /// The receiver's address.
        #[arg(long, default_value = "127.0.0.1")]
        host: Ipv4Addr,
        /// UDP: the readers' ports, comma-separated, or @FILE with them (one a line, comma-separated, or
        /// the `ports ...` line `limit recv` prints).
        #[arg(long)]
        ports: Option<String>,
        /// TCP: the receiver's port.
        #[arg(long)]
        port: Option<u16>,
        /// TCP: connections to open.
        #[arg(long, default_value_t = 0)]
        readers: usize,
        /// Sending threads (readers are split between them).
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Video bitrate (`2M`, `500k`).
        #[arg(long, default_value = "2M", value_parser = parse_rate)]
        bitrate: u64,
        /// RTP packet size, header included.
        #[arg(long, default_value_t = 1200)]
        packet_size: usize,
        /// How long to send (`10s`).
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        duration: Duration,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("limit: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> io::Result<()> {
    match cli.role {
        Role::Recv {
            transport,
            readers,
            bind,
            threads,
            max_seconds,
        } => limit::recv(transport, bind, readers, threads, max_seconds),
        Role::Send {
            transport,
            host,
            ports,
            port,
            readers,
            threads,
            bitrate,
            packet_size,
            duration,
        } => {
            let dest = match transport {
                Transport::Udp => {
                    let list = ports.ok_or_else(|| io::Error::other("--ports is required for udp"))?;
                    let list = match list.strip_prefix('@') {
                        Some(file) => std::fs::read_to_string(file)?,
                        None => list,
                    };
                    // Also takes `limit recv`'s own output (`ports A,B,...` then `ready`).
                    let parsed: Result<Vec<u16>, _> = list
                        .lines()
                        .filter_map(|l| l.trim().strip_prefix("ports ").or(Some(l)))
                        .filter(|l| l.trim() != "ready")
                        .flat_map(|l| l.split(','))
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::parse)
                        .collect();
                    Destinations::Udp {
                        host,
                        ports: parsed.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
                    }
                }
                Transport::Tcp => Destinations::Tcp {
                    host,
                    port: port.ok_or_else(|| io::Error::other("--port is required for tcp"))?,
                    readers,
                },
            };
            let shape = StreamShape::new(bitrate, packet_size);
            shape.validate().map_err(io::Error::other)?;
            let report = limit::send(dest, shape, threads, duration)?;
            let mut out = io::stdout().lock();
            serde_json::to_writer(&mut out, &report)?;
            writeln!(out)
        }
    }
}
