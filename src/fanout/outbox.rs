//! A connection's outgoing queue: RTSP messages in order, interleaved frames bounded.
//!
//! Responses and frames share one queue so that order on the wire is the order of events: a PLAY
//! response is queued before the first frame of that session, so no packet can reach the client
//! before it (DESIGN.md §2). Only frames count against the capacity: when a reader's queue is full,
//! new frames for it are dropped and counted (its own loss, never the publisher's or other readers'),
//! while messages are always queued.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::counters::DataPlaneCounters;

/// One item waiting to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outgoing {
    /// An encoded RTSP message (response or request).
    Message(Bytes),
    /// An interleaved frame: the 4-byte `$` header and the packet, written with two iovecs.
    Frame {
        /// `$`, channel, 16-bit big-endian length.
        header: [u8; 4],
        /// The RTP or RTCP packet, shared with every other reader of the stream on this core.
        payload: Bytes,
    },
}

impl Outgoing {
    /// The interleaved frame for `payload` on `channel`; `None` if it does not fit a 16-bit length.
    pub(crate) fn frame(channel: u8, payload: Bytes) -> Option<Outgoing> {
        let len = u16::try_from(payload.len()).ok()?;
        let [hi, lo] = len.to_be_bytes();
        Some(Outgoing::Frame {
            header: [b'$', channel, hi, lo],
            payload,
        })
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The reader's queue holds its capacity of frames; this frame is lost for this reader.
    Full,
    /// The connection is closing.
    Closed,
}

/// The queue between producers on one core (handler, fan-out) and the connection's writer task.
#[derive(Debug)]
pub(crate) struct Outbox {
    inner: RefCell<Inner>,
    /// Where the frames the writer wrote are counted, if anywhere.
    counters: Option<Arc<DataPlaneCounters>>,
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<Outgoing>,
    queued_frames: usize,
    frame_capacity: usize,
    dropped_frames: u64,
    writer: Option<Waker>,
    closed: bool,
}

impl Outbox {
    /// An empty outbox holding at most `frame_capacity` frames.
    pub(crate) fn new(frame_capacity: usize) -> Outbox {
        Self::build(frame_capacity, None)
    }

    /// An empty outbox whose written frames are counted as sent in `counters` (see
    /// [`Outbox::next_batch`]).
    pub(crate) fn counted(frame_capacity: usize, counters: Arc<DataPlaneCounters>) -> Outbox {
        Self::build(frame_capacity, Some(counters))
    }

    fn build(frame_capacity: usize, counters: Option<Arc<DataPlaneCounters>>) -> Outbox {
        Outbox {
            counters,
            inner: RefCell::new(Inner {
                // Empty until used, then as large as the connection's traffic made it (up to the
                // bound): an idle reader's queue holds a few slots, not `frame_capacity`.
                items: VecDeque::new(),
                queued_frames: 0,
                frame_capacity,
                dropped_frames: 0,
                writer: None,
                closed: false,
            }),
        }
    }

    /// Queues an RTSP message; messages are never dropped while the connection is open.
    pub(crate) fn push_message(&self, message: Bytes) -> Result<(), PushError> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return Err(PushError::Closed);
        }
        inner.items.push_back(Outgoing::Message(message));
        inner.wake_writer();
        Ok(())
    }

    /// Queues an interleaved frame unless the queue is full (then it is counted as dropped).
    pub(crate) fn push_frame(&self, frame: Outgoing) -> Result<(), PushError> {
        let mut inner = self.inner.borrow_mut();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.queued_frames >= inner.frame_capacity {
            inner.dropped_frames += 1;
            return Err(PushError::Full);
        }
        inner.queued_frames += 1;
        inner.items.push_back(frame);
        inner.wake_writer();
        Ok(())
    }

    /// Frames dropped so far because the queue was full.
    pub(crate) fn dropped_frames(&self) -> u64 {
        self.inner.borrow().dropped_frames
    }

    /// Items waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.inner.borrow().items.len()
    }

    /// Stops accepting items and wakes the writer so it can finish; queued items are still returned.
    pub(crate) fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        inner.wake_writer();
    }

    /// Whether [`Outbox::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.borrow().closed
    }

    /// Waits for items and moves up to `max` of them into `batch` (which it clears first).
    /// Returns `false` when the outbox is closed and empty: the writer is done.
    ///
    /// The writer asks for the next batch only once it wrote the previous one, so the frames still
    /// in `batch` are counted as sent here: once per batch, and never for a batch whose write failed.
    pub(crate) async fn next_batch(&self, batch: &mut Vec<Outgoing>, max: usize) -> bool {
        if let Some(counters) = self.counters.as_ref() {
            let (frames, bytes) = batch.iter().fold((0u64, 0u64), |(frames, bytes), item| match item {
                Outgoing::Frame { payload, .. } => (frames + 1, bytes + payload.len() as u64),
                Outgoing::Message(_) => (frames, bytes),
            });
            counters.add_sent(frames, bytes);
        }
        batch.clear();
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.items.is_empty() {
                if inner.closed {
                    return Poll::Ready(false);
                }
                inner.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            let take = inner.items.len().min(max);
            let mut frames = 0;
            for item in inner.items.drain(..take) {
                frames += usize::from(matches!(item, Outgoing::Frame { .. }));
                batch.push(item);
            }
            inner.queued_frames -= frames;
            Poll::Ready(true)
        })
        .await
    }
}

impl Inner {
    fn wake_writer(&mut self) {
        if let Some(waker) = self.writer.take() {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Outgoing {
        Outgoing::frame(0, Bytes::from(vec![n; 4])).unwrap()
    }

    #[test]
    fn a_full_queue_drops_frames_but_never_messages() {
        let outbox = Outbox::new(2);
        outbox.push_frame(frame(1)).unwrap();
        outbox.push_frame(frame(2)).unwrap();
        assert_eq!(outbox.push_frame(frame(3)), Err(PushError::Full));
        outbox
            .push_message(Bytes::from_static(b"RTSP/1.0 200 OK\r\n\r\n"))
            .unwrap();
        assert_eq!((outbox.len(), outbox.dropped_frames()), (3, 1));
    }

    #[test]
    fn batches_keep_order_and_free_frame_capacity() {
        let outbox = Outbox::new(2);
        outbox.push_message(Bytes::from_static(b"response")).unwrap();
        outbox.push_frame(frame(1)).unwrap();
        outbox.push_frame(frame(2)).unwrap();
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(outbox.next_batch(&mut batch, 2)));
        assert_eq!(
            batch,
            vec![Outgoing::Message(Bytes::from_static(b"response")), frame(1)]
        );
        outbox.push_frame(frame(3)).unwrap();
        assert_eq!(outbox.push_frame(frame(4)), Err(PushError::Full));
    }

    #[test]
    fn a_closed_outbox_drains_then_ends() {
        let outbox = Outbox::new(4);
        outbox.push_frame(frame(1)).unwrap();
        outbox.close();
        assert_eq!(outbox.push_frame(frame(2)), Err(PushError::Closed));
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(outbox.next_batch(&mut batch, 8)));
        assert!(!futures_lite::future::block_on(outbox.next_batch(&mut batch, 8)));
    }

    #[test]
    fn frames_are_counted_as_sent_when_the_writer_comes_back_for_more() {
        let counters = Arc::new(DataPlaneCounters::default());
        let outbox = Outbox::counted(4, counters.clone());
        outbox.push_message(Bytes::from_static(b"response")).unwrap();
        outbox.push_frame(frame(1)).unwrap();
        outbox.push_frame(frame(2)).unwrap();
        let mut batch = Vec::new();
        assert!(futures_lite::future::block_on(outbox.next_batch(&mut batch, 8)));
        assert_eq!(counters.counts().sent_packets, 0, "not written yet");
        outbox.close();
        assert!(!futures_lite::future::block_on(outbox.next_batch(&mut batch, 8)));
        let counts = counters.counts();
        assert_eq!((counts.sent_packets, counts.sent_bytes), (2, 8));
    }

    #[test]
    fn frames_longer_than_sixteen_bits_are_refused() {
        assert!(Outgoing::frame(0, Bytes::from(vec![0; 65536])).is_none());
        assert_eq!(
            Outgoing::frame(3, Bytes::from(vec![0; 258])),
            Some(Outgoing::Frame {
                header: [b'$', 3, 1, 2],
                payload: Bytes::from(vec![0; 258])
            })
        );
    }
}
