"""Frames from a Raspberry Pi camera through ``picamera2`` (libcamera).

``picamera2`` is imported inside :meth:`Picamera2Source.open`, so this module
loads anywhere and a missing package is a clear configuration error there.

Streams and pixel formats, and why:

- With a model input size known and no rotate/flip/roi configured, the camera
  runs a ``main`` stream plus a ``lores`` stream at exactly the model's input
  size, and frames come from ``lores``: the ISP does the resize for free.
  ``lores`` is requested as ``YUV420`` because that is the one lores format every
  Pi accepts (Pi 4 and older allow nothing else; Pi 5 also allows RGB). At model
  size the YUV->RGB conversion costs next to nothing. picamera2's YUV420 is planar
  I420 (Y, then U, then V), returned as a (height * 3/2, stride) array, so it is
  converted with ``cv2.COLOR_YUV2RGB_I420`` (*not* ``COLOR_YUV420p2RGB``, which is
  YV12, V before U, and swaps red and blue tints) and cropped to the width.
  The ISP scales the whole field of view to the model's shape, i.e. "stretch".
- With rotate, flip or roi configured, the frame must be transformed before it is
  resized, so the lores trick cannot apply: frames come from ``main`` at the
  configured width/height (else picamera2's default) and the pipeline resizes.
  The same holds when no model input size is given.
- ``main`` is requested as ``BGR888``. libcamera names formats by their packed
  32-bit word, so picamera2's "BGR888" is R, G, B bytes in memory, i.e. an RGB
  array (and its "RGB888" is a BGR array). RGB is what models take, so frames
  from this source carry ``rgb=True`` and need no channel swap downstream.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

import cv2
import numpy as np

from edge_classifier.errors import ConfigError, SourceError
from edge_classifier.source.base import Frame, stamp

__all__ = ["Picamera2Source"]

log = logging.getLogger(__name__)

MAIN_FORMAT = "BGR888"   # RGB byte order in memory (see the module docstring)
LORES_FORMAT = "YUV420"  # planar I420; the lores format every Pi supports


class Picamera2Source:
    """A Raspberry Pi camera as a live frame source (RGB frames)."""

    live = True

    def __init__(self, *, name: str, camera_num: int = 0, width: int = 0, height: int = 0,
                 fps: float = 0.0, lores_size: tuple[int, int] | None = None,
                 read_timeout: float = 5.0) -> None:
        """``lores_size`` (width, height): deliver frames from a lores stream of that size."""
        self.name = name
        self.camera_num = camera_num
        self.width = width
        self.height = height
        self.fps = fps
        self.lores_size = lores_size
        self.read_timeout = read_timeout
        self._camera: Any = None
        self._started = False
        self._index = 0

    def configuration(self, camera: Any) -> Any:
        """The camera configuration this source asks for (see the module docstring)."""
        main: dict[str, Any] = {"format": MAIN_FORMAT}
        if self.width and self.height:
            main["size"] = (self.width, self.height)
        kwargs: dict[str, Any] = {"main": main}
        if self.lores_size is not None:
            kwargs["lores"] = {"size": tuple(self.lores_size), "format": LORES_FORMAT}
        if self.fps:
            kwargs["controls"] = {"FrameRate": float(self.fps)}
        return camera.create_video_configuration(**kwargs)

    def open(self) -> None:
        self.close()
        try:
            module = importlib.import_module("picamera2")
        except ImportError as exc:
            raise ConfigError([
                "source.kind: 'picamera2' needs the picamera2 package, which is not installed "
                f"({exc}); on Raspberry Pi OS: apt install python3-picamera2"]) from exc
        try:
            # Picamera2() raises RuntimeError (older releases: IndexError) when no
            # camera is attached; a camera can be reseated, so that is transient.
            self._camera = module.Picamera2(self.camera_num)
            self._camera.configure(self.configuration(self._camera))
            self._camera.start()
            self._started = True
        except Exception as exc:
            self.close()
            raise SourceError(f"cannot start Pi camera {self.camera_num}: {exc!r}") from exc
        log.info("picamera2: camera %d (%s) started, frames from %s", self.camera_num,
                 self._camera.camera_properties.get("Model", "unknown model"),
                 f"lores {self.lores_size}" if self.lores_size else "main")

    def read(self) -> Frame | None:
        if self._camera is None:
            raise SourceError(f"{self.name}: read before open")
        stream = "lores" if self.lores_size is not None else "main"
        try:
            # Blocks until the next frame; `wait` bounds it so a stalled camera fails the read.
            array = self._camera.capture_array(stream, wait=self.read_timeout)
        except Exception as exc:
            raise SourceError(f"Pi camera {self.camera_num}: capture failed: {exc!r}") from exc
        image = self._to_rgb(np.asarray(array))
        self._index += 1
        return stamp(image, rgb=True, source=self.name, index=self._index)

    def _to_rgb(self, array: np.ndarray) -> np.ndarray:
        if self.lores_size is None:
            if array.ndim != 3 or array.shape[2] < 3:
                raise SourceError(f"Pi camera {self.camera_num}: unexpected main array {array.shape}")
            return np.ascontiguousarray(array[:, :, :3])
        width, height = self.lores_size
        if array.ndim != 2 or array.shape[0] != height * 3 // 2 or array.shape[1] < width:
            raise SourceError(f"Pi camera {self.camera_num}: unexpected lores array {array.shape}, "
                              f"want ({height * 3 // 2}, >={width}) YUV420")
        rgb = cv2.cvtColor(array, cv2.COLOR_YUV2RGB_I420)
        # Rows may carry stride padding on the right: keep the real width.
        return np.ascontiguousarray(rgb[:, :width])

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            if self._started:
                camera.stop()
        except Exception as exc:
            log.debug("picamera2: stop failed: %r", exc)
        finally:
            self._started = False
            try:
                camera.close()
            except Exception as exc:
                log.debug("picamera2: close failed: %r", exc)
