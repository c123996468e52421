"""probe: a fake sysfs and /dev tree for the hardware that cannot be here, the real rest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_classifier.cli.main import main
from edge_classifier.engine.probe import probe


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def usb_device(sys_root: Path, name: str, vendor: str, product: str, speed: str, bus: int, address: int) -> Path:
    device = sys_root / "bus" / "usb" / "devices" / name
    for key, value in (("idVendor", vendor), ("idProduct", product), ("speed", speed),
                       ("busnum", str(bus)), ("devnum", str(address))):
        write(device / key, value)
    return device


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    usb_device(sys_root, "1-1", "1d6b", "0002", "480", 1, 1)  # a root hub: not a Coral
    usb_device(sys_root, "2-1", "1a6e", "089a", "5000", 2, 3)  # Coral before its firmware
    usb_device(sys_root, "1-1.2", "18D1", "9302", "480", 1, 7)  # Coral after, on USB 2
    (sys_root / "bus" / "usb" / "devices" / "usb1").mkdir()  # entries without ids are skipped
    dev_root.mkdir()
    (dev_root / "apex_0").touch()
    (sys_root / "class" / "apex" / "apex_0").mkdir(parents=True)
    for n, name in ((0, "bcm2835-isp"), (10, "unicam"), (2, "USB Camera: HD Webcam")):
        (dev_root / f"video{n}").touch()
        write(sys_root / "class" / "video4linux" / f"video{n}" / "name", name)
    (dev_root / "video-codec").touch()  # not a videoN node
    return sys_root, dev_root


def test_fake_tree_lists_both_usb_corals_the_pcie_one_and_the_cameras(tree):
    sys_root, dev_root = tree
    found = probe(sys_root, dev_root, try_delegate=lambda: {"name": "libedgetpu.so.1", "loadable": True})
    usb = found["edgetpu"]["usb"]
    assert [(d["id"], d["sysfs"]) for d in usb] == [
        ("18d1:9302", str(sys_root / "bus/usb/devices/1-1.2")),
        ("1a6e:089a", str(sys_root / "bus/usb/devices/2-1")),
    ]
    after, before = usb
    assert after["state"].startswith("ready") and not after["usb3"] and after["speed_mbps"] == 480
    assert before["state"].startswith("firmware not loaded") and before["usb3"]
    assert (before["bus"], before["address"]) == (2, 3)
    assert found["edgetpu"]["pcie"] == [
        {"name": "apex_0", "device": str(dev_root / "apex_0"), "sysfs": str(sys_root / "class/apex/apex_0")}
    ]
    assert found["cameras"]["v4l2"] == [
        {"device": str(dev_root / "video0"), "name": "bcm2835-isp"},
        {"device": str(dev_root / "video2"), "name": "USB Camera: HD Webcam"},
        {"device": str(dev_root / "video10"), "name": "unicam"},
    ]
    json.dumps(found)  # the command prints it


def test_an_empty_machine_lists_nothing(tmp_path):
    found = probe(tmp_path / "sys", tmp_path / "dev", try_delegate=dict)
    assert found["edgetpu"]["usb"] == [] and found["edgetpu"]["pcie"] == []
    assert found["cameras"]["v4l2"] == []


def test_a_pcie_coral_seen_only_in_sysfs_has_no_device_node(tmp_path):
    (tmp_path / "sys" / "class" / "apex" / "apex_1").mkdir(parents=True)
    found = probe(tmp_path / "sys", tmp_path / "dev", try_delegate=dict)
    assert found["edgetpu"]["pcie"] == [
        {"name": "apex_1", "device": None, "sysfs": str(tmp_path / "sys/class/apex/apex_1")}
    ]


def test_on_this_machine_libedgetpu_is_not_loadable_and_says_why(tmp_path):
    library = probe(tmp_path, tmp_path)["edgetpu"]["library"]
    assert library["name"] == "libedgetpu.so.1"
    assert library["loadable"] is False
    assert "libedgetpu.so.1 is not installed" in library["reason"]
    assert "install libedgetpu1-std" in library["reason"]


def test_runtimes_and_picamera2_on_this_machine(tmp_path):
    found = probe(tmp_path, tmp_path, try_delegate=dict)
    litert, legacy = found["runtimes"]
    assert litert["name"] == "ai-edge-litert" and litert["available"] and litert["version"]
    assert legacy["name"] == "tflite-runtime" and not legacy["available"]
    assert "tflite_runtime" in legacy["error"]
    picamera2 = found["cameras"]["picamera2"]
    assert picamera2["available"] is False and "picamera2" in picamera2["error"]


def test_a_runtime_that_breaks_while_importing_is_reported_not_raised(tmp_path):
    def broken(name: str) -> object:
        raise AttributeError("_ARRAY_API not found (module compiled using NumPy 1.x)")

    found = probe(tmp_path, tmp_path, try_delegate=dict, try_import=broken)
    assert all(not r["available"] and "NumPy 1.x" in r["error"] for r in found["runtimes"])


def test_the_probe_command_prints_the_json_and_exits_0(capsys):
    assert main(["probe"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"runtimes", "edgetpu", "cameras"}
    assert printed["edgetpu"]["library"]["loadable"] is False
