"""The configuration tree: one frozen dataclass per TOML section, each key documented.

The defaults run as they are. ``loader.load_config`` builds this tree from TOML and
reports every problem by its key path; nothing else in the package reads raw TOML.
"""

from __future__ import annotations

import dataclasses
import re

from edge_classifier.config.fields import setting

__all__ = [
    "ClassifyConfig",
    "CommandsConfig",
    "Config",
    "DeviceConfig",
    "HomeAssistantConfig",
    "LearnConfig",
    "ModelConfig",
    "MqttConfig",
    "PublishConfig",
    "SourceConfig",
    "TlsConfig",
    "WebConfig",
]

DEFAULT_MODEL = "demo_shapes_mobilenet_v2_035_96_quant.tflite"

_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_EDGETPU_DEVICE = re.compile(r"^(|usb|pci|usb:\d+|pci:\d+)$")


def _device_id(value: str) -> str | None:
    if value == "" or _DEVICE_ID.match(value):
        return None
    return (
        f"{value!r} is not a valid device id: use 1-64 letters, digits, '.', '_' or '-' "
        "(it becomes part of MQTT topics, where '+', '#' and '/' are special)"
    )


def _edgetpu_device(value: str) -> str | None:
    if _EDGETPU_DEVICE.match(value):
        return None
    return f"must be '', 'usb', 'usb:N', 'pci' or 'pci:N', not {value!r}"


def _edgetpu_devices(value: tuple[str, ...]) -> str | None:
    for item in value:
        problem = _edgetpu_device(item)
        if problem is not None or not item:
            return f"each must be 'usb', 'usb:N', 'pci' or 'pci:N', not {item!r}"
    if len(set(value)) != len(value):
        return f"lists a device twice: {list(value)}"
    return None


def _roi(value: tuple[int, ...]) -> str | None:
    if value == ():
        return None
    if len(value) != 4:
        return f"must be empty or [x, y, width, height], not {list(value)}"
    x, y, w, h = value
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        return f"x and y must be >= 0 and width and height > 0, not {list(value)}"
    return None


def _topic_prefix(value: str) -> str | None:
    if not value or value.startswith("/") or value.endswith("/"):
        return f"must be a topic without a leading or trailing '/', not {value!r}"
    if "+" in value or "#" in value:
        return f"must not contain the wildcards '+' or '#', not {value!r}"
    return None


def _not_empty(value: str) -> str | None:
    return "must name a file, not ''" if not value.strip() else None


def _public_keys(value: tuple[str, ...]) -> str | None:
    from edge_classifier.store.signing import parse_public_key

    for item in value:
        try:
            parse_public_key(item)
        except ValueError as exc:
            return str(exc)
    return None


def _labels(value: tuple[str, ...]) -> str | None:
    if any(not label for label in value):
        return "must not contain empty labels"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceConfig:
    id: str = setting("", "This device's name in topics and results; empty means the hostname.",
                      check=_device_id)
    log_level: str = setting("info", "Log level.", choices=("debug", "info", "warning", "error"))


@dataclasses.dataclass(frozen=True, slots=True)
class SourceConfig:
    kind: str = setting("auto", "Where frames come from.",
                        choices=("auto", "picamera2", "opencv", "images", "mqtt"))
    uri: str = setting("", "opencv: index, /dev/videoN, rtsp://, http(s):// or a video file; "
                       "images: a directory or glob; mqtt: a topic filter.")
    name: str = setting("", "The source's name in results; empty means one derived from kind and uri.")
    model: str = setting("", "[[sources]] only: a model in the store (a file name in model.dir) this camera is "
                         "classified with; sources naming the same model share its interpreters. Empty means "
                         "[model].")
    fps: float = setting(0.0, "Frame-rate cap; 0 means as fast as the pipeline goes.", minimum=0)
    loop: bool = setting(False, "images and video files: start over at the end.")
    width: int = setting(0, "Requested capture width; 0 means the source's default.", minimum=0)
    height: int = setting(0, "Requested capture height; 0 means the source's default.", minimum=0)
    rotate: int = setting(0, "Rotate frames clockwise by this many degrees.", choices=(0, 90, 180, 270))
    flip: str = setting("none", "Mirror frames.", choices=("none", "horizontal", "vertical", "both"))
    roi: tuple[int, ...] = setting((), "Region of interest [x, y, width, height] in the rotated frame; "
                                   "empty means the whole frame.", check=_roi)
    stall_timeout: float = setting(5.0, "opencv devices and streams: no frame for this many seconds means the "
                                   "camera is lost (reopened).", minimum=0.1, maximum=3600)
    retry_initial: float = setting(0.5, "First wait in seconds before reopening a failed source.",
                                   minimum=0.01, maximum=3600)
    retry_max: float = setting(30.0, "Longest wait between reopen attempts (the backoff doubles up to it).",
                               minimum=0.01, maximum=3600)
    max_pixels: int = setting(40_000_000, "Largest image decoded anywhere (mqtt and images sources, learn "
                              "images, classify), in pixels, read from its header before decoding; larger "
                              "ones are refused and counted.", minimum=1, maximum=250_000_000)
    max_bytes: int = setting(16 * 1024 * 1024, "Largest encoded image (an mqtt payload, an image file, a learn "
                             "image) in bytes; larger ones are refused and counted.", minimum=1024,
                             maximum=1024 * 1024 * 1024)
    reduced_decode: bool = setting(False, "mqtt and http(s) MJPEG: decode a JPEG at 1/2, 1/4 or 1/8 scale "
                                   "(libjpeg's DCT scaling) when both sides stay at least the model input (MJPEG: "
                                   "read part by part, each with a Content-Length); several times faster on a "
                                   "1080p image, but scores move (see README); off: the reference whole decode. "
                                   "Not with rotate, flip or roi, nor model.resize other than stretch.")

    @property
    def wildcard(self) -> bool:
        """An mqtt source whose topic filter has ``+`` or ``#``: each topic it matches is a camera."""
        return self.kind == "mqtt" and any(c in self.uri for c in "+#")


@dataclasses.dataclass(frozen=True, slots=True)
class ModelConfig:
    path: str = setting(DEFAULT_MODEL, "The model: a path, or a file name inside `dir`.")
    dir: str = setting("models", "The model store directory.")
    labels: str = setting("", "A labels file; empty means the labels embedded in the model.")
    accelerator: str = setting("auto", "auto: the Edge TPU when it loads, else the CPU twin; "
                               "cpu: never the TPU; edgetpu: the TPU or exit 69.",
                               choices=("auto", "cpu", "edgetpu"))
    device: str = setting("", "Which Edge TPU: '' (any), 'usb', 'usb:N', 'pci', 'pci:N'.",
                          check=_edgetpu_device)
    devices: tuple[str, ...] = setting((), "Several Edge TPUs, e.g. ['usb:0', 'usb:1']: one worker each, frames "
                                       "spread across them (overrides `device`).", check=_edgetpu_devices)
    threads: int = setting(2, "CPU threads for inference in all: `run` gives each of its interpreters one "
                           "thread, `classify` uses one interpreter with this many.", minimum=1, maximum=64)
    interpreters: int = setting(0, "Interpreters working on alternate frames in `run`; 0 means one per "
                                "thread on the CPU and one on the Edge TPU.", minimum=0, maximum=64)
    resize: str = setting("stretch", "stretch: whole frame, bilinear (as the TFLite Task Library and "
                          "libcoral); crop: center crop; letterbox: pad to the model's aspect.",
                          choices=("stretch", "crop", "letterbox"))
    isolate: bool = setting(False, "Run CPU interpreters in supervised child processes too (the Edge TPU "
                            "always runs in one), so a crash in the runtime cannot end the daemon.")
    invoke_timeout: float = setting(5.0, "Seconds an isolated interpreter may take for one frame before it "
                                    "counts as hung and the CPU takes over.", minimum=0.1, maximum=600)
    recover_initial: float = setting(1.0, "After an Edge TPU failure, first wait in seconds before trying it "
                                     "again (doubling each time) ...", minimum=0.1, maximum=3600)
    recover_max: float = setting(60.0, "... up to this.", minimum=0.1, maximum=3600)
    watch: bool = setting(False, "Swap to a model file that appears in `dir`, without a restart.")
    max_size_mb: float = setting(64.0, "Largest model file accepted for a swap or download, in MiB.",
                                 minimum=0.001, maximum=4096)
    quarantine_dir: str = setting("", "Where downloads wait to be validated before they are moved into `dir`; "
                                  "empty means .<dir>.downloads beside `dir` (outside the store).")
    download_timeout: float = setting(600.0, "Seconds a whole model download may take.", minimum=1, maximum=86400)
    download_min_rate: int = setting(1024, "A download slower than this many bytes/s over 10 s is stopped.",
                                     minimum=0)
    file_urls: str = setting("", "A folder the `model` command may download file:// URLs from; empty "
                             "means file:// URLs are refused.")
    trusted_keys: tuple[str, ...] = setting((), "Public keys (ed25519:<base64>, from `edge-classifier models "
                                            "keygen`) whose signature (<model>.sig) a model must carry to run; "
                                            "empty means models are not signature-checked.", check=_public_keys)
    input_mean: float = setting(128.0, "Pixel normalisation the model was trained with: "
                                "real = (pixel - input_mean) / input_std.")
    input_std: float = setting(128.0, "See input_mean.", minimum=1e-6)


@dataclasses.dataclass(frozen=True, slots=True)
class ClassifyConfig:
    top_k: int = setting(3, "At most this many labels per result.", minimum=1, maximum=10000)
    threshold: float = setting(0.1, "Only labels scoring at least this.", minimum=0.0, maximum=1.0)
    allow: tuple[str, ...] = setting((), "If set, only these labels are reported.", check=_labels)
    deny: tuple[str, ...] = setting((), "These labels are never reported.", check=_labels)


@dataclasses.dataclass(frozen=True, slots=True)
class TlsConfig:
    enabled: bool = setting(False, "Connect with TLS.")
    ca_file: str = setting("", "CA certificate(s) to verify the broker with; empty means the system's CAs.")
    cert_file: str = setting("", "Client certificate, for brokers that require one (mTLS).")
    key_file: str = setting("", "The client certificate's private key.")
    insecure: bool = setting(False, "Do not check the broker's host name against its certificate (testing only).")


@dataclasses.dataclass(frozen=True, slots=True)
class MqttConfig:
    enabled: bool = setting(True, "Publish to an MQTT broker.")
    host: str = setting("localhost", "Broker host name or address.")
    port: int = setting(1883, "Broker port.", minimum=1, maximum=65535)
    topic_prefix: str = setting("edge-classifier/{device_id}", "Prefix of this device's topics.",
                                check=_topic_prefix)
    qos: int = setting(1, "QoS of results.", choices=(0, 1, 2))
    client_id: str = setting("", "MQTT client id; empty means edge-classifier-{device_id}.")
    protocol: str = setting("5", "MQTT protocol version.", choices=("5", "3.1.1"))
    keepalive: int = setting(30, "Keepalive in seconds.", minimum=5, maximum=65535)
    username: str = setting("", "User name; empty means no login.")
    password_file: str = setting("", "File holding the password (trailing newline ignored); empty means "
                                 "$CREDENTIALS_DIRECTORY/mqtt-password under systemd, else `password`.")
    password: str = setting("", "The password itself; prefer password_file.", secret=True)
    reconnect_min: float = setting(1.0, "First wait in seconds before reconnecting.", minimum=0.1, maximum=3600)
    reconnect_max: float = setting(60.0, "Longest wait between reconnects (the backoff doubles up to it).",
                                   minimum=0.1, maximum=3600)
    tls: TlsConfig = dataclasses.field(default_factory=TlsConfig)


@dataclasses.dataclass(frozen=True, slots=True)
class PublishConfig:
    mode: str = setting("every", "every: each result; change: when the top label changes.",
                        choices=("every", "change"))
    retain: bool = setting(False, "Publish results retained.")
    heartbeat: float = setting(60.0, "change mode: republish the current result after this many seconds "
                               "without a change; 0 = never.", minimum=0)
    hysteresis: float = setting(0.05, "change mode: a new top label must lead the published one by this "
                                "much of score.", minimum=0, maximum=1)
    min_interval: float = setting(0.0, "At most one result per this many seconds; 0 = no limit.", minimum=0)
    smoothing: int = setting(1, "Average scores over the last N frames before top-k; 1 = off.",
                             minimum=1, maximum=1000)
    spool_dir: str = setting("", "Keep undelivered messages on disk here (survives restarts and power "
                             "cuts); empty means in memory.")
    spool_max_messages: int = setting(0, "Undelivered messages kept at most (oldest dropped first); 0 = "
                                      "spool_max_seconds at the configured rate.", minimum=0)
    spool_max_seconds: float = setting(600.0, "With spool_max_messages = 0: keep this many seconds of results at "
                                       "source.fps (30 when 0), limited by min_interval.", minimum=1)
    spool_max_bytes: int = setting(16 * 1024 * 1024, "Undelivered bytes kept at most (oldest dropped first).",
                                   minimum=1024)
    stats_interval: float = setting(30.0, "Seconds between {prefix}/stats messages; 0 = none.", minimum=0)
    spool_spill_after: float = setting(5.0, "Disk spool: write a message to disk only when the broker has not "
                                       "acknowledged it within this many seconds (what a power cut can lose); "
                                       "0 = write every message at once.", minimum=0, maximum=3600)


@dataclasses.dataclass(frozen=True, slots=True)
class CommandsConfig:
    enabled: bool = setting(True, "Listen on {prefix}/cmd/{name}.")
    fleet: bool = setting(True, "Also listen on edge-classifier/all/cmd/{name}.")
    max_payload: int = setting(1024 * 1024, "Largest command payload in bytes (learn images count); larger ones "
                               "get an error reply.",
                               minimum=64, maximum=64 * 1024 * 1024)


@dataclasses.dataclass(frozen=True, slots=True)
class HomeAssistantConfig:
    enabled: bool = setting(False, "Publish Home Assistant MQTT discovery.")
    discovery_prefix: str = setting("homeassistant", "Home Assistant's discovery prefix.",
                                    check=_topic_prefix)
    device_discovery: bool = setting(True, "One device-based discovery message (Home Assistant 2024.11+); "
                                     "false: one per entity, for older versions.")


@dataclasses.dataclass(frozen=True, slots=True)
class LearnConfig:
    enabled: bool = setting(False, "Answer with the classes taught on the device (`edge-classifier learn`) "
                            "before the model's own labels.")
    extractor: str = setting("model", "Where embeddings come from: 'model', the classifier's own penultimate "
                             "layer (one invoke a frame; the head belongs to that model), or an embedding "
                             "extractor model: a path, or a file name inside model.dir (a second invoke a frame; "
                             "its _edgetpu twin runs on the Edge TPU).", check=_not_empty)
    head: str = setting("learned_head.json", "The learned classes file: a path, or a file name inside model.dir.",
                        check=_not_empty)
    threshold: float = setting(0.5, "A learned class answers when its calibrated score (2 * cosine - 1, "
                               "clipped to 0..1) reaches this; else the model's labels.", minimum=0.0, maximum=1.0)
    max_examples: int = setting(50, "Examples per class; beyond this a class's vector is a moving average "
                                "of its examples.", minimum=1, maximum=100000)
    alone: bool = setting(False, "Report only the learned classes: the closest one, or 'unknown' when none "
                          "reaches its threshold (else the model's labels follow a learned match).")
    max_images: int = setting(200, "Most images one `learn` command may carry (embedded off the main loop); "
                              "more are refused whole.", minimum=1, maximum=100000)
    images_timeout: float = setting(30.0, "Seconds the images of one `learn` command may take to embed; past "
                                    "it nothing is learned and the reply says so.", minimum=1, maximum=3600)


@dataclasses.dataclass(frozen=True, slots=True)
class WebConfig:
    enabled: bool = setting(False, "Serve the local web view, /metrics and the status API.")
    host: str = setting("127.0.0.1", "Address to listen on; anything but loopback needs a password.")
    port: int = setting(8080, "TCP port to listen on.", minimum=1, maximum=65535)
    username: str = setting("edge", "The user name of the HTTP Basic login (a bearer token needs none).")
    password_file: str = setting("", "File holding the password (also accepted as a bearer token); empty means "
                                 "$CREDENTIALS_DIRECTORY/web-password under systemd, else `password`.")
    password: str = setting("", "The password itself; prefer password_file.", secret=True)
    preview_fps: float = setting(4.0, "Live view: at most this many images per second to a viewer.",
                                 minimum=0.2, maximum=30)
    preview_width: int = setting(480, "Live view: images are scaled down to at most this width.",
                                 minimum=64, maximum=4096)


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    device: DeviceConfig = dataclasses.field(default_factory=DeviceConfig)
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    classify: ClassifyConfig = dataclasses.field(default_factory=ClassifyConfig)
    mqtt: MqttConfig = dataclasses.field(default_factory=MqttConfig)
    publish: PublishConfig = dataclasses.field(default_factory=PublishConfig)
    commands: CommandsConfig = dataclasses.field(default_factory=CommandsConfig)
    homeassistant: HomeAssistantConfig = dataclasses.field(default_factory=HomeAssistantConfig)
    learn: LearnConfig = dataclasses.field(default_factory=LearnConfig)
    web: WebConfig = dataclasses.field(default_factory=WebConfig)
    sources: tuple[SourceConfig, ...] = ()  # [[sources]]; empty for the one-camera [source]: config/sources.py
