"""The shipped unit (systemd-analyze verify and security) and the install/uninstall scripts.

The scripts are exercised with ``--dry-run`` in a copy of the repository layout and with
``EDGE_CLASSIFIER_ROOT`` pointing at a scratch root, so nothing on this machine changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "edge-classifier.service"
INSTALL = REPO / "systemd" / "install.sh"
UNINSTALL = REPO / "systemd" / "uninstall.sh"
MAX_EXPOSURE = 2.0

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed on this machine"
)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    # SYSTEMD_LOG_COLOR/… off: plain text to parse; no pager.
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, env=env, timeout=60)


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


# --- the unit ------------------------------------------------------------------------------


@needs_analyze
def test_unit_verifies_cleanly(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists; the venv is not installed here, so verify a
    # copy that runs /bin/true instead: everything else (syntax, every key, every value) is ours.
    copy = tmp_path / "edge-classifier.service"
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", UNIT.read_text()))
    result = _analyze("verify", "--man=no", str(copy))
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr

    # The shipped file itself: the missing venv binary is the only complaint allowed.
    result = _analyze("verify", "--man=no", str(UNIT))
    complaints = [line for line in result.stderr.splitlines() if "is not executable" not in line]
    assert complaints == []


@needs_analyze
def test_unit_exposure_is_at_most_2() -> None:
    result = _analyze("security", "--offline=yes", str(UNIT))
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for edge-classifier\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-2000:]
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_unit_has_the_documented_settings() -> None:
    d = _directives(UNIT.read_text())
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "30",
        "Restart": "on-failure",
        "ExecStart": "/opt/edge-classifier/venv/bin/edge-classifier run -c /etc/edge-classifier/config.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "User": "edge-classifier",
        "StateDirectory": "edge-classifier",
        "ConfigurationDirectory": "edge-classifier",
        "ProtectSystem": "strict",
        "CapabilityBoundingSet": "",
        "DevicePolicy": "closed",
    }
    for key, value in expected.items():
        assert d.get(key) == [value], key
    assert "EDGE_CLASSIFIER_CONFIG=/etc/edge-classifier/config.toml" in d["Environment"]
    assert d["LoadCredential"] == ["mqtt-password:/etc/edge-classifier/mqtt-password",
                                   "web-password:/etc/edge-classifier/web-password"]
    assert d["SetCredential"] == ["mqtt-password:\\n", "web-password:\\n"]  # missing files are not fatal
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "plugdev", "apex"}
    assert "StartLimitBurst" in d and "StartLimitIntervalSec" in d


def test_every_directive_has_a_comment() -> None:
    # A directive is covered by the nearest comment above it, through a run of directives
    # (related settings share one comment), but not across a blank line or section header.
    lines = UNIT.read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        if not line or line.startswith(("#", "[")):
            continue
        j = i - 1
        while j >= 0 and lines[j] and not lines[j].startswith(("#", "[")):
            j -= 1
        if j < 0 or not lines[j].startswith("#"):
            uncommented.append(line)
    allowed = {"Description", "WantedBy"}  # self-explanatory
    assert [x for x in uncommented if x.partition("=")[0] not in allowed] == []


def test_install_paths_match_the_unit() -> None:
    unit = UNIT.read_text()
    script = INSTALL.read_text()
    assert 'VENV="$PREFIX/venv"' in script and 'PREFIX="$ROOT/opt/$NAME"' in script
    assert "/opt/edge-classifier/venv/bin/edge-classifier" in unit
    assert 'ETC="$ROOT/etc/$NAME"' in script and "/etc/edge-classifier/config.toml" in unit
    assert 'STATE="$ROOT/var/lib/$NAME"' in script and "WorkingDirectory=/var/lib/edge-classifier" in unit


# --- the scripts ---------------------------------------------------------------------------


@pytest.mark.parametrize("script", [INSTALL, UNINSTALL], ids=lambda p: p.name)
def test_scripts_parse(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert script.read_text().splitlines()[0] == "#!/usr/bin/env bash"
    assert "set -euo pipefail" in script.read_text()
    assert os.access(script, os.X_OK)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A copy of the repository layout the scripts read (they find it from their own path)."""
    src = tmp_path / "src"
    (src / "systemd").mkdir(parents=True)
    for path in (INSTALL, UNINSTALL, UNIT):
        shutil.copy2(path, src / "systemd" / path.name)
    (src / "pyproject.toml").write_text('[project]\nname = "edge-classifier"\n')
    (src / "config.toml").write_text('[model]\ndir = "models"\n')
    (src / "models").mkdir()
    (src / "models" / "mobilenet.tflite").write_bytes(b"TFL3")
    (src / "models" / "labels.txt").write_text("cat\n")
    return src


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _run(script: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGE_CLASSIFIER_ROOT": str(root)}
    return subprocess.run(
        ["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def _commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def _user_exists() -> bool:
    return subprocess.run(["getent", "passwd", "edge-classifier"], capture_output=True).returncode == 0


def _index(commands: list[str], needle: str) -> int:
    hits = [i for i, c in enumerate(commands) if needle in c]
    assert hits, f"{needle!r} not in {commands}"
    return hits[0]


def test_install_dry_run_prints_the_documented_steps_in_order(source: Path, root: Path) -> None:
    before = _snapshot(root)
    result = _run(source / "systemd" / "install.sh", root, "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    r = str(root)
    steps = [
        *(["useradd --system --user-group"] if not _user_exists() else []),
        f"python3 -m venv {r}/opt/edge-classifier/venv",
        f"{r}/opt/edge-classifier/venv/bin/pip install --disable-pip-version-check --upgrade {source}",
        f"{r}/var/lib/edge-classifier {r}/var/lib/edge-classifier/models",
        f"{source}/models/mobilenet.tflite {r}/var/lib/edge-classifier/models/",
        f"{source}/models/labels.txt {r}/var/lib/edge-classifier/models/",
        f"{r}/opt/edge-classifier/venv/bin/edge-classifier init --output {r}/etc/edge-classifier/config.toml "
        f"--models-dir {r}/var/lib/edge-classifier/models",
        f"chgrp edge-classifier {r}/etc/edge-classifier/config.toml",
        f"install -D -m 0644 {source}/systemd/edge-classifier.service "
        f"{r}/etc/systemd/system/edge-classifier.service",
        "systemctl daemon-reload",
        "systemctl enable edge-classifier.service",
        "systemctl restart edge-classifier.service",
    ]
    positions = [_index(commands, step) for step in steps]
    assert positions == sorted(positions), commands
    for note in ("1. groups", "2. user", "3. venv", "4. models", "5. config", "7. unit"):
        assert f"== {note}" in result.stdout
    assert "== 6. coral" not in result.stdout
    assert "sed -i" not in result.stdout  # no more patching a copied config: init writes absolute paths
    assert "--system-site-packages" not in result.stdout
    assert _snapshot(root) == before  # a dry run changes nothing


def test_install_dry_run_leaves_an_existing_install_alone(source: Path, root: Path) -> None:
    etc = root / "etc" / "edge-classifier"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text("# the user's own config\n")
    models = root / "var" / "lib" / "edge-classifier" / "models"
    models.mkdir(parents=True)
    (models / "mine.tflite").write_bytes(b"TFL3")
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copy2(UNIT, units / "edge-classifier.service")
    before = _snapshot(root)

    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--no-start")
    assert result.returncode == 0, result.stderr
    commands = "\n".join(_commands(result.stdout))
    assert "etc/edge-classifier/config.toml" not in commands  # never overwrite the user's config
    assert "sed -i" not in commands
    assert ".tflite" not in commands  # the store is not empty: nothing copied
    assert "edge-classifier.service " not in commands.replace("\n", " \n")  # same unit: not reinstalled
    assert "systemctl restart" not in commands
    assert "systemctl enable edge-classifier.service" in commands
    assert "keeping the existing" in result.stdout
    assert "keeping the 1 model(s)" in result.stdout
    assert _snapshot(root) == before


def test_install_dry_run_with_the_pi_extra(source: Path, root: Path) -> None:
    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--extras", "pi")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert any("python3 -m venv --system-site-packages" in c for c in commands)
    pip = commands[_index(commands, "bin/pip install")]
    assert pip.endswith(f"--upgrade {source}\\[pi\\]"), pip
    # numpy stays where the system python3 has it (apt's, on a Pi), so picamera2 keeps working.
    found = subprocess.run(["python3", "-c", "import numpy; print(numpy.__version__)"], capture_output=True,
                           text=True, check=False)
    if found.returncode == 0:
        version = found.stdout.strip()
        r = str(root)
        assert f"write {r}/opt/edge-classifier/constraints.txt 0644: numpy==" in "\n".join(commands)
        assert version in "\n".join(commands)
        assert f"--constraint {r}/opt/edge-classifier/constraints.txt" in pip
    else:
        assert "no numpy from apt" in result.stderr


def test_install_rejects_bad_arguments(source: Path, root: Path) -> None:
    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--bogus")
    assert result.returncode != 0 and "--bogus" in result.stderr
    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--extras", "pi;rm")
    assert result.returncode != 0 and "pi;rm" in result.stderr
    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--wheels", str(root / "nowhere"))
    assert result.returncode != 0 and "--wheels" in result.stderr
    assert _commands(result.stdout) == []  # checked before anything would change


def test_install_passes_the_init_flags_and_the_wheel_folder(source: Path, root: Path, tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    result = _run(source / "systemd" / "install.sh", root, "--dry-run", "--wheels", str(wheels),
                  "--mqtt-host", "broker.lan", "--source", "/dev/video2", "--model", "m.tflite")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    r = str(root)
    assert f"{r}/opt/edge-classifier/venv/bin/pip install --disable-pip-version-check --no-index " \
        f"--find-links {wheels} --upgrade edge-classifier" in commands
    init = commands[_index(commands, "edge-classifier init")]
    assert init.endswith("--mqtt-host broker.lan --source /dev/video2 --model m.tflite")


@pytest.mark.parametrize("machine", ["armv7l", "armv6l", "i686"])
def test_install_refuses_32_bit_with_one_line(source: Path, root: Path, machine: str) -> None:
    env = {**os.environ, "EDGE_CLASSIFIER_ROOT": str(root), "EDGE_CLASSIFIER_MACHINE": machine}
    result = subprocess.run(["bash", str(source / "systemd" / "install.sh"), "--dry-run"], capture_output=True,
                            text=True, env=env, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"install.sh: 32-bit systems are not supported ({machine}): LiteRT has no")
    assert "install Raspberry Pi OS (64-bit)" in result.stderr


def _coral(source: Path, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGE_CLASSIFIER_ROOT": str(root), "EDGE_CLASSIFIER_DEB": "bookworm arm64"}
    return subprocess.run(["bash", str(source / "systemd" / "install.sh"), "--dry-run", "--no-start", *args],
                          capture_output=True, text=True, env=env, timeout=60, check=False)


DEB = "libedgetpu1-std_16.0tf2.19.1-1.bookworm_arm64.deb"


def test_coral_from_a_mirror_folder_checks_the_sha256(source: Path, root: Path, tmp_path: Path) -> None:
    import hashlib

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    standin = mirror / DEB
    standin.write_bytes(b"a stand-in for the real .deb\n")
    good = hashlib.sha256(standin.read_bytes()).hexdigest()
    result = _coral(source, root, "--coral-from", str(mirror), "--coral-sha256", good)
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    r = str(root)
    assert f"env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {standin}" in commands
    rules = commands[_index(commands, f"write {r}/etc/udev/rules.d/65-edge-classifier-coral.rules 0644")]
    assert "1a6e" in rules and "18d1" in rules and "apex" in rules and "plugdev" in rules
    assert "udevadm control --reload-rules" in commands
    assert "== 6. coral" in result.stdout

    # The same file with another hash expected: refused before anything changes, one line.
    bad = "0" * 64
    refused = _coral(source, root, "--coral-from", str(mirror), "--coral-sha256", bad)
    assert refused.returncode == 1
    assert _commands(refused.stdout) == []
    assert refused.stderr == (f"install.sh: libedgetpu: {standin}: sha256 {good} is not the expected {bad}; "
                              "not installing it\n")
    # Pinned hashes come from systemd/libedgetpu.sha256; a wrong pin is refused the same way.
    (source / "systemd" / "libedgetpu.sha256").write_text(f"{bad}  {DEB}\n")
    refused = _coral(source, root, "--coral-from", str(mirror))
    assert refused.returncode == 1 and "is not the expected" in refused.stderr


def test_coral_without_a_pinned_sha256_is_refused(source: Path, root: Path, tmp_path: Path) -> None:
    shutil.copy2(REPO / "systemd" / "libedgetpu.sha256", source / "systemd" / "libedgetpu.sha256")
    result = _coral(source, root, "--coral")
    assert result.returncode == 1
    assert result.stderr == (f"install.sh: libedgetpu: no sha256 pinned for {DEB} in systemd/libedgetpu.sha256; "
                             "check the file yourself and pass --coral-sha256 HEX\n")
    mirror = tmp_path / "empty-mirror"
    mirror.mkdir()
    result = _coral(source, root, "--coral-from", str(mirror))
    assert result.returncode == 1 and f"no {DEB} in {mirror}" in result.stderr


def test_coral_download_uses_the_pinned_url(source: Path, root: Path) -> None:
    (source / "systemd" / "libedgetpu.sha256").write_text(f"{'1' * 64}  {DEB}\n")
    result = _coral(source, root, "--coral")
    assert result.returncode == 0, result.stderr
    fetch = _commands(result.stdout)[_index(_commands(result.stdout), "urllib.request")]
    assert f"https://github.com/feranick/libedgetpu/releases/download/16.0TF2.19.1-1/{DEB}" in fetch


def test_uninstall_dry_run_keeps_data_unless_purge(source: Path, root: Path) -> None:
    (root / "etc" / "systemd" / "system").mkdir(parents=True)
    shutil.copy2(UNIT, root / "etc" / "systemd" / "system" / "edge-classifier.service")
    for d in ("opt/edge-classifier/venv", "etc/edge-classifier", "var/lib/edge-classifier/models"):
        (root / d).mkdir(parents=True)
    before = _snapshot(root)
    r = str(root)

    result = _run(source / "systemd" / "uninstall.sh", root, "--dry-run")
    assert result.returncode == 0, result.stderr
    commands = _commands(result.stdout)
    assert commands[:3] == [
        "systemctl disable --now edge-classifier.service",
        f"rm -f {r}/etc/systemd/system/edge-classifier.service",
        "systemctl daemon-reload",
    ]
    assert f"rm -rf {r}/opt/edge-classifier" in commands
    assert not any(f"{r}/etc/edge-classifier" in c or f"{r}/var/lib" in c for c in commands)

    purge = _commands(_run(source / "systemd" / "uninstall.sh", root, "--dry-run", "--purge").stdout)
    assert f"rm -rf {r}/etc/edge-classifier" in purge
    assert f"rm -rf {r}/var/lib/edge-classifier" in purge
    assert _snapshot(root) == before


def test_uninstall_dry_run_on_a_clean_system_does_nothing(source: Path, root: Path) -> None:
    result = _run(source / "systemd" / "uninstall.sh", root, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert _commands(result.stdout) == []
