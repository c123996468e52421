"""Home Assistant MQTT discovery: every message checked against HA's documented discovery schema.

The schema below is written down from Home Assistant's documentation, each rule with the page it
comes from:
  [MQTT]   https://www.home-assistant.io/integrations/mqtt/ ("MQTT Discovery": discovery topic,
           discovery payload, origin, supported abbreviations, birth messages, availability)
  [SENSOR] https://www.home-assistant.io/integrations/sensor.mqtt/ (the sensor's configuration
           variables and its `device` block)
  [STATE]  https://developers.home-assistant.io/docs/core/entity/sensor/ (state classes)
The templates are rendered with real Jinja2 (Home Assistant's template engine) against payloads
made by the daemon's own encoder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import numpy as np
import pytest

from edge_classifier.engine.interpreter import ModelInfo, TensorInfo
from edge_classifier.publish import homeassistant
from edge_classifier.publish.outbox import Message
from edge_classifier.publish.payload import encode, result_payload
from edge_classifier.results import Classification, Prediction
from edge_classifier.source.base import Frame

# --- the schema, as documented ----------------------------------------------------------------

# [MQTT] "Discovery topic": <discovery_prefix>/<component>/[<node_id>/]<object_id>/config, node_id
# and object_id "must only consist of characters from the character class [a-zA-Z0-9_-]".
TOPIC_RE = r"^{prefix}/(sensor)/(?:[a-zA-Z0-9_-]+/)?[a-zA-Z0-9_-]+/config$"

# [SENSOR] configuration variables of an MQTT sensor (`platform` only in device-based discovery);
# [MQTT] "Discovery payload" adds `origin` and the base topic `~`. `default_entity_id` replaced
# `object_id` (HA 2025.10: "object_id is deprecated, use default_entity_id"); we must not send
# the deprecated one.
SENSOR_KEYS = frozenset({
    "availability", "availability_mode", "availability_template", "availability_topic", "device",
    "device_class", "enabled_by_default", "encoding", "entity_category", "entity_picture", "expire_after",
    "force_update", "icon", "json_attributes_template", "json_attributes_topic", "last_reset_value_template",
    "name", "default_entity_id", "options", "payload_available", "payload_not_available",
    "suggested_display_precision", "qos", "state_class", "state_topic", "unique_id", "unit_of_measurement",
    "value_template", "origin", "~",
})
# [SENSOR] default_entity_id: "for example sensor.foobar": the platform, a dot, a lower-case slug.
DEFAULT_ENTITY_ID_RE = r"^sensor\.[a-z0-9_]+$"
SENSOR_REQUIRED = frozenset({"state_topic"})  # [SENSOR] state_topic: required: true
# [SENSOR] device: "Only works when unique_id is set. At least one of identifiers or connections
# must be present to identify the device."
DEVICE_KEYS = frozenset({
    "configuration_url", "connections", "hw_version", "identifiers", "manufacturer", "model", "model_id",
    "name", "serial_number", "suggested_area", "sw_version", "via_device",
})
DEVICE_ONE_OF = frozenset({"identifiers", "connections"})
# [MQTT] "Discovery payload": origin `name` (Required), `sw_version`, `support_url`.
ORIGIN_KEYS = frozenset({"name", "sw_version", "support_url"})
ORIGIN_REQUIRED = frozenset({"name"})
# [MQTT] / [SENSOR] availability: a list of {topic (required), payload_available,
# payload_not_available, value_template}; "Must not be used together with availability_topic".
AVAILABILITY_KEYS = frozenset({"topic", "payload_available", "payload_not_available", "value_template"})
AVAILABILITY_REQUIRED = frozenset({"topic"})
# [SENSOR] entity_category: "When set, the entity category must be `diagnostic` for sensors."
SENSOR_ENTITY_CATEGORIES = frozenset({"diagnostic"})
# [STATE] state classes (measurement_angle came later; listed so the check does not lag HA).
STATE_CLASSES = frozenset({"measurement", "measurement_angle", "total", "total_increasing"})
# [MQTT] "Supported abbreviations" (the ones a sensor config can use) and those of the device and
# origin blocks; HA expands them before validating, and so does `expand` below.
ABBREVIATIONS = {
    "avty": "availability", "avty_mode": "availability_mode", "avty_t": "availability_topic",
    "avty_tpl": "availability_template", "dev": "device", "dev_cla": "device_class", "e": "encoding",
    "en": "enabled_by_default", "ent_cat": "entity_category", "ent_pic": "entity_picture",
    "exp_aft": "expire_after", "frc_upd": "force_update", "ic": "icon", "json_attr_t": "json_attributes_topic",
    "json_attr_tpl": "json_attributes_template", "lrst_val_tpl": "last_reset_value_template", "o": "origin",
    "ops": "options", "cmps": "components", "p": "platform", "pl_avail": "payload_available",
    "pl_not_avail": "payload_not_available", "stat_cla": "state_class", "stat_t": "state_topic",
    "sug_dsp_prc": "suggested_display_precision", "t": "topic", "uniq_id": "unique_id",
    "unit_of_meas": "unit_of_measurement", "val_tpl": "value_template",
}
DEVICE_ABBREVIATIONS = {
    "cu": "configuration_url", "cns": "connections", "ids": "identifiers", "mf": "manufacturer", "mdl": "model",
    "mdl_id": "model_id", "hw": "hw_version", "sw": "sw_version", "sa": "suggested_area", "sn": "serial_number",
}
ORIGIN_ABBREVIATIONS = {"sw": "sw_version", "url": "support_url"}
# [MQTT] "Birth and last will messages": "By default, Home Assistant sends online and offline to
# homeassistant/status."
BIRTH_TOPIC, BIRTH, WILL = "homeassistant/status", b"online", b"offline"


def expand(config: dict[str, Any]) -> dict[str, Any]:
    """Abbreviated keys to full names, as Home Assistant does before validating."""
    full = {ABBREVIATIONS.get(key, key): value for key, value in config.items()}
    if isinstance(full.get("device"), dict):
        full["device"] = {DEVICE_ABBREVIATIONS.get(k, k): v for k, v in full["device"].items()}
    if isinstance(full.get("origin"), dict):
        full["origin"] = {ORIGIN_ABBREVIATIONS.get(k, k): v for k, v in full["origin"].items()}
    if isinstance(full.get("availability"), list):
        full["availability"] = [{ABBREVIATIONS.get(k, k): v for k, v in item.items()}
                                for item in full["availability"]]
    return full


def problems(message: Message, discovery_prefix: str = "homeassistant") -> list[str]:
    """Every way ``message`` breaks the documented schema of an MQTT sensor discovery config."""
    found = []
    if not re.match(TOPIC_RE.format(prefix=re.escape(discovery_prefix)), message.topic):
        found.append(f"topic {message.topic!r}")
    # [MQTT] "Discovery payload": discovery messages can be retained so HA finds them after a restart.
    if not message.retain:
        found.append("not retained")
    raw = json.loads(message.payload)  # [MQTT] "The payload must be a serialized JSON dictionary"
    if not isinstance(raw, dict):
        return [*found, "payload is not a JSON object"]
    config = expand(raw)
    found += [f"unknown key {key!r}" for key in config.keys() - SENSOR_KEYS]
    found += [f"missing {key!r}" for key in SENSOR_REQUIRED - config.keys()]
    if "device" in config:
        device = config["device"]
        found += [f"unknown device key {key!r}" for key in device.keys() - DEVICE_KEYS]
        if not DEVICE_ONE_OF & device.keys():
            found.append("device without identifiers or connections")
        if "unique_id" not in config:
            found.append("device without unique_id")
        # [MQTT] "Naming of MQTT Entities": the friendly name is prefixed with the device name.
        name = config.get("name")
        if isinstance(name, str) and device.get("name") and name.lower().startswith(device["name"].lower()):
            found.append(f"entity name {name!r} repeats the device name")
    if "origin" in config:
        found += [f"unknown origin key {key!r}" for key in config["origin"].keys() - ORIGIN_KEYS]
        found += [f"origin missing {key!r}" for key in ORIGIN_REQUIRED - config["origin"].keys()]
    if "availability" in config:
        if "availability_topic" in config:
            found.append("availability together with availability_topic")
        if not isinstance(config["availability"], list):
            found.append("availability is not a list")
        else:
            for item in config["availability"]:
                found += [f"unknown availability key {key!r}" for key in item.keys() - AVAILABILITY_KEYS]
                found += [f"availability missing {key!r}" for key in AVAILABILITY_REQUIRED - item.keys()]
    if "entity_category" in config and config["entity_category"] not in SENSOR_ENTITY_CATEGORIES:
        found.append(f"entity_category {config['entity_category']!r}")
    if "state_class" in config and config["state_class"] not in STATE_CLASSES:
        found.append(f"state_class {config['state_class']!r}")
    # [SENSOR] options: "cannot be used together with state_class or unit_of_measurement";
    # last_reset_value_template: "the state_class option must be total".
    if "options" in config and {"state_class", "unit_of_measurement"} & config.keys():
        found.append("options together with state_class or unit_of_measurement")
    if "last_reset_value_template" in config and config.get("state_class") != "total":
        found.append("last_reset_value_template without state_class total")
    if "default_entity_id" in config and not re.match(DEFAULT_ENTITY_ID_RE, config["default_entity_id"]):
        found.append(f"default_entity_id {config['default_entity_id']!r}")
    return found


# [MQTT] "Device discovery payload" (HA 2024.11+): topic <discovery_prefix>/device/<object_id>/config;
# `device` (required, as above), `origin` (required for device-based discovery), `components`
# (`cmps`, required): each keyed by a component id, with `platform` (`p`, required) and the
# platform's options; a `unique_id` is required for each component. Options shared by all
# components may sit at the top level: availability*, payload_(not_)available, state_topic,
# command_topic, qos, encoding.
DEVICE_TOPIC_RE = r"^{prefix}/device/[a-zA-Z0-9_-]+/config$"
DEVICE_PAYLOAD_KEYS = frozenset({
    "device", "origin", "components", "availability", "availability_mode", "availability_template",
    "availability_topic", "payload_available", "payload_not_available", "state_topic", "command_topic", "qos",
    "encoding", "~",
})
PLATFORMS = frozenset({"sensor"})  # the only platform we announce (HA supports many more)


def device_problems(message: Message, discovery_prefix: str = "homeassistant") -> list[str]:
    """Every way ``message`` breaks the documented schema of a device-based discovery message."""
    found = []
    if not re.match(DEVICE_TOPIC_RE.format(prefix=re.escape(discovery_prefix)), message.topic):
        found.append(f"topic {message.topic!r}")
    if not message.retain:
        found.append("not retained")
    raw = json.loads(message.payload)
    if not isinstance(raw, dict):
        return [*found, "payload is not a JSON object"]
    config = expand(raw)
    found += [f"unknown key {key!r}" for key in config.keys() - DEVICE_PAYLOAD_KEYS]
    found += [f"missing {key!r}" for key in ("device", "origin", "components") if key not in config]
    components = config.get("components")
    if not isinstance(components, dict) or not components:
        return [*found, "components is not a non-empty object"]
    for key, component in components.items():
        component = expand(component)
        if not re.fullmatch(r"[a-zA-Z0-9_-]+", key):
            found.append(f"component id {key!r}")
        if component.get("platform") not in PLATFORMS:
            found.append(f"{key}: platform {component.get('platform')!r}")
        # [MQTT] "Device discovery payload": a component sent with only its platform is removed
        # from the device.
        if set(component) == {"platform"}:
            continue
        if "unique_id" not in component:
            found.append(f"{key}: no unique_id")
        # Checked as a single-component config with the shared device, origin and availability.
        shared = {k: config[k] for k in ("device", "origin", "availability") if k in config}
        single = {k: v for k, v in component.items() if k != "platform"} | shared
        retained = Message(f"{discovery_prefix}/sensor/x/component/config", encode(single), 1, True)
        found += [f"{key}: {problem}" for problem in problems(retained, discovery_prefix)]
    return found


# --- what the daemon publishes ------------------------------------------------------------------

# The per-entity layout (`device_discovery = false`); DEVICE_ARGS for the device-based default.
ARGS: dict[str, Any] = {
    "device_id": "pi-kitchen", "prefix": "edge-classifier/pi-kitchen",
    "model_name": "mobilenet_v2_1.0_224_quant", "sw_version": "0.1.0", "device_based": False,
}
DEVICE_ARGS = {**ARGS, "device_based": True}


def configs(messages: list[Message]) -> dict[str, dict[str, Any]]:
    """object_id (the topic's last level before /config) -> parsed config."""
    return {m.topic.split("/")[-2]: json.loads(m.payload) for m in messages}


def result(top: tuple[Prediction, ...]) -> bytes:
    """A result exactly as the daemon encodes it (CONTRACT.md "Result payload")."""
    tensor = TensorInfo(shape=(1, 224, 224, 3), dtype=np.uint8, scale=1.0, zero_point=0)
    model = ModelInfo(name="mobilenet_v2_1.0_224_quant", path=Path("m.tflite"), sha256="0" * 64, accelerator="cpu",
                      requested=Path("m.tflite"), fallback=None, runtime="test", input=tensor,
                      output=TensorInfo(shape=(1, 1001), dtype=np.uint8, scale=1 / 256, zero_point=0), threads=1)
    frame = Frame(image=np.zeros((4, 4, 3), np.uint8), rgb=True, source="cam0", index=1234, captured=10.0,
                  timestamp=1_700_000_000.123)
    return encode(result_payload("pi-kitchen", frame, Classification(top, model, 3.2, 5.0), now=10.005))


CAT = (Prediction(286, "Egyptian cat", 0.84), Prediction(282, "tabby, tabby cat", 0.094))
STATS = {"schema": 1, "device": "pi-kitchen", "fps_in": 15.02, "fps_out": 0.5, "fps_classified": 14.98, "dropped": 0,
         "inference_ms_p50": 3.21, "inference_ms_p95": 4.5, "accelerator": "edgetpu", "model": "m",
         "uptime_s": 12.5, "spool_depth": 0, "rss_mb": 80.1, "cpu_temp_c": None}


def render(template: str, payload: bytes) -> str:
    """Render like Home Assistant: Jinja2, sandboxed, ``value`` the payload text, ``value_json`` parsed.
    StrictUndefined: a template that reaches for a missing key fails here instead of rendering ''."""
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    text = payload.decode("utf-8")
    return env.from_string(template).render(value=text, value_json=json.loads(text)).strip()


# --- tests --------------------------------------------------------------------------------------

def test_every_discovery_message_conforms_to_the_documented_schema() -> None:
    messages = homeassistant.discovery_messages(**ARGS)
    assert len(messages) == 5
    for message in messages:
        assert problems(message) == [], message.topic
        assert message.qos == 1 and message.retain


def test_a_custom_discovery_prefix_and_a_source_name_conform_too() -> None:
    messages = homeassistant.discovery_messages(**ARGS, discovery_prefix="ha/discovery", source_name="Front door")
    for message in messages:
        assert problems(message, "ha/discovery") == [], message.topic
    assert configs(messages)["label"]["name"] == "Front door label"


def test_the_schema_check_catches_what_it_is_meant_to() -> None:
    bad = {"stat_t": "x", "ent_cat": "config", "stat_cla": "average", "bogus": 1, "dev": {"name": "d"},
           "o": {"sw": "1"}, "avty": [{"pl_avail": "up"}], "availability_topic": "y"}
    found = problems(Message("homeassistant/sensor/a.b/c/config", json.dumps(bad).encode(), 1, False))
    assert sorted(found) == sorted([
        "topic 'homeassistant/sensor/a.b/c/config'", "not retained", "unknown key 'bogus'",
        "device without identifiers or connections", "device without unique_id", "origin missing 'name'",
        "availability together with availability_topic", "availability missing 'topic'",
        "entity_category 'config'", "state_class 'average'",
    ])


def test_payloads_are_compact_json_with_full_key_names() -> None:
    for message in homeassistant.discovery_messages(**ARGS):
        config = json.loads(message.payload)
        assert message.payload == json.dumps(config, ensure_ascii=False, separators=(",", ":")).encode()
        for block in (config, config["device"], config["origin"], *config["availability"]):
            assert not block.keys() & (ABBREVIATIONS.keys() | DEVICE_ABBREVIATIONS.keys() | ORIGIN_ABBREVIATIONS.keys())


def test_one_device_with_origin_and_availability_from_the_status_topic() -> None:
    found = configs(homeassistant.discovery_messages(**ARGS))
    device = {"identifiers": ["edge-classifier_pi-kitchen"], "name": "pi-kitchen", "manufacturer": "edge-classifier",
              "model": "mobilenet_v2_1.0_224_quant", "sw_version": "0.1.0"}
    for config in found.values():
        assert config["device"] == device
        assert config["origin"] == {"name": "edge-classifier", "sw_version": "0.1.0"}
        assert config["availability"] == [{"topic": "edge-classifier/pi-kitchen/status",
                                           "payload_available": "online", "payload_not_available": "offline"}]
    assert configs(homeassistant.discovery_messages(**{**ARGS, "model_name": ""}))["label"]["device"]["model"] \
        == "edge-classifier"


def test_the_entities() -> None:
    found = configs(homeassistant.discovery_messages(**ARGS))
    assert set(found) == {"label", "score", "fps_out", "inference_p50", "accelerator"}
    result_topic = "edge-classifier/pi-kitchen/result"
    assert found["label"]["state_topic"] == found["label"]["json_attributes_topic"] == result_topic
    assert found["score"]["state_topic"] == "edge-classifier/pi-kitchen/result"
    assert found["score"]["unit_of_measurement"] == "%" and found["score"]["state_class"] == "measurement"
    for key in ("fps_out", "inference_p50", "accelerator"):
        assert found[key]["state_topic"] == "edge-classifier/pi-kitchen/stats"
        assert found[key]["entity_category"] == "diagnostic"
    for key in ("label", "score"):
        assert "entity_category" not in found[key]
    assert found["inference_p50"]["unit_of_measurement"] == "ms"


def test_unique_ids_are_unique_and_stable() -> None:
    first = homeassistant.discovery_messages(**ARGS)
    ids = [json.loads(m.payload)["unique_id"] for m in first]
    assert len(set(ids)) == len(ids)
    assert len({m.topic for m in first}) == len(first)
    # The same on every call, and untouched by what may change over a device's life.
    again = homeassistant.discovery_messages(**{**ARGS, "model_name": "efficientnet", "sw_version": "0.2.0"},
                                             source_name="Garden")
    assert [json.loads(m.payload)["unique_id"] for m in again] == ids
    assert [m.topic for m in again] == [m.topic for m in first]
    assert homeassistant.discovery_messages(**ARGS) == first
    other = homeassistant.discovery_messages(**{**ARGS, "device_id": "pi-garden"})
    assert not {json.loads(m.payload)["unique_id"] for m in other} & set(ids)


def test_label_and_score_templates_on_a_real_result() -> None:
    found = configs(homeassistant.discovery_messages(**ARGS))
    payload = result(CAT)
    assert render(found["label"]["value_template"], payload) == "Egyptian cat"
    assert float(render(found["score"]["value_template"], payload)) == pytest.approx(84.0)
    assert float(render(found["score"]["value_template"], result(CAT[1:]))) == pytest.approx(9.4)


def test_label_and_score_templates_when_nothing_passed_the_threshold() -> None:
    found = configs(homeassistant.discovery_messages(**ARGS))
    payload = result(())
    assert json.loads(payload)["top"] == []
    assert render(found["label"]["value_template"], payload) == "none"
    assert float(render(found["score"]["value_template"], payload)) == 0


def test_a_label_longer_than_a_home_assistant_state_is_cut() -> None:
    template = configs(homeassistant.discovery_messages(**ARGS))["label"]["value_template"]
    assert render(template, result((Prediction(1, "x" * 300, 0.5),))) == "x" * 255


def test_stats_templates() -> None:
    found = configs(homeassistant.discovery_messages(**ARGS))
    stats = json.dumps(STATS).encode()
    assert float(render(found["fps_out"]["value_template"], stats)) == pytest.approx(14.98)
    assert float(render(found["inference_p50"]["value_template"], stats)) == pytest.approx(3.21)
    assert render(found["accelerator"]["value_template"], stats) == "edgetpu"
    # No inference in the interval: p50 is null, rendered "None", which HA's MQTT sensor takes as unknown.
    idle = json.dumps({**STATS, "inference_ms_p50": None}).encode()
    assert render(found["inference_p50"]["value_template"], idle) == "None"


def test_removal_messages_are_empty_retained_and_on_the_same_topics() -> None:
    for args in (ARGS, {**ARGS, "device_id": "Pi Kitchen #2"}):
        shown = homeassistant.discovery_messages(**args)
        removed = homeassistant.removal_messages(**args)
        assert [m.topic for m in removed] == [m.topic for m in shown]
        assert all(m.payload == b"" and m.retain and m.qos == 1 for m in removed)
    # Only the device id and the discovery prefix matter: removal needs no model or version.
    assert homeassistant.removal_messages(device_id="pi-kitchen", prefix="edge-classifier/pi-kitchen",
                                          device_based=False) == homeassistant.removal_messages(**ARGS)


@pytest.mark.parametrize("device_id", ["pi.kitchen", "pi kitchen", "Küche", "a/b", "a+b#c", "x" * 3 + "$"])
def test_a_device_id_with_characters_home_assistant_forbids_is_sanitised(device_id: str) -> None:
    messages = homeassistant.discovery_messages(**{**ARGS, "device_id": device_id})
    for message in messages:
        assert problems(message) == [], message.topic
    node = homeassistant.node_id(device_id)
    assert re.fullmatch(r"[a-zA-Z0-9_-]+", node)
    config = configs(messages)["label"]
    assert config["device"]["name"] == device_id  # people still see their own name
    assert config["unique_id"] == f"edge-classifier_{node}_label"


def test_sanitised_ids_stay_apart_and_valid_ids_stay_as_they_are() -> None:
    assert homeassistant.node_id("pi-kitchen_2") == "pi-kitchen_2"
    assert homeassistant.node_id("pi.kitchen") != homeassistant.node_id("pi kitchen")
    assert homeassistant.node_id("pi.kitchen") != homeassistant.node_id("pi_kitchen")
    assert homeassistant.node_id("pi.kitchen") == homeassistant.node_id("pi.kitchen")


@pytest.mark.parametrize(("field", "value"), [("device_id", ""), ("prefix", ""), ("prefix", "a/+/b"),
                                              ("discovery_prefix", "ha/#"), ("discovery_prefix", "/ha")])
def test_bad_arguments_are_refused_naming_the_value(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        homeassistant.discovery_messages(**{**ARGS, field: value})


def test_birth_message() -> None:
    assert homeassistant.birth_topic() == BIRTH_TOPIC
    assert homeassistant.birth_topic("ha/discovery") == "ha/discovery/status"
    assert homeassistant.is_birth(BIRTH)
    assert homeassistant.is_birth(b"online\n")
    assert not homeassistant.is_birth(WILL)
    assert not homeassistant.is_birth(b"")


# --- device-based discovery, entity ids, attributes -----------------------------------------------

def test_device_based_discovery_is_one_message_that_conforms_to_the_documented_schema() -> None:
    messages = homeassistant.discovery_messages(**DEVICE_ARGS)
    assert len(messages) == 1
    message = messages[0]
    assert message.topic == "homeassistant/device/pi-kitchen/config"
    assert device_problems(message) == []
    assert message.qos == 1 and message.retain
    custom = homeassistant.discovery_messages(**DEVICE_ARGS, discovery_prefix="ha/discovery", source_name="Door")
    assert device_problems(custom[0], "ha/discovery") == []


def test_the_device_schema_check_catches_what_it_is_meant_to() -> None:
    bad = {"dev": {"name": "d"}, "cmps": {"a.b": {"p": "light", "stat_t": "x"}, "ok": {"stat_t": "y", "uniq_id": "u"}},
           "bogus": 1}
    found = device_problems(Message("homeassistant/device/a.b/config", json.dumps(bad).encode(), 1, False))
    assert sorted(found) == sorted([
        "topic 'homeassistant/device/a.b/config'", "not retained", "unknown key 'bogus'", "missing 'origin'",
        "component id 'a.b'", "a.b: platform 'light'", "a.b: no unique_id", "ok: platform None",
        "a.b: device without identifiers or connections", "a.b: device without unique_id",
        "ok: device without identifiers or connections",
    ])


def test_both_layouts_announce_the_same_entities() -> None:
    device = json.loads(homeassistant.discovery_messages(**DEVICE_ARGS)[0].payload)
    entities = configs(homeassistant.discovery_messages(**ARGS))
    assert set(device["components"]) == set(entities)
    for key, component in device["components"].items():
        assert component.pop("platform") == "sensor"
        single = {k: v for k, v in entities[key].items() if k not in ("device", "origin", "availability")}
        assert component == single
    for key in ("device", "origin", "availability"):
        assert device[key] == entities["label"][key]


def test_default_entity_ids_replace_object_id_and_are_valid_and_unique() -> None:
    for device_id in ("pi-kitchen", "Pi Kitchen #2"):
        found = configs(homeassistant.discovery_messages(**{**ARGS, "device_id": device_id}))
        ids = [config["default_entity_id"] for config in found.values()]
        assert all(re.match(DEFAULT_ENTITY_ID_RE, entity_id) for entity_id in ids), ids
        assert len(set(ids)) == len(ids)
        assert not any("object_id" in config for config in found.values())
    assert configs(homeassistant.discovery_messages(**ARGS))["label"]["default_entity_id"] == "sensor.pi_kitchen_label"


def test_label_attributes_change_only_with_what_a_person_cares_about() -> None:
    """HA's recorder writes a row whenever state or attributes change: frame, ts and latency
    (new every frame) must not be attributes."""
    label = configs(homeassistant.discovery_messages(**ARGS))["label"]
    template = label["json_attributes_template"]
    first = json.loads(render(template, result(CAT)))
    later = json.loads(result(CAT))
    later.update(frame=99999, ts="2030-01-01T00:00:00.000Z", latency_ms={"inference": 9.9, "total": 99.0})
    assert json.loads(render(template, encode(later))) == first == {"source": "cam0",
                                                                    "model": "mobilenet_v2_1.0_224_quant"}
    swapped = {**later, "model": {**later["model"], "name": "efficientnet"}}
    assert json.loads(render(template, encode(swapped)))["model"] == "efficientnet"


def test_fps_classified_is_frames_classified_not_results_published() -> None:
    sensor = configs(homeassistant.discovery_messages(**ARGS))["fps_out"]
    assert sensor["name"] == "FPS classified"
    assert float(render(sensor["value_template"], json.dumps(STATS).encode())) == STATS["fps_classified"]


def test_migration_messages_hand_the_entities_over_between_layouts() -> None:
    to_device = homeassistant.migration_messages(device_id="pi-kitchen")
    assert [m.topic for m in to_device] == [m.topic for m in homeassistant.discovery_messages(**ARGS)]
    assert {m.payload for m in to_device} == {b'{"migrate_discovery":true}'}
    back = homeassistant.migration_messages(device_id="pi-kitchen", from_device_based=True)
    assert [m.topic for m in back] == ["homeassistant/device/pi-kitchen/config"]
    removed = homeassistant.removal_messages(**DEVICE_ARGS)
    assert [(m.topic, m.payload, m.retain) for m in removed] == [("homeassistant/device/pi-kitchen/config", b"", True)]


# --- one label and score entity per camera ([[sources]]) ----------------------------------------

def test_each_camera_gets_a_label_and_a_score_that_conform_and_read_its_own_topic() -> None:
    for layout in (ARGS, DEVICE_ARGS):
        messages = homeassistant.discovery_messages(**layout, cameras=("front", "back yard"))
        if layout["device_based"]:
            assert device_problems(messages[0]) == []
            found = {k: v for k, v in json.loads(messages[0].payload)["components"].items()}
        else:
            for message in messages:
                assert problems(message) == [], message.topic
            found = configs(messages)
        yard = homeassistant.node_id("back yard")
        assert {"label", "score", "front_label", "front_score", f"{yard}_label", f"{yard}_score"} <= set(found)
        front = found["front_label"]
        assert front["unique_id"] == "edge-classifier_pi-kitchen_front_label"
        assert front["state_topic"] == "edge-classifier/pi-kitchen/source/front/result"
        assert front["json_attributes_topic"] == "edge-classifier/pi-kitchen/source/front/result"
        assert front["name"] == "front label" and found["front_score"]["name"] == "front score"
        assert "back yard" not in found[f"{yard}_score"]["unique_id"] and yard in found[f"{yard}_score"]["unique_id"]
        assert found[f"{yard}_score"]["state_topic"] == "edge-classifier/pi-kitchen/source/back yard/result"
        # The templates read the per-camera result as they read {prefix}/result.
        assert render(front["value_template"], result(CAT)) == "Egyptian cat"
        assert render(found["front_score"]["value_template"], result(CAT)) == "84.0"
    # One camera ([source]): today's five entities, nothing more.
    assert set(configs(homeassistant.discovery_messages(**ARGS))) == \
        {"label", "score", "fps_out", "inference_p50", "accelerator"}


def test_a_camera_gone_is_removed_in_either_layout() -> None:
    device = homeassistant.discovery_messages(**DEVICE_ARGS, cameras=("front",), gone=("front", "door"))
    assert device_problems(device[0]) == []
    components = json.loads(device[0].payload)["components"]
    assert components["door_label"] == {"platform": "sensor"} and components["door_score"] == {"platform": "sensor"}
    assert components["front_label"]["unique_id"].endswith("_front_label")
    entity = homeassistant.discovery_messages(**ARGS, cameras=("front",), gone=("door",))
    cleared = {m.topic for m in entity if m.payload == b""}
    assert cleared == {"homeassistant/sensor/pi-kitchen/door_label/config",
                       "homeassistant/sensor/pi-kitchen/door_score/config"}
    assert all(m.retain for m in entity)
