//! An accepted TCP connection split into a reading half and a batching writing half.
//!
//! glommio streams need `&mut` to read or write, but a connection reads requests while its writer
//! flushes responses and interleaved frames. Both halves share the stream through a `RefCell` that is
//! borrowed only inside a synchronous `poll_*` call, never across an `.await`, so they cannot clash.
//!
//! Writes are vectored: [`drain_outbox`] (a server connection's writer) and
//! [`TcpWriteHalf::write_all_vectored`] (the client's) hand up to [`MAX_IOVECS`] queued buffers to
//! one non-blocking `sendmsg`, which DESIGN.md measured at ~18x cheaper per packet than one write
//! each. glommio has no readiness API, so when the socket is full we wait for writability by giving
//! glommio's own write the first pending bytes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::{ready, AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::fanout::outbox::{Outbox, Outgoing};

/// Buffers handed to one `sendmsg`; more gains nothing measurable and IOV_MAX is 1024.
pub(crate) const MAX_IOVECS: usize = 128;

/// Splits an accepted stream into halves that can be used by two tasks of one executor.
pub(crate) fn split(stream: TcpStream) -> (TcpReadHalf, TcpWriteHalf) {
    // Small interleaved frames must not wait for Nagle's algorithm. An RTSPS connection's plaintext
    // end is a Unix socket (runtime::tls), which has no Nagle to turn off.
    match stream.set_nodelay(true) {
        Err(e) if e.raw_os_error() != Some(libc::EOPNOTSUPP) => {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        _ => {}
    }
    let fd = stream.as_raw_fd();
    let shared = Rc::new(RefCell::new(stream));
    (
        TcpReadHalf { stream: shared.clone() },
        TcpWriteHalf { stream: shared, fd },
    )
}

/// The peer address of an accepted stream.
pub(crate) fn peer_addr(stream: &TcpStream) -> io::Result<SocketAddr> {
    Ok(stream.peer_addr()?)
}

/// Bytes one read takes from a socket, in the buffer every connection of a thread shares.
const READ_SCRATCH_SIZE: usize = 16 * 1024;

/// Capacity a connection's own buffer gets when data arrives while it has none: room for a whole
/// request or a few frames, so a publisher's buffer is not regrown read after read.
const MIN_READ_BUFFER: usize = 2 * 1024;

thread_local! {
    /// Where [`TcpReadHalf::read_into`] reads, borrowed only inside one synchronous poll.
    static READ_SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SCRATCH_SIZE].into_boxed_slice());
}

/// Reads from the connection.
pub(crate) struct TcpReadHalf {
    stream: Rc<RefCell<TcpStream>>,
}

/// Turns a connected socket (for example one moved from another core) into a glommio stream on the
/// calling executor.
pub(crate) fn adopt_tcp_stream(fd: OwnedFd) -> TcpStream {
    // SAFETY: `fd` is an owned, open, connected TCP socket; ownership moves into the stream, which
    // closes it exactly once when dropped.
    unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) }
}

impl TcpReadHalf {
    /// A second descriptor for the same socket, so the connection can move to another core while
    /// this one's stream is dropped.
    pub(crate) fn try_clone_fd(&self) -> io::Result<OwnedFd> {
        let stream = self.stream.borrow();
        // SAFETY: the stream owns this descriptor and keeps it open while `stream` is borrowed,
        // which outlives the borrowed fd used only to duplicate it.
        let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
        fd.try_clone_to_owned()
    }

    /// Reads into `buf`; 0 means the peer closed its side.
    pub(crate) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_read(cx, buf)
        })
        .await
    }

    /// Reads what has arrived and appends it to `buf`; 0 means the peer closed its side.
    ///
    /// The bytes land first in a buffer shared by every connection of this thread, then in `buf`:
    /// glommio reads synchronously inside the poll (and only waits for readability when there is
    /// nothing), so no connection needs a read buffer of its own while it waits, and `buf` can stay
    /// empty, without capacity, on a connection that has nothing partly read.
    pub(crate) async fn read_into(&self, buf: &mut BytesMut) -> io::Result<usize> {
        poll_fn(|cx| {
            READ_SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let mut stream = self.stream.borrow_mut();
                let n = ready!(Pin::new(&mut *stream).poll_read(cx, &mut scratch))?;
                let data = scratch.get(..n).unwrap_or_default();
                if buf.capacity() == 0 {
                    buf.reserve(data.len().max(MIN_READ_BUFFER));
                }
                buf.extend_from_slice(data);
                Poll::Ready(Ok(n))
            })
        })
        .await
    }
}

/// Writes to the connection, many buffers per system call.
pub(crate) struct TcpWriteHalf {
    stream: Rc<RefCell<TcpStream>>,
    fd: RawFd,
}

impl TcpWriteHalf {
    /// Writes every byte of `slices` (advancing them), failing with `TimedOut` if the socket stays
    /// full for longer than `timeout` at any point.
    pub(crate) async fn write_all_vectored(&self, mut slices: &mut [IoSlice<'_>], timeout: Duration) -> io::Result<()> {
        IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            let batch = slices.len().min(MAX_IOVECS);
            match sendmsg_dontwait(self.fd, &slices[..batch]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let n = self.write_when_writable(&slices[0], timeout).await?;
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Waits until the socket accepts some of `first`, through glommio's poll-for-writability path.
    async fn write_when_writable(&self, first: &[u8], timeout: Duration) -> io::Result<usize> {
        let write = poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_write(cx, first)
        });
        let expire = async {
            glommio::timer::sleep(timeout).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
        };
        futures_lite::future::or(write, expire).await
    }

    /// Shuts down the sending side so the peer sees end of stream after what was written.
    pub(crate) async fn shutdown(&self) {
        let close = poll_fn(|cx| {
            let mut stream = self.stream.borrow_mut();
            Pin::new(&mut *stream).poll_close(cx)
        });
        if let Err(e) = close.await {
            tracing::trace!(error = %e, "shutdown of a closed socket");
        }
    }
}

/// Items moved from an outbox per vectored write: 64 frames are 128 iovecs, the most one `sendmsg` takes here.
pub(crate) const BATCH: usize = MAX_IOVECS / 2;

/// Writes everything `outbox` yields until it is closed and drained, or a write fails or times out.
///
/// The caller closes the connection on error; an `Err` of kind `TimedOut` means the peer stopped reading.
///
/// The iovecs are built on the thread's stack inside each (synchronous) send, never kept across an
/// `.await`: this future lives as long as its connection, and an array of [`MAX_IOVECS`] in it would
/// cost every idle connection 2 KiB. Likewise the batch starts empty and grows to what the
/// connection's traffic needs (a reader that gets a frame now and then keeps a few slots).
pub(crate) async fn drain_outbox(outbox: &Outbox, write: &TcpWriteHalf, timeout: Duration) -> io::Result<()> {
    let mut batch = Vec::new();
    while outbox.next_batch(&mut batch, BATCH).await {
        let mut progress = Progress::default();
        while !send_batch(write.fd, &batch, &mut progress)? {
            let pending = progress.pending(&batch);
            let n = write.write_when_writable(pending, timeout).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            progress.advance(&batch, n);
        }
    }
    Ok(())
}

/// How far the writing of a batch got: the next byte to write is `offset` into its part `part`.
/// Every item has two parts: a frame its header and its payload, a message its bytes and nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Progress {
    part: usize,
    offset: usize,
}

/// Part `index` of `batch` (see [`Progress`]); empty past the end.
fn part(batch: &[Outgoing], index: usize) -> &[u8] {
    match batch.get(index / 2) {
        Some(Outgoing::Message(bytes)) if index % 2 == 0 => bytes,
        Some(Outgoing::Frame { header, .. }) if index % 2 == 0 => header,
        Some(Outgoing::Frame { payload, .. }) => payload,
        _ => &[],
    }
}

impl Progress {
    /// Moves past `n` written bytes.
    fn advance(&mut self, batch: &[Outgoing], mut n: usize) {
        while n > 0 && self.part < batch.len() * 2 {
            let left = part(batch, self.part).len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.part += 1;
            self.offset = 0;
        }
    }

    /// The unwritten rest of the first part that has any (empty when the batch is written).
    fn pending<'a>(&self, batch: &'a [Outgoing]) -> &'a [u8] {
        let mut offset = self.offset;
        for index in self.part..batch.len() * 2 {
            let rest = part(batch, index).get(offset..).unwrap_or_default();
            if !rest.is_empty() {
                return rest;
            }
            offset = 0;
        }
        &[]
    }
}

/// Sends what is left of `batch`, up to [`MAX_IOVECS`] buffers per non-blocking `sendmsg`, until it
/// is all written (`Ok(true)`) or the socket is full (`Ok(false)`), advancing `progress`.
fn send_batch(fd: RawFd, batch: &[Outgoing], progress: &mut Progress) -> io::Result<bool> {
    loop {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut used = 0;
        let mut offset = progress.offset;
        for index in progress.part..batch.len() * 2 {
            if used == MAX_IOVECS {
                break;
            }
            let rest = part(batch, index).get(offset..).unwrap_or_default();
            offset = 0;
            if !rest.is_empty() {
                slices[used] = IoSlice::new(rest);
                used += 1;
            }
        }
        if used == 0 {
            return Ok(true);
        }
        match sendmsg_dontwait(fd, &slices[..used]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => progress.advance(batch, n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking vectored send. `MSG_NOSIGNAL`: a peer that vanished must give EPIPE, not kill us.
fn sendmsg_dontwait(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is guaranteed ABI-compatible with iovec on Unix; sendmsg only reads through the pointer.
    header.msg_iov = slices.as_ptr() as *mut libc::iovec;
    header.msg_iovlen = slices.len() as _;
    // SAFETY: `header` points at `slices.len()` valid iovecs borrowed for the duration of the call,
    // with no name or control data; `fd` is open for as long as `self.stream` lives.
    let sent = unsafe { libc::sendmsg(fd, &header, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if sent < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(sent as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn run_on_one_core<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn vectored_write_delivers_every_buffer_in_order_even_when_the_socket_fills() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // 4 MiB in 2000 buffers: more than the socket buffers hold, so the writable-wait path runs.
        let reader = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        run_on_one_core(move || async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_read, write) = split(stream);
            let chunks: Vec<Vec<u8>> = (0..2000u32).map(|i| vec![(i % 251) as u8; 2097]).collect();
            let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
            write
                .write_all_vectored(&mut slices, Duration::from_secs(10))
                .await
                .unwrap();
            write.shutdown().await;
        });
        let received = reader.join().unwrap();
        let expected: Vec<u8> = (0..2000u32).flat_map(|i| vec![(i % 251) as u8; 2097]).collect();
        assert_eq!(received.len(), expected.len());
        assert!(received == expected);
    }

    #[test]
    fn outbox_items_reach_the_socket_in_order_as_messages_and_interleaved_frames() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            peer.read_to_end(&mut all).unwrap();
            all
        });
        run_on_one_core(move || async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_read, write) = split(stream);
            let outbox = Outbox::new(1024);
            outbox
                .push_message(bytes::Bytes::from_static(b"RTSP/1.0 200 OK\r\n\r\n"))
                .unwrap();
            for i in 0..200u8 {
                outbox
                    .push_frame(Outgoing::frame(i % 2, bytes::Bytes::from(vec![i; 3])).unwrap())
                    .unwrap();
            }
            outbox.close();
            drain_outbox(&outbox, &write, Duration::from_secs(5)).await.unwrap();
            write.shutdown().await;
        });
        let received = reader.join().unwrap();
        let mut expected = b"RTSP/1.0 200 OK\r\n\r\n".to_vec();
        for i in 0..200u8 {
            expected.extend_from_slice(&[b'$', i % 2, 0, 3, i, i, i]);
        }
        assert_eq!(received, expected);
    }

    #[test]
    fn progress_moves_across_parts_and_skips_empty_ones() {
        let batch = vec![
            Outgoing::Message(bytes::Bytes::from_static(b"abc")),
            Outgoing::Message(bytes::Bytes::new()),
            Outgoing::frame(0, bytes::Bytes::from_static(b"xyz")).unwrap(),
        ];
        let mut progress = Progress::default();
        assert_eq!(progress.pending(&batch), b"abc");
        progress.advance(&batch, 2);
        assert_eq!(progress.pending(&batch), b"c");
        // The rest of "abc", the empty message, and the frame's header and one payload byte.
        progress.advance(&batch, 1 + 4 + 1);
        assert_eq!(progress.pending(&batch), b"yz");
        progress.advance(&batch, 2);
        assert!(progress.pending(&batch).is_empty());
    }

    #[test]
    fn a_batch_larger_than_the_socket_buffers_arrives_whole_through_a_slow_reader() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // 512 frames of 60 000 bytes (31 MB, more than loopback's socket buffers hold) in batches
        // of 64, read late and with pauses: the writer meets a full socket in the middle of frames
        // again and again.
        let reader = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            let mut all = Vec::new();
            let mut piece = [0u8; 64 * 1024];
            loop {
                let n = peer.read(&mut piece).unwrap();
                if n == 0 {
                    return all;
                }
                all.extend_from_slice(&piece[..n]);
                if all.len() % 7 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        run_on_one_core(move || async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_read, write) = split(stream);
            let outbox = Outbox::new(1024);
            for i in 0..512u32 {
                let fill = (i % 251) as u8;
                outbox
                    .push_frame(Outgoing::frame(fill % 2, bytes::Bytes::from(vec![fill; 60_000])).unwrap())
                    .unwrap();
            }
            outbox.close();
            drain_outbox(&outbox, &write, Duration::from_secs(10)).await.unwrap();
            write.shutdown().await;
        });
        let received = reader.join().unwrap();
        let mut expected = Vec::new();
        for i in 0..512u32 {
            let fill = (i % 251) as u8;
            let [hi, lo] = 60_000u16.to_be_bytes();
            expected.extend_from_slice(&[b'$', fill % 2, hi, lo]);
            expected.extend(std::iter::repeat_n(fill, 60_000));
        }
        assert_eq!(received.len(), expected.len());
        assert!(received == expected);
    }

    #[test]
    fn a_peer_that_never_reads_makes_the_write_time_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = std::thread::spawn(move || {
            let (peer, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_secs(2));
            drop(peer);
        });
        run_on_one_core(move || async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (_read, write) = split(stream);
            let big = vec![0u8; 64 << 20];
            let mut slices = [IoSlice::new(&big)];
            let err = write
                .write_all_vectored(&mut slices, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        });
        hold.join().unwrap();
    }
}
