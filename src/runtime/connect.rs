//! Client-side sockets: a TCP connection with a timeout, UDP RTP/RTCP port pairs and multicast
//! receivers, a wait for the first of several UDP sockets to become readable, and a resettable alarm.
//!
//! The RTSP client (`crate::client`) runs thousands of these per core, so the steady state allocates
//! nothing of its own: a datagram is received straight into the caller's buffer with a non-blocking
//! `recvfrom`, and only when every socket is empty do we wait. glommio has no readiness API, so the
//! wait awaits a 1-byte `peek_from` per socket (as `UdpSocket::recv_batch` does), with the futures
//! kept on the stack for up to [`MAX_INLINE_WAIT`] sockets.

use std::future::{poll_fn, Future};
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use super::tcp::{split, TcpReadHalf, TcpWriteHalf};

/// Sockets whose readiness futures live on the stack; more are boxed (a client with over 4 UDP tracks).
pub(crate) const MAX_INLINE_WAIT: usize = 8;

/// Attempts at finding a free even/odd port pair before giving up.
const PORT_PAIR_ATTEMPTS: usize = 64;

/// First and longest pause while a UDP send buffer is full.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
const MAX_PAUSE: Duration = Duration::from_millis(2);

/// Connects to `addr`, failing with `TimedOut` after `timeout`, and splits the stream.
///
/// Returns the halves and the local address of the connection. Must run on a glommio executor.
pub(crate) async fn connect_tcp(
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<(TcpReadHalf, TcpWriteHalf, SocketAddr)> {
    let timeout = timeout.max(Duration::from_millis(1));
    let stream = glommio::net::TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(io::Error::from)?;
    let local = stream.local_addr().map_err(io::Error::from)?;
    let (read, write) = split(stream);
    Ok((read, write, local))
}

/// Gives other tasks a turn if this one has run for its share.
///
/// A task-level yield: the executor still switches queues between tasks when preemption is due.
/// glommio's own `yield_if_needed` yields the whole task queue, which left a server core's data
/// plane stalled for seconds under CPU contention (see runtime/udp.rs).
pub(crate) async fn yield_if_needed() {
    if glommio::executor().need_preempt() {
        futures_lite::future::yield_now().await;
    }
}

/// Sleeps for `duration` on the executor's timer.
pub(crate) async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// A timer that is re-armed rather than re-created, so waiting allocates nothing.
pub(crate) struct Alarm {
    timer: glommio::timer::Timer,
    at: Instant,
}

impl Alarm {
    /// An alarm that has already gone off. Must run on a glommio executor.
    pub(crate) fn new() -> Self {
        Alarm {
            timer: glommio::timer::Timer::new(Duration::ZERO),
            at: Instant::now(),
        }
    }

    /// When the alarm goes off (or went off).
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// Re-arms the alarm to go off at `at`.
    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
        self.timer.reset(at.saturating_duration_since(Instant::now()));
    }

    /// Completes when the alarm goes off; at once if it already has.
    pub(crate) fn wait(&mut self) -> impl Future<Output = ()> + '_ {
        let timer = &mut self.timer;
        poll_fn(move |cx| Pin::new(&mut *timer).poll(cx).map(|_| ()))
    }
}

/// A non-blocking UDP socket of a client: one RTP or RTCP port of one track.
pub(crate) struct ClientUdpSocket {
    socket: glommio::net::UdpSocket,
}

impl ClientUdpSocket {
    fn adopt(socket: Socket) -> Self {
        let raw = OwnedFd::from(socket).into_raw_fd();
        // SAFETY: `raw` is an owned, open, non-blocking UDP socket; ownership moves into the glommio
        // socket, which closes it exactly once when dropped.
        let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(raw) };
        ClientUdpSocket { socket }
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr().map_err(io::Error::from)
    }

    /// Receives one queued datagram into `buf` without waiting: `Ok(None)` when none is queued.
    ///
    /// Returns the datagram's full length, which is more than `buf.len()` when it was truncated,
    /// and its source. ICMP errors left on the socket by earlier sends are skipped.
    pub(crate) fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
        // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and recv only writes initialised bytes
        // into the buffer, so the caller's initialised slice stays initialised.
        let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
        let socket = SockRef::from(self);
        loop {
            match socket.recv_from_with_flags(uninit, libc::MSG_TRUNC) {
                Ok((len, from)) => {
                    let from = from
                        .as_socket()
                        .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
                    return Ok(Some((len, from)));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_icmp_error(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Completes when a datagram (or an ICMP error) is queued on the socket.
    pub(crate) async fn readable(&self) -> io::Result<()> {
        let mut probe = [0u8; 1];
        match self.socket.peek_from(&mut probe).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = io::Error::from(e);
                if is_icmp_error(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Sends one datagram to `to`, pausing while the send buffer is full. An ICMP error from an earlier
    /// send is not this datagram's fault: the send is retried once, then the datagram is dropped.
    pub(crate) async fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let to = SockAddr::from(to);
        let mut pause = FIRST_PAUSE;
        let mut icmp_errors = 0;
        loop {
            match SockRef::from(self).send_to_with_flags(data, &to, libc::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) => {
                    glommio::timer::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_icmp_error(&e) => {
                    icmp_errors += 1;
                    if icmp_errors > 1 {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for ClientUdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by `self.socket`, which keeps it open while `self` is borrowed.
        unsafe { BorrowedFd::borrow_raw(self.socket.as_raw_fd()) }
    }
}

fn udp_socket(addr: SocketAddr, reuse: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse {
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds an RTP socket on an even port of `ip` and an RTCP socket on the next (odd) port.
///
/// Must run on a glommio executor.
pub(crate) fn bind_udp_pair(ip: IpAddr) -> io::Result<(ClientUdpSocket, ClientUdpSocket)> {
    let mut last_error = io::Error::new(io::ErrorKind::AddrInUse, "no free even/odd UDP port pair");
    for _ in 0..PORT_PAIR_ATTEMPTS {
        let rtp = udp_socket(SocketAddr::new(ip, 0), false)?;
        let port = rtp
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("UDP socket has no IP address"))?;
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        match udp_socket(SocketAddr::new(ip, port + 1), false) {
            Ok(rtcp) => return Ok((ClientUdpSocket::adopt(rtp), ClientUdpSocket::adopt(rtcp))),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// Binds `group:ports.0` and `group:ports.1` with SO_REUSEADDR/SO_REUSEPORT (so that other readers on
/// this host can too) and joins `group` on `interface` (0.0.0.0: the kernel picks).
///
/// Must run on a glommio executor.
pub(crate) fn bind_udp_multicast(
    group: Ipv4Addr,
    ports: (u16, u16),
    interface: Ipv4Addr,
) -> io::Result<(ClientUdpSocket, ClientUdpSocket)> {
    let bind = |port| -> io::Result<ClientUdpSocket> {
        let socket = udp_socket(SocketAddr::from((group, port)), true)?;
        socket.join_multicast_v4(&group, &interface)?;
        Ok(ClientUdpSocket::adopt(socket))
    };
    Ok((bind(ports.0)?, bind(ports.1)?))
}

/// Waits until one of `sockets` is readable and returns its index. An empty slice never completes.
pub(crate) async fn readable_any(sockets: &[ClientUdpSocket]) -> io::Result<usize> {
    if sockets.len() > MAX_INLINE_WAIT {
        let mut waits: Vec<_> = sockets.iter().map(|s| Box::pin(s.readable())).collect();
        return poll_fn(|cx| {
            for (i, wait) in waits.iter_mut().enumerate() {
                if let Poll::Ready(result) = wait.as_mut().poll(cx) {
                    return Poll::Ready(result.map(|()| i));
                }
            }
            Poll::Pending
        })
        .await;
    }
    let waits: [Option<_>; MAX_INLINE_WAIT] = std::array::from_fn(|i| sockets.get(i).map(|s| s.readable()));
    let mut waits = pin!(waits);
    poll_fn(|cx| {
        for i in 0..sockets.len() {
            // SAFETY: a pinned array's elements are structurally pinned: none is moved out or
            // swapped while the array is pinned, and the array is dropped in place.
            let wait = unsafe { waits.as_mut().map_unchecked_mut(|w| &mut w[i]) };
            if let Some(wait) = wait.as_pin_mut() {
                if let Poll::Ready(result) = wait.poll(cx) {
                    return Poll::Ready(result.map(|()| i));
                }
            }
        }
        Poll::Pending
    })
    .await
}

/// Errors an ICMP message left on the socket: never fatal to the socket.
fn is_icmp_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| {
        [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EHOSTDOWN,
            libc::ENETDOWN,
        ]
        .contains(&code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: Send + 'static, Fut: Future<Output = T> + 'static>(f: impl FnOnce() -> Fut + Send + 'static) -> T {
        let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(64 * 1024);
        builder.spawn(f).unwrap().join().unwrap()
    }

    #[test]
    fn a_pair_is_even_and_odd_and_the_readable_socket_is_found() {
        let (ports, got) = run(|| async {
            let (rtp, rtcp) = bind_udp_pair(IpAddr::from(Ipv4Addr::LOCALHOST)).unwrap();
            let (a, b) = (rtp.local_addr().unwrap(), rtcp.local_addr().unwrap());
            let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let sockets = [rtp, rtcp];
            let mut buf = [0u8; 4];
            assert!(sockets[1].try_recv_from(&mut buf).unwrap().is_none());
            sender.send_to(b"rtcp!", b).unwrap();
            let ready = readable_any(&sockets).await.unwrap();
            let (len, from) = sockets[ready].try_recv_from(&mut buf).unwrap().unwrap();
            (
                (a.port(), b.port()),
                (ready, len, buf, from == sender.local_addr().unwrap()),
            )
        });
        assert_eq!((ports.0 % 2, ports.1), (0, ports.0 + 1));
        assert_eq!(
            got,
            (1, 5, *b"rtcp", true),
            "the full length tells the datagram was truncated"
        );
    }

    #[test]
    fn an_alarm_is_rearmed() {
        let elapsed = run(|| async {
            let start = Instant::now();
            let mut alarm = Alarm::new();
            alarm.wait().await;
            alarm.set(Instant::now() + Duration::from_millis(50));
            alarm.wait().await;
            alarm.set(Instant::now() + Duration::from_millis(50));
            alarm.wait().await;
            start.elapsed()
        });
        assert!(elapsed >= Duration::from_millis(100), "{elapsed:?}");
    }
}
