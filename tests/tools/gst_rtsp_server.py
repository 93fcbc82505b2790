#!/usr/bin/python3
"""A GStreamer RTSP server (gst-rtsp-server through python3-gi) serving a live H.264 test stream
at rtsp://127.0.0.1:PORT/test, used to check shardcast's client against an independent server.

Usage: /usr/bin/python3 tests/tools/gst_rtsp_server.py PORT
Prints "ready" once it listens; runs until killed.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = "( videotestsrc is-live=true ! x264enc tune=zerolatency ! rtph264pay name=pay0 pt=96 )"


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: gst_rtsp_server.py PORT")
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    # The default pool has one thread: readers of a shared media would wait on each other.
    server.get_thread_pool().set_max_threads(8)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{sys.argv[1]}")
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
