"""Delivery that tells the truth, against a real Mosquitto: a result the broker's ACL refuses
(MQTT 5 PUBACK 0x87) is not counted as delivered, is logged once with its reason and topic,
announced by an event, counted in stats, and does not come back from the disk spool."""

from __future__ import annotations

import json
import signal

from support.broker import Probe
from support.daemon import DaemonProcess, write_config
from test_mqtt import PREFIX, config_text

# The daemon may publish everything of its own except results.
REFUSING_ACL = f"""user daemon
topic write {PREFIX}/status
topic write {PREFIX}/event
topic write {PREFIX}/stats
topic read {PREFIX}/cmd/#
user watcher
topic read {PREFIX}/#
"""


def test_results_refused_by_the_acl_are_not_delivered_and_said_so(tmp_path, make_broker, pictures):
    broker = make_broker(password_users={"daemon": "pw", "watcher": "watch"}, acl=REFUSING_ACL)
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=20, mqtt='username = "daemon"\npassword = "pw"',
        extra=f'[publish]\nstats_interval = 0.5\nspool_dir = "{spool}"'))
    with Probe(broker.host, broker.port, username="watcher", password="watch") as probe:
        probe.subscribe(f"{PREFIX}/#")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=20).payload)
            while event["event"] != "publish_refused":
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=20).payload)
            assert event["topic"] == f"{PREFIX}/result"
            assert event["reason_code"] == 0x87
            assert event["reason"] == "Not authorized"
            produced = [daemon.next_result() for _ in range(20)]
            stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)
            while stats["results"] < 20:
                stats = json.loads(probe.expect(f"{PREFIX}/stats", timeout=10).payload)
            # every result was refused; none is waiting (the outbox is not blocked by them)
            assert stats["spool_refused"] >= 10
            assert stats["spool_depth"] < 10
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
        assert not [m for m in probe.pending() if m.topic == f"{PREFIX}/result"]
    assert produced
    assert daemon.log.count("refused a message on") == 1, daemon.log
    assert f"refused a message on {PREFIX}/result: Not authorized (reason code 0x87)" in daemon.log
    # Refused is not owed: nothing comes back from the spool at the next start.
    config.write_text(config.read_text().replace("loop = true", "loop = false"))
    with DaemonProcess("-c", str(config), "--stdout") as again:
        assert again.wait(30) == 0, again.log
    assert "undelivered messages recovered" not in again.log


def spool_bytes(directory):
    return sum(path.stat().st_size for path in directory.glob("spool-*.log"))


def test_broker_up_the_spool_writes_nothing_and_broker_down_a_clean_stop_keeps_all(tmp_path, make_broker,
                                                                                    pictures):
    """The real daemon with the default spill window: 200 results acknowledged at once add no
    byte to the spool files; with the broker gone, SIGTERM writes what is owed, and the next
    start delivers it (and the shutdown does not call it lost)."""
    broker = make_broker(persistence=True)
    spool = tmp_path / "spool"
    config = write_config(tmp_path / "config.toml", config_text(
        pictures, broker.port, fps=100, extra=f'[publish]\nspool_dir = "{spool}"'))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/result")
        with DaemonProcess("-c", str(config), "--stdout") as daemon:
            probe.expect(f"{PREFIX}/result", timeout=20)
            opened = spool_bytes(spool)
            delivered = probe.collect(200, timeout=20, topic_filter=f"{PREFIX}/result")
            assert spool_bytes(spool) == opened
            broker.stop()
            lost = daemon.wait_for_log(r"MQTT connection to .* lost")
            seen = max(json.loads(m.payload)["frame"] for m in [*delivered, *probe.pending()])
            during = []  # results the subscriber has not seen: made after the broker went away
            while len(during) < 30:
                result = daemon.next_result()
                if result["frame"] > seen:
                    during.append(result)
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(10) == 0
            while not daemon.results.empty():
                during.append(daemon.results.get_nowait())
            during = [r for r in during if r["frame"] > seen]
        assert "(lost" not in daemon.log[lost:]
        assert "kept in the spool for the next start" in daemon.log[lost:]
        assert spool_bytes(spool) > opened
    broker.start()
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/result")
        config.write_text(config.read_text().replace("loop = true", "loop = false"))
        with DaemonProcess("-c", str(config), "--stdout") as again:
            assert again.wait(30) == 0, again.log
        again.wait_for_log(r"spool: \d+ undelivered messages recovered")
        frames = {json.loads(m.payload)["frame"] for m in probe.collect(len(during), timeout=20)}
    missing = [r["frame"] for r in during if r["frame"] not in frames]
    assert not missing, missing
