"""A real RTSP camera for the tests: GStreamer's gst-rtsp-server on 127.0.0.1, one JPEG/RTP stream.

Run by the system Python (``/usr/bin/python3``, which has the ``gi`` bindings from the Debian
packages .ci/install-system-deps installs), as a child process of the tests:

    python3 rtsp_server.py            prints "ready <port>" once it listens (port chosen by the kernel)

Lines on stdin: ``stall`` stops sending frames while every session stays open (what a camera that
froze does: the socket is there, nothing comes), ``resume`` sends again. End of stdin stops it.
"""

import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = ("( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=64,height=48,framerate=15/1 "
            "! valve name=gate ! jpegenc ! rtpjpegpay name=pay0 pt=96 )")


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service("0")
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)  # one pipeline for every client: a stall stalls them all
    gates = []
    stalled = threading.Event()

    def configured(_factory, media) -> None:
        gate = media.get_element().get_by_name("gate")
        gate.set_property("drop", stalled.is_set())
        gates.append(gate)

    factory.connect("media-configure", configured)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    loop = GLib.MainLoop()

    def control() -> None:
        # Crossing: commands from stdin to the GLib loop's elements (set_property is thread-safe).
        for line in sys.stdin:
            command = line.strip()
            if command in ("stall", "resume"):
                stalled.set() if command == "stall" else stalled.clear()
                for gate in gates:
                    gate.set_property("drop", command == "stall")
                print(command, flush=True)
        GLib.idle_add(loop.quit)

    threading.Thread(target=control, name="rtsp-control", daemon=True).start()
    print("ready", server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
