"""An HTTP MJPEG stream (``multipart/x-mixed-replace``) read part by part, so each JPEG goes
through the bounded decode (:func:`~edge_classifier.preprocess.decode.decode_image`) and can
be decoded at a reduced scale (``source.reduced_decode``): FFmpeg inside ``cv2.VideoCapture``
decodes every frame whole.

Used for ``opencv`` sources with an ``http(s)://`` uri when ``source.reduced_decode`` is on.
A server that answers with anything but a multipart stream (an MP4, HLS) is handed to
:class:`~edge_classifier.source.opencv.OpenCVSource` for that connection, as without the
option. Everything the server sends is bounded: header lines (1 KiB), headers per part (64),
bytes between parts (64 KiB), and a part's image (``source.max_bytes``; a larger one is
skipped, counted and logged as a rejected image). No byte for ``stall_timeout`` seconds is a
SourceError (the socket's timeout), as is a closed connection; the capture reopens it.
"""

from __future__ import annotations

import base64
import http.client
import logging
import re
import time
from urllib.parse import unquote, urlsplit

import numpy as np

from edge_classifier.errors import SourceError
from edge_classifier.preprocess.decode import ImageLimits, ImageRejected, RejectLog, decode_image
from edge_classifier.source.base import Frame, stamp
from edge_classifier.source.opencv import OpenCVSource

__all__ = ["MjpegSource"]

log = logging.getLogger(__name__)

_LINE = 1024
_MAX_HEADERS = 64
_MAX_GAP = 64 * 1024  # bytes between one part's end and the next boundary
_BOUNDARY = re.compile(r'boundary="?([^";,\s]{1,200})"?', re.IGNORECASE)


class MjpegSource:
    """JPEG parts of an HTTP MJPEG stream as live frames (BGR)."""

    live = True

    def __init__(self, url: str, *, name: str, open_timeout: float = 10.0, read_timeout: float = 10.0,
                 limits: ImageLimits | None = None, reduce_to: tuple[int, int] | None = None) -> None:
        self.url = url
        self.name = name
        self.open_timeout = open_timeout
        self.read_timeout = read_timeout
        self.limits = limits or ImageLimits()
        self.reduce_to = reduce_to
        self.rejects = RejectLog(log, f"mjpeg source {name}")
        self._response: http.client.HTTPResponse | None = None
        self._connection: http.client.HTTPConnection | None = None
        self._boundary = b""
        self._fallback: OpenCVSource | None = None
        self._index = 0

    @property
    def rejected(self) -> int:
        """Parts refused (too large, not an image, undecodable)."""
        return self.rejects.total

    def _describe(self) -> str:
        return re.sub(r"//[^/@]*@", "//***@", self.url)  # never log credentials

    def open(self) -> None:
        self.close()
        parts = urlsplit(self.url)
        kind = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
        headers = {"Accept": "multipart/x-mixed-replace, image/jpeg"}
        if parts.username is not None:
            secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(secret).decode("ascii")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = kind(parts.hostname or "", parts.port, timeout=self.open_timeout)
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise SourceError(f"cannot open stream {self._describe()}: {exc}") from exc
        content_type = response.getheader("Content-Type", "")
        boundary = _BOUNDARY.search(content_type)
        if response.status != 200 or not content_type.lower().startswith("multipart/") or boundary is None:
            connection.close()
            if response.status != 200:
                raise SourceError(f"stream {self._describe()}: HTTP {response.status} {response.reason}")
            log.info("%s is not a multipart MJPEG stream (%s): decoded by OpenCV, whole", self._describe(),
                     content_type or "no Content-Type")
            self._fallback = OpenCVSource(self.url, name=self.name, open_timeout=self.open_timeout,
                                          read_timeout=self.read_timeout)
            self._fallback.open()
            return
        if connection.sock is not None:
            connection.sock.settimeout(self.read_timeout)  # a stalled camera: no byte for this long
        self._connection, self._response = connection, response
        self._boundary = b"--" + boundary.group(1).encode("ascii", "replace")
        log.debug("mjpeg: opened %s (boundary %s)", self._describe(), self._boundary.decode())

    def read(self) -> Frame | None:
        if self._fallback is not None:
            return self._fallback.read()
        if self._response is None:
            raise SourceError(f"{self.name}: read before open")
        deadline = time.monotonic() + self.read_timeout
        try:
            while True:
                image = self._decoded(self._next_part(self._response))
                if image is not None:
                    self._index += 1
                    return stamp(image, rgb=False, source=self.name, index=self._index)
                if time.monotonic() > deadline:  # a flood of refused parts still ends a read in time
                    raise SourceError(f"stream {self._describe()}: only refused parts for {self.read_timeout:g} s")
        except TimeoutError as exc:
            self.close()
            raise SourceError(f"stream {self._describe()}: nothing for {self.read_timeout:g} s: the camera or "
                              "stream sends nothing (source.stall_timeout)") from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise SourceError(f"cannot read a frame from stream {self._describe()}: {exc}") from exc

    def _decoded(self, data: np.ndarray | None) -> np.ndarray | None:
        if data is None:
            return None
        try:
            return decode_image(data, self.limits, what=f"part of {self.name}", reduce_to=self.reduce_to)
        except ImageRejected as exc:
            self.rejects.rejected(exc)
            return None

    def _next_part(self, response: http.client.HTTPResponse) -> np.ndarray | None:
        """The next part's bytes; None for a part skipped (too large, counted)."""
        skipped = 0
        while True:  # to the boundary line
            line = _line(response)
            if line.rstrip(b"\r\n") in (self._boundary, self._boundary + b"--"):
                if line.startswith(self._boundary + b"--"):
                    raise SourceError(f"stream {self._describe()} ended")
                break
            skipped += len(line)
            if skipped > _MAX_GAP:
                raise SourceError(f"stream {self._describe()}: over {_MAX_GAP} bytes without a part boundary")
        length = None
        for _ in range(_MAX_HEADERS + 1):
            line = _line(response).strip()
            if not line:
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                if not value.strip().isdigit():
                    raise SourceError(f"stream {self._describe()}: Content-Length {value.strip()[:20]!r}")
                length = int(value.strip())
        else:
            raise SourceError(f"stream {self._describe()}: a part with over {_MAX_HEADERS} header lines")
        if length is None:
            raise SourceError(f"stream {self._describe()}: a part without Content-Length (not supported with "
                              "source.reduced_decode; set it to false to decode this stream with OpenCV)")
        if length > self.limits.max_bytes:
            _discard(response, length)
            self.rejects.rejected(ImageRejected(f"part of {self.name}: {length} bytes, over the limit of "
                                                f"{self.limits.max_bytes} bytes (source.max_bytes)", "too many bytes"))
            return None
        data = _exact(response, length)
        return np.frombuffer(data, np.uint8)

    def close(self) -> None:
        fallback, self._fallback = self._fallback, None
        if fallback is not None:
            fallback.close()
        connection, self._connection, self._response = self._connection, None, None
        if connection is not None:
            connection.close()


def _line(response: http.client.HTTPResponse) -> bytes:
    line = response.readline(_LINE + 1)
    if not line:
        raise SourceError("the server closed the stream")
    if len(line) > _LINE and not line.endswith(b"\n"):
        raise SourceError(f"a header line longer than {_LINE} bytes")
    return line


def _exact(response: http.client.HTTPResponse, length: int) -> bytes:
    data = response.read(length)
    if len(data) != length:
        raise SourceError(f"the server closed the stream in a part ({len(data)} of {length} bytes)")
    return data


def _discard(response: http.client.HTTPResponse, length: int) -> None:
    while length > 0:
        length -= len(_exact(response, min(length, 1 << 16)))
