"""Results published by the submitting (pipeline worker) thread itself when nothing is queued
(Publisher.inline), through a real Mosquitto: every result arrives once, in frame order, with
events queued between them; with stdout on, every result goes through the publish thread."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable

import numpy as np
import pytest
from support.broker import Message, MosquittoBroker, Probe
from support.testdata import model

from edge_classifier.config.schema import MqttConfig
from edge_classifier.daemon.pipeline import Outcome
from edge_classifier.engine import Engine
from edge_classifier.engine.interpreter import ModelInfo
from edge_classifier.publish.connection import MqttConnection
from edge_classifier.publish.publisher import Publisher, Topics
from edge_classifier.results import Classification, Prediction
from edge_classifier.source.base import stamp

PREFIX = "edge-classifier/inline"


@pytest.fixture(scope="module")
def info() -> ModelInfo:
    with Engine.open(model("mobilenet_v1_0.25_128_quant"), accelerator="cpu", threads=1) as engine:
        return engine.info


def outcome(seq: int, info: ModelInfo) -> Outcome:
    frame = stamp(np.zeros((2, 2, 3), np.uint8), rgb=False, source="cam", index=seq + 1)
    return Outcome(seq, frame, Classification((Prediction(seq % 1000, f"class {seq}", 0.5),), info, 0.2, 0.4))


def publish_from_a_worker(publisher: Publisher, info: ModelInfo, count: int,
                          after_ten: Callable[[], None] = lambda: None) -> None:
    """``count`` results from a thread named like a pipeline worker, an event after every tenth,
    then ``after_ten`` (waits for the batch to arrive, as a pipeline's next invoke would take time)."""

    def work() -> None:
        for seq in range(count):
            publisher.submit(outcome(seq, info))
            if seq % 10 == 9:
                publisher.event("test_marker", seq=seq)
                after_ten()

    worker = threading.Thread(target=work, name="infer-0")
    worker.start()
    worker.join(60)
    assert not worker.is_alive()


def test_results_published_inline_arrive_once_in_order_with_the_events(broker: MosquittoBroker,
                                                                        info: ModelInfo) -> None:
    topics = Topics(PREFIX)
    connection = MqttConnection(MqttConfig(host=broker.host, port=broker.port, client_id="inline-test"),
                                status_topic=topics.status)
    publisher = Publisher("inline", topics, connection=connection, qos=1).start()
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(topics.result, topics.event)
        connection.start()
        assert connection.connected.wait(10)
        try:
            messages: list[Message] = []
            publish_from_a_worker(publisher, info, 300, lambda: messages.extend(probe.collect(11, timeout=10)))
        finally:
            delivered = publisher.close(timeout=10)
            connection.close()
    assert delivered
    frames = [json.loads(m.payload)["frame"] for m in messages if m.topic == topics.result]
    assert frames == list(range(1, 301))
    markers = [json.loads(m.payload)["seq"] for m in messages if m.topic == topics.event]
    assert markers == list(range(9, 300, 10))
    assert publisher.results == 300 and publisher.inlined > 0
    assert publisher.outbox.delivered >= 300


def test_with_stdout_every_result_goes_through_the_publish_thread(info: ModelInfo) -> None:
    out = io.StringIO()
    publisher = Publisher("inline", Topics(PREFIX), stdout=out).start()
    publish_from_a_worker(publisher, info, 50)
    publisher.close(timeout=5)
    assert publisher.inlined == 0
    assert [json.loads(line)["frame"] for line in out.getvalue().splitlines()] == list(range(1, 51))
