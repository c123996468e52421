"""Home Assistant MQTT discovery: the config messages that make this device appear in Home Assistant.

Pure functions: they build the messages, the publisher sends them. Opt-in (``[homeassistant]
enabled``). Two layouts, the same entities and unique ids:

* device-based (the default; Home Assistant 2024.11 and later): one message on
  ``{discovery_prefix}/device/{node_id}/config`` with the ``device``, the ``origin`` and the
  entities as ``components`` (``cmps`` in HA's abbreviated examples), each with its ``platform``;
* per entity (``device_discovery = false``, for older Home Assistant): one config message per
  entity on ``{discovery_prefix}/sensor/{node_id}/{object_id}/config``.

The entities, all tied to one device:

* ``label``: the top label of each result on ``{prefix}/result`` (``none`` when nothing passed the
  threshold). Its attributes are the result's ``source`` and ``model`` only: Home Assistant's
  recorder stores a row whenever state or attributes change, and per-frame fields (``frame``,
  ``ts``, ``latency_ms``) would make one per frame;
* ``score``: the top score in percent (0 when nothing passed the threshold);
* ``fps_out`` ("FPS classified": frames classified per second, published or not),
  ``inference_p50``, ``accelerator``: diagnostics from ``{prefix}/stats``;
* with several cameras (``[[sources]]``), one label and one score entity per camera besides,
  ``{camera}_label`` and ``{camera}_score``, reading the camera's own result topic
  ``{prefix}/source/{name}/result``; their unique ids hold the camera's name. A camera no longer
  configured is removed: device-based, by its components sent with only their ``platform``
  (Home Assistant's documented way to remove a component from a device); per entity, by empty
  retained configs. The device-wide ``label`` and ``score`` stay (the newest result of any camera),
  so adding a second camera takes no entity away.

Each entity has a ``default_entity_id`` (``sensor.{node_id}_{key}``, lower case), which replaced
``object_id`` in Home Assistant 2025.10; older versions drop the unknown key.

Every entity is available while ``{prefix}/status`` says ``online`` (our Last Will says ``offline``).

Home Assistant forgets discovered entities when it restarts and announces itself with ``online`` on
``{discovery_prefix}/status`` (its birth message): the daemon then publishes discovery again
(``birth_topic``, ``is_birth``). The messages are retained as well, so a Home Assistant that
connects later still finds them; ``removal_messages`` clears them (empty retained payloads), which
removes the entities, and the device once it has none left.

Keys are spelled out in full (Home Assistant also accepts abbreviations such as ``stat_t``; they
only matter on devices short of memory). Reference: https://www.home-assistant.io/integrations/mqtt/
("MQTT Discovery") and https://www.home-assistant.io/integrations/sensor.mqtt/.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from typing import Any

from edge_classifier.publish.outbox import Message
from edge_classifier.publish.payload import encode
from edge_classifier.publish.publisher import source_level

__all__ = [
    "DEFAULT_DISCOVERY_PREFIX",
    "ORIGIN_NAME",
    "birth_topic",
    "device_topic",
    "discovery_messages",
    "is_birth",
    "migration_messages",
    "node_id",
    "removal_messages",
]

DEFAULT_DISCOVERY_PREFIX = "homeassistant"
ORIGIN_NAME = "edge-classifier"
"""Our name as Home Assistant shows it: the device's manufacturer and the discovery origin."""

BIRTH_PAYLOAD = b"online"
"""What Home Assistant publishes on ``{discovery_prefix}/status`` when its MQTT integration starts."""

_QOS = 1
_NOT_ALLOWED = re.compile(r"[^a-zA-Z0-9_-]")  # HA: node_id and object_id only from [a-zA-Z0-9_-]

# Templates are Jinja2 and see the parsed payload as ``value_json``. A result's ``top`` may be
# empty (nothing reached the threshold): the label is then "none" and the score 0. Home Assistant
# rejects states longer than 255 characters, so an unusually long label is cut there.
_LABEL_TEMPLATE = "{{ value_json.top[0].label[:255] if value_json.top else 'none' }}"
# The label's attributes: what changes with the source or a model swap, never per frame.
_ATTRIBUTES_TEMPLATE = "{{ {'source': value_json.source, 'model': value_json.model.name} | tojson }}"
_ENTITY_ID_CHARACTERS = re.compile(r"[^a-z0-9_]")  # HA entity ids: lower case, digits, underscores
_SCORE_TEMPLATE = "{{ (value_json.top[0].score * 100) | round(1) if value_json.top else 0 }}"


@dataclasses.dataclass(frozen=True, slots=True)
class _Sensor:
    """One entity: where its state comes from and what Home Assistant should make of it."""

    key: str  # the object_id in the config topic and the end of the unique_id; never change it
    name: str
    topic: str  # "result" or "stats": the daemon topic under the prefix
    value_template: str
    options: tuple[tuple[str, Any], ...] = ()


def _sensors(source_name: str) -> tuple[_Sensor, ...]:
    def named(what: str) -> str:
        return f"{source_name} {what}" if source_name else what.capitalize()

    diagnostic = ("entity_category", "diagnostic")
    return (
        _Sensor("label", named("label"), "result", _LABEL_TEMPLATE,
                (("icon", "mdi:tag-outline"), ("json_attributes_topic", "result"),
                 ("json_attributes_template", _ATTRIBUTES_TEMPLATE))),
        _Sensor("score", named("score"), "result", _SCORE_TEMPLATE,
                (("icon", "mdi:percent"), ("unit_of_measurement", "%"), ("state_class", "measurement"),
                 ("suggested_display_precision", 1))),
        # A null in the stats renders as "None", which Home Assistant takes as "unknown".
        _Sensor("fps_out", "FPS classified", "stats", "{{ value_json.fps_classified }}",
                (("icon", "mdi:speedometer"), ("unit_of_measurement", "fps"), ("state_class", "measurement"),
                 ("suggested_display_precision", 1), diagnostic)),
        _Sensor("inference_p50", "Inference p50", "stats", "{{ value_json.inference_ms_p50 }}",
                (("icon", "mdi:timer-outline"), ("unit_of_measurement", "ms"), ("state_class", "measurement"),
                 ("suggested_display_precision", 1), diagnostic)),
        _Sensor("accelerator", "Accelerator", "stats", "{{ value_json.accelerator }}",
                (("icon", "mdi:chip"), diagnostic)),
    )


def _camera_sensors(camera: str) -> tuple[_Sensor, ...]:
    """The label and score of one camera, from its own result topic."""
    label, score = _sensors(camera)[:2]
    key, topic = node_id(camera), f"source/{source_level(camera)}/result"
    options = tuple((k, f"source/{source_level(camera)}/result" if k == "json_attributes_topic" else v)
                    for k, v in label.options)
    return (dataclasses.replace(label, key=f"{key}_label", topic=topic, options=options),
            dataclasses.replace(score, key=f"{key}_score", topic=topic))


def _all_sensors(source_name: str, cameras: tuple[str, ...]) -> tuple[_Sensor, ...]:
    return _sensors(source_name) + tuple(s for camera in cameras for s in _camera_sensors(camera))


def node_id(device_id: str) -> str:
    """``device_id`` in the characters Home Assistant allows in a discovery topic ([a-zA-Z0-9_-]).

    Any other character becomes ``_``; the id then gets a short hash of the original, so ids that
    differ only in replaced characters (``pi.kitchen``, ``pi kitchen``) stay apart. Ids already
    valid are kept as they are.
    """
    if not device_id:
        raise ValueError("Invalid device id: must not be empty")
    safe = _NOT_ALLOWED.sub("_", device_id)
    if safe == device_id:
        return safe
    return f"{safe}_{hashlib.sha256(device_id.encode('utf-8')).hexdigest()[:8]}"


def birth_topic(discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX) -> str:
    """Where Home Assistant announces itself (``online``) and its Last Will (``offline``)."""
    _check_topic_prefix("discovery prefix", discovery_prefix)
    return f"{discovery_prefix}/status"


def is_birth(payload: bytes) -> bool:
    """True for Home Assistant's birth message: discovery must then be published again."""
    return payload.strip() == BIRTH_PAYLOAD


def discovery_messages(
    *,
    device_id: str,
    prefix: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    model_name: str,
    sw_version: str,
    source_name: str = "",
    device_based: bool = True,
    cameras: tuple[str, ...] = (),
    gone: tuple[str, ...] = (),
) -> list[Message]:
    """The retained discovery messages of this device (compact JSON, QoS 1): one device-based
    message, or with ``device_based=False`` one per entity.

    ``cameras`` (the ``[[sources]]`` names) get a label and a score entity each; the entities of
    the cameras in ``gone`` (announced before, configured no more) are removed.

    ``prefix`` is the daemon's topic prefix (``{device_id}`` already filled in); ``model_name``
    becomes the device's model (publish again when the model changes); ``source_name``, if given,
    names the label and score entities (``Kitchen door label``). Topics and unique ids depend only
    on ``device_id`` and ``discovery_prefix``, so entities survive renames and model swaps.
    """
    _check_topic_prefix("topic prefix", prefix)
    node = node_id(device_id)
    device: dict[str, Any] = {
        "identifiers": [f"{ORIGIN_NAME}_{node}"],
        "name": device_id,
        "manufacturer": ORIGIN_NAME,
        "model": model_name or ORIGIN_NAME,
    }
    origin: dict[str, Any] = {"name": ORIGIN_NAME}
    if sw_version:
        device["sw_version"] = sw_version
        origin["sw_version"] = sw_version
    availability = [{"topic": f"{prefix}/status", "payload_available": "online", "payload_not_available": "offline"}]
    entities = {sensor.key: _entity(sensor, node, prefix) for sensor in _all_sensors(source_name, cameras)}
    removed = [s.key for camera in gone if camera not in cameras for s in _camera_sensors(camera)]
    if device_based:
        components = {key: {"platform": "sensor", **entity} for key, entity in entities.items()}
        components |= {key: {"platform": "sensor"} for key in removed}  # [MQTT]: removes the component
        config = {"device": device, "origin": origin, "availability": availability, "qos": _QOS,
                  "components": components}
        return [Message(device_topic(discovery_prefix, node), encode(config), _QOS, retain=True)]
    return [Message(_config_topic(discovery_prefix, node, key),
                    encode({**entity, "availability": availability, "device": device, "origin": origin}),
                    _QOS, retain=True)
            for key, entity in entities.items()] + \
        [Message(_config_topic(discovery_prefix, node, key), b"", _QOS, retain=True) for key in removed]


def _entity(sensor: _Sensor, node: str, prefix: str) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": sensor.name,
        "unique_id": f"{ORIGIN_NAME}_{node}_{sensor.key}",
        "default_entity_id": "sensor." + _ENTITY_ID_CHARACTERS.sub("_", f"{node}_{sensor.key}".lower()),
        "state_topic": f"{prefix}/{sensor.topic}",
        "value_template": sensor.value_template,
    }
    for key, value in sensor.options:
        config[key] = f"{prefix}/{value}" if key.endswith("_topic") else value
    return config


def device_topic(discovery_prefix: str, node: str) -> str:
    """Where the device-based discovery message of ``node`` goes."""
    _check_topic_prefix("discovery prefix", discovery_prefix)
    return f"{discovery_prefix}/device/{node}/config"


def migration_messages(*, device_id: str, discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
                       from_device_based: bool = False) -> list[Message]:
    """Home Assistant's documented hand-over between the layouts: ``{"migrate_discovery": true}``
    on the old layout's topics, before the new layout's config and then the old topics' removal.
    Home Assistant then keeps the entities (ids, names, history) instead of deleting and
    re-creating them."""
    node = node_id(device_id)
    topics = [device_topic(discovery_prefix, node)] if from_device_based else \
        [_config_topic(discovery_prefix, node, sensor.key) for sensor in _sensors("")]
    return [Message(topic, encode({"migrate_discovery": True}), _QOS, retain=False) for topic in topics]


def removal_messages(
    *,
    device_id: str,
    prefix: str,
    discovery_prefix: str = DEFAULT_DISCOVERY_PREFIX,
    model_name: str = "",
    sw_version: str = "",
    source_name: str = "",
    device_based: bool = True,
    cameras: tuple[str, ...] = (),
) -> list[Message]:
    """Empty retained payloads on every discovery topic of the layout: Home Assistant removes the
    entities (and the device when none is left) and the broker forgets the retained configs.

    Takes the same arguments as ``discovery_messages``; only ``device_id``, ``discovery_prefix``,
    ``device_based`` and (per entity) ``cameras`` matter.
    """
    _check_topic_prefix("topic prefix", prefix)
    node = node_id(device_id)
    if device_based:
        return [Message(device_topic(discovery_prefix, node), b"", _QOS, retain=True)]
    return [Message(_config_topic(discovery_prefix, node, sensor.key), b"", _QOS, retain=True)
            for sensor in _all_sensors(source_name, cameras)]


def _config_topic(discovery_prefix: str, node: str, object_id: str) -> str:
    _check_topic_prefix("discovery prefix", discovery_prefix)
    return f"{discovery_prefix}/sensor/{node}/{object_id}/config"


def _check_topic_prefix(what: str, value: str) -> None:
    if not value or value.startswith("/") or value.endswith("/") or "+" in value or "#" in value:
        raise ValueError(f"Invalid {what}: {value!r} (a topic without wildcards or a leading or trailing '/')")
