//! [`Server`]: start (validate, bind, spawn one executor per core), local address, wait, close.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use super::config::{ServerConfig, ServerConfigError};
use super::core::{run_core, CoreStart, CoreUdpStart};
use super::handler::Handler;
use super::migrate::SessionDirectory;
use super::udp::UdpShared;
use super::ServerContext;
use crate::fanout::stream::CoreBells;
use crate::runtime::{
    available_cpus, bind_multicast_rtcp, bind_tcp_reuseport, bind_udp_reuseport, doorbell, CorePool, DoorbellRinger,
};

/// Checks listeners made by a [`ListenerFactory`](super::ListenerFactory): one per core, all on
/// one address, non-blocking.
fn adopt_made_listeners(
    made: std::io::Result<Vec<std::net::TcpListener>>,
    count: usize,
) -> std::io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let listeners = made?;
    if listeners.len() != count {
        return Err(std::io::Error::other(format!(
            "the listener factory made {} listeners for {count} cores",
            listeners.len()
        )));
    }
    let mut address = None;
    let mut fds = Vec::with_capacity(count);
    for listener in listeners {
        let local = listener.local_addr()?;
        if address.is_some_and(|a| a != local) {
            return Err(std::io::Error::other(
                "the listener factory's listeners are on different addresses",
            ));
        }
        address = Some(local);
        listener.set_nonblocking(true)?;
        fds.push(OwnedFd::from(listener));
    }
    let address = address.ok_or_else(|| std::io::Error::other("the listener factory made no listener"))?;
    Ok((fds, address))
}

/// One listener per core on `address`, bound here or made by the configured listener factory.
fn bind_listeners(
    config: &ServerConfig,
    address: SocketAddr,
    count: usize,
) -> Result<(Vec<OwnedFd>, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { address, source };
    match &config.listener_factory {
        Some(factory) => adopt_made_listeners((factory.0)(address, count), count).map_err(bind_error),
        None => bind_tcp_reuseport(address, count).map_err(bind_error),
    }
}

/// Send buffer of each UDP socket: room for a burst of fan-out to many readers.
const UDP_SEND_BUFFER: usize = 4 << 20;

/// Per-core UDP sockets, as bound: RTP fds, RTCP fds, and the (RTP, RTCP) ports.
type BoundUdp = (Vec<OwnedFd>, Vec<OwnedFd>, (u16, u16));

/// Binds `count` RTP and RTCP sockets on the configured addresses; with both ports 0, picks a free
/// even/odd pair.
fn bind_udp(config: &ServerConfig, rtp: SocketAddr, rtcp: SocketAddr, count: usize) -> Result<BoundUdp, StartError> {
    let bind = |addr: SocketAddr| {
        bind_udp_reuseport(addr, count, config.udp_read_buffer_size, Some(UDP_SEND_BUFFER))
            .map_err(|source| StartError::Bind { address: addr, source })
    };
    if rtp.port() != 0 {
        let (rtp_fds, rtp_addr) = bind(rtp)?;
        let (rtcp_fds, rtcp_addr) = bind(rtcp)?;
        return Ok((rtp_fds, rtcp_fds, (rtp_addr.port(), rtcp_addr.port())));
    }
    for _ in 0..64 {
        let (rtp_fds, rtp_addr) = bind(rtp)?;
        let port = rtp_addr.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        let mut rtcp_at = rtcp;
        rtcp_at.set_port(port + 1);
        if let Ok((rtcp_fds, _)) = bind(rtcp_at) {
            return Ok((rtp_fds, rtcp_fds, (port, port + 1)));
        }
    }
    Err(StartError::Bind {
        address: rtp,
        source: std::io::Error::other("no free even/odd UDP port pair found"),
    })
}

/// Why a server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration breaks a rule; nothing was bound.
    #[error("invalid server configuration: {0}")]
    Config(#[from] ServerConfigError),
    /// A configured CPU is not one this process may run on.
    #[error("CPU {cpu} is not available to this process (available: {available:?})")]
    CpuUnavailable {
        /// The configured CPU.
        cpu: usize,
        /// The CPUs this process may use.
        available: Vec<usize>,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}")]
    Bind {
        /// The address that could not be bound.
        address: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// An executor or its doorbell could not be created.
    #[error("cannot start the executors: {0}")]
    Runtime(std::io::Error),
}

/// A running RTSP server: one pinned executor per core, each accepting on its own listener.
///
/// Dropping the server closes it.
pub struct Server {
    local_addr: SocketAddr,
    rtsps_local_addr: Option<SocketAddr>,
    context: ServerContext,
    state: Arc<(Mutex<Lifecycle>, Condvar)>,
}

struct Lifecycle {
    shutdown: Option<Vec<DoorbellRinger>>,
    pool: Option<CorePool>,
    finished: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Validates `config`, binds every listener, and starts one executor per configured CPU, each
    /// with its own handler made by `make_handler` (called on that executor's thread).
    pub fn start<F, H>(config: ServerConfig, make_handler: F) -> Result<Server, StartError>
    where
        F: Fn(&ServerContext, usize) -> H + Send + Sync + 'static,
        H: Handler,
    {
        config.validate()?;
        let available = available_cpus();
        let cpus = match &config.cpus {
            Some(cpus) => {
                if let Some(&cpu) = cpus.iter().find(|c| !available.contains(c)) {
                    return Err(StartError::CpuUnavailable { cpu, available });
                }
                cpus.clone()
            }
            None => available,
        };
        let (listeners, local_addr) = bind_listeners(&config, config.rtsp_address, cpus.len())?;
        let (mut rtsps_listeners, rtsps_local_addr) = match config.rtsps_address {
            Some(address) => {
                let (fds, bound) = bind_listeners(&config, address, cpus.len())?;
                (fds.into_iter().map(Some).collect(), Some(bound))
            }
            None => (Vec::new(), None),
        };
        // Without a separate RTSPS address, the main listener is the TLS one.
        let listener_tls = config.tls.is_some() && config.rtsps_address.is_none();
        let mut udp_fds = match (config.rtp_address, config.rtcp_address) {
            (Some(rtp), Some(rtcp)) => {
                let (rtp_fds, rtcp_fds, ports) = bind_udp(&config, rtp, rtcp, cpus.len())?;
                Some((rtp_fds.into_iter(), rtcp_fds.into_iter(), ports))
            }
            _ => None,
        };
        let mut fanout_ringers = Vec::with_capacity(cpus.len());
        let mut shutdown_ringers = Vec::with_capacity(cpus.len());
        let mut ingest_ringers = Vec::with_capacity(cpus.len());
        let mut migration_ringers = Vec::with_capacity(cpus.len());
        let mut starts = Vec::with_capacity(cpus.len());
        for (core, listener) in listeners.into_iter().enumerate() {
            let rtsps_listener = rtsps_listeners.get_mut(core).and_then(Option::take);
            let (fanout_ringer, fanout_bell) = doorbell().map_err(StartError::Runtime)?;
            let (shutdown_ringer, shutdown_bell) = doorbell().map_err(StartError::Runtime)?;
            let (migration_ringer, migration_bell) = doorbell().map_err(StartError::Runtime)?;
            fanout_ringers.push(fanout_ringer);
            shutdown_ringers.push(shutdown_ringer);
            migration_ringers.push(migration_ringer);
            let udp = match udp_fds.as_mut() {
                Some((rtp, rtcp, _)) => {
                    let (ingest_ringer, ingest_bell) = doorbell().map_err(StartError::Runtime)?;
                    ingest_ringers.push(ingest_ringer);
                    match (rtp.next(), rtcp.next()) {
                        (Some(rtp), Some(rtcp)) => Some(CoreUdpStart { rtp, rtcp, ingest_bell }),
                        _ => None,
                    }
                }
                None => None,
            };
            starts.push(Mutex::new(Some(CoreStart {
                listener,
                listener_tls,
                rtsps_listener,
                fanout_bell,
                shutdown_bell,
                migration_bell,
                udp,
            })));
        }
        let udp_shared = udp_fds.map(|(_, _, ports)| Arc::new(UdpShared::new(ports, CoreBells::new(ingest_ringers))));
        let directory = SessionDirectory::new(CoreBells::new(migration_ringers));
        // Readers' receiver reports to multicast groups arrive here; only with UDP (its mailboxes
        // route them to the sessions' cores).
        let multicast_rtcp = match (config.multicast_rtcp_port, &udp_shared) {
            (Some(port), Some(_)) => Some(bind_multicast_rtcp(port).map_err(|source| StartError::Bind {
                address: SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port)),
                source,
            })?),
            _ => None,
        };
        let context = ServerContext::new(
            config,
            local_addr,
            Arc::new(CoreBells::new(fanout_ringers)),
            udp_shared,
            directory,
            multicast_rtcp,
        );
        let starts = Arc::new(starts);
        let make_handler = Arc::new(make_handler);
        let pool = CorePool::spawn("shardcast", &cpus, {
            let context = context.clone();
            move |core| {
                let start = starts
                    .get(core)
                    .and_then(|s| s.lock().unwrap_or_else(PoisonError::into_inner).take());
                let context = context.clone();
                let make_handler = make_handler.clone();
                async move {
                    match start {
                        Some(start) => {
                            let handler = make_handler(&context, core);
                            run_core(core, context, handler, start).await;
                        }
                        None => tracing::error!(core, "executor started without its listener"),
                    }
                }
            }
        })
        .map_err(StartError::Runtime)?;
        tracing::info!(address = %local_addr, cores = pool.len(), tls = listener_tls, "RTSP server listening");
        if let Some(address) = rtsps_local_addr {
            tracing::info!(%address, "RTSPS listening");
        }
        Ok(Server {
            local_addr,
            rtsps_local_addr,
            context,
            state: Arc::new((
                Mutex::new(Lifecycle {
                    shutdown: Some(shutdown_ringers),
                    pool: Some(pool),
                    finished: false,
                }),
                Condvar::new(),
            )),
        })
    }

    /// The address the RTSP listener is bound to (with the real port when port 0 was configured).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the separate RTSPS listener (with the real port when port 0 was
    /// configured), when `rtsps_address` is set. Without it, RTSPS (if `tls` is set) is served
    /// on [`Server::local_addr`].
    pub fn rtsps_local_addr(&self) -> Option<SocketAddr> {
        self.rtsps_local_addr
    }

    /// A handle to create streams and read the configuration, usable from any thread.
    pub fn context(&self) -> &ServerContext {
        &self.context
    }

    /// Starts a server and blocks until it is closed (from a handler, or by a signal the
    /// application handles by calling [`Server::close`] on a clone of its context's owner).
    pub fn start_and_wait<F, H>(config: ServerConfig, make_handler: F) -> Result<(), StartError>
    where
        F: Fn(&ServerContext, usize) -> H + Send + Sync + 'static,
        H: Handler,
    {
        Server::start(config, make_handler)?.wait();
        Ok(())
    }

    /// Blocks until the server is closed (by [`Server::close`] from another thread).
    pub fn wait(&self) {
        let (lock, cvar) = &*self.state;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !state.finished {
            state = cvar.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Stops accepting, closes every connection and session, and joins the executors. Idempotent.
    pub fn close(&self) {
        let (lock, cvar) = &*self.state;
        let (ringers, pool) = {
            let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
            (state.shutdown.take(), state.pool.take())
        };
        // Dropping the ringers is the shutdown signal: each core's doorbell reads end-of-stream.
        drop(ringers);
        if let Some(pool) = pool {
            if let Err(e) = pool.join() {
                tracing::error!(error = %e, "an executor failed");
            }
            tracing::info!(address = %self.local_addr, "RTSP server closed");
        }
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        state.finished = true;
        cvar.notify_all();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close();
    }
}
