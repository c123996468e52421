"""From ``[source]`` configuration to a :class:`~edge_classifier.source.base.Source`:
one explicit table of kind -> factory, and the default source name.

Default names (``source.name`` empty): ``cam0`` for the Pi camera, auto and camera
index 0 (``camN`` for index N), ``videoN`` for ``/dev/videoN``, the host for a network
stream (never its credentials), the file name for a video file, the directory name
for images, and for MQTT the topic each image arrived on.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import ConfigError
from edge_classifier.preprocess.decode import ImageLimits
from edge_classifier.source.auto import AutoSource
from edge_classifier.source.base import Source
from edge_classifier.source.images import ImageSource
from edge_classifier.source.mjpeg import MjpegSource
from edge_classifier.source.mqtt import MqttSource
from edge_classifier.source.opencv import OpenCVSource, parse_uri
from edge_classifier.source.picamera2 import Picamera2Source

__all__ = ["FACTORIES", "Factory", "open_source", "source_name"]

Factory = Callable[[SourceConfig, MqttConfig, tuple[int, int] | None], Source]


def source_name(config: SourceConfig) -> str:
    """The name results report for this source (see the module docstring)."""
    if config.name:
        return config.name
    if config.kind in ("auto", "picamera2"):
        return "cam0"
    if config.kind == "mqtt":
        return config.uri
    if config.kind == "images":
        base = config.uri.rstrip("/")
        if any(c in base for c in "*?["):
            base = os.path.dirname(base)
        return os.path.basename(base.rstrip("/")) or "images"
    kind, target = parse_uri(config.uri)
    if isinstance(target, int):
        return f"cam{target}"
    if kind == "stream":
        return urlsplit(target).hostname or "stream"
    return os.path.basename(target) or target


def _lores_size(config: SourceConfig, input_size: tuple[int, int] | None) -> tuple[int, int] | None:
    """The model input size a source may deliver frames at (the Pi camera's lores stream, a
    reduced JPEG decode), unless a transform has to see the full frame first."""
    if input_size is None or config.rotate or config.flip != "none" or config.roi:
        return None
    return input_size


def _auto(config: SourceConfig, mqtt: MqttConfig, input_size: tuple[int, int] | None) -> Source:
    return AutoSource(name=source_name(config), width=config.width, height=config.height,
                      fps=config.fps, lores_size=_lores_size(config, input_size))


def _picamera2(config: SourceConfig, mqtt: MqttConfig, input_size: tuple[int, int] | None) -> Source:
    camera = config.uri.strip()
    if camera and not camera.isdigit():
        raise ConfigError([f"source.uri: picamera2 takes a camera number, not {config.uri!r}"])
    return Picamera2Source(name=source_name(config), camera_num=int(camera or 0), width=config.width,
                           height=config.height, fps=config.fps,
                           lores_size=_lores_size(config, input_size))


def _opencv(config: SourceConfig, mqtt: MqttConfig, input_size: tuple[int, int] | None) -> Source:
    if config.reduced_decode and config.uri.strip().lower().startswith(("http://", "https://")):
        # Each JPEG part through the bounded, reduced decode (FFmpeg decodes every frame whole).
        return MjpegSource(config.uri.strip(), name=source_name(config), read_timeout=config.stall_timeout,
                           limits=ImageLimits(config.max_pixels, config.max_bytes),
                           reduce_to=_lores_size(config, input_size))
    return OpenCVSource(config.uri, name=source_name(config), loop=config.loop, width=config.width,
                        height=config.height, fps=config.fps, read_timeout=config.stall_timeout)


def _images(config: SourceConfig, mqtt: MqttConfig, input_size: tuple[int, int] | None) -> Source:
    if not config.uri:
        raise ConfigError(["source.uri: images needs a directory or a glob"])
    return ImageSource(config.uri, name=source_name(config), loop=config.loop,
                       limits=ImageLimits(config.max_pixels, config.max_bytes))


def _mqtt(config: SourceConfig, mqtt: MqttConfig, input_size: tuple[int, int] | None) -> Source:
    if not config.uri:
        raise ConfigError(["source.uri: mqtt needs a topic filter to receive images on"])
    client_id = mqtt.client_id or f"edge-classifier-{socket.gethostname()}"
    return MqttSource(config.uri, host=mqtt.host, port=mqtt.port, client_id=f"{client_id}-source",
                      name=config.name, protocol=mqtt.protocol, keepalive=mqtt.keepalive,
                      limits=ImageLimits(config.max_pixels, config.max_bytes),
                      reduce_to=_lores_size(config, input_size) if config.reduced_decode else None)


FACTORIES: dict[str, Factory] = {
    "auto": _auto,
    "picamera2": _picamera2,
    "opencv": _opencv,
    "images": _images,
    "mqtt": _mqtt,
}


def open_source(config: SourceConfig, mqtt: MqttConfig,
                input_size: tuple[int, int] | None = None) -> Source:
    """Build the source ``config`` describes; ``input_size`` is the model's (width, height).

    The source is returned unopened: ``Capture`` opens it in the capture thread, so
    a first failure is retried like any later one. Raises ``ConfigError`` for an
    unknown kind or a uri the kind cannot take.
    """
    try:
        factory = FACTORIES[config.kind]
    except KeyError:
        kinds = ", ".join(FACTORIES)
        raise ConfigError([f"source.kind: must be one of {kinds}, not {config.kind!r}"]) from None
    return factory(config, mqtt, input_size)
