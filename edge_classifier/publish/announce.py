"""What this device announced to Home Assistant, and what to send so HA matches the config now.

Discovery is retained: entities announced once stay in Home Assistant until their config topics
are cleared. So the :class:`Announcer` remembers what it announced (device id, discovery prefix,
layout) in a small JSON file (``homeassistant.json`` beside the daemon's ``state.json`` in the
model store), and after each connect sends, in this order:

* discovery turned off, or ``device.id`` or the discovery prefix changed: the removal (empty
  retained configs) of what was announced before, then the new discovery if any;
* the layout changed (per entity <-> device-based, same device): Home Assistant's documented
  migration, ``{"migrate_discovery": true}`` on the old topics, the new config, then the old
  topics cleared, so the entities keep their ids and history;
* otherwise the discovery itself.

It remembers the cameras (``[[sources]]``) it announced entities for as well: a camera gone
from the configuration (SIGHUP, or while the daemon was down) has its entities removed.

No file yet but discovery on: an older release may have announced the per-entity layout under
this id, so the first device-based announcement migrates from it (harmless if it did not).
Only the publish thread calls :meth:`Announcer.messages`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edge_classifier.config.schema import HomeAssistantConfig
from edge_classifier.errors import StoreError
from edge_classifier.publish import homeassistant
from edge_classifier.publish.outbox import Message
from edge_classifier.store.state import StateFile

__all__ = ["ANNOUNCED_FILE", "Announcer"]

log = logging.getLogger(__name__)

ANNOUNCED_FILE = "homeassistant.json"


class Announcer:
    def __init__(self, config: HomeAssistantConfig, *, device_id: str, prefix: str, path: Path | None) -> None:
        self.config = config
        self.device_id = device_id
        self.prefix = prefix
        self._file = StateFile(path) if path is not None else None
        self._save_failed = False

    def _now(self) -> dict[str, Any] | None:
        if not self.config.enabled:
            return None
        return {"device_id": self.device_id, "discovery_prefix": self.config.discovery_prefix,
                "device_based": self.config.device_discovery}

    def _before(self) -> dict[str, Any] | None:
        saved = self._file.load() if self._file is not None else {}
        announced = saved.get("announced")
        kinds = {"device_id": str, "discovery_prefix": str, "device_based": bool}
        if isinstance(announced, dict) and all(isinstance(announced.get(k), t) for k, t in kinds.items()):
            return {k: announced[k] for k in kinds}
        now = self._now()
        if now is not None and now["device_based"] and "announced" not in saved:
            return {**now, "device_based": False}  # what an older release announced, perhaps
        return None

    def _cameras_before(self) -> tuple[str, ...]:
        saved = self._file.load() if self._file is not None else {}
        announced = saved.get("announced")
        cameras = announced.get("cameras") if isinstance(announced, dict) else None
        if isinstance(cameras, list) and all(isinstance(c, str) for c in cameras):
            return tuple(cameras)
        return ()

    def messages(self, model_name: str, sw_version: str, cameras: tuple[str, ...] = ()) -> list[Message]:
        """The messages that bring Home Assistant to the configured state (see the module docstring);
        ``cameras``: the ``[[sources]]`` that get a label and score entity each."""
        before, now, cameras_before = self._before(), self._now(), self._cameras_before()
        out: list[Message] = []
        new = [] if now is None else homeassistant.discovery_messages(
            device_id=self.device_id, prefix=self.prefix, discovery_prefix=self.config.discovery_prefix,
            model_name=model_name, sw_version=sw_version, device_based=self.config.device_discovery,
            cameras=cameras, gone=cameras_before if before == now else ())
        if before is not None and before != now:
            old = homeassistant.removal_messages(
                device_id=before["device_id"], prefix=self.prefix, discovery_prefix=before["discovery_prefix"],
                device_based=before["device_based"], cameras=cameras_before)
            moved = now is not None and {k: before[k] for k in ("device_id", "discovery_prefix")} == \
                {k: now[k] for k in ("device_id", "discovery_prefix")}
            if moved:  # same device, other layout
                out += homeassistant.migration_messages(device_id=self.device_id,
                                                        discovery_prefix=self.config.discovery_prefix,
                                                        from_device_based=before["device_based"])
                out += new + old
            else:
                log.info("Home Assistant: removing the entities announced for device %r under %s/", before["device_id"],
                         before["discovery_prefix"])
                out += old + new
        else:
            out += new
        if before != now or (now is not None and cameras_before != cameras):
            self._remember({**now, "cameras": list(cameras)} if now is not None and cameras else now)
        return out

    def _remember(self, now: dict[str, Any] | None) -> None:
        if self._file is None:
            return
        try:
            self._file.save({"announced": now})
        except StoreError as exc:
            if not self._save_failed:
                self._save_failed = True
                log.warning("Home Assistant: cannot remember what was announced (%s): a later change of device.id "
                            "or turning discovery off will not remove these entities", exc)
