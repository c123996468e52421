#!/usr/bin/env python3
"""What the web view costs the daemon: CPU and RSS with [web] off, on with no viewer, and on
with one viewer at the default preview rate.

Each case is a real ``edge-classifier run`` on the same input: an ``images`` source looping
over one 720p photo at a fixed frame rate (a camera's steady load), MobileNet v2 on the CPU,
MQTT off. After a warm-up the daemon's CPU time (utime + stime from /proc/PID/stat) is taken
over a window and its RSS (VmRSS) at the end. The viewer does what the page does: it
long-polls ``/api/sources/<name>/frame.jpg?after=N`` paced to ``preview_fps``, follows the
event stream and polls the stats and the status.
The cases run in rounds (off, idle, viewer, off, idle, viewer, ...) so drift on a shared
machine hits them alike; the median per case is printed, and the extra cost against "off".
Also the import cost of the HTTP stacks considered (on top of the daemon's imports).

    python benchmarks/web_cost.py [--fps 10] [--warmup 8] [--window 15] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
MODEL = TESTDATA / "models" / "mobilenet_v2_1.0_224_quant.tflite"
PHOTO = TESTDATA / "images" / "cat_720p.jpg"
TICKS = os.sysconf("SC_CLK_TCK")
IMPORTS = {"aiohttp": "aiohttp.web", "bottle + wsgiref (chosen)": "bottle,wsgiref.simple_server,socketserver",
           "prometheus_client": "prometheus_client"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def config(folder: Path, fps: float, web: bool, port: int) -> Path:
    path = folder / f"config-{'web' if web else 'off'}.toml"
    path.write_text(f"""
[device]
id = "bench"
[source]
kind = "images"
uri = "{folder / 'pics'}"
loop = true
fps = {fps}
[model]
path = "{MODEL}"
dir = "{folder}"
accelerator = "cpu"
[mqtt]
enabled = false
[web]
enabled = {str(web).lower()}
port = {port}
""")
    return path


class Viewer(threading.Thread):
    """One page's worth of requests: its watch loop (frames at preview_fps), its event stream,
    /api/stats every 2 s and /api/status every 5 s."""

    def __init__(self, port: int, fps: float) -> None:
        super().__init__(name="viewer", daemon=True)
        self.port, self.fps = port, fps
        self.stop = threading.Event()
        self.frames = 0
        self.bytes = 0

    def follow(self) -> None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/stream?results=0", timeout=30) as r:
                while not self.stop.is_set() and r.readline():
                    pass
        except OSError:
            pass

    def poll(self) -> None:
        tick = 0
        while not self.stop.wait(1.0):
            tick += 1
            for path, every in (("/api/stats", 2), ("/api/status", 5)):
                if tick % every == 0:
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                            r.read()
                    except OSError:
                        pass

    def run(self) -> None:
        threading.Thread(target=self.follow, name="viewer-stream", daemon=True).start()
        threading.Thread(target=self.poll, name="viewer-poll", daemon=True).start()
        after = -1
        source = None
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                if source is None:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status", timeout=10) as r:
                        sources = json.load(r)["web"]["sources"]
                    source = sources[0] if sources else None
                    if source is None:
                        self.stop.wait(0.2)
                        continue
                url = f"http://127.0.0.1:{self.port}/api/sources/{source}/frame.jpg?after={after}&wait=10"
                with urllib.request.urlopen(url, timeout=15) as r:
                    after = json.loads(r.headers["X-Result"])["frame"]
                    self.bytes += len(r.read())
                self.frames += 1
            except OSError:
                self.stop.wait(0.2)
            self.stop.wait(max(0.0, 1.0 / self.fps - (time.monotonic() - started)))


def measure(folder: Path, case: str, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    path = config(folder, args.fps, case != "off", port)
    proc = subprocess.Popen([sys.executable, "-m", "edge_classifier", "run", "-c", str(path)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    viewer = Viewer(port, args.preview_fps) if case == "viewer" else None
    try:
        time.sleep(args.warmup)  # a benchmark, not a test: the daemon settles (model loaded, frames flowing)
        if viewer is not None:
            viewer.start()
            time.sleep(2.0)
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.window)
        cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
        result = {"cpu_pct": 100.0 * (cpu1 - cpu0) / (t1 - t0), "rss_mb": rss_mb(proc.pid)}
        if viewer is not None:
            result["viewer_fps"] = viewer.frames / (time.monotonic() - t0 + 2.0)
            result["jpeg_kb"] = viewer.bytes / max(1, viewer.frames) / 1024
        return result
    finally:
        if viewer is not None:
            viewer.stop.set()
        proc.terminate()
        proc.wait(15)


def import_cost(modules: str) -> str:
    code = ("import importlib, sys, time\n"
            "def rss():\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS')) / 1024\n"
            "import numpy, cv2, paho.mqtt.client\n"
            "base, t = rss(), time.perf_counter()\n"
            f"for m in {modules!r}.split(','): importlib.import_module(m)\n"
            "print(f'+{rss() - base:.1f} MB RSS, {(time.perf_counter() - t) * 1000:.0f} ms import')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or f"not installed ({done.stderr.strip().splitlines()[-1]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=10.0, help="source frame rate (default 10)")
    parser.add_argument("--preview-fps", type=float, default=4.0, help="the viewer's rate (default: web.preview_fps)")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--window", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    cases = ("off", "idle", "viewer")
    runs: dict[str, list[dict[str, float]]] = {case: [] for case in cases}
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        (folder / "pics").mkdir()
        shutil.copy(PHOTO, folder / "pics" / PHOTO.name)
        for _ in range(args.rounds):
            for case in cases:
                runs[case].append(measure(folder, case, args))
    median = {case: {key: statistics.median(run[key] for run in runs[case]) for key in runs[case][0]}
              for case in cases}
    names = {"off": "[web] off", "idle": "[web] on, no viewer", "viewer": "[web] on, one viewer"}
    print(f"source: {PHOTO.name} looped at {args.fps:g} fps, {MODEL.stem} on the CPU; "
          f"{args.rounds} rounds of {args.window:g} s, medians")
    for case in cases:
        row = median[case]
        extra = "" if case == "off" else (f"   ({row['cpu_pct'] - median['off']['cpu_pct']:+.1f} % CPU, "
                                          f"{row['rss_mb'] - median['off']['rss_mb']:+.1f} MB)")
        viewer = f", {row['viewer_fps']:.1f} previews/s of {row['jpeg_kb']:.0f} KB" if case == "viewer" else ""
        print(f"  {names[case]:<22} CPU {row['cpu_pct']:5.1f} % of a core, RSS {row['rss_mb']:6.1f} MB{viewer}{extra}")
        print(f"  {'':<22} runs: CPU " + ", ".join(f"{run['cpu_pct']:.1f}" for run in runs[case])
              + " %; RSS " + ", ".join(f"{run['rss_mb']:.1f}" for run in runs[case]) + " MB")
    print("import cost on top of numpy, cv2, paho:")
    for name, modules in IMPORTS.items():
        print(f"  {name:<26} {import_cost(modules)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
