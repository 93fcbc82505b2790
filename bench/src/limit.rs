//! The limit: the least a program can do to deliver a packet stream to N readers on this host, with
//! no RTSP and nothing else. The sender sends each packet to every reader with `sendmmsg` (UDP: one
//! buffer, many destinations, 64 per call) or with one `writev` of a whole frame per reader (TCP,
//! interleaved `$` framing); the receiver process holds the reader sockets and counts what arrives.
//!
//! The sender measures its own CPU time (`utime + stime` and `CLOCK_PROCESS_CPUTIME_ID`) over the
//! sending phase only; connection set-up is excluded. Both print one JSON object when done.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shardcast_loadgen::synth::{Packetizer, StreamShape};

use crate::sys;

/// Messages per `sendmmsg`/`recvmmsg` call: past 64 nothing is gained (DESIGN.md §1).
const BATCH: usize = 64;
/// Send buffer of each sending UDP socket (as the server's per-core sockets).
const UDP_SEND_BUFFER: libc::c_int = 4 << 20;
/// Largest datagram the receiver takes.
const RECV_SLOT: usize = 2048;

/// Which transport the limit uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// UDP datagrams, `sendmmsg`.
    Udp,
    /// TCP with RTSP interleaved framing, `writev`.
    Tcp,
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Transport::Udp),
            "tcp" => Ok(Transport::Tcp),
            other => Err(format!("unknown transport `{other}` (udp or tcp)")),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// What the receiver counted.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecvReport {
    /// Reader sockets (or connections accepted).
    pub readers: usize,
    /// Packets received by all readers.
    pub packets: u64,
    /// Their bytes (RTP, framing excluded).
    pub bytes: u64,
    /// Fewest packets one reader received.
    pub min_per_reader: u64,
    /// Most packets one reader received.
    pub max_per_reader: u64,
}

/// What the sender did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendReport {
    /// udp or tcp.
    pub transport: String,
    /// Readers sent to.
    pub readers: usize,
    /// Sending threads.
    pub threads: usize,
    /// Frames sent.
    pub frames: u64,
    /// Packets of the stream (each sent to every reader).
    pub packets: u64,
    /// (packet, reader) pairs handed to the kernel.
    pub sends_ok: u64,
    /// (packet, reader) pairs refused by the kernel (UDP errors).
    pub send_errors: u64,
    /// (packet, reader) pairs skipped because the reader's TCP socket was still full.
    pub dropped: u64,
    /// Length of the sending phase, seconds.
    pub wall_s: f64,
    /// CPU time of the sending phase (CLOCK_PROCESS_CPUTIME_ID), seconds.
    pub cpu_s: f64,
    /// The same from `utime + stime` of /proc/self/stat, seconds (clock-tick resolution).
    pub cpu_s_ticks: f64,
    /// Frames sent later than one frame interval behind schedule.
    pub late_frames: u64,
}

fn process_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec passed.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

fn stop_on_stdin_eof(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = io::stdin().read_to_end(&mut sink);
        stop.store(true, Ordering::Relaxed);
    });
}

fn check(rc: libc::c_int, what: &str) -> io::Result<()> {
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// The receiver: binds `readers` UDP sockets (or accepts `readers` TCP connections), prints
/// `ports P1,P2,...` or `port P` then `ready` on stdout, counts packets until stdin closes or
/// `max_s` pass, then prints a [`RecvReport`] as JSON.
pub fn recv(transport: Transport, bind: Ipv4Addr, readers: usize, threads: usize, max_s: f64) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_stdin_eof(stop.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(max_s);
    let threads = threads.clamp(1, readers.max(1));
    let mut out = io::stdout().lock();
    let mut keep_udp = Vec::new();
    let mut keep_tcp = Vec::new();
    let fds: Vec<RawFd> = match transport {
        Transport::Udp => {
            for _ in 0..readers {
                let s = UdpSocket::bind((bind, 0))?;
                s.set_nonblocking(true)?;
                keep_udp.push(s);
            }
            let ports: Vec<String> = keep_udp
                .iter()
                .map(|s| s.local_addr().map(|a| a.port().to_string()))
                .collect::<io::Result<_>>()?;
            writeln!(out, "ports {}", ports.join(","))?;
            writeln!(out, "ready")?;
            out.flush()?;
            keep_udp.iter().map(AsRawFd::as_raw_fd).collect()
        }
        Transport::Tcp => {
            let listener = TcpListener::bind((bind, 0))?;
            // std listens with a backlog of 128: the sender connects thousands at once.
            // SAFETY: listen on a socket this function owns.
            check(unsafe { libc::listen(listener.as_raw_fd(), 8192) }, "listen")?;
            writeln!(out, "port {}", listener.local_addr()?.port())?;
            writeln!(out, "ready")?;
            out.flush()?;
            listener.set_nonblocking(true)?;
            while keep_tcp.len() < readers && !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(true)?;
                        keep_tcp.push(s);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(1)),
                    Err(e) => return Err(e),
                }
            }
            keep_tcp.iter().map(AsRawFd::as_raw_fd).collect()
        }
    };
    let counts: Vec<Vec<(u64, u64)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<RawFd> = fds.iter().copied().skip(t).step_by(threads).collect();
                let stop = &stop;
                scope.spawn(move || receive_loop(transport, &mine, stop, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let per_reader: Vec<(u64, u64)> = counts.into_iter().flatten().collect();
    let report = RecvReport {
        readers: per_reader.len(),
        packets: per_reader.iter().map(|c| c.0).sum(),
        bytes: per_reader.iter().map(|c| c.1).sum(),
        min_per_reader: per_reader.iter().map(|c| c.0).min().unwrap_or(0),
        max_per_reader: per_reader.iter().map(|c| c.0).max().unwrap_or(0),
    };
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    drop((keep_udp, keep_tcp));
    Ok(())
}

/// Interleaved-frame parser state of one TCP reader.
#[derive(Default, Clone, Copy)]
struct Framing {
    header: [u8; 4],
    have: usize,
    remaining: usize,
}

impl Framing {
    /// Consumes `data`; returns (packets completed, payload bytes).
    fn feed(&mut self, mut data: &[u8]) -> (u64, u64) {
        let (mut packets, mut bytes) = (0, 0);
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                bytes += n as u64;
                data = &data[n..];
                if self.remaining == 0 {
                    packets += 1;
                }
                continue;
            }
            let n = (4 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 4 {
                self.have = 0;
                self.remaining = usize::from(u16::from_be_bytes([self.header[2], self.header[3]]));
                if self.remaining == 0 {
                    packets += 1;
                }
            }
        }
        (packets, bytes)
    }
}

/// Counts (packets, bytes) per fd until stopped.
fn receive_loop(transport: Transport, fds: &[RawFd], stop: &AtomicBool, deadline: Instant) -> Vec<(u64, u64)> {
    let mut counts = vec![(0u64, 0u64); fds.len()];
    if fds.is_empty() {
        return counts;
    }
    // SAFETY: epoll_create1 returns a new fd or -1.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return counts;
    }
    for (i, &fd) in fds.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: registers a live fd with the epoll instance; `ev` is copied by the kernel.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 512];
    let mut framing = vec![Framing::default(); fds.len()];
    let mut bufs = vec![0u8; RECV_SLOT * BATCH];
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        // SAFETY: `events` has room for the count passed.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as libc::c_int, 100) };
        for ev in events.iter().take(usize::try_from(n).unwrap_or(0)) {
            let i = ev.u64 as usize;
            let fd = fds[i];
            match transport {
                Transport::Udp => drain_udp(fd, &mut bufs, &mut counts[i]),
                Transport::Tcp => loop {
                    // SAFETY: reads into a buffer of the length passed.
                    let r = unsafe { libc::read(fd, bufs.as_mut_ptr().cast(), bufs.len()) };
                    if r <= 0 {
                        if r == 0 {
                            // Closed: stop watching it.
                            // SAFETY: removes a registered fd.
                            unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
                        }
                        break;
                    }
                    let (p, b) = framing[i].feed(&bufs[..r as usize]);
                    counts[i].0 += p;
                    counts[i].1 += b;
                    if (r as usize) < bufs.len() {
                        break;
                    }
                },
            }
        }
    }
    // SAFETY: closes the epoll fd this function created.
    unsafe { libc::close(ep) };
    counts
}

fn drain_udp(fd: RawFd, bufs: &mut [u8], count: &mut (u64, u64)) {
    let mut iovs: Vec<libc::iovec> = bufs
        .chunks_mut(RECV_SLOT)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid (null name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..iovs.len()).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    loop {
        // SAFETY: every message points at its own live buffer of the stated length.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs.as_mut_ptr(),
                msgs.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            return;
        }
        count.0 += n as u64;
        count.1 += msgs.iter().take(n as usize).map(|m| u64::from(m.msg_len)).sum::<u64>();
        if (n as usize) < msgs.len() {
            return;
        }
    }
}

/// Where the sender sends.
pub enum Destinations {
    /// UDP ports at `host`, one per reader.
    Udp { host: Ipv4Addr, ports: Vec<u16> },
    /// A TCP port at `host` to connect `readers` times.
    Tcp { host: Ipv4Addr, port: u16, readers: usize },
}

/// The sender: sends `shape`'s stream for `duration` to every destination, then prints a
/// [`SendReport`] as JSON on stdout.
pub fn send(dest: Destinations, shape: StreamShape, threads: usize, duration: Duration) -> io::Result<SendReport> {
    let transport = match dest {
        Destinations::Udp { .. } => Transport::Udp,
        Destinations::Tcp { .. } => Transport::Tcp,
    };
    // Per-thread destinations: UDP addresses, or connected TCP streams.
    let mut udp_groups: Vec<Vec<SocketAddrV4>> = Vec::new();
    let mut tcp_groups: Vec<Vec<TcpStream>> = Vec::new();
    let readers;
    match dest {
        Destinations::Udp { host, ports } => {
            readers = ports.len();
            let threads = threads.clamp(1, readers.max(1));
            udp_groups = (0..threads)
                .map(|t| {
                    ports
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&p| SocketAddrV4::new(host, p))
                        .collect()
                })
                .collect();
        }
        Destinations::Tcp { host, port, readers: n } => {
            readers = n;
            let threads = threads.clamp(1, n.max(1));
            tcp_groups = (0..threads).map(|_| Vec::new()).collect();
            for i in 0..n {
                let s = TcpStream::connect((host, port))?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                tcp_groups[i % threads].push(s);
            }
        }
    }
    let groups = udp_groups.len().max(tcp_groups.len());
    let ready = Arc::new(Barrier::new(groups + 1));
    let go = Arc::new(Barrier::new(groups + 1));
    let mut handles = Vec::new();
    for (t, udp) in udp_groups.into_iter().enumerate() {
        let (ready, go) = (ready.clone(), go.clone());
        handles.push(std::thread::spawn(move || {
            send_udp(&udp, shape, duration, t as u64, &ready, &go)
        }));
    }
    for (t, tcp) in tcp_groups.into_iter().enumerate() {
        let (ready, go) = (ready.clone(), go.clone());
        handles.push(std::thread::spawn(move || {
            send_tcp(tcp, shape, duration, t as u64, &ready, &go)
        }));
    }
    ready.wait();
    let ticks0 = sys::stat_ticks(std::process::id()).unwrap_or(0);
    let cpu0 = process_cpu_s();
    let start = Instant::now();
    go.wait();
    let mut report = SendReport {
        transport: transport.to_string(),
        readers,
        threads: groups,
        ..SendReport::default()
    };
    for h in handles {
        let part = h.join().map_err(|_| io::Error::other("a sending thread panicked"))??;
        report.frames = report.frames.max(part.frames);
        report.packets = report.packets.max(part.packets);
        report.sends_ok += part.sends_ok;
        report.send_errors += part.send_errors;
        report.dropped += part.dropped;
        report.late_frames += part.late_frames;
    }
    report.wall_s = start.elapsed().as_secs_f64();
    report.cpu_s = process_cpu_s() - cpu0;
    report.cpu_s_ticks =
        sys::stat_ticks(std::process::id()).unwrap_or(0).saturating_sub(ticks0) as f64 / sys::clock_ticks() as f64;
    Ok(report)
}

/// Writes an RTP header (version 2, PT 96) at the start of `buf`.
/// Paces frames: waits for frame `index`'s time; returns whether it is late by a frame or more.
fn wait_for_frame(start: Instant, interval: Duration, index: u64) -> bool {
    let due = start + interval.mul_f64(index as f64);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
        false
    } else {
        now - due > interval
    }
}

fn send_udp(
    dests: &[SocketAddrV4],
    shape: StreamShape,
    duration: Duration,
    seed: u64,
    ready: &Barrier,
    go: &Barrier,
) -> io::Result<SendReport> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).inspect(|s| {
        // SAFETY: sets an int option on a socket this function owns.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                (&UDP_SEND_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    });
    let names: Vec<libc::sockaddr_in> = dests
        .iter()
        .map(|a| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        })
        .collect();
    let mut buf = vec![0u8; shape.packet_size];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: 0,
    };
    // SAFETY: an all-zero mmsghdr is valid; the pointers set below outlive every call.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut report = SendReport::default();
    ready.wait();
    go.wait();
    let socket = socket?;
    let fd = socket.as_raw_fd();
    let interval = Duration::from_secs_f64(1.0 / shape.fps);
    let frames = (duration.as_secs_f64() * shape.fps).round() as u64;
    let start = Instant::now();
    let mut packetizer = Packetizer::new(shape, seed + 1);
    for index in 0..frames {
        report.late_frames += u64::from(wait_for_frame(start, interval, index));
        let frame = packetizer.next_frame();
        for k in 0..frame.packets() {
            // loadgen's packet to the byte, but for the trailer: stamping is the publisher's work.
            let (len, _) = packetizer.write_packet(&frame, k, &mut buf);
            iov.iov_len = len;
            for chunk in names.chunks(BATCH) {
                for (m, name) in msgs.iter_mut().zip(chunk) {
                    m.msg_hdr.msg_name = (name as *const libc::sockaddr_in).cast_mut().cast();
                    m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                }
                let mut done = 0;
                while done < chunk.len() {
                    // SAFETY: messages [done, chunk.len()) point at live names and one live iovec.
                    let n = unsafe {
                        libc::sendmmsg(fd, msgs[done..].as_mut_ptr(), (chunk.len() - done) as libc::c_uint, 0)
                    };
                    if n <= 0 {
                        // The message at `done` was refused: count it and go on with the next.
                        report.send_errors += 1;
                        done += 1;
                    } else {
                        report.sends_ok += n as u64;
                        done += n as usize;
                    }
                }
            }
            report.packets += 1;
        }
        report.frames += 1;
    }
    Ok(report)
}

fn send_tcp(
    streams: Vec<TcpStream>,
    shape: StreamShape,
    duration: Duration,
    seed: u64,
    ready: &Barrier,
    go: &Barrier,
) -> io::Result<SendReport> {
    let mut pending: Vec<Vec<u8>> = vec![Vec::new(); streams.len()];
    let mut frame_buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut report = SendReport::default();
    ready.wait();
    go.wait();
    let interval = Duration::from_secs_f64(1.0 / shape.fps);
    let frames = (duration.as_secs_f64() * shape.fps).round() as u64;
    let start = Instant::now();
    let mut packetizer = Packetizer::new(shape, seed + 1);
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let mut iovs: Vec<libc::iovec> = Vec::new();
    for index in 0..frames {
        report.late_frames += u64::from(wait_for_frame(start, interval, index));
        let frame = packetizer.next_frame();
        // The frame as interleaved packets, one buffer shared by every reader.
        frame_buf.clear();
        spans.clear();
        for k in 0..frame.packets() {
            let len = frame.packet_len(k);
            let at = frame_buf.len();
            frame_buf.extend_from_slice(&[b'$', 0]);
            frame_buf.extend_from_slice(&(len as u16).to_be_bytes());
            let rtp = frame_buf.len();
            frame_buf.resize(rtp + len, 0);
            packetizer.write_packet(&frame, k, &mut frame_buf[rtp..]);
            spans.push((at, 4 + len));
        }
        iovs.clear();
        iovs.extend(spans.iter().map(|&(at, len)| libc::iovec {
            iov_base: frame_buf[at..].as_ptr().cast_mut().cast(),
            iov_len: len,
        }));
        let total = frame_buf.len();
        let count = frame.packets() as u64;
        for (s, queue) in streams.iter().zip(pending.iter_mut()) {
            let fd = s.as_raw_fd();
            if !queue.is_empty() {
                // SAFETY: writes from a live buffer of the stated length.
                let n = unsafe { libc::write(fd, queue.as_ptr().cast(), queue.len()) };
                if n > 0 {
                    queue.drain(..n as usize);
                }
                if !queue.is_empty() {
                    report.dropped += count;
                    continue;
                }
            }
            // SAFETY: every iovec points into `frame_buf`, alive and unchanged during the call.
            let n = unsafe { libc::writev(fd, iovs.as_ptr(), iovs.len() as libc::c_int) };
            let written = usize::try_from(n).unwrap_or(0);
            if written < total {
                queue.extend_from_slice(&frame_buf[written..]);
            }
            report.sends_ok += count;
        }
        report.packets += count;
        report.frames += 1;
    }
    // Let the kernel take what is still queued (bounded: one second).
    let until = Instant::now() + Duration::from_secs(1);
    for (s, queue) in streams.iter().zip(pending.iter_mut()) {
        while !queue.is_empty() && Instant::now() < until {
            // SAFETY: as above.
            let n = unsafe { libc::write(s.as_raw_fd(), queue.as_ptr().cast(), queue.len()) };
            if n > 0 {
                queue.drain(..n as usize);
            } else {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
    Ok(report)
}

/// Reads the receiver's announcement (`ports ...`/`port P`, then `ready`) from its stdout.
pub fn read_announcement(out: &mut impl BufRead) -> io::Result<Option<Destinations>> {
    let mut ports = None;
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let l = line.trim();
        if let Some(list) = l.strip_prefix("ports ") {
            let parsed: Result<Vec<u16>, _> = list.split(',').map(str::parse).collect();
            ports = Some(Destinations::Udp {
                host: Ipv4Addr::LOCALHOST,
                ports: parsed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
            });
        } else if let Some(p) = l.strip_prefix("port ") {
            let port = p.parse().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            ports = Some(Destinations::Tcp {
                host: Ipv4Addr::LOCALHOST,
                port,
                readers: 0,
            });
        } else if l == "ready" {
            return Ok(ports);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_counts_split_frames() {
        let mut f = Framing::default();
        let mut data = Vec::new();
        for len in [5u16, 0, 3] {
            data.extend_from_slice(&[b'$', 0]);
            data.extend_from_slice(&len.to_be_bytes());
            data.extend(std::iter::repeat_n(7u8, usize::from(len)));
        }
        let (mut p, mut b) = (0, 0);
        for piece in data.chunks(3) {
            let (pp, bb) = f.feed(piece);
            p += pp;
            b += bb;
        }
        assert_eq!((p, b), (3, 8));
    }

    #[test]
    fn udp_sender_reaches_local_sockets() {
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap())
            .collect();
        let ports = sockets.iter().map(|s| s.local_addr().unwrap().port()).collect();
        let shape = StreamShape::new(200_000, 1200);
        let dest = Destinations::Udp {
            host: Ipv4Addr::LOCALHOST,
            ports,
        };
        let r = send(dest, shape, 2, Duration::from_millis(200)).unwrap();
        assert_eq!(r.frames, 5);
        assert_eq!(r.sends_ok, r.packets * 3);
        let mut buf = [0u8; 2048];
        sockets[0].set_nonblocking(true).unwrap();
        let mut got = 0;
        while sockets[0].recv(&mut buf).is_ok() {
            got += 1;
        }
        assert_eq!(got, r.packets);
    }
}
