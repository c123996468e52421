#!/usr/bin/env python3
"""Raw LiteRT invoke rate against the daemon's end-to-end rate, measured in one run.

1. raw: one interpreter with ``threads`` = cores, invoking on one preprocessed tensor;
2. end to end: the real ``edge-classifier run`` as a child process, 640x480 frames from an
   image source in a loop, every result published over MQTT to a Mosquitto this script
   starts on a free loopback port, and counted by a subscriber: rate = results / time from
   the first to the last result that arrived;
3. CPU per frame with the source capped at 30 fps, against invoke alone;
4. the daemon's peak RSS.

The raw rate is measured before and after the end-to-end run and averaged, since these
machines are noisy. Prints a table and a JSON line.

    python benchmarks/throughput.py [--model PATH] [--frames N] [--seconds S]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("EDGE_CLASSIFIER_TESTDATA", REPO.parent / "shared" / "testdata"))
sys.path.insert(0, str(REPO))

from edge_classifier.engine import Engine  # noqa: E402
from edge_classifier.preprocess import InputSpec, fit, input_table, to_input  # noqa: E402


def raw_rate(model: Path, threads: int, seconds: float) -> tuple[float, float]:
    """(invokes per second, CPU milliseconds per invoke) of one interpreter."""
    with Engine.open(model, accelerator="cpu", threads=threads) as engine:
        shape = engine.info.input.shape
        spec = InputSpec(shape[1], shape[2], engine.info.input.dtype, engine.info.input.scale,
                         engine.info.input.zero_point)
        frame = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        tensor = to_input(fit(frame, spec.width, spec.height), input_table(spec))
        for _ in range(20):
            engine.invoke(tensor)
        count = 0
        cpu0, start = time.process_time(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            engine.invoke(tensor)
            count += 1
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    return count / elapsed, cpu / count * 1000.0


def side_by_side_rate(model: Path, interpreters: int, seconds: float) -> float:
    """Invokes per second of ``interpreters`` single-thread interpreters invoking at once, each in
    its own thread (the daemon's workers without any of their other work): what the daemon's
    end-to-end rate could reach at most."""
    engines = [Engine.open(model, accelerator="cpu", threads=1) for _ in range(interpreters)]
    try:
        shape = engines[0].info.input.shape
        tensor = np.zeros((1, shape[1], shape[2], 3), engines[0].info.input.dtype)
        for engine in engines:
            engine.invoke(tensor)
        counts = [0] * interpreters
        start = threading.Barrier(interpreters + 1)

        def run(index: int) -> None:
            start.wait()
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                engines[index].invoke(tensor)
                counts[index] += 1

        threads = [threading.Thread(target=run, args=(i,)) for i in range(interpreters)]
        for thread in threads:
            thread.start()
        start.wait()
        for thread in threads:
            thread.join()
    finally:
        for engine in engines:
            engine.close()
    return sum(counts) / seconds


def paced_invoke_cpu(model: Path, fps: float, count: int) -> float:
    """CPU milliseconds per invoke when invokes come ``fps`` times a second (cold caches, as
    in the daemon at a frame-rate cap), one single-thread interpreter."""
    with Engine.open(model, accelerator="cpu", threads=1) as engine:
        shape = engine.info.input.shape
        tensor = np.zeros((1, shape[1], shape[2], 3), engine.info.input.dtype)
        engine.invoke(tensor)
        cpu = 0.0
        for _ in range(count):
            time.sleep(1.0 / fps)  # pacing, as the frame-rate cap does
            start = time.process_time()
            engine.invoke(tensor)
            cpu += time.process_time() - start
    return cpu / count * 1000.0


def start_broker(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    conf = work / "mosquitto.conf"
    user = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{user}"
                    "max_queued_messages 0\n")
    broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return broker, port
        except OSError:
            if time.monotonic() > deadline:
                broker.kill()
                raise SystemExit("mosquitto did not start") from None
            time.sleep(0.05)  # polling a port that is about to open: no event to wait on


class Counter:
    """Counts results as they arrive, with ``mosquitto_sub`` (C, so the measuring costs the
    2 cores little): it prints each arrival's time and exits after ``expected`` messages."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.proc: subprocess.Popen[str] | None = None
        self.times: list[float] = []

    def start(self, expected: int) -> None:
        self.times = []
        self.proc = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(self.port), "-t", self.topic, "-q", "1",
             "-C", str(expected), "-F", "%U", "-i", f"bench-counter-{os.getpid()}"],
            stdout=subprocess.PIPE, text=True)
        # mosquitto_sub says nothing when subscribed: wait until the broker has the
        # subscription by publishing a marker on the topic and reading it back.
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", self.topic,
                        "-q", "1", "-m", "marker", "-r"], check=True)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # the retained marker arrived: subscribed
        subprocess.run(["mosquitto_pub", "-h", "127.0.0.1", "-p", str(self.port), "-t", self.topic,
                        "-q", "1", "-n", "-r"], check=True)  # clear the retained marker ...
        self.proc.stdout.readline()  # ... which arrives as one more (empty) message

    def first(self, timeout: float) -> float:
        """Wait for the first result; returns its arrival time. SystemExit after ``timeout`` s."""
        assert self.proc is not None and self.proc.stdout is not None
        import select

        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            raise SystemExit(f"no result within {timeout:g} s")
        line = self.proc.stdout.readline()
        self.times.append(float(line.split()[0]))
        return self.times[0]

    def wait(self, timeout: float) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.times.append(float(line.split()[0]))
        return self.proc.wait(timeout) == 0

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def bench_rig(frames_dir: str = "frames") -> Iterator[tuple[Path, int, Counter]]:
    """A work folder holding one 640x480 BMP frame (``frames_dir``, the daemon's images source),
    a Mosquitto on a free loopback port and a result counter: (work, port, counter); both stopped
    at the end."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / frames_dir).mkdir()
        picture = cv2.resize(cv2.imread(str(TESTDATA / "images" / "cat_720p.jpg")), (640, 480))
        cv2.imwrite(str(work / frames_dir / "frame.bmp"), picture)
        broker, port = start_broker(work)
        counter = Counter(port, "edge-classifier/bench/result")
        try:
            yield work, port, counter
        finally:
            counter.close()
            broker.terminate()
            broker.wait(10)


def run_daemon(work: Path, model: Path, port: int, frames: int, fps: float, threads: int,
               counter: Counter, qos: int = 1, frames_dir: Path | None = None, model_extra: str = "",
               env: dict[str, str] | None = None, split: bool = False) -> dict[str, Any]:
    """The real daemon for ``frames`` results: their rate, CPU per frame (the daemon's and its
    worker children's), RSS. ``model_extra``: more ``[model]`` lines; ``env``: its environment;
    ``split``: also each thread's CPU and context switches a result (``threads``)."""
    config = work / f"config-{fps}.toml"
    config.write_text(f"""
[device]
id = "bench"
log_level = "warning"
[source]
kind = "images"
uri = "{frames_dir or work / 'frames'}"
loop = true
fps = {fps}
[model]
path = "{model}"
threads = {threads}
accelerator = "cpu"
{model_extra}
[classify]
top_k = 3
[mqtt]
host = "127.0.0.1"
port = {port}
qos = {qos}
""")
    counter.start(frames + 2)  # +2: the marker and its removal
    # The daemon's stderr goes to a file: a pipe nobody reads until the end can fill up
    # and stall the daemon.
    errors = (work / "daemon-stderr.txt").open("w+")
    # With ``split`` the daemon is given more frames than are counted: at the last counted result
    # its threads are still running, to be read (at --max-frames the workers end first).
    limit = frames + (max(30, frames // 20) if split else 0)
    proc = subprocess.Popen([sys.executable, "-m", "edge_classifier", "run", "-c", str(config),
                             "--max-frames", str(limit)], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=errors, text=True)
    # CPU time is read at the first and the last result, so start-up (imports, model
    # loading) is not counted against the frames.
    try:
        counter.first(120)
    except SystemExit:
        proc.kill()
        proc.wait()
        errors.seek(0)
        raise SystemExit(f"no result from the daemon (exit {proc.returncode}):\n{errors.read()[-3000:]}") from None
    cpu_first, rss_first, child_first = process_cpu(proc.pid), process_rss_mb(proc.pid), children_cpu(proc.pid)
    names = thread_names(proc.pid) if split else {}
    threads_first = thread_counters(proc.pid) if split else {}
    sampler = RssSampler(proc.pid)
    arrived = counter.wait(1200)
    samples = sampler.stop()
    cpu_last, rss_last, child_last = process_cpu(proc.pid), process_rss_mb(proc.pid), children_cpu(proc.pid)
    threads_last = thread_counters(proc.pid) if split else {}
    if split:
        proc.send_signal(signal.SIGTERM)  # it has frames to go, so its workers were still there
    proc.wait(timeout=60)
    peak = peak_rss_mb()
    errors.seek(0)
    stderr = errors.read()
    errors.close()
    if proc.returncode != 0:
        raise SystemExit(f"daemon failed ({proc.returncode}):\n{stderr}")
    if not arrived:
        raise SystemExit(f"only {len(counter.times)} of {frames} results arrived")
    times = counter.times
    rate = (len(times) - 1) / (times[-1] - times[0])
    split_rows = []
    for tid, last in threads_last.items():
        first = threads_first.get(tid, (0.0, 0, 0))
        per = [(b - a) / (len(times) - 1) for a, b in zip(first, last, strict=True)]
        if per[0] > 0 or per[1] > 0.05:
            split_rows.append({"thread": names.get(tid, f"tid {tid}"), "cpu_us": round(per[0] * 1e6, 1),
                               "voluntary": round(per[1], 2), "involuntary": round(per[2], 2)})
    if split:
        # The daemon had frames to go, so its threads ran through both samples: the sum of their
        # nanosecond counts between the two is the process's CPU, without stat's 10 ms ticks (a
        # thread that began meanwhile counts from 0; one that ended meanwhile is not subtracted).
        cpu = sum(last[0] - threads_first.get(tid, (0.0, 0, 0))[0] for tid, last in threads_last.items())
    else:
        cpu = cpu_last - cpu_first
    return {"rate": rate, "results": len(times), "threads": split_rows,
            "cpu_ms_per_frame": cpu / (len(times) - 1) * 1000.0,
            "child_cpu_ms_per_frame": (child_last - child_first) / (len(times) - 1) * 1000.0, "peak_rss_mb": peak,
            "rss_first_mb": rss_first, "rss_last_mb": rss_last, "rss_samples_mb": samples}


class RssSampler:
    """Samples a process's RSS every ``interval`` seconds in a thread until ``stop``."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.samples.append(process_rss_mb(self.pid))
            except OSError:  # the process has ended
                return

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return self.samples


def peak_rss_mb() -> float:
    """The largest peak RSS of the children reaped so far (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def process_rss_mb(pid: int) -> float:
    """Resident memory of a running process in MiB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def children_cpu(pid: int) -> float:
    """CPU seconds of ``pid``'s child processes (an engine worker), from /proc."""
    seconds = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(FileNotFoundError):  # it exited just now
                seconds += process_cpu(int(child))
    return seconds


def thread_counters(pid: int) -> dict[str, tuple[float, int, int]]:
    """Each thread's (CPU seconds, voluntary, involuntary context switches), from /proc. The CPU
    is the scheduler's own count in nanoseconds (``schedstat``), not ``stat``'s 10 ms ticks, which
    over 150 frames at 30 fps came in steps of 67 µs a frame."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # the thread ended just now
            on_cpu_ns = int((task / "schedstat").read_text().split()[0])
            status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
            found[task.name] = (on_cpu_ns / 1e9, int(status["voluntary_ctxt_switches"]),
                                int(status["nonvoluntary_ctxt_switches"]))
    return found


def thread_names(pid: int) -> dict[str, str]:
    """Thread id -> Python thread name, from ``py-spy dump`` when py-spy is installed (Python 3.11
    does not name its threads for the OS); empty without it."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {}
    # Blocking (the process is paused for the dump): --nonblocking often failed on a busy daemon.
    dump = subprocess.run([spy, "dump", "-p", str(pid)], capture_output=True, text=True, timeout=30)
    return dict(re.findall(r'^Thread (\d+) \([^)]*\): "([^"]*)"', dump.stdout, re.MULTILINE))


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=TESTDATA / "models" / "mobilenet_v2_1.0_224_quant.tflite")
    parser.add_argument("--frames", type=int, default=3000, help="frames in the end-to-end run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each raw measurement")
    parser.add_argument("--capped-frames", type=int, default=150, help="frames in the 30 fps run")
    args = parser.parse_args()
    args.model = args.model.resolve()  # the daemon's config is read from a temporary directory
    if shutil.which("mosquitto") is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    cores = os.cpu_count() or 1
    with bench_rig() as (work, port, counter):
        raw1, raw_cpu = raw_rate(args.model, cores, args.seconds)
        e2e = run_daemon(work, args.model, port, args.frames, 0, cores, counter)
        raw2, _ = raw_rate(args.model, cores, args.seconds)
        capped = run_daemon(work, args.model, port, args.capped_frames, 30, cores, counter)
        raw_single, raw_single_cpu = raw_rate(args.model, 1, args.seconds)
        paced_cpu = paced_invoke_cpu(args.model, 30, args.capped_frames)
    raw = (raw1 + raw2) / 2
    summary = {
        "model": args.model.name,
        "cores": cores,
        "raw_invokes_per_s": round(raw, 1),
        "raw_runs": [round(raw1, 1), round(raw2, 1)],
        "end_to_end_per_s": round(e2e["rate"], 1),
        "ratio": round(e2e["rate"] / raw, 3),
        "results_published": e2e["results"],
        "cpu_ms_per_frame_at_30fps": round(capped["cpu_ms_per_frame"], 2),
        "cpu_ms_per_invoke_threads_cores": round(raw_cpu, 2),
        "cpu_ms_per_invoke_1_thread": round(raw_single_cpu, 2),
        "cpu_ms_per_invoke_paced_30fps": round(paced_cpu, 2),
        "raw_invokes_per_s_1_thread": round(raw_single, 1),
        "daemon_peak_rss_mb": round(max(e2e["peak_rss_mb"], capped["peak_rss_mb"]), 1),
        "daemon_rss_first_last_result_mb": [round(e2e["rss_first_mb"], 1), round(e2e["rss_last_mb"], 1)],
    }
    print(f"model                       {summary['model']} ({cores} cores)")
    print(f"raw invoke rate             {raw:8.1f} /s   (1 interpreter, {cores} threads; runs {raw1:.1f}, {raw2:.1f})")
    print(f"end-to-end rate             {e2e['rate']:8.1f} /s   ({e2e['results']} results published over MQTT)")
    print(f"ratio                       {summary['ratio']:8.3f}")
    print(f"CPU per frame at 30 fps     {capped['cpu_ms_per_frame']:8.2f} ms  (whole daemon process)")
    print(f"CPU per invoke alone        {raw_cpu:8.2f} ms  ({cores} threads); {raw_single_cpu:.2f} ms (1 thread); "
          f"{paced_cpu:.2f} ms (1 thread, paced at 30/s)")
    print(f"daemon peak RSS             {summary['daemon_peak_rss_mb']:8.1f} MB  (RSS at the first and the last "
          f"of {e2e['results']} results: {e2e['rss_first_mb']:.1f}, {e2e['rss_last_mb']:.1f} MB)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
