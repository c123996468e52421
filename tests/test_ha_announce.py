"""What the daemon announces to Home Assistant as its configuration changes: removal when discovery
is turned off or the device id changes, the documented migration between layouts, remembered in
a file across restarts."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from edge_classifier.config.schema import HomeAssistantConfig
from edge_classifier.publish import homeassistant
from edge_classifier.publish.announce import Announcer

PREFIX = "edge-classifier/pi"
ENTITY_TOPICS = [f"homeassistant/sensor/pi/{key}/config" for key in
                 ("label", "score", "fps_out", "inference_p50", "accelerator")]
DEVICE_TOPIC = "homeassistant/device/pi/config"


def announcer(path: Path, device_id: str = "pi", **ha: object) -> Announcer:
    config = dataclasses.replace(HomeAssistantConfig(), **{"enabled": True, **ha})
    return Announcer(config, device_id=device_id, prefix=f"edge-classifier/{device_id}", path=path)


def sent(messages: list) -> list[tuple[str, str]]:
    """(topic, what): config, removal or migrate."""
    def what(payload: bytes) -> str:
        if not payload:
            return "removal"
        return "migrate" if json.loads(payload) == {"migrate_discovery": True} else "config"
    return [(m.topic, what(m.payload)) for m in messages]


def test_first_device_based_announcement_migrates_from_the_per_entity_layout(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    out = sent(announcer(state).messages("m", "1"))
    # HA's documented order: migrate on the old topics, the new config, then clear the old topics.
    assert out == [*((t, "migrate") for t in ENTITY_TOPICS), (DEVICE_TOPIC, "config"),
                   *((t, "removal") for t in ENTITY_TOPICS)]
    assert json.loads(state.read_text())["announced"] == {"device_id": "pi", "discovery_prefix": "homeassistant",
                                                          "device_based": True}
    # Remembered: from now on (a reconnect, a restart) only the config.
    assert sent(announcer(state).messages("m", "1")) == [(DEVICE_TOPIC, "config")]


def test_a_changed_device_id_removes_the_old_device(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    announcer(state).messages("m", "1")
    out = sent(announcer(state, device_id="pi2").messages("m", "1"))
    assert out == [(DEVICE_TOPIC, "removal"), ("homeassistant/device/pi2/config", "config")]
    assert sent(announcer(state, device_id="pi2").messages("m", "1")) == [("homeassistant/device/pi2/config", "config")]


def test_turning_discovery_off_removes_what_was_announced_once(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    announcer(state, device_discovery=False).messages("m", "1")
    assert sent(announcer(state, enabled=False).messages("m", "1")) == [(t, "removal") for t in ENTITY_TOPICS]
    assert announcer(state, enabled=False).messages("m", "1") == []


def test_a_changed_discovery_prefix_removes_under_the_old_one(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    announcer(state).messages("m", "1")
    out = sent(announcer(state, discovery_prefix="ha").messages("m", "1"))
    assert out == [(DEVICE_TOPIC, "removal"), ("ha/device/pi/config", "config")]


def test_back_to_the_per_entity_layout_migrates_too(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    announcer(state).messages("m", "1")
    out = sent(announcer(state, device_discovery=False).messages("m", "1"))
    assert out == [(DEVICE_TOPIC, "migrate"), *((t, "config") for t in ENTITY_TOPICS), (DEVICE_TOPIC, "removal")]


def test_never_enabled_sends_nothing_and_writes_nothing(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    assert announcer(state, enabled=False).messages("m", "1") == []
    assert not state.exists()


def test_a_corrupt_file_is_no_memory_not_a_crash(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    state.write_text("{not json")
    assert (DEVICE_TOPIC, "config") in sent(announcer(state).messages("m", "1"))


def test_an_unwritable_store_is_a_warning_and_discovery_still_goes_out(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "models"  # a file where the store's folder should be: no folder can be made
    blocker.write_text("not a folder")
    state = blocker / "homeassistant.json"
    first = announcer(state)
    assert (DEVICE_TOPIC, "config") in sent(first.messages("m", "1"))
    assert (DEVICE_TOPIC, "config") in sent(first.messages("m", "1"))
    assert sum("cannot remember what was announced" in r.message for r in caplog.records) == 1


def test_the_model_swapped_in_is_the_device_model(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    first = announcer(state)
    first.messages("old", "1")
    config = json.loads(first.messages("efficientnet", "1")[0].payload)
    assert config["device"]["model"] == "efficientnet"
    assert homeassistant.node_id("pi") == "pi"


def test_cameras_are_remembered_and_one_gone_is_removed_even_after_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "homeassistant.json"
    announcer(state).messages("m", "1")
    first = announcer(state).messages("m", "1", cameras=("front", "door"))
    assert set(json.loads(first[0].payload)["components"]) >= {"front_label", "door_score"}
    assert json.loads(state.read_text())["announced"]["cameras"] == ["front", "door"]
    # A new Announcer (the daemon restarted with door gone from the file): door is removed.
    later = announcer(state).messages("m", "1", cameras=("front",))
    components = json.loads(later[0].payload)["components"]
    assert components["door_label"] == {"platform": "sensor"} and "unique_id" in components["front_label"]
    assert json.loads(state.read_text())["announced"]["cameras"] == ["front"]
    # Per entity: turning discovery off clears the cameras' configs too.
    entity = tmp_path / "entity.json"
    announcer(entity, device_discovery=False).messages("m", "1", cameras=("front",))
    off = sent(announcer(entity, enabled=False).messages("m", "1"))
    assert ("homeassistant/sensor/pi/front_label/config", "removal") in off
