"""``kind = "auto"``: the Pi camera if picamera2 is there and finds one, else the
first ``/dev/video*`` device that opens and yields a frame, else a clear error.

Every probe is bounded (picamera2 fails fast without a camera; V4L2 opens are
quick and reads time out), so ``open`` never hangs. The choice is made again at
each open, so a camera plugged in later is found by the capture loop's retries.
"""

from __future__ import annotations

import dataclasses
import fcntl
import glob
import importlib.util
import logging
import os
import re
import struct
from collections.abc import Callable

from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.source.base import Frame, Source
from edge_classifier.source.opencv import OpenCVSource
from edge_classifier.source.picamera2 import Picamera2Source

__all__ = ["AutoSource", "V4L2Device", "capture_devices", "query_v4l2", "video_devices"]

log = logging.getLogger(__name__)


def video_devices(pattern: str = "/dev/video*") -> list[str]:
    """The V4L2 device nodes, in number order (video2 before video10)."""
    def number(path: str) -> int:
        match = re.search(r"(\d+)$", path)
        return int(match.group(1)) if match else -1
    return sorted(glob.glob(pattern), key=number)


# VIDIOC_QUERYCAP = _IOR('V', 0, struct v4l2_capability); the struct is driver[16],
# card[32], bus_info[32], then u32 version, capabilities, device_caps, reserved[3]: 104 bytes.
_VIDIOC_QUERYCAP = 0x80685600
_CAPABILITY = struct.Struct("16s32s32sIII12x")
_CAP_VIDEO_CAPTURE = 0x00000001
_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
_CAP_DEVICE_CAPS = 0x80000000
# Capture nodes that are not a camera OpenCV can read: the Pi camera's raw Bayer
# receivers (unicam on Pi 0-4, rp1-cfe on Pi 5: libcamera/picamera2 drives them) and the
# Pi's ISP back ends.
_NOT_FOR_OPENCV = ("unicam", "rp1-cfe", "bcm2835-isp", "pispbe")


@dataclasses.dataclass(frozen=True, slots=True)
class V4L2Device:
    """One ``/dev/videoN`` as its driver describes it (``VIDIOC_QUERYCAP``)."""

    path: str
    driver: str
    card: str
    capture: bool
    """Delivers video frames (not a codec, an output or a metadata node)."""

    @property
    def camera(self) -> bool:
        """A camera OpenCV can capture from."""
        return self.capture and self.driver not in _NOT_FOR_OPENCV


def query_v4l2(path: str) -> V4L2Device | None:
    """Ask the driver what ``path`` is; None when it cannot be opened or is not V4L2.

    Opening a V4L2 node and querying it starts no streaming and changes nothing.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        buffer = bytearray(_CAPABILITY.size)
        fcntl.ioctl(fd, _VIDIOC_QUERYCAP, buffer)
    except OSError:
        return None
    finally:
        os.close(fd)
    driver, card, _bus, _version, caps, device_caps = _CAPABILITY.unpack(bytes(buffer))
    if caps & _CAP_DEVICE_CAPS:
        caps = device_caps  # what this node does, not the whole driver
    return V4L2Device(path, driver.split(b"\0")[0].decode(errors="replace"),
                      card.split(b"\0")[0].decode(errors="replace"),
                      bool(caps & (_CAP_VIDEO_CAPTURE | _CAP_VIDEO_CAPTURE_MPLANE)))


def capture_devices(pattern: str = "/dev/video*",
                    query: Callable[[str], V4L2Device | None] = query_v4l2) -> list[V4L2Device]:
    """The V4L2 nodes that are cameras OpenCV can read, in number order."""
    found = [query(path) for path in video_devices(pattern)]
    return [device for device in found if device is not None and device.camera]


class AutoSource:
    """Whichever camera is there; live."""

    live = True

    def __init__(self, *, name: str, width: int = 0, height: int = 0, fps: float = 0.0,
                 lores_size: tuple[int, int] | None = None, devices: Callable[[], list[str]] = video_devices,
                 has_picamera2: Callable[[], bool] | None = None) -> None:
        self.name = name
        self.width = width
        self.height = height
        self.fps = fps
        self.lores_size = lores_size
        self._devices = devices
        self._has_picamera2 = has_picamera2 or (lambda: importlib.util.find_spec("picamera2") is not None)
        self.chosen: Source | None = None
        self._first: Frame | None = None
        self._index = 0  # ours, so a reopen (maybe of another camera) never resets it

    def _candidates(self) -> list[Source]:
        found: list[Source] = []
        if self._has_picamera2():
            found.append(Picamera2Source(name=self.name, width=self.width, height=self.height,
                                         fps=self.fps, lores_size=self.lores_size))
        for path in self._devices():
            found.append(OpenCVSource(path, name=self.name, width=self.width, height=self.height,
                                      fps=self.fps))
        return found

    def open(self) -> None:
        self.close()
        tried: list[str] = []
        for candidate in self._candidates():
            label = getattr(candidate, "uri", "picamera2")
            try:
                candidate.open()
                first = candidate.read()
            except (SourceError, ConfigError) as exc:
                candidate.close()
                tried.append(f"{label}: {exc}")
                continue
            if first is None:
                candidate.close()
                continue
            log.info("auto source: using %s", label)
            self.chosen, self._first = candidate, first
            return
        picamera = "picamera2 is installed" if self._has_picamera2() else "picamera2 is not installed"
        detail = "; ".join(tried) if tried else "no /dev/video* devices"
        raise SourceError(f"no camera found ({picamera}; {detail})")

    def read(self) -> Frame | None:
        if self.chosen is None:
            raise SourceError(f"{self.name}: read before open")
        frame: Frame | None
        if self._first is not None:
            frame, self._first = self._first, None
        else:
            frame = self.chosen.read()
        if frame is None:
            return None
        self._index += 1
        return dataclasses.replace(frame, index=self._index)

    def close(self) -> None:
        chosen, self.chosen = self.chosen, None
        self._first = None
        if chosen is not None:
            chosen.close()
