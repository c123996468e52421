"""The command channel: requests in from MQTT, replies out.

Requests cross from paho's network thread to the daemon's main loop through the control
queue (``on_message`` only queues); ``answer`` runs on the main loop and replies, under
MQTT 5 to the request's response topic with its correlation data, otherwise (or without a
response topic) to ``{prefix}/reply/{name}`` with the request's ``request_id`` echoed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge_classifier.control.commands import CommandHandler
from edge_classifier.control.requests import FLEET_PREFIX, Request, command_name, parse_arguments
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.payload import encode

__all__ = ["CommandChannel"]

log = logging.getLogger(__name__)


class CommandChannel:
    def __init__(self, prefix: str, handler: CommandHandler, *, queue: Callable[[Any], None],
                 connection: Callable[[], MqttConnection | None], max_payload: Callable[[], int]) -> None:
        self.prefix = prefix
        self.handler = handler
        self._queue = queue
        self._connection = connection
        self._max_payload = max_payload

    def on_message(self, message: paho.MQTTMessage) -> None:
        """Crossing: paho's network thread; only queues for the main loop (commands as
        Requests, anything else, e.g. Home Assistant's birth message, as it came)."""
        if command_name(message.topic, (self.prefix, FLEET_PREFIX)) is not None:
            properties = getattr(message, "properties", None)
            self._queue(Request(
                topic=message.topic, payload=bytes(message.payload), retain=bool(message.retain),
                response_topic=getattr(properties, "ResponseTopic", None),
                correlation_data=getattr(properties, "CorrelationData", None),
            ))
        else:
            self._queue(message)

    def answer(self, request: Request) -> None:
        """Main loop: carry out one request and reply (a model swap replies when done)."""
        if request.retain:
            log.info("ignoring a stale retained command on %s", request.topic)
            return
        name = command_name(request.topic, (self.prefix, FLEET_PREFIX))
        if name is None:
            return
        arguments, error = parse_arguments(request.payload, self._max_payload())
        reply = {"ok": False, "error": error} if error else self.handler.handle(name, arguments, request)
        if reply is None:
            return  # answered later (a model swap replies once it is done)
        self.reply_to(name, request, reply)

    def reply_to(self, name: str, request: Request, body: dict[str, Any]) -> None:
        """Send a reply body with the command's name and the request's request_id."""
        reply = {"command": name, **body}
        arguments, _ = parse_arguments(request.payload, self._max_payload())
        request_id = arguments.get("request_id")
        if request_id is not None:
            reply["request_id"] = request_id
        if not reply["ok"]:
            log.warning("command %s from %s refused: %s", name, request.topic, reply["error"])
        if request.answer is not None:
            request.answer(reply)  # crossing: back to the web thread that waits for it
            return
        connection = self._connection()
        if connection is None:
            return
        if connection.v5 and request.response_topic:
            properties = Properties(PacketTypes.PUBLISH)
            if request.correlation_data is not None:
                properties.CorrelationData = request.correlation_data
            connection.publish(request.response_topic, encode(reply), qos=1, properties=properties)
        else:
            connection.publish(f"{self.prefix}/reply/{name}", encode(reply), qos=1)
