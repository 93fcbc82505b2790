//! SO_REUSEPORT listeners: one per core on the same address, so the kernel spreads connections.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Backlog per core; a burst of thousands of players joining at once must not be refused.
const LISTEN_BACKLOG: i32 = 4096;

/// Binds `count` TCP listeners to `addr` with SO_REUSEPORT and returns them with the bound address.
///
/// The first socket binds `addr` as given; when its port is 0 the others bind the port the kernel
/// chose, so every core listens on one address.
pub(crate) fn bind_tcp_reuseport(addr: SocketAddr, count: usize) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    ensure_port_free(addr, Type::STREAM)?;
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(bound), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&bound.into())?;
        socket.listen(LISTEN_BACKLOG)?;
        if fds.is_empty() {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

/// Fails with `AddrInUse` when another socket already holds `addr`.
///
/// SO_REUSEPORT lets a second server of the same user bind the same port and silently take half
/// of the connections, so a probe without it checks first that the port is really free. Port 0
/// needs no check.
pub(crate) fn ensure_port_free(addr: SocketAddr, kind: Type) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = Socket::new(Domain::for_address(addr), kind, None)?;
    if kind == Type::STREAM {
        // Sockets in TIME_WAIT from a previous run must not count as in use.
        probe.set_reuse_address(true)?;
    }
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{addr} is already in use (another server?)"),
            )
        } else {
            e
        }
    })
}

/// Turns a listener made by [`bind_tcp_reuseport`] into a glommio listener on the calling executor.
pub(crate) fn adopt_tcp_listener(fd: OwnedFd) -> glommio::net::TcpListener {
    // SAFETY: `fd` is an owned, open, listening TCP socket (made by `bind_tcp_reuseport`); ownership
    // moves into the glommio listener, which closes it exactly once when dropped.
    unsafe { glommio::net::TcpListener::from_raw_fd(fd.into_raw_fd()) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_server_on_the_same_port_is_refused_even_with_reuseport() {
        let (_first, addr) = super::bind_tcp_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let second = super::bind_tcp_reuseport(addr, 2);
        assert_eq!(second.err().map(|e| e.kind()), Some(std::io::ErrorKind::AddrInUse));
    }

    use super::*;

    #[test]
    fn port_zero_gives_every_core_the_same_port() {
        let (fds, addr) = bind_tcp_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        assert_ne!(addr.port(), 0);
        for fd in fds {
            let socket = Socket::from(fd);
            assert_eq!(socket.local_addr().unwrap().as_socket(), Some(addr));
        }
    }

    #[test]
    fn an_address_in_use_without_reuseport_is_an_error() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        assert!(bind_tcp_reuseport(taken, 1).is_err());
    }
}
