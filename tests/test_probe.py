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


# --- which libedgetpu build, and does it suit the runtime ----------------------------------


def _dpkg(tmp_path, version: str, package: str = "libedgetpu1-std"):
    status = tmp_path / "status"
    status.write_text(f"Package: libusb-1.0-0\nStatus: install ok installed\nVersion: 2:1.0.26-1\n\n"
                      f"Package: {package}\nStatus: install ok installed\nArchitecture: arm64\nVersion: {version}\n"
                      "Description: Support library for Edge TPU\n multi-line description\n")
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    (lib / "libedgetpu.so.1.0").write_bytes(b"\x7fELF")
    if not (lib / "libedgetpu.so.1").exists():
        (lib / "libedgetpu.so.1").symlink_to("libedgetpu.so.1.0")
    return {"dpkg_status": status, "library_dirs": [str(lib)]}


def test_probe_names_the_pinned_build_as_matching(tmp_path):
    from edge_classifier.engine.libedgetpu import PINNED_VERSION

    paths = _dpkg(tmp_path, PINNED_VERSION)
    build = probe(tmp_path, tmp_path, try_delegate=dict, build_paths=paths)["edgetpu"]["build"]
    assert build["package"] == "libedgetpu1-std" and build["version"] == "16.0tf2.19.1-1"
    assert build["built_for_tf"] == "2.19.1"
    assert build["path"] == str(tmp_path / "lib" / "libedgetpu.so.1")
    assert build["resolved"] == str(tmp_path / "lib" / "libedgetpu.so.1.0")
    assert build["matches_runtime"] is True
    assert build["runtime"].startswith("ai-edge-litert ")


def test_probe_says_googles_old_build_does_not_match(tmp_path):
    build = probe(tmp_path, tmp_path, try_delegate=dict, build_paths=_dpkg(tmp_path, "16.0"))["edgetpu"]["build"]
    assert build["matches_runtime"] is False
    assert "crashes in runtimes after TF 2.11" in build["note"]


def test_probe_compares_a_community_build_with_tflite_runtime(tmp_path):
    from edge_classifier.engine.libedgetpu import installed_build

    paths = _dpkg(tmp_path, "16.0tf2.17.1-1", package="libedgetpu1-max")
    same = installed_build({"name": "tflite-runtime", "version": "2.17.1"}, **paths)
    assert (same["package"], same["matches_runtime"]) == ("libedgetpu1-max", True)
    other = installed_build({"name": "tflite-runtime", "version": "2.14.0"}, **paths)
    assert other["matches_runtime"] is False and "mismatch" in other["note"]
    unchecked = installed_build({"name": "ai-edge-litert", "version": "2.3.0"}, **paths)
    assert unchecked["matches_runtime"] is None and "unchecked" in unchecked["note"]


def test_probe_without_libedgetpu_says_how_to_install(tmp_path):
    build = probe(tmp_path, tmp_path, try_delegate=dict,
                  build_paths={"dpkg_status": tmp_path / "none", "library_dirs": [str(tmp_path)]})["edgetpu"]["build"]
    assert build["path"] is None and build["version"] is None
    assert build["note"] == "libedgetpu is not installed (systemd/install.sh --coral)"


def test_install_sh_pins_the_same_build_probe_knows():
    from pathlib import Path

    from edge_classifier.engine.libedgetpu import PINNED_VERSION

    script = (Path(__file__).resolve().parents[1] / "systemd" / "install.sh").read_text()
    assert f'LIBEDGETPU_VERSION="{PINNED_VERSION}"' in script
