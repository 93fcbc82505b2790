#!/usr/bin/env python3
"""A tiny fake RTSP server that records the exact requests real clients send.

Every request (head and body, byte for byte) is written to OUT/NN-METHOD.txt, NN counting the
requests of the run from 01. `$`-interleaved frames between requests (RTP, RTCP) are skipped.
The answers are just plausible enough for the client to carry on:

  OPTIONS        200 with Public
  DESCRIBE       200 with an SDP for one H.264 track (a=control:trackID=0) and Content-Base
  ANNOUNCE       200 with Session: 12345678;timeout=60
  SETUP          200 echoing the client's first Transport (server_port added for UDP,
                 interleaved kept for TCP) and the Session
  PLAY           200 with RTP-Info and Range; the connection closes --linger seconds later
  RECORD         200; the connection closes --linger seconds later (the client's TEARDOWN,
                 if it comes first, is recorded)
  anything else  200 (GET_PARAMETER, SET_PARAMETER, PAUSE, TEARDOWN, ...)

With --media FILE (an Annex B H.264 stream at 10 frames per second, one slice per frame), PLAY
is followed by that video, looped, as RTP (interleaved on channel 0 over TCP, to the client's
RTP port over UDP) for --media-seconds, so that a reader that stops by itself (ffmpeg -t 1)
ends with its own TEARDOWN. Make such a file with

  ffmpeg -f lavfi -i testsrc=size=320x240:rate=10 -frames:v 10 -pix_fmt yuv420p \
      -c:v libx264 -profile:v baseline -g 10 -x264-params slices=1 -f h264 media.h264

Without it the reader gets no media, and the connection is closed --linger seconds after PLAY.

With --auth, the first request of the method given by --auth-on (DESCRIBE by default, as
real servers do; ANNOUNCE is used instead for publishers) is answered once with 401 and two
challenges:

  WWW-Authenticate: Digest realm="shardcast", nonce="0123456789abcdef"
  WWW-Authenticate: Basic realm="shardcast"

so the retry, and every later request, shows the Authorization header the client computes.

Usage:

  # serve until interrupted
  rtsp_capture.py --port 8554 --out /tmp/capture

  # serve on a free port, run one client against it ({port} is replaced), then exit
  rtsp_capture.py --out DIR [--auth] -- ffmpeg -rtsp_transport tcp \\
      -i rtsp://127.0.0.1:{port}/live/cam -t 1 -f null -

Standard library only.
"""

import argparse
import os
import re
import socket
import subprocess
import sys
import threading
import time

SESSION_ID = "12345678"
REALM = "shardcast"
NONCE = "0123456789abcdef"
PUBLIC = "OPTIONS, DESCRIBE, ANNOUNCE, SETUP, PLAY, PAUSE, RECORD, TEARDOWN, GET_PARAMETER, SET_PARAMETER"
# SPS/PPS of a 320x240 constrained-baseline stream from libx264.
SPROP = "Z0LAC9kBQfsBEAAAAwAQAAADAUDxQqSA,aMuDyyA="


def read_media(path):
    """The access units of an Annex B H.264 file: a list of lists of NAL units."""
    with open(path, "rb") as f:
        data = f.read()
    units, current = [], []
    for nal in re.split(rb"\x00\x00\x00\x01|\x00\x00\x01", data):
        if not nal:
            continue
        current.append(nal)
        if nal[0] & 0x1F in (1, 5):
            units.append(current)
            current = []
    return units


def rtp_packets(units, seconds, fps=10, mtu=1400):
    """(send time offset, RTP packet) pairs: the access units looped for `seconds`."""
    seq, ssrc, out = 0, 0x5EED5EED, []
    frames = max(1, int(seconds * fps))
    for frame in range(frames):
        ts = (frame * 90000 // fps) & 0xFFFFFFFF
        nals = units[frame % len(units)]
        payloads = []
        for n, nal in enumerate(nals):
            last_nal = n == len(nals) - 1
            if len(nal) <= mtu:
                payloads.append((nal, last_nal))
                continue
            # FU-A (RFC 6184 §5.8)
            indicator = (nal[0] & 0xE0) | 28
            rest = nal[1:]
            chunks = [rest[i : i + mtu] for i in range(0, len(rest), mtu)]
            for i, chunk in enumerate(chunks):
                fu_header = (nal[0] & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
                payloads.append((bytes([indicator, fu_header]) + chunk, last_nal and i == len(chunks) - 1))
        for payload, marker in payloads:
            head = bytes([0x80, (0x80 if marker else 0) | 96]) + seq.to_bytes(2, "big")
            out.append((frame / fps, head + ts.to_bytes(4, "big") + ssrc.to_bytes(4, "big") + payload))
            seq = (seq + 1) & 0xFFFF
    return out


def describe_sdp():
    return (
        "v=0\r\n"
        "o=- 0 0 IN IP4 127.0.0.1\r\n"
        "s=shardcast capture\r\n"
        "c=IN IP4 0.0.0.0\r\n"
        "t=0 0\r\n"
        "a=control:*\r\n"
        "m=video 0 RTP/AVP 96\r\n"
        "a=rtpmap:96 H264/90000\r\n"
        "a=fmtp:96 packetization-mode=1;profile-level-id=42c00b;sprop-parameter-sets=" + SPROP + "\r\n"
        "a=control:trackID=0\r\n"
    ).encode()


class Recorder:
    """Numbers and writes the requests of one run; shared by all connections."""

    def __init__(self, out_dir, verbose):
        self.out_dir = out_dir
        self.verbose = verbose
        self.count = 0
        self.lock = threading.Lock()
        os.makedirs(out_dir, exist_ok=True)

    def record(self, method, raw):
        with self.lock:
            self.count += 1
            safe = re.sub(r"[^A-Za-z0-9_]", "_", method) or "UNKNOWN"
            path = os.path.join(self.out_dir, "%02d-%s.txt" % (self.count, safe))
            with open(path, "wb") as f:
                f.write(raw)
        if self.verbose:
            sys.stderr.write("rtsp_capture: recorded %s (%d bytes)\n" % (path, len(raw)))


class AuthGate:
    """Answers the first request of one method with 401, once per run."""

    def __init__(self, enabled, methods):
        self.pending = enabled
        self.methods = methods
        self.lock = threading.Lock()

    def challenge(self, method):
        with self.lock:
            if self.pending and method in self.methods:
                self.pending = False
                return True
            return False


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def parse_head(head):
    """(method, url, [(name, value)]) of a request head (bytes, without the blank line)."""
    lines = re.split(rb"\r?\n", head)
    parts = lines[0].decode("utf-8", "replace").split(" ")
    method = parts[0] if parts else ""
    url = parts[1] if len(parts) > 1 else ""
    headers = []
    for line in lines[1:]:
        if b":" in line:
            k, v = line.split(b":", 1)
            headers.append((k.decode("utf-8", "replace").strip(), v.decode("utf-8", "replace").strip()))
    return method, url, headers


def next_message(buf):
    """Splits the first message off buf: ('frame', None, rest), ('request', raw, rest) or None."""
    if not buf:
        return None
    if buf[0:1] == b"$":
        if len(buf) < 4:
            return None
        size = 4 + int.from_bytes(buf[2:4], "big")
        if len(buf) < size:
            return None
        return ("frame", None, buf[size:])
    m = re.search(rb"\r?\n\r?\n", buf)
    if not m:
        return None
    head = buf[: m.start()]
    length = 0
    for line in re.split(rb"\r?\n", head)[1:]:
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1].strip() or b"0")
    end = m.end() + length
    if len(buf) < end:
        return None
    return ("request", buf[:end], buf[end:])


def response(status, reason, cseq, headers=(), body=b""):
    lines = ["RTSP/1.0 %d %s" % (status, reason)]
    if cseq is not None:
        lines.append("CSeq: %s" % cseq)
    lines.append("Server: shardcast-capture")
    lines.extend("%s: %s" % kv for kv in headers)
    if body:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer_setup(transport, udp):
    """The Transport of a SETUP answer (the client's first alternative, completed) and the
    client's RTP port for UDP or None. `udp` is our (RTP, RTCP) socket pair, used for
    server_port."""
    first = (transport or "RTP/AVP;unicast;client_port=5000-5001").split(",")[0].strip()
    params = first.split(";")
    client_rtp = None
    if params[0].upper().endswith("/TCP"):
        if not any(p.startswith("interleaved=") for p in params):
            params.append("interleaved=0-1")
        return ";".join(params), None
    for p in params:
        if p.startswith("client_port="):
            client_rtp = int(p.split("=", 1)[1].split("-")[0])
    if not any(p.startswith("server_port=") for p in params):
        ports = [s.getsockname()[1] for s in udp]
        params.append("server_port=%d-%d" % (ports[0], ports[1]))
    return ";".join(params), client_rtp


def content_base(url):
    return url if url.endswith("/") else url + "/"


def send_media(packets, conn, send_lock, client_rtp, udp, stop):
    start = time.monotonic()
    for offset, packet in packets:
        delay = start + offset - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        try:
            if client_rtp is None:
                with send_lock:
                    conn.sendall(b"$\x00" + len(packet).to_bytes(2, "big") + packet)
            else:
                udp[0].sendto(packet, ("127.0.0.1", client_rtp))
        except OSError:
            return


def handle(conn, recorder, gate, linger, media):
    conn.settimeout(0.2)
    buf = b""
    close_at = None
    base = None
    send_lock = threading.Lock()
    stop_media = threading.Event()
    udp = []
    client_rtp = None
    for _ in range(2):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        udp.append(u)
    try:
        while close_at is None or time.monotonic() < close_at:
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                break
            buf += chunk
            while True:
                item = next_message(buf)
                if item is None:
                    break
                kind, raw, buf = item
                if kind != "request":
                    continue
                head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
                method, url, headers = parse_head(head)
                recorder.record(method, raw)
                cseq = header(headers, "CSeq")
                if gate.challenge(method):
                    challenges = [
                        ("WWW-Authenticate", 'Digest realm="%s", nonce="%s"' % (REALM, NONCE)),
                        ("WWW-Authenticate", 'Basic realm="%s"' % REALM),
                    ]
                    with send_lock:
                        conn.sendall(response(401, "Unauthorized", cseq, challenges))
                    continue
                session = [("Session", SESSION_ID + ";timeout=60")]
                if method == "OPTIONS":
                    reply = response(200, "OK", cseq, [("Public", PUBLIC)])
                elif method == "DESCRIBE":
                    base = content_base(url)
                    reply = response(
                        200,
                        "OK",
                        cseq,
                        [("Content-Base", base), ("Content-Type", "application/sdp")],
                        describe_sdp(),
                    )
                elif method == "ANNOUNCE":
                    base = content_base(url)
                    reply = response(200, "OK", cseq, session)
                elif method == "SETUP":
                    transport, client_rtp = answer_setup(header(headers, "Transport"), udp)
                    reply = response(200, "OK", cseq, [("Transport", transport)] + session)
                elif method == "PLAY":
                    track = (base or content_base(url)) + "trackID=0"
                    reply = response(
                        200,
                        "OK",
                        cseq,
                        [("Range", "npt=0.000-"), ("RTP-Info", "url=%s;seq=0;rtptime=0" % track)] + session,
                    )
                    if media is None:
                        close_at = time.monotonic() + linger
                    else:
                        close_at = time.monotonic() + media[1] + linger
                        threading.Thread(
                            target=send_media,
                            args=(media[0], conn, send_lock, client_rtp, udp, stop_media),
                            daemon=True,
                        ).start()
                elif method == "RECORD":
                    reply = response(200, "OK", cseq, session)
                    close_at = time.monotonic() + linger
                else:
                    reply = response(200, "OK", cseq, session)
                with send_lock:
                    conn.sendall(reply)
    except OSError:
        pass
    finally:
        stop_media.set()
        with send_lock:
            conn.close()
        for u in udp:
            u.close()


def serve(sock, recorder, gate, linger, media, stop, handlers):
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except socket.timeout:
            continue
        except OSError:
            break
        t = threading.Thread(target=handle, args=(conn, recorder, gate, linger, media), daemon=True)
        t.start()
        handlers.append(t)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: a free one)")
    p.add_argument("--out", required=True, help="directory the requests are written to")
    p.add_argument("--auth", action="store_true", help="answer 401 once to capture Authorization")
    p.add_argument(
        "--auth-on",
        default="DESCRIBE,ANNOUNCE",
        help="comma-separated methods whose first request gets the 401 (default DESCRIBE,ANNOUNCE)",
    )
    p.add_argument("--linger", type=float, default=1.0, help="seconds after PLAY/RECORD before closing")
    p.add_argument("--media", help="Annex B H.264 file (10 fps) to stream after PLAY")
    p.add_argument("--media-seconds", type=float, default=10.0, help="how long to stream --media at most")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds the client command may run")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- client command ({port} is replaced)")
    args = p.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(16)
    port = sock.getsockname()[1]
    recorder = Recorder(args.out, not args.quiet)
    gate = AuthGate(args.auth, set(m.strip().upper() for m in args.auth_on.split(",")))
    stop = threading.Event()
    media = None
    if args.media:
        media = (rtp_packets(read_media(args.media), args.media_seconds), args.media_seconds)

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.stderr.write("rtsp_capture: listening on rtsp://127.0.0.1:%d/\n" % port)
        try:
            serve(sock, recorder, gate, args.linger, media, stop, [])
        except KeyboardInterrupt:
            pass
        return 0

    handlers = []
    thread = threading.Thread(target=serve, args=(sock, recorder, gate, args.linger, media, stop, handlers), daemon=True)
    thread.start()
    command = [c.replace("{port}", str(port)) for c in command]
    if not args.quiet:
        sys.stderr.write("rtsp_capture: running %s\n" % " ".join(command))
    try:
        rc = subprocess.run(command, timeout=args.timeout, stdin=subprocess.DEVNULL).returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    stop.set()
    thread.join()
    # Let a closing client's last requests (TEARDOWN) land: wait for its connections to close.
    deadline = time.monotonic() + args.linger + 1.0
    for t in handlers:
        t.join(max(0.0, deadline - time.monotonic()))
    sock.close()
    if not args.quiet:
        sys.stderr.write("rtsp_capture: client exited with %s, %d requests recorded\n" % (rc, recorder.count))
    return 0


if __name__ == "__main__":
    sys.exit(main())
