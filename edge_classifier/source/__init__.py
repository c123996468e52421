"""Where frames come from: the first stage of the pipeline (source -> preprocess -> engine).

- ``base``: :class:`Frame` and the :class:`Source` protocol every backend fulfils.
- backends: ``images`` (files), ``opencv`` (cameras, streams, video files),
  ``picamera2`` (Pi camera), ``mqtt`` (images over MQTT), ``auto`` (whatever is there).
- ``registry``: :func:`open_source`, the config -> backend table.
- ``transform``: rotate, flip, roi and the fps limiter, as pure functions.
- ``capture``: :class:`Capture`, the thread that runs a source and hands frames on
  (through ``handoff``), retrying a failing source with backoff.
"""

from edge_classifier.source.base import Frame, Source
from edge_classifier.source.capture import Capture, EventCallback
from edge_classifier.source.registry import FACTORIES, open_source, source_name

__all__ = ["FACTORIES", "Capture", "EventCallback", "Frame", "Source", "open_source", "source_name"]
