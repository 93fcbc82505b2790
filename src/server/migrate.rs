//! Sessions are owned by the core that created them, but a client may continue a UDP session from
//! a new connection that the kernel accepted on another core (DESIGN.md §2). Such a connection moves
//! to the session's core: its socket, the bytes it had buffered and the request that named the
//! session travel through the owner's mailbox, and the owner serves the connection from then on.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Mutex, PoisonError};

use bytes::BytesMut;
use crossbeam_queue::ArrayQueue;

use crate::fanout::stream::CoreBells;
use crate::proto::rtsp::Request;

/// Connections waiting to move onto one core; beyond this, the request is answered where it is.
const MAILBOX_CAPACITY: usize = 256;

/// A connection on its way to another core.
pub(crate) struct MovingConn {
    /// A descriptor of the connected socket.
    pub(crate) fd: OwnedFd,
    /// The client and server addresses (for RTSPS, not those of `fd`, a local socket pair).
    pub(crate) addrs: super::conn::ConnAddrs,
    /// Bytes read but not yet decoded.
    pub(crate) buffered: BytesMut,
    /// The request that named the session, to handle first.
    pub(crate) request: Request,
    /// The connection's Digest nonce and authenticated user: the client keeps answering that
    /// nonce, so it must not change under it.
    pub(crate) nonce: String,
    pub(crate) user: Option<String>,
}

/// Which core owns each session, and each core's mailbox of arriving connections.
pub(crate) struct SessionDirectory {
    owners: Mutex<HashMap<String, usize>>,
    mailboxes: Box<[ArrayQueue<Box<MovingConn>>]>,
    bells: CoreBells,
}

impl SessionDirectory {
    pub(crate) fn new(bells: CoreBells) -> SessionDirectory {
        let mailboxes = (0..bells.len()).map(|_| ArrayQueue::new(MAILBOX_CAPACITY)).collect();
        SessionDirectory {
            owners: Mutex::new(HashMap::new()),
            mailboxes,
            bells,
        }
    }

    pub(crate) fn insert(&self, session: &str, core: usize) {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.to_owned(), core);
    }

    pub(crate) fn remove(&self, session: &str) {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(session);
    }

    /// The core that owns `session`, if any core does.
    pub(crate) fn owner(&self, session: &str) -> Option<usize> {
        self.owners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(session)
            .copied()
    }

    /// Hands a connection to `core`; gives it back if that core's mailbox is full.
    pub(crate) fn send(&self, core: usize, conn: Box<MovingConn>) -> Result<(), Box<MovingConn>> {
        match self.mailboxes.get(core) {
            Some(mailbox) => {
                mailbox.push(conn)?;
                self.bells.ring(core);
                Ok(())
            }
            None => Err(conn),
        }
    }

    /// The next connection moving onto `core`.
    pub(crate) fn receive(&self, core: usize) -> Option<Box<MovingConn>> {
        self.mailboxes.get(core).and_then(ArrayQueue::pop)
    }
}
