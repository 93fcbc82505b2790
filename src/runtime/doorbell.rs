//! A doorbell any thread can ring and one executor can await: a socketpair read through io_uring.
//!
//! glommio's channels must be connected from inside executors; `Server::close` may be called from
//! any thread, so the shutdown signal goes through a file descriptor instead. Ringing writes one
//! byte (or, for the final ring, closes the write end); waiting reads them all.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use futures_lite::AsyncReadExt;

/// The ringing end; `Send`, cheap to ring, closing it rings forever.
#[derive(Debug)]
pub(crate) struct DoorbellRinger {
    stream: UnixStream,
}

/// The waiting end, before it is adopted by an executor.
#[derive(Debug)]
pub(crate) struct Doorbell {
    fd: OwnedFd,
}

/// A connected ringer/doorbell pair.
pub(crate) fn doorbell() -> io::Result<(DoorbellRinger, Doorbell)> {
    let (ringer, bell) = UnixStream::pair()?;
    ringer.set_nonblocking(true)?;
    bell.set_nonblocking(true)?;
    Ok((DoorbellRinger { stream: ringer }, Doorbell { fd: bell.into() }))
}

impl DoorbellRinger {
    /// Rings once. A full socket buffer means rings are already pending, which is just as good.
    pub(crate) fn ring(&self) {
        match (&self.stream).write(&[1]) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!(error = %e, "doorbell ring failed; the waiter is gone"),
        }
    }
}

/// A doorbell adopted by the executor that awaits it.
pub(crate) struct AdoptedDoorbell {
    stream: glommio::net::UnixStream,
}

impl Doorbell {
    /// Moves the waiting end into the calling executor's io_uring.
    pub(crate) fn adopt(self) -> AdoptedDoorbell {
        // SAFETY: `fd` is an owned, open, connected Unix stream socket; ownership moves into the glommio
        // stream, which closes it exactly once when dropped.
        let stream = unsafe { glommio::net::UnixStream::from_raw_fd(self.fd.into_raw_fd()) };
        AdoptedDoorbell { stream }
    }
}

impl AdoptedDoorbell {
    /// Waits for at least one ring and consumes every pending one. Returns `false` once the ringer
    /// is dropped (end of stream), which is how "shut down" is signalled.
    pub(crate) async fn rung(&mut self) -> bool {
        let mut buf = [0u8; 64];
        matches!(self.stream.read(&mut buf).await, Ok(n) if n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::CorePool;

    #[test]
    fn ringing_from_another_thread_wakes_the_executor_and_dropping_ends_it() {
        let (ringer, bell) = doorbell().unwrap();
        let bell = std::sync::Mutex::new(Some(bell));
        let bell = std::sync::Arc::new(bell);
        let rings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = CorePool::spawn("bell", &[crate::runtime::available_cpus()[0]], {
            let (bell, rings) = (bell.clone(), rings.clone());
            move |_| {
                let bell = bell.lock().unwrap().take();
                let rings = rings.clone();
                async move {
                    let mut bell = bell.unwrap().adopt();
                    while bell.rung().await {
                        rings.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        })
        .unwrap();
        ringer.ring();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while rings.load(std::sync::atomic::Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(rings.load(std::sync::atomic::Ordering::SeqCst) >= 1);
        drop(ringer);
        pool.join().unwrap();
    }
}
