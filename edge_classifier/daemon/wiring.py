"""Startup wiring of the publish side: the outbox (in memory, or spooled to disk), the MQTT
connection with the subscriptions the daemon needs, and the publisher that feeds both.

Built once by the daemon's startup; the publisher's thread and the connection's (paho's)
run from here on, and ``close_outbox`` is the last step of the teardown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from edge_classifier.config import Config
from edge_classifier.control.channel import CommandChannel
from edge_classifier.control.requests import FLEET_PREFIX
from edge_classifier.daemon.reconfigure import publish_policy
from edge_classifier.errors import ConfigError
from edge_classifier.publish.bounds import spool_bounds
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.outbox import Message, Outbox
from edge_classifier.publish.publisher import OutboxLike, Publisher, Topics

__all__ = ["close_outbox", "open_publisher"]

log = logging.getLogger(__name__)


def open_publisher(config: Config, topics: Topics, channel: CommandChannel, *, stdout: TextIO | None,
                   retained_state: Callable[[], list[Message]]) -> tuple[Publisher, MqttConnection | None]:
    """The started publisher and, with ``[mqtt]`` enabled, its started connection."""
    connection = None
    outbox: OutboxLike = Outbox(*spool_bounds(config))
    if config.mqtt.enabled:
        connection = MqttConnection(config.mqtt, status_topic=topics.status, on_message=channel.on_message,
                                    subscriptions=_subscriptions(config, topics))
        if config.publish.spool_dir:
            outbox = _disk_outbox(config)
    publisher = Publisher(
        config.device.id, topics, connection=connection, qos=config.mqtt.qos,
        retain=config.publish.retain, stdout=stdout, outbox=outbox,
        policy=publish_policy(config), retained_state=retained_state,
    )
    publisher.start()
    if connection is not None:
        connection.start()
    return publisher, connection


def _subscriptions(config: Config, topics: Topics) -> tuple[str, ...]:
    """Commands (the device's, the fleet's) and Home Assistant's birth message."""
    subscriptions: list[str] = []
    if config.commands.enabled:
        subscriptions.append(topics.commands)
        if config.commands.fleet:
            subscriptions.append(f"{FLEET_PREFIX}/cmd/+")
    if config.homeassistant.enabled:
        from edge_classifier.publish import homeassistant

        subscriptions.append(homeassistant.birth_topic(config.homeassistant.discovery_prefix))
    return tuple(subscriptions)


def _disk_outbox(config: Config) -> OutboxLike:
    from edge_classifier.publish.spool import DiskOutbox

    try:
        outbox = DiskOutbox(Path(config.publish.spool_dir), *spool_bounds(config),
                            spill_after=config.publish.spool_spill_after)
    except OSError as exc:
        raise ConfigError([f"publish.spool_dir: cannot use {config.publish.spool_dir}: {exc}"]) from exc
    if outbox.recovered:
        log.info("spool: %d undelivered messages recovered from %s", outbox.recovered, config.publish.spool_dir)
    return outbox


def close_outbox(publisher: Publisher | None) -> None:
    """Close a disk outbox (an in-memory one has nothing to close)."""
    outbox = publisher.outbox if publisher else None
    close = getattr(outbox, "close", None)
    if callable(close):
        close()
