"""Peak RSS under the image bombs and the longest gap between watchdog pings during the
heaviest command (a `learn` with 10,500 tiny images), on the real daemon.

    .venv/bin/python benchmarks/hostile.py

Runs the two tests that measure them (tests/test_hostile_images.py, tests/test_hostile_learn.py:
a real Mosquitto, the real daemon, sd_notify on a real socket) and prints their figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_hostile_images.py::test_bombs_empty_and_random_payloads_on_the_mqtt_source",
         "tests/test_hostile_images.py::test_classify_refuses_a_20000_square_bomb",
         "tests/test_hostile_learn.py::test_heavy_learn_keeps_status_watchdog_and_sigterm"]


def main() -> int:
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", *TESTS], cwd=REPO,
                         capture_output=True, text=True)
    for line in run.stdout.splitlines():
        if any(key in line for key in ("peak RSS", "watchdog pings", "learn payload", "passed", "failed")):
            print(line.strip(". "))
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
