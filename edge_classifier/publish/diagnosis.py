"""Why an MQTT connection failed, in words, with the fix when one is known.

Pure functions from what paho reports (reason codes, whether a CONNACK came, how long the
connection held) to one sentence for the log. :class:`~edge_classifier.publish.connection.MqttConnection`
logs each distinct one once.
"""

from __future__ import annotations

from paho.mqtt.reasoncodes import ReasonCode

from edge_classifier.config.schema import MqttConfig

__all__ = ["FLAPPING_SECONDS", "closed_before_connack", "lost", "refused"]

FLAPPING_SECONDS = 10.0  # a connection closed this soon after CONNACK: the broker objects to something

_PROTOCOL_311 = 'set mqtt.protocol = "3.1.1"'

# MQTT 5 reason codes (CONNACK and DISCONNECT), with what to do about them.
_HINTS = {
    0x84: "the broker does not speak this MQTT version",
    0x85: "the broker does not accept the client id: set mqtt.client_id",
    0x86: "check mqtt.username and the password (mqtt.password_file)",
    0x87: "check mqtt.username and the broker's ACL for this client",
    0x8C: "the broker wants another authentication method",
    0x8E: "another client connected with the same client id: give each device its own mqtt.client_id",
    0x90: "the broker does not accept one of this device's topic names (NATS, for one, rejects '.' in "
          "topics: check mqtt.topic_prefix and device.id)",
    0x95: "a message was larger than the broker accepts",
    0x97: "the broker's quota for this client is used up",
    0x9A: "the broker does not accept retained messages (publish.retain, homeassistant)",
    0x9B: "the broker does not support this QoS: set mqtt.qos = 1",
}


def refused(reason: ReasonCode, config: MqttConfig) -> str:
    """A CONNACK that refused the connection."""
    text = f"refused the connection: {reason}"
    if reason.value == 0x84:
        if config.protocol == "5":
            return f"{text} (the broker only speaks MQTT 3.1.1: {_PROTOCOL_311})"
        return f"{text} (the broker does not accept MQTT 3.1.1 either: is this an MQTT listener?)"
    hint = _HINTS.get(reason.value)
    return f"{text} ({hint})" if hint else text


def closed_before_connack(config: MqttConfig, accepted_before: bool = False, silent_for: float | None = None) -> str:
    """The broker accepted TCP and closed it without answering CONNECT, or (``silent_for``
    seconds, after which the client gave up) kept it open without answering."""
    if silent_for is None:
        text = "closed the connection without answering CONNECT (no CONNACK)"
    else:
        text = f"did not answer CONNECT within {silent_for:g} s (no CONNACK)"
    if accepted_before:  # same settings worked: not the protocol; what paho resends at once
        return f"{text}, though it accepted this client before: it may refuse something this client sends: " + \
            _suspects(config)
    if config.protocol == "5":
        return (f"{text}: brokers that only speak MQTT 3.1.1 do this to MQTT 5 clients (amqtt, RabbitMQ 3.x): "
                f"{_PROTOCOL_311}")
    if not config.tls.enabled:
        return f"{text}: is {config.host}:{config.port} an MQTT listener? If it expects TLS, set mqtt.tls.enabled"
    return f"{text}: is {config.host}:{config.port} an MQTT listener, and does it accept this client's login?"


def lost(reason: ReasonCode, from_server: bool, held: float | None, config: MqttConfig) -> str:
    """A connection that was up and is gone; ``held``: seconds it was up, when it keeps dropping
    that soon (None: not known to)."""
    if from_server:
        hint = _HINTS.get(reason.value)
        text = f"the broker disconnected this client: {reason}" + (f" ({hint})" if hint else "")
    else:
        text = "the connection closed (broker stopped, network down, or the broker closed it without a reason)"
    if held is not None and held < FLAPPING_SECONDS and not (from_server and reason.value in _HINTS):
        text += f"; again after {held:.1f} s: the broker may refuse something this client sends: " + \
            _suspects(config)
    return text


def _suspects(config: MqttConfig) -> str:
    suspects = ["a topic name it rejects (NATS: '.' in mqtt.topic_prefix or device.id)",
                "retained messages (publish.retain, homeassistant)"]
    if config.qos == 2:
        suspects.insert(0, "QoS 2, which some brokers lack (NATS): set mqtt.qos = 1")
    return ", or ".join(suspects)
