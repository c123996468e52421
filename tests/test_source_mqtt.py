"""The MQTT source against a real Mosquitto: images in, garbage counted, reconnects."""

from __future__ import annotations

import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest
from support.broker import MosquittoBroker, Probe

from edge_classifier.config.schema import MqttConfig, SourceConfig
from edge_classifier.errors import SourceError
from edge_classifier.source import Capture, open_source
from edge_classifier.source.mqtt import MqttSource


def encoded(suffix: str, value: int) -> bytes:
    ok, data = cv2.imencode(suffix, np.full((24, 32, 3), value, np.uint8))
    assert ok
    return data.tobytes()


def make_source(broker: MosquittoBroker, **options: Any) -> MqttSource:
    config = SourceConfig(kind="mqtt", uri="cams/+/image")
    mqtt = MqttConfig(host=broker.host, port=broker.port, client_id="test-device")
    source = open_source(config, mqtt)
    assert isinstance(source, MqttSource)
    for key, value in options.items():
        setattr(source, key, value)
    return source


def test_jpeg_and_png_frames_garbage_counted(broker: MosquittoBroker) -> None:
    source = make_source(broker)
    assert source.live and source.name == "cams/+/image"
    assert source.client_id == "test-device-source"
    source.open()
    try:
        with Probe(broker.host, broker.port) as probe:
            probe.publish("cams/door/image", encoded(".jpg", 60), qos=1)
            probe.publish("cams/door/image", b"\x00garbage, not an image", qos=1)
            probe.publish("cams/yard/image", encoded(".png", 200), qos=1)
            # Each topic is its own camera, taken in turn: the yard's image comes before
            # the door's second payload.
            first = source.read()
            second = source.read()
            probe.publish("cams/yard/image", encoded(".png", 100), qos=1)
            third = source.read()  # the garbage is refused on the way
    finally:
        source.close()
        source.close()
    assert first is not None and second is not None and third is not None
    assert (first.source, first.index) == ("cams/door/image", 1)
    assert (second.source, second.index) == ("cams/yard/image", 1)  # frames count per topic
    assert (third.source, third.index) == ("cams/yard/image", 2)
    assert abs(float(first.image.mean()) - 60) < 3 and int(second.image[0, 0, 0]) == 200
    assert first.image.shape == (24, 32, 3) and not first.rgb
    assert source.rejected == 1 and source.rejects.counts == {"unknown format": 1}


def test_configured_name_wins_over_topic(broker: MosquittoBroker) -> None:
    config = SourceConfig(kind="mqtt", uri="snap/#", name="doorbell")
    source = open_source(config, MqttConfig(host=broker.host, port=broker.port))
    source.open()
    try:
        with Probe(broker.host, broker.port) as probe:
            probe.publish("snap/x", encoded(".jpg", 10), qos=1)
        frame = source.read()
    finally:
        source.close()
    assert frame is not None and frame.source == "doorbell"


def test_reduced_decode_delivers_jpegs_near_the_model_input(broker: MosquittoBroker) -> None:
    big = cv2.imencode(".jpg", np.full((1080, 1920, 3), 90, np.uint8))[1].tobytes()
    small_png = cv2.imencode(".png", np.full((1080, 1920, 3), 40, np.uint8))[1].tobytes()
    shapes = {}
    for reduced, roi in ((True, ()), (False, ()), (True, (0, 0, 800, 600))):
        config = SourceConfig(kind="mqtt", uri="snap/#", name="cam", reduced_decode=reduced, roi=roi)
        source = open_source(config, MqttConfig(host=broker.host, port=broker.port), input_size=(224, 224))
        source.open()
        try:
            with Probe(broker.host, broker.port) as probe:
                probe.publish("snap/x", big, qos=1)
                jpeg_frame = source.read()
                probe.publish("snap/x", small_png, qos=1)
                png_frame = source.read()
        finally:
            source.close()
        assert jpeg_frame is not None and png_frame is not None
        assert png_frame.image.shape == (1080, 1920, 3)  # only JPEG has the DCT scaling
        shapes[reduced, roi] = jpeg_frame.image.shape
    assert shapes[True, ()] == (270, 480, 3)  # 1/4: 1/8 would be under 224
    assert shapes[False, ()] == (1080, 1920, 3)
    assert shapes[True, (0, 0, 800, 600)] == (1080, 1920, 3)  # a roi names full-size pixels


def test_full_queue_drops_the_oldest(broker: MosquittoBroker) -> None:
    source = MqttSource("burst", host=broker.host, port=broker.port, client_id="burst-src", capacity=2)
    source.open()
    try:
        with Probe(broker.host, broker.port) as probe:
            for value in (10, 20, 30, 40):
                probe.publish("burst", encoded(".png", value), qos=1)
            probe.publish("burst", encoded(".png", 250), qos=1)
        # PUBACK means the broker has them, not that they reached us yet: with nobody
        # reading, wait until the five have arrived (two kept, three dropped).
        deadline = time.monotonic() + 5
        while source.dropped < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        values = [int(frame.image[0, 0, 0]) for frame in (source.read(), source.read()) if frame]
    finally:
        source.close()
    assert values == [40, 250]  # the newest two; the oldest three were dropped
    assert source.dropped == 3


def test_no_broker_is_a_source_error(broker: MosquittoBroker) -> None:
    source = make_source(broker, port=1, connect_timeout=2.0)
    with pytest.raises(SourceError, match=r"127\.0\.0\.1:1\b"):
        source.open()
    source.close()


def test_broker_restart_is_lost_then_back(broker: MosquittoBroker) -> None:
    lost, back = threading.Event(), threading.Event()
    events: list[str] = []

    def on_event(name: str, details: dict[str, Any]) -> None:
        events.append(name)
        {"source_lost": lost, "source_back": back}[name].set()

    source = make_source(broker, poll=0.2)
    with Capture(source, on_event=on_event, retry_initial=0.05, retry_max=0.2) as capture, \
            Probe(broker.host, broker.port) as probe:
        # the source subscribes in its own thread: publish until a frame arrives
        frame = None
        while frame is None:
            probe.publish("cams/a/image", encoded(".jpg", 100), qos=1)
            frame = capture.get(timeout=0.2)
        broker.stop()
        assert lost.wait(5)
        broker.start()
        probe.wait_connected(10)
        frame = None
        while frame is None and not capture.ended.is_set():
            probe.publish("cams/a/image", encoded(".jpg", 100), qos=1)
            frame = capture.get(timeout=0.2)
        assert back.is_set()
        assert frame is not None and frame.source == "cams/a/image"
    assert events == ["source_lost", "source_back"]


def test_stop_is_prompt_while_waiting_for_a_message(broker: MosquittoBroker) -> None:
    source = make_source(broker, poll=30.0)
    capture = Capture(source).start()
    assert capture.get(timeout=0.3) is None  # quiet topic: no frame, no failure
    capture.close()
    assert capture.ended.is_set() and capture.failures == 0
