"""The daemon starts without what READY does not need.

Under emulation (and on a Pi 3 or Zero 2) the daemon's start-up is mostly Python imports:
the field rig measured ~9 s to READY against a 10 s bound. `edge-classifier run` therefore
imports only its own command, and the other commands, learning, the isolated-worker
machinery (multiprocessing), the web view and model signing only when used. These tests run
the real daemon on the real model and look at what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support.testdata import REPO
from support.variants import EXTRACTOR

DEMO_MODEL = REPO / "models" / "demo_shapes_mobilenet_v2_035_96_quant.tflite"
DEMO_IMAGES = REPO / "demo" / "images"

# Runs the CLI, then prints every module it imported (stderr's last line).
PROBE = ("import json, sys\nfrom edge_classifier.cli.main import main\ncode = main(sys.argv[1:])\n"
         "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\nsys.exit(code)\n")

NOT_FOR_RUN = ("edge_classifier.cli.bench", "edge_classifier.cli.classify", "edge_classifier.cli.models",
               "edge_classifier.cli.learn", "edge_classifier.cli.init", "edge_classifier.learn",
               "edge_classifier.daemon.learning", "edge_classifier.engine.worker", "edge_classifier.web",
               "multiprocessing", "cryptography", "bottle", "prometheus_client")


def cli(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120,
                          check=False)
    last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    modules = set(json.loads(last)) if last.startswith("[") else set()  # none when argparse exits
    return done, modules


def config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[source]\nkind = "images"\nuri = "{DEMO_IMAGES}"\n[model]\npath = "{DEMO_MODEL}"\n'
                    f'dir = "{tmp_path}"\naccelerator = "cpu"\n[mqtt]\nenabled = false\n{extra}')
    return path


def imported(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_run_classifies_without_the_other_commands_learning_or_workers(tmp_path: Path) -> None:
    done, modules = cli("run", "-c", str(config(tmp_path)), "--max-frames", "3", "--stdout")
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == 3 and all(r["top"] for r in results)
    assert "edge_classifier.daemon.app" in modules
    assert imported(modules, NOT_FOR_RUN) == []


def test_run_with_learning_on_imports_it_and_still_classifies(tmp_path: Path) -> None:
    done, modules = cli("run", "-c", str(config(tmp_path, f'[learn]\nenabled = true\nextractor = "{EXTRACTOR}"\n'
                                              f'head = "{tmp_path / "head.json"}"\n')),
                        "--max-frames", "2", "--stdout")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    assert "edge_classifier.daemon.learning" in modules


def test_help_still_lists_every_command() -> None:
    done, _ = cli("--help")
    assert done.returncode == 0
    for command in ("run", "classify", "check-config", "models", "probe", "bench", "learn", "init"):
        assert f"    {command} " in done.stdout or f"    {command}\n" in done.stdout, done.stdout


def test_an_unknown_command_is_refused_with_the_list() -> None:
    done, _ = cli("frobnicate")
    assert done.returncode == 2
    assert "invalid choice: 'frobnicate'" in done.stderr and "check-config" in done.stderr


def test_another_command_works_in_its_own_parser(tmp_path: Path) -> None:
    done, modules = cli("--debug", "check-config", "-c", str(config(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert "edge_classifier.cli.check_config" in modules
    assert "edge_classifier.cli.run" not in modules
