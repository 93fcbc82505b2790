//! SO_REUSEPORT UDP sockets with batched `sendmmsg`/`recvmmsg`: the UDP data plane's system calls.
//!
//! Fan-out sends one packet to many readers: every message of a `sendmmsg` points at the same buffer
//! with a different destination, up to [`MAX_BATCH`] per call. The message headers, iovecs and
//! addresses live in scratch space allocated once per socket (and once per [`RecvBatch`]), so the
//! steady state allocates nothing. The scratch is borrowed only inside synchronous helpers, never
//! across an `.await`, so several tasks of one executor may share a socket.
//!
//! glommio has no readiness API. To wait for input we await a 1-byte `peek_from` (an io_uring
//! `recvmsg` with MSG_PEEK), then drain with `recvmmsg`. Waiting for room in a full send buffer cannot
//! go through glommio: its `UdpSocket::send_to` falls back to an io_uring `sendmsg` whose iovec length
//! is hard-coded to 1 (glommio 0.9 `Reactor::rushed_sendmsg`), so the datagram would go out truncated
//! to one byte. We pause on a glommio timer instead, doubling from [`FIRST_PAUSE`] to [`MAX_PAUSE`]
//! while the buffer stays full: no spinning, and no message is dropped for a full buffer.

use std::cell::{Cell, RefCell};
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// Messages per `sendmmsg`/`recvmmsg`. DESIGN.md measured no gain past 64; more only costs scratch.
pub(crate) const MAX_BATCH: usize = 256;

/// First pause when the send buffer is full: a 200 KiB buffer drains in ~170 us at 10 Gbit/s.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
/// Longest pause while the buffer stays full.
const MAX_PAUSE: Duration = Duration::from_millis(2);

/// Binds `count` non-blocking UDP sockets to `addr` with SO_REUSEADDR and SO_REUSEPORT.
///
/// The first socket binds `addr` as given; when its port is 0 the others bind the port the kernel
/// chose. `recv_buffer` and `send_buffer` set SO_RCVBUF and SO_SNDBUF; a receive buffer the kernel
/// caps (at `net.core.rmem_max`) is an error, not a silent downgrade.
pub(crate) fn bind_udp_reuseport(
    addr: SocketAddr,
    count: usize,
    recv_buffer: Option<usize>,
    send_buffer: Option<usize>,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    super::listen::ensure_port_free(addr, Type::DGRAM)?;
    let mut fds = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let socket = Socket::new(Domain::for_address(bound), Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        if let Some(size) = send_buffer {
            socket.set_send_buffer_size(size)?;
        }
        if let Some(size) = recv_buffer {
            set_recv_buffer_exactly(&socket, size)?;
        }
        socket.bind(&bound.into())?;
        if fds.is_empty() {
            bound = socket
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("UDP socket has no IP address"))?;
        }
        fds.push(OwnedFd::from(socket));
    }
    Ok((fds, bound))
}

/// Sets SO_RCVBUF and fails if the kernel granted less. Linux stores (and reads back) twice the value
/// it honours, to cover bookkeeping, and caps the value at `net.core.rmem_max` before doubling; even
/// root is capped, only SO_RCVBUFFORCE is not, and we do not use it.
fn set_recv_buffer_exactly(socket: &Socket, requested: usize) -> io::Result<()> {
    socket.set_recv_buffer_size(requested)?;
    let reported = socket.recv_buffer_size()?;
    if reported >= requested.saturating_mul(2) {
        return Ok(());
    }
    let limit = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    Err(io::Error::other(format!(
        "UDP receive buffer of {requested} bytes requested but the kernel granted {} (SO_RCVBUF reads \
         {reported}); net.core.rmem_max is {limit}: raise it, e.g. `sysctl -w net.core.rmem_max={requested}`",
        reported / 2
    )))
}

/// Joins `group` on `interface` (0.0.0.0: the kernel picks) for a socket or a bound fd.
pub(crate) fn join_multicast_v4(fd: impl AsFd, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
    SockRef::from(&fd).join_multicast_v4(&group, &interface)
}

/// Sets the TTL of multicast packets sent from the socket (1: never leaves the link).
pub(crate) fn set_multicast_ttl_v4(fd: impl AsFd, ttl: u32) -> io::Result<()> {
    SockRef::from(&fd).set_multicast_ttl_v4(ttl)
}

/// Whether multicast packets sent from the socket are looped back to local members.
pub(crate) fn set_multicast_loop_v4(fd: impl AsFd, enabled: bool) -> io::Result<()> {
    SockRef::from(&fd).set_multicast_loop_v4(enabled)
}

/// Turns a socket made by [`bind_udp_reuseport`] into a [`UdpSocket`] of the calling executor.
///
/// Must run on a glommio executor thread.
pub(crate) fn adopt_udp(fd: OwnedFd) -> UdpSocket {
    let raw = fd.into_raw_fd();
    // SAFETY: `raw` is an owned, open UDP socket (made by `bind_udp_reuseport`); ownership moves into
    // the glommio socket, which closes it exactly once when dropped.
    let socket = unsafe { glommio::net::UdpSocket::from_raw_fd(raw) };
    let v6 = matches!(socket.local_addr(), Ok(SocketAddr::V6(_)));
    UdpSocket {
        socket,
        fd: raw,
        v6,
        scratch: RefCell::new(Scratch::new(MAX_BATCH)),
        full_buffer_waits: Cell::new(0),
    }
}

/// A UDP socket of one executor that sends and receives many datagrams per system call.
pub(crate) struct UdpSocket {
    socket: glommio::net::UdpSocket,
    fd: RawFd,
    /// An IPv6 socket sends to IPv4 destinations as v4-mapped addresses.
    v6: bool,
    scratch: RefCell<Scratch>,
    full_buffer_waits: Cell<u64>,
}

impl UdpSocket {
    /// The bound address.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }

    /// The file descriptor, owned by this socket.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd
    }

    /// How many times a send found the socket buffer (or device queue) full and paused for room.
    pub(crate) fn full_buffer_waits(&self) -> u64 {
        self.full_buffer_waits.get()
    }

    /// Sends `packet` to every destination, returning how many were sent.
    ///
    /// A full send buffer is waited out, never dropped. A destination the kernel refuses
    /// (unreachable, bad address, wrong family, firewall) is passed to `on_error` with its index and
    /// skipped; the others are still sent. `Err` means the socket itself failed.
    pub(crate) async fn send_to_many(
        &self,
        packet: &[u8],
        destinations: &[SocketAddr],
        on_error: &mut dyn FnMut(usize, io::Error),
    ) -> io::Result<usize> {
        self.send_each(destinations.len(), |i| (destinations[i], packet), on_error)
            .await
    }

    /// Sends each payload to its destination, with the same rules as [`Self::send_to_many`].
    pub(crate) async fn send_batch(
        &self,
        messages: &[(SocketAddr, &[u8])],
        on_error: &mut dyn FnMut(usize, io::Error),
    ) -> io::Result<usize> {
        self.send_each(messages.len(), |i| messages[i], on_error).await
    }

    async fn send_each<'a>(
        &self,
        count: usize,
        message: impl Fn(usize) -> (SocketAddr, &'a [u8]),
        on_error: &mut dyn FnMut(usize, io::Error),
    ) -> io::Result<usize> {
        let mut sent = 0;
        let mut next = 0;
        let mut pause = FIRST_PAUSE;
        let mut paused_for = None;
        while next < count {
            let batch = (count - next).min(MAX_BATCH);
            match self.sendmmsg_dontwait(next, batch, &message) {
                Ok(n) => {
                    sent += n;
                    next += n;
                    pause = FIRST_PAUSE;
                }
                // ENOBUFS even after a pause: the device queue keeps dropping this one; report it.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && paused_for == Some(next) => {
                    on_error(next, e);
                    next += 1;
                }
                Err(e) if is_buffer_full(&e) => {
                    self.full_buffer_waits.set(self.full_buffer_waits.get() + 1);
                    paused_for = Some(next);
                    glommio::timer::sleep(pause).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_per_destination(&e) => {
                    on_error(next, e);
                    next += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(sent)
    }

    /// One non-blocking `sendmmsg` of messages `first..first + count`. As the kernel does, an error on
    /// a message after the first ends the batch early; the caller's next call then reports it.
    fn sendmmsg_dontwait<'a>(
        &self,
        first: usize,
        count: usize,
        message: &impl Fn(usize) -> (SocketAddr, &'a [u8]),
    ) -> io::Result<usize> {
        debug_assert!(count > 0 && count <= MAX_BATCH);
        let mut scratch = self.scratch.borrow_mut();
        for slot in 0..count {
            let (destination, payload) = message(first + slot);
            let name_len = encode_sockaddr(destination, self.v6, &mut scratch.names[slot]);
            // The kernel only reads through iov_base; the pointer is rewritten before every call.
            scratch.iovecs[slot] = libc::iovec {
                iov_base: payload.as_ptr() as *mut libc::c_void,
                iov_len: payload.len(),
            };
            scratch.link(slot, name_len);
        }
        // SAFETY: the first `count` headers point at initialised names and iovecs in `scratch`, which
        // stays borrowed for the call, and each iovec at a payload borrowed by the caller; `self.fd` is
        // open for as long as `self.socket` lives.
        let sent = unsafe {
            libc::sendmmsg(
                self.fd,
                scratch.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }

    /// Waits until at least one datagram is queued, then receives up to `batch`'s capacity at once.
    ///
    /// Returns the number of datagrams; read them with [`RecvBatch::packet`]. ICMP errors queued on
    /// the socket by earlier sends are skipped.
    pub(crate) async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        // Let the other tasks of this queue run between batches. A plain task yield, not glommio's
        // yield_if_needed: yielding the whole task queue there left a core's data plane stalled for
        // seconds under CPU contention (tests/udp_scale.rs found it).
        futures_lite::future::yield_now().await;
        loop {
            match batch.recvmmsg_dontwait(self.fd) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut probe = [0u8; 1];
                    if let Err(e) = self.socket.peek_from(&mut probe).await {
                        let e = io::Error::from(e);
                        if !is_icmp_error(&e) {
                            return Err(e);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_icmp_error(&e) => tracing::trace!(error = %e, "ICMP error on a UDP socket"),
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for UdpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `self.fd` is owned by `self.socket`, which keeps it open while `self` is borrowed.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

/// Datagrams received by one [`UdpSocket::recv_batch`], in buffers allocated once.
pub(crate) struct RecvBatch {
    max_packet: usize,
    /// One contiguous allocation of `capacity` slots of `max_packet + 1` bytes: the extra byte tells
    /// an oversized datagram from one of exactly `max_packet` bytes.
    buffers: Vec<u8>,
    scratch: Scratch,
    lengths: Vec<usize>,
    sources: Vec<SocketAddr>,
    oversized: Vec<bool>,
    received: usize,
}

impl RecvBatch {
    /// Room for `count` datagrams (clamped to 1..=[`MAX_BATCH`]) of up to `max_packet` bytes.
    pub(crate) fn new(count: usize, max_packet: usize) -> Self {
        let count = count.clamp(1, MAX_BATCH);
        Self {
            max_packet,
            buffers: vec![0; count * (max_packet + 1)],
            scratch: Scratch::new(count),
            lengths: vec![0; count],
            sources: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)); count],
            oversized: vec![false; count],
            received: 0,
        }
    }

    /// How many datagrams one receive can return.
    pub(crate) fn capacity(&self) -> usize {
        self.lengths.len()
    }

    /// Datagram `i` of the last receive: its bytes (at most `max_packet`), its source, and whether it
    /// was longer than `max_packet` (then the bytes are a truncated prefix and should be dropped).
    pub(crate) fn packet(&self, i: usize) -> (&[u8], SocketAddr, bool) {
        assert!(i < self.received, "datagram {i} of {}", self.received);
        let start = i * (self.max_packet + 1);
        let len = self.lengths[i].min(self.max_packet);
        (&self.buffers[start..start + len], self.sources[i], self.oversized[i])
    }

    fn recvmmsg_dontwait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.received = 0;
        let stride = self.max_packet + 1;
        let count = self.capacity();
        let base = self.buffers.as_mut_ptr();
        for slot in 0..count {
            self.scratch.iovecs[slot] = libc::iovec {
                // Slot `slot` of `buffers`: in bounds because `buffers` holds `count * stride` bytes.
                iov_base: base.wrapping_add(slot * stride).cast(),
                iov_len: stride,
            };
            self.scratch
                .link(slot, mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t);
        }
        // SAFETY: every header points at its own sockaddr_storage (with its full size as the name
        // length) and at one iovec of `stride` writable bytes inside `buffers`; all are owned by
        // `self`, which is mutably borrowed for the call. `fd` is an open socket of the caller.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.scratch.headers.as_mut_ptr(),
                count as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            let header = &self.scratch.headers[i];
            let len = header.msg_len as usize;
            self.lengths[i] = len;
            self.oversized[i] = len > self.max_packet || header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.sources[i] =
                decode_sockaddr(&self.scratch.names[i]).unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        }
        self.received = n;
        Ok(n)
    }
}

/// `mmsghdr`s with the names and iovecs they point at, allocated once.
struct Scratch {
    headers: Vec<libc::mmsghdr>,
    iovecs: Vec<libc::iovec>,
    names: Vec<libc::sockaddr_storage>,
}

impl Scratch {
    fn new(count: usize) -> Self {
        // SAFETY: mmsghdr, iovec and sockaddr_storage are C structs of integers and raw pointers, for
        // which all-zero bytes are a valid (empty) value.
        let (header, iovec, name) = unsafe { (mem::zeroed(), mem::zeroed(), mem::zeroed()) };
        Self {
            headers: vec![header; count],
            iovecs: vec![iovec; count],
            names: vec![name; count],
        }
    }

    /// Points header `slot` at name `slot` (of `name_len` bytes) and iovec `slot`, clearing the rest.
    /// The pointers go into this struct's heap buffers, which never move, and are set before each use.
    fn link(&mut self, slot: usize, name_len: libc::socklen_t) {
        let name: *mut libc::sockaddr_storage = &mut self.names[slot];
        let iovec: *mut libc::iovec = &mut self.iovecs[slot];
        let entry = &mut self.headers[slot];
        entry.msg_len = 0;
        let header = &mut entry.msg_hdr;
        header.msg_name = name.cast();
        header.msg_namelen = name_len;
        header.msg_iov = iovec;
        header.msg_iovlen = 1;
        header.msg_control = ptr::null_mut();
        header.msg_controllen = 0;
        header.msg_flags = 0;
    }
}

/// Writes `addr` as a C socket address into `out`; an IPv6 socket gets IPv4 as a v4-mapped address.
fn encode_sockaddr(addr: SocketAddr, v6_socket: bool, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let addr = match addr {
        SocketAddr::V4(v4) if v6_socket => SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
        other => other,
    };
    let out: *mut libc::sockaddr_storage = out;
    match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and at least as aligned as any sockaddr type,
            // and `out` comes from a live mutable reference.
            unsafe { out.cast::<libc::sockaddr_in>().write(sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                // Passed through unconverted, as std and socket2 do.
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { out.cast::<libc::sockaddr_in6>().write(sin6) };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// Reads the IPv4 or IPv6 address the kernel wrote into `storage`.
fn decode_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let storage: *const libc::sockaddr_storage = storage;
    // SAFETY: `storage` comes from a live reference; its family field tells which sockaddr type the
    // kernel wrote, and sockaddr_storage is large and aligned enough for either.
    match unsafe { (*storage).ss_family } as libc::c_int {
        libc::AF_INET => {
            // SAFETY: see above; the family is AF_INET.
            let sin = unsafe { &*storage.cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: see above; the family is AF_INET6.
            let sin6 = unsafe { &*storage.cast::<libc::sockaddr_in6>() };
            let (ip, port) = (Ipv6Addr::from(sin6.sin6_addr.s6_addr), u16::from_be(sin6.sin6_port));
            Some(SocketAddrV6::new(ip, port, sin6.sin6_flowinfo, sin6.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// The send buffer (or the device queue) is full: pause for room instead of dropping.
fn is_buffer_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS)
}

/// Errors an ICMP message left on the socket, or a failed route lookup: never fatal to the socket.
const ICMP_ERRORS: [i32; 5] = [
    libc::ECONNREFUSED,
    libc::EHOSTUNREACH,
    libc::ENETUNREACH,
    libc::EHOSTDOWN,
    libc::ENETDOWN,
];

/// Besides [`ICMP_ERRORS`], errors about one destination (bad address or family, firewall, size).
const DESTINATION_ERRORS: [i32; 7] = [
    libc::EINVAL,
    libc::EPERM,
    libc::EACCES,
    libc::EAFNOSUPPORT,
    libc::EADDRNOTAVAIL,
    libc::EDESTADDRREQ,
    libc::EMSGSIZE,
];

fn is_icmp_error(e: &io::Error) -> bool {
    e.raw_os_error().is_some_and(|code| ICMP_ERRORS.contains(&code))
}

/// Report the destination, skip it, and send to the others.
fn is_per_destination(e: &io::Error) -> bool {
    is_icmp_error(e) || e.raw_os_error().is_some_and(|code| DESTINATION_ERRORS.contains(&code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn run_on_one_core<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
        f: impl FnOnce() -> Fut + Send + 'static,
    ) -> T {
        let builder = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).io_memory(64 * 1024);
        builder.spawn(f).unwrap().join().unwrap()
    }

    fn one_socket(addr: &str, recv_buffer: Option<usize>, send_buffer: Option<usize>) -> (OwnedFd, SocketAddr) {
        let (mut fds, bound) = bind_udp_reuseport(addr.parse().unwrap(), 1, recv_buffer, send_buffer).unwrap();
        (fds.pop().unwrap(), bound)
    }

    fn receiver(addr: &str) -> std::net::UdpSocket {
        let socket = std::net::UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    /// Receives one datagram and checks that nothing else is queued.
    fn only_datagram(socket: &std::net::UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0; 2048];
        let (len, from) = socket.recv_from(&mut buf).unwrap();
        socket.set_nonblocking(true).unwrap();
        assert_eq!(socket.recv(&mut [0; 8]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        buf.truncate(len);
        (buf, from)
    }

    fn no_error(i: usize, e: io::Error) {
        panic!("destination {i}: {e}");
    }

    fn rmem_max() -> usize {
        std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn one_packet_reaches_five_hundred_destinations() {
        let receivers: Vec<_> = (0..500).map(|_| receiver("127.0.0.1:0")).collect();
        let destinations: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let (fd, sender) = one_socket("127.0.0.1:0", None, None);
        let packet: Vec<u8> = (0..1200u32).map(|i| (i % 253) as u8).collect();
        let expected = packet.clone();
        let sent = run_on_one_core(move || async move {
            adopt_udp(fd)
                .send_to_many(&packet, &destinations, &mut no_error)
                .await
                .unwrap()
        });
        assert_eq!(sent, 500);
        for r in &receivers {
            assert_eq!(only_datagram(r), (expected.clone(), sender));
        }
    }

    /// A network namespace whose `lo` is rate-limited by a tbf qdisc. On plain loopback a UDP send
    /// buffer never fills (the skb is orphaned at transmit); queued behind a qdisc, packets stay
    /// charged to the sender, so a small SO_SNDBUF really fills. Needs root; `None` without it.
    struct ThrottledNetns(String);

    impl ThrottledNetns {
        fn create() -> Option<Self> {
            let ns = Self(format!("shardcast-udp-{}", std::process::id()));
            let tbf = "qdisc add dev lo root tbf rate 400mbit burst 32kb limit 4mb";
            for step in [
                format!("ip netns add {}", ns.0),
                format!("ip -n {} link set lo up", ns.0),
                format!("tc -n {} {tbf}", ns.0),
            ] {
                let words: Vec<&str> = step.split(' ').collect();
                let status = Command::new(words[0])
                    .args(&words[1..])
                    .output()
                    .map(|o| o.status.success());
                if !status.unwrap_or(false) {
                    return None;
                }
            }
            Some(ns)
        }

        /// Runs `f` on a thread inside the namespace; sockets made there stay in it.
        fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
            let path = format!("/run/netns/{}", self.0);
            std::thread::scope(|scope| {
                let thread = scope.spawn(|| {
                    let ns = std::fs::File::open(path).unwrap();
                    // SAFETY: `ns` is an open network namespace file; setns only moves this
                    // short-lived thread into it.
                    assert_eq!(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
                    f()
                });
                thread.join().unwrap()
            })
        }
    }

    impl Drop for ThrottledNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn a_full_send_buffer_waits_instead_of_dropping() {
        const PACKETS: u32 = 2000;
        let netns = ThrottledNetns::create();
        let make_sockets = || {
            let big = Some(rmem_max().min(4 << 20));
            let receivers: Vec<_> = (0..10)
                .map(|_| std::net::UdpSocket::from(one_socket("127.0.0.1:0", big, None).0))
                .collect();
            (receivers, one_socket("127.0.0.1:0", None, Some(4096)).0)
        };
        let (receivers, fd) = match &netns {
            Some(ns) => ns.enter(make_sockets),
            None => {
                eprintln!("no network namespace (not root?): on plain loopback the send buffer may never fill");
                make_sockets()
            }
        };
        let destinations: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let drains: Vec<_> = receivers
            .into_iter()
            .map(|r| {
                std::thread::spawn(move || {
                    r.set_nonblocking(false).unwrap();
                    r.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let (mut buf, mut next) = ([0u8; 2048], 0u32);
                    while next < PACKETS {
                        let Ok(len) = r.recv(&mut buf) else { break };
                        assert_eq!(len, 1200, "complete datagrams");
                        assert_eq!(buf[..4], next.to_be_bytes(), "in order, none missing");
                        next += 1;
                    }
                    next
                })
            })
            .collect();
        let (sent, waits) = run_on_one_core(move || async move {
            let (socket, mut packet, mut sent) = (adopt_udp(fd), vec![7u8; 1200], 0);
            for seq in 0..PACKETS {
                packet[..4].copy_from_slice(&seq.to_be_bytes());
                sent += socket
                    .send_to_many(&packet, &destinations, &mut no_error)
                    .await
                    .unwrap();
            }
            (sent, socket.full_buffer_waits())
        });
        assert_eq!(sent, 20_000);
        let received: Vec<u32> = drains.into_iter().map(|d| d.join().unwrap()).collect();
        assert_eq!(received, vec![PACKETS; 10]);
        assert!(
            netns.is_none() || waits > 0,
            "the send buffer never filled: the wait was not tested"
        );
    }

    #[test]
    fn an_unreachable_destination_is_reported_and_the_others_still_get_the_packet() {
        let receivers: Vec<_> = (0..3).map(|_| receiver("127.0.0.1:0")).collect();
        let good: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
        let port_zero = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        let wrong_family = SocketAddr::from((Ipv6Addr::LOCALHOST, 9));
        let (fd, _) = one_socket("127.0.0.1:0", None, None);
        let (fan_out, batch) = run_on_one_core(move || async move {
            let socket = adopt_udp(fd);
            let mut errors = Vec::new();
            let destinations = [good[0], port_zero, good[1], wrong_family, good[2]];
            let mut on_error = |i: usize, e: io::Error| errors.push((i, e.raw_os_error()));
            let fan_out = socket
                .send_to_many(b"same", &destinations, &mut on_error)
                .await
                .unwrap();
            let fan_out = (fan_out, std::mem::take(&mut errors));
            // Different payloads through send_batch, the bad destinations first and last.
            let payloads: Vec<[u8; 2]> = (0..5u8).map(|i| [b'p', i]).collect();
            let order = [port_zero, good[0], good[1], good[2], wrong_family];
            let messages: Vec<(SocketAddr, &[u8])> = order.iter().zip(&payloads).map(|(d, p)| (*d, &p[..])).collect();
            let mut on_error = |i: usize, e: io::Error| errors.push((i, e.raw_os_error()));
            let sent = socket.send_batch(&messages, &mut on_error).await.unwrap();
            (fan_out, (sent, errors))
        });
        let errors = |first, last| vec![(first, Some(libc::EINVAL)), (last, Some(libc::EAFNOSUPPORT))];
        assert_eq!(fan_out, (3, errors(1, 3)));
        assert_eq!(batch, (3, errors(0, 4)));
        let mut buf = [0u8; 16];
        for (i, r) in receivers.iter().enumerate() {
            assert_eq!(r.recv(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"same");
            assert_eq!(only_datagram(r).0, [b'p', i as u8 + 1]);
        }
    }

    #[test]
    fn recv_batch_returns_many_packets_with_their_sources() {
        let (fd, addr) = one_socket("127.0.0.1:0", Some(1 << 20), None);
        let senders: Vec<_> = (0..3u8)
            .map(|s| {
                std::thread::spawn(move || {
                    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    // Start late so that the receiver first has to wait for input.
                    std::thread::sleep(Duration::from_millis(100));
                    for seq in 0..100u8 {
                        socket.send_to(&[s, seq, 0xAB], addr).unwrap();
                    }
                    socket.local_addr().unwrap()
                })
            })
            .collect();
        let (got, calls) = run_on_one_core(move || async move {
            let (socket, mut batch) = (adopt_udp(fd), RecvBatch::new(64, 100));
            let (mut got, mut calls) = (Vec::new(), 0);
            while got.len() < 300 {
                let n = socket.recv_batch(&mut batch).await.unwrap();
                assert!(n >= 1 && n <= batch.capacity());
                calls += 1;
                for i in 0..n {
                    let (bytes, from, oversized) = batch.packet(i);
                    assert!(!oversized);
                    got.push((bytes.to_vec(), from));
                }
            }
            (got, calls)
        });
        assert!(calls < 300, "datagrams come in batches");
        let sources: Vec<SocketAddr> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        for s in 0..3u8 {
            let from_s: Vec<u8> = got.iter().filter(|(b, _)| b[0] == s).map(|(b, _)| b[1]).collect();
            assert_eq!(from_s, (0..100).collect::<Vec<u8>>());
        }
        for (bytes, from) in &got {
            assert_eq!((bytes.len(), *from), (3, sources[bytes[0] as usize]));
        }
    }

    #[test]
    fn an_oversized_datagram_is_flagged_and_ipv6_sources_are_decoded() {
        for local in ["127.0.0.1:0", "[::1]:0"] {
            let (fd, addr) = one_socket(local, None, None);
            let peer = std::net::UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).unwrap();
            for len in [150, 100, 101, 1] {
                peer.send_to(&vec![len as u8; len], addr).unwrap();
            }
            let got = run_on_one_core(move || async move {
                let (socket, mut batch, mut got) = (adopt_udp(fd), RecvBatch::new(8, 100), Vec::new());
                while got.len() < 4 {
                    let n = socket.recv_batch(&mut batch).await.unwrap();
                    for i in 0..n {
                        let (bytes, from, oversized) = batch.packet(i);
                        got.push((bytes.len(), bytes[0], from, oversized));
                    }
                }
                got
            });
            let from = peer.local_addr().unwrap();
            let expected = [
                (100, 150, from, true),
                (100, 100, from, false),
                (100, 101, from, true),
                (1, 1, from, false),
            ];
            assert_eq!(got, expected, "on {local}");
        }
    }

    #[test]
    fn an_ipv6_socket_sends_to_ipv6_and_v4_mapped_destinations() {
        let (v6, v4) = (receiver("[::1]:0"), receiver("127.0.0.1:0"));
        let destinations = [v6.local_addr().unwrap(), v4.local_addr().unwrap()];
        let (fd, _) = one_socket("[::]:0", None, None);
        let sent = run_on_one_core(move || async move {
            adopt_udp(fd)
                .send_to_many(b"dual", &destinations, &mut no_error)
                .await
                .unwrap()
        });
        assert_eq!(
            (sent, only_datagram(&v6).0, only_datagram(&v4).0),
            (2, b"dual".to_vec(), b"dual".to_vec())
        );
    }

    #[test]
    fn reuseport_sockets_share_one_port() {
        let (fds, addr) = bind_udp_reuseport("127.0.0.1:0".parse().unwrap(), 3, None, None).unwrap();
        assert_ne!(addr.port(), 0);
        let addrs: Vec<SocketAddr> =
            run_on_one_core(
                move || async move { fds.into_iter().map(|fd| adopt_udp(fd).local_addr().unwrap()).collect() },
            );
        assert_eq!(addrs, vec![addr; 3]);
        let plain = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(bind_udp_reuseport(plain.local_addr().unwrap(), 1, None, None).is_err());
    }

    #[test]
    fn a_clamped_receive_buffer_is_an_error() {
        let max = rmem_max();
        let bind = |size| bind_udp_reuseport("127.0.0.1:0".parse().unwrap(), 2, Some(size), Some(1 << 16));
        assert!(bind(max.min(1 << 20)).is_ok());
        let requested = 1usize << 30;
        if max >= requested {
            return eprintln!("net.core.rmem_max is {max}: cannot test clamping");
        }
        let message = bind(requested).unwrap_err().to_string();
        for part in [requested.to_string(), max.to_string(), "net.core.rmem_max".into()] {
            assert!(message.contains(&part), "{message}");
        }
        // Just above the limit is clamped too, though Linux then reads back more than was asked for.
        assert!(bind(max + 1).is_err());
    }
}
