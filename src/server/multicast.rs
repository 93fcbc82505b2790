//! Multicast groups: one per media of a stream with multicast readers (all on the same ports, as
//! gortsplib does), allocated from the configured range on the first reader's SETUP and released
//! after the last reader leaves.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};

use super::config::MulticastRange;
use super::stream::ServerStream;
use std::os::fd::{AsFd, OwnedFd};

use crate::runtime::{set_group_membership, MulticastSender};

/// The TTL of multicast packets (and in SETUP answers): enough for a campus, not the world.
pub const MULTICAST_TTL: u8 = 16;

/// Why a multicast reader could not be added.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MulticastError {
    /// Every address of the range carries a stream already.
    #[error("no free address left in the multicast range")]
    RangeExhausted,
    /// The sending socket could not be made.
    #[error("cannot open the multicast socket: {0}")]
    Socket(std::io::Error),
}

struct Group {
    ip: Ipv4Addr,
    readers: usize,
}

/// The server's multicast allocation, shared by every core.
pub(crate) struct MulticastShared {
    range: MulticastRange,
    /// Group (RTP, RTCP) ports.
    pub(crate) ports: (u16, u16),
    groups: Mutex<HashMap<(usize, usize), Group>>,
    /// The socket readers' receiver reports arrive on; it joins every group in use.
    pub(crate) rtcp_socket: Option<OwnedFd>,
}

fn key(stream: &ServerStream, track: usize) -> (usize, usize) {
    (Arc::as_ptr(stream.shared()) as usize, track)
}

impl MulticastShared {
    pub(crate) fn new(range: MulticastRange, ports: (u16, u16), rtcp_socket: Option<OwnedFd>) -> MulticastShared {
        MulticastShared {
            range,
            ports,
            groups: Mutex::new(HashMap::new()),
            rtcp_socket,
        }
    }

    fn set_membership(&self, group: Ipv4Addr, member: bool) {
        if let Some(fd) = &self.rtcp_socket {
            if let Err(e) = set_group_membership(fd.as_fd(), group, member) {
                tracing::warn!(%group, member, error = %e, "cannot change multicast membership of the RTCP socket");
            }
        }
    }

    /// Adds a multicast reader of `stream` and returns its group, allocating the group and starting
    /// the stream's multicast output for the first reader.
    pub(crate) fn join(&self, stream: &ServerStream, track: usize) -> Result<Ipv4Addr, MulticastError> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = groups.get_mut(&key(stream, track)) {
            group.readers += 1;
            return Ok(group.ip);
        }
        let ip = self.free_address(&groups).ok_or(MulticastError::RangeExhausted)?;
        let sender = MulticastSender::new(ip, self.ports, u32::from(MULTICAST_TTL)).map_err(MulticastError::Socket)?;
        stream.set_multicast(track, Some(sender));
        self.set_membership(ip, true);
        groups.insert(key(stream, track), Group { ip, readers: 1 });
        tracing::debug!(group = %ip, "multicast group allocated");
        Ok(ip)
    }

    /// Removes a multicast reader of `stream`; the last one stops the output and frees the group.
    pub(crate) fn leave(&self, stream: &ServerStream, track: usize) {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        let k = key(stream, track);
        let last = match groups.get_mut(&k) {
            Some(group) => {
                group.readers = group.readers.saturating_sub(1);
                group.readers == 0
            }
            None => false,
        };
        if last {
            if let Some(group) = groups.remove(&k) {
                stream.set_multicast(track, None);
                self.set_membership(group.ip, false);
                tracing::debug!(group = %group.ip, "multicast group released");
            }
        }
    }

    fn free_address(&self, groups: &HashMap<(usize, usize), Group>) -> Option<Ipv4Addr> {
        let first = u32::from(self.range.network());
        let size = 1u64 << (32 - u32::from(self.range.prefix_len()));
        // Skip the range's first address: 224.x.0.0-style addresses confuse some routers.
        (1..size)
            .filter_map(|offset| u32::try_from(u64::from(first) + offset).ok())
            .map(Ipv4Addr::from)
            .find(|ip| groups.values().all(|g| g.ip != *ip))
    }
}
