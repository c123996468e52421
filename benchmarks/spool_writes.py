#!/usr/bin/env python3
"""Bytes the disk spool makes the kernel write, per 1,000 results, broker up and broker down.

The real publisher (thread ``publish``), the real MQTT connection and the real disk spool, with
a Mosquitto this script starts on a free loopback port (``--broker down``: a free port that
nothing listens on). ``--results`` results (~300 bytes each, like the daemon's) are submitted at
``--rate`` per second (0 = as fast as possible); broker up, the run ends when the broker
acknowledged every one; broker down, when all were submitted. Then the publisher and the spool
are closed (a clean shutdown) and this process's ``write_bytes`` from ``/proc/self/io`` (bytes
sent towards the block device, counted per dirtied page) is compared with what it was before the
spool was opened. The spool directory must be on a real block device (``--dir``; /tmp here is
ext4: tmpfs counts nothing).

Prints one JSON line: results, payload bytes, write_bytes (in all, and split: opening the
spool, while results flow, closing), write_bytes per 1,000 results.

    python benchmarks/spool_writes.py --broker up --results 10000 --rate 0
    python benchmarks/spool_writes.py --broker down --results 2000 --rate 100
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from support.broker import MosquittoBroker, free_port  # noqa: E402

from edge_classifier.config.schema import MqttConfig  # noqa: E402
from edge_classifier.daemon.pipeline import Outcome  # noqa: E402
from edge_classifier.engine.interpreter import ModelInfo, TensorInfo  # noqa: E402
from edge_classifier.publish.connection import MqttConnection  # noqa: E402
from edge_classifier.publish.payload import encode, result_payload  # noqa: E402
from edge_classifier.publish.publisher import Publisher, Topics  # noqa: E402
from edge_classifier.publish.spool import DiskOutbox  # noqa: E402
from edge_classifier.results import Classification, Prediction  # noqa: E402
from edge_classifier.source.base import Frame  # noqa: E402

PREFIX = "edge-classifier/benchpi"
INFO = ModelInfo(name="mobilenet_v2_1.0_224_quant", path=Path("m.tflite"), sha256="ab" * 32, accelerator="cpu",
                 requested=Path("m.tflite"), fallback=None, runtime="bench",
                 input=TensorInfo((1, 224, 224, 3), np.uint8, 0.0078125, 128),
                 output=TensorInfo((1, 1001), np.uint8, 0.00390625, 0), threads=4)
IMAGE = np.zeros((2, 2, 3), np.uint8)


def write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def outcome(index: int) -> Outcome:
    now = time.monotonic()
    top = (Prediction(90, "lorikeet", 0.8125), Prediction(89, "macaw", 0.1016))
    frame = Frame(IMAGE, False, "camera", index, now, time.time())
    return Outcome(index, frame, Classification(top, INFO, 12.3, 15.1))


def run(directory: Path, broker_up: bool, results: int, rate: float) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="bench-broker-", dir=directory))
    broker = MosquittoBroker(work / "broker").start() if broker_up else None
    port = broker.port if broker else free_port()
    config = dataclasses.replace(MqttConfig(), host="127.0.0.1", port=port, client_id="bench",
                                 reconnect_min=0.2, reconnect_max=1.0)
    connection = MqttConnection(config, status_topic=f"{PREFIX}/status")
    before = write_bytes()
    spool = DiskOutbox(work / "spool", 100_000, 256 * 1024 * 1024)
    opened = write_bytes()
    publisher = Publisher("benchpi", Topics(PREFIX), connection=connection, outbox=spool).start()
    connection.start()
    if broker_up:
        connection.connected.wait(10)
    start = time.monotonic()
    for index in range(1, results + 1):
        publisher.submit(outcome(index))
        if rate > 0:
            time.sleep(max(0.0, start + index / rate - time.monotonic()))
    if broker_up:
        while spool.delivered < results:  # a benchmark may poll: the count is only read
            time.sleep(0.05)
    elapsed = time.monotonic() - start
    ran = write_bytes()
    publisher.close(timeout=1.0)
    spool.close()
    connection.close()
    written = write_bytes() - before
    if broker:
        broker.close()
    sample = outcome(1)
    assert sample.classification is not None
    one = encode(result_payload("benchpi", sample.frame, sample.classification))
    return {
        "broker": "up" if broker_up else "down",
        "results": results,
        "rate": rate,
        "seconds": round(elapsed, 2),
        "result_bytes_each": len(one),
        "result_bytes_total": len(one) * results,
        "write_bytes": written,
        "write_bytes_per_1000_results": round(written * 1000 / results),
        "write_bytes_open": opened - before,  # creating the spool directory and its first segment
        "write_bytes_while_running": ran - opened,
        "write_bytes_close": written - (ran - before),
        "spill_window": "spill_after" in inspect.signature(DiskOutbox).parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=("up", "down"), default="up")
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0.0, help="results per second; 0 = as fast as possible")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where the spool goes (a real block device, not tmpfs)")
    args = parser.parse_args()
    print(json.dumps(run(args.dir, args.broker == "up", args.results, args.rate)))


if __name__ == "__main__":
    main()
