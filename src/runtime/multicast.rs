//! Sending a stream to its multicast group: one datagram per packet, whoever the readers are.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking socket that sends a stream's RTP and RTCP to its group.
///
/// Sends are synchronous and never wait: the publisher's core calls them as it writes the packet,
/// and a full send buffer drops the packet (counted) rather than stall the publisher.
#[derive(Debug)]
pub(crate) struct MulticastSender {
    socket: UdpSocket,
    rtp: SocketAddr,
    rtcp: SocketAddr,
    dropped: AtomicU64,
}

impl MulticastSender {
    /// A sender to `group` on `ports` (RTP, RTCP) with the given TTL; loopback is on so readers on
    /// this host receive too.
    pub(crate) fn new(group: Ipv4Addr, ports: (u16, u16), ttl: u32) -> io::Result<MulticastSender> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_nonblocking(true)?;
        socket.set_multicast_ttl_v4(ttl)?;
        socket.set_multicast_loop_v4(true)?;
        socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
        Ok(MulticastSender {
            socket: socket.into(),
            rtp: SocketAddrV4::new(group, ports.0).into(),
            rtcp: SocketAddrV4::new(group, ports.1).into(),
            dropped: AtomicU64::new(0),
        })
    }

    /// Sends one packet to the group's RTP or RTCP port.
    pub(crate) fn send(&self, is_rtcp: bool, packet: &[u8]) {
        let to = if is_rtcp { self.rtcp } else { self.rtp };
        if let Err(e) = self.socket.send_to(packet, to) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                tracing::warn!(group = %to, error = %e, "multicast send failed; further failures are only counted");
            }
        }
    }

    /// Packets that could not be sent.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A socket on the multicast RTCP port, where readers of every group send their receiver reports.
/// It joins each group while the group is in use.
pub(crate) fn bind_multicast_rtcp(port: u16) -> io::Result<std::os::fd::OwnedFd> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    Ok(socket.into())
}

/// Starts or stops receiving `group` on a socket made by [`bind_multicast_rtcp`].
pub(crate) fn set_group_membership(fd: std::os::fd::BorrowedFd<'_>, group: Ipv4Addr, member: bool) -> io::Result<()> {
    let socket = socket2::SockRef::from(&fd);
    if member {
        socket.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
    } else {
        socket.leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)
    }
}
