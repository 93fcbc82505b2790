//! The only glommio, socket and `unsafe` code: pinned executors, SO_REUSEPORT sockets, doorbells.
//!
//! Everything above this layer sees plain async reads and writes; keeping glommio here means it
//! could be swapped without touching the protocol or session code.

pub(crate) mod connect;
pub(crate) mod doorbell;
pub(crate) mod http;
pub(crate) mod listen;
pub(crate) mod multicast;
pub(crate) mod pool;
pub(crate) mod tcp;
pub(crate) mod tls;
// used by the UDP data plane from the next commit
#[allow(dead_code)]
pub(crate) mod udp;

pub(crate) use connect::{
    bind_udp_multicast, bind_udp_pair, connect_tcp, readable_any, sleep, yield_if_needed, Alarm, ClientUdpSocket,
};
pub(crate) use doorbell::{doorbell, AdoptedDoorbell, Doorbell, DoorbellRinger};
pub(crate) use listen::{adopt_tcp_listener, bind_tcp_reuseport};
pub(crate) use multicast::{bind_multicast_rtcp, set_group_membership, MulticastSender};
pub(crate) use pool::{available_cpus, CorePool};
#[allow(unused_imports)] // used by the UDP data plane from the next commit
pub(crate) use udp::{
    adopt_udp, bind_udp_reuseport, join_multicast_v4, set_multicast_loop_v4, set_multicast_ttl_v4, RecvBatch,
    UdpSocket, MAX_BATCH,
};
