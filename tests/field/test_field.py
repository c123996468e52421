"""The field rig as a pytest entry: ``pytest -m field tests/field`` (deselected by default:
it needs root and qemu, and takes minutes). Each test boots one VM through rig.py and
asserts on its report: every check the guest ran passed, and the ones that matter ran."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = [pytest.mark.field, pytest.mark.timeout(1800)]

CORE = ("install", "numpy_is_apts", "active_within_10s", "status_waiting", "event_source_lost",
        "no_camera_no_restart_40s", "camera_appears_frames_classified", "journal_priorities", "security_le_2",
        "sigkill_restarted", "sigstop_watchdog_restarted", "journal_watchdog_timeout", "uninstall_leaves_nothing")


def _rig(*args: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0:
        pytest.fail("the field rig needs root (debootstrap, apt for qemu)")
    return subprocess.run([sys.executable, str(HERE / "rig.py"), *args], capture_output=True, text=True,
                          timeout=7000, check=False)


def _checks(stdout: str) -> dict[str, str]:
    return {line.split()[1]: line.split()[0] for line in stdout.splitlines()
            if line.startswith(("PASS ", "FAIL ")) and len(line.split()) > 1}


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_amd64_service(suite: str) -> None:
    done = _rig("--suite", suite, "--arch", "amd64")
    checks = _checks(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    missing = [name for name in CORE if checks.get(name) != "PASS"]
    assert not missing, done.stdout


@pytest.mark.timeout(3600)
def test_arm64_classify_and_short_run() -> None:
    """The arm64 image: debootstrap's first stage, the other .debs unpacked on the host and a
    small init instead of systemd (foreign.py); the guest installs the aarch64 wheels, runs
    `classify` and a 20-frame `run`."""
    if shutil.which("qemu-system-aarch64") is None:
        subprocess.run(["bash", str(HERE / "install-deps")], check=True)
    done = _rig("--suite", "trixie", "--arch", "arm64")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _checks(done.stdout) >= {"classify": "PASS", "short_run": "PASS"}
