"""Thousands of random payloads and topics at the command channel of a real daemon.

Every request on a command topic gets exactly one reply (matched by its MQTT 5
correlation data), nothing crashes, and afterwards the daemon still classifies.
"""

from __future__ import annotations

import json
import shutil
import signal
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.broker import MosquittoBroker, Probe
from support.daemon import DaemonProcess, write_config
from support.testdata import image, model

PREFIX = "edge-classifier/fuzzpi"
KNOWN = ["status", "pause", "resume", "config", "snapshot", "reload", "model"]
REPLIES = "fuzz/replies"

# A topic level may hold any character but the wildcards and the separator, as long as it is
# UTF-8 the broker accepts: Mosquitto disconnects a client that sends control characters,
# surrogates or non-characters in a topic (MQTT 5 section 1.5.4).
names = st.one_of(
    st.sampled_from(KNOWN),
    st.text(st.characters(blacklist_characters="+#/", blacklist_categories=("Cc", "Cs", "Cn")),
            min_size=1, max_size=24),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
config_keys = st.sampled_from(["top_k", "threshold", "fps", "mode", "classify", "publish", "source", "mqtt", "x"])
payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda v: json.dumps(v).encode(), json_values),
    st.builds(lambda d: json.dumps(d).encode(), st.dictionaries(config_keys, json_values, max_size=3)),
    st.just(b"{}"),
    st.just(b""),
)


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    work = tmp_path_factory.mktemp("fuzz")
    folder = work / "pics"
    folder.mkdir()
    shutil.copy(image("parrot.jpg"), folder / "parrot.jpg")
    with MosquittoBroker(work / "broker") as broker:
        config = write_config(work / "config.toml", f"""
[device]
id = "fuzzpi"
[source]
kind = "images"
uri = "{folder}"
loop = true
fps = 20
[model]
path = "{model("mobilenet_v1_0.25_128_quant")}"
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
[commands]
max_payload = 256
""")
        with DaemonProcess("-c", str(config), "--stdout") as daemon, Probe(broker.host, broker.port) as probe:
            probe.subscribe(f"{PREFIX}/status", REPLIES)
            assert probe.expect(f"{PREFIX}/status", timeout=30).text == "online"
            yield daemon, probe
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, payload=payloads, fleet=st.booleans())
def test_every_request_gets_exactly_one_reply(device, name, payload, fleet):
    daemon, probe = device
    assert daemon.proc.poll() is None, daemon.log
    prefix = "edge-classifier/all" if fleet else PREFIX
    correlation = uuid.uuid4().bytes
    reply = probe.request(f"{prefix}/cmd/{name}", payload, response_topic=REPLIES, correlation_data=correlation,
                          timeout=10)
    body = json.loads(reply.payload)
    assert isinstance(body["ok"], bool)
    assert body["command"] == name
    if not body["ok"]:
        assert isinstance(body["error"], str) and body["error"]
    # Exactly one: no second reply with this correlation data is waiting.
    assert not [m for m in probe.pending() if m.correlation_data == correlation]


def test_the_daemon_still_classifies_after_the_fuzzing(device):
    daemon, probe = device
    reset = {"top_k": 3, "threshold": 0.1, "fps": 20, "mode": "every",
             "publish": {"min_interval": 0, "heartbeat": 60, "smoothing": 1, "hysteresis": 0.05},
             "classify": {"allow": [], "deny": []}}
    for name, payload in (("resume", b"{}"), ("config", json.dumps(reset).encode())):
        reply = json.loads(probe.request(f"{PREFIX}/cmd/{name}", payload, response_topic=REPLIES).payload)
        assert reply["ok"] is True, reply
    while not daemon.results.empty():
        daemon.results.get_nowait()
    assert daemon.next_result(10)["top"][0]["id"] == 89
    assert daemon.proc.poll() is None
