"""Frames through ``cv2.VideoCapture``: a camera index, ``/dev/videoN``, an ``rtsp://``
or ``http(s)://`` (MJPEG) stream, or a video file.

Devices and streams are live: a read that brings no frame within ``read_timeout``
(``source.stall_timeout``) fails with a SourceError, so a camera that froze with its
socket open is noticed then and reopened, for every kind of URL: every read runs on a
thread of its own (:mod:`edge_classifier.source.stall`), and network streams also get
FFmpeg's open and read timeouts. ``Frame.captured`` of the last frame is what the
capture counts downtime from.

A video file is not live: every frame is delivered, ``read`` returns None at its end,
or with ``loop`` the file is opened again from the start (reopening rather than seeking
also picks up a file that was replaced, and reports one that vanished).

OpenCV's and FFmpeg's own log lines (``[ WARN:0@...] global cap.cpp...``, ``[tcp @
0x...] Connection refused``) would go to stderr beside ours at every reconnect:
they are silenced unless this logger is at DEBUG; our log says what failed, once.
"""

from __future__ import annotations

import logging
import os
import re

import cv2
import numpy as np

from edge_classifier.errors import SourceError
from edge_classifier.source.base import Frame, stamp
from edge_classifier.source.stall import StallGuard

__all__ = ["OpenCVSource", "parse_uri"]

log = logging.getLogger(__name__)

_STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
_DEVICE = re.compile(r"^/dev/video(\d+)$")


def _quiet_native_logs() -> None:
    """Silence OpenCV's logger and FFmpeg's (read when FFmpeg is first used, so still in time)."""
    if log.isEnabledFor(logging.DEBUG):
        return
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    # cv2.utils.logging is not there in every build (opencv-python-headless 4.11, which pip picks
    # beside Debian bookworm's numpy 1.24, has only cv2.setLogLevel): use what this build has.
    api = getattr(getattr(cv2, "utils", None), "logging", None)
    if api is not None:
        api.setLogLevel(api.LOG_LEVEL_SILENT)
    else:
        set_level = getattr(cv2, "setLogLevel", None)
        if callable(set_level):
            set_level(0)  # 0 = LOG_LEVEL_SILENT


def parse_uri(uri: str) -> tuple[str, int | str]:
    """What ``uri`` names: ("device", index), ("device", "/dev/videoN"), ("stream", url) or ("file", path).

    An empty uri is camera 0.
    """
    text = uri.strip()
    if text == "":
        return "device", 0
    if text.isdigit():
        return "device", int(text)
    if _DEVICE.match(text) or text.startswith("/dev/"):
        return "device", text
    if text.lower().startswith(_STREAM_SCHEMES):
        return "stream", text
    return "file", text


class OpenCVSource:
    """A ``cv2.VideoCapture`` as a frame source (BGR frames)."""

    def __init__(self, uri: str, *, name: str, loop: bool = False, width: int = 0, height: int = 0,
                 fps: float = 0.0, open_timeout: float = 10.0, read_timeout: float = 10.0) -> None:
        self.uri = uri
        self.name = name
        self.loop = loop
        self.width = width
        self.height = height
        self.fps = fps
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.kind, self.target = parse_uri(uri)
        self.live = self.kind != "file"
        self._cap: cv2.VideoCapture | None = None
        self._guard: StallGuard[tuple[bool, np.ndarray | None]] | None = None
        self._index = 0

    def _describe(self) -> str:
        # Never log a stream's credentials (rtsp://user:password@host/...).
        return re.sub(r"//[^/@]*@", "//***@", str(self.target))

    def open(self) -> None:
        self.close()
        _quiet_native_logs()
        if self.kind == "file" and not os.path.isfile(str(self.target)):
            raise SourceError(f"video file {self.target} does not exist")
        params: list[int] = []
        if self.kind in ("stream", "file"):
            # The timeouts bound FFmpeg's blocking network calls (connect, read). A live stream's
            # reads are timed by the stall guard (below); FFmpeg's own read timeout is then one
            # second longer and only bounds how long an abandoned read lingers. At the same
            # length the two raced, and a silent stream was sometimes reported as FFmpeg's bare
            # "cannot read a frame" instead of a stall naming source.stall_timeout.
            read_timeout = self.read_timeout + 1.0 if self.live else self.read_timeout
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(self.open_timeout * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout * 1000)]
            cap = cv2.VideoCapture(str(self.target), cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.target, cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.kind} {self._describe()}")
        if self.kind == "device":
            self._request(cap)
        self._cap = cap
        if self.live:
            # From here on only the guard's reader thread touches `cap` (it also releases it).
            self._guard = StallGuard(cap.read, cap.release, name=self.name, timeout=self.read_timeout)
        log.debug("opencv: opened %s %s with %s", self.kind, self._describe(), cap.getBackendName())

    def _request(self, cap: cv2.VideoCapture) -> None:
        """Ask a camera for the configured size and rate (it may pick the nearest it has)."""
        if self.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            cap.set(cv2.CAP_PROP_FPS, self.fps)
        # A one-frame driver queue keeps a live camera's frames fresh.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"{self.name}: read before open")
        if self._guard is not None:
            try:
                ok, image = self._guard.read()
            except SourceError as exc:
                self._cap = self._guard = None  # abandoned: the reader thread releases it
                raise SourceError(f"{self.kind} {self._describe()}: {exc}: the camera or stream sends "
                                  f"nothing (source.stall_timeout)") from exc
        else:
            ok, image = self._cap.read()
        if not ok or image is None:
            if self.kind != "file":
                raise SourceError(f"cannot read a frame from {self.kind} {self._describe()}")
            if not self.loop:
                return None
            self.open()  # start over; raises SourceError if the file vanished
            assert self._cap is not None
            ok, image = self._cap.read()
            if not ok or image is None:
                raise SourceError(f"no frames in video file {self.target}")
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._index += 1
        return stamp(image, rgb=False, source=self.name, index=self._index)

    def close(self) -> None:
        cap, self._cap = self._cap, None
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.close()  # releases cap on its reader thread
        elif cap is not None:
            cap.release()
