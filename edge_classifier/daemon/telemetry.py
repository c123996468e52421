"""Process and device readings for ``{prefix}/stats``: memory, CPU temperature, percentiles."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

__all__ = ["cpu_temperature", "percentile", "rss_mb"]

_THERMAL = Path("/sys/class/thermal")


def rss_mb(status: Path = Path("/proc/self/status")) -> float | None:
    """Resident memory of this process in MiB, or None where /proc is not readable."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def cpu_temperature(thermal: Path = _THERMAL) -> float | None:
    """The CPU temperature in °C (the first thermal zone of type cpu/soc/x86_pkg, else zone 0)."""
    try:
        zones = sorted(thermal.glob("thermal_zone*"))
    except OSError:
        return None
    preferred = []
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
        except OSError:
            continue
        if any(word in kind for word in ("cpu", "soc", "x86_pkg")):
            preferred.append(zone)
    for zone in preferred + zones[:1]:
        try:
            return round(int((zone / "temp").read_text().strip()) / 1000.0, 1)
        except (OSError, ValueError):
            continue
    return None


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100, nearest rank) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100.0 * len(ordered)) - 1))
    return round(ordered[rank], 2)
