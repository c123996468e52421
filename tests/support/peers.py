"""Real MQTT brokers other than Mosquitto, each started on free 127.0.0.1 ports for the test suite.

The peers, each a context manager (``start(name, work_dir)``) yielding a running :class:`Peer`:

- ``aedes``: the Node.js broker (npm package, a ``net.createServer(aedes.handle)`` script).
- ``amqtt``: the Python asyncio broker (PyPI package, its ``amqtt`` command).
- ``nats``: nats-server's MQTT listener (the Debian binary; MQTT needs JetStream and a server name).
- ``rabbitmq``: a private RabbitMQ node with the rabbitmq_mqtt plugin (the Debian package): its own
  node name, ports, epmd, data and log directories; the machine's own node is never touched.

aedes and amqtt are installed on first use into a cache outside the repository
(``$EDGE_CLASSIFIER_PEERS_CACHE``, default ``~/.cache/edge-classifier-peers``): aedes with npm, amqtt
into a venv of its own, so that none of its dependencies reach the project's venv. Versions are
pinned; a cache of another version is installed again.

A broker counts as started when its MQTT port answers a CONNECT (3.1.1) with a CONNACK: the port is
polled until then, and a broker process that exits first fails at once, with its log. Anything
that cannot be installed or started raises :class:`PeerError`, whose message says what and why: a
test that needs a peer fails, it is never skipped.

What they were found to do (2026-12-01; aedes 1.2.0, amqtt 0.12.1, nats-server 2.9.10, RabbitMQ
3.10.8): none speaks MQTT 5. aedes and nats-server answer an MQTT 5 CONNECT with a 3.1.1 CONNACK
"unacceptable protocol version", amqtt too unless the CONNECT has a Will (then it waits for more
bytes and never answers); RabbitMQ closes the connection without a CONNACK. Every one
takes retained messages, the Last Will and QoS 1, and passed on a 16 MB payload (64 MB too, but for
nats-server, which had not acknowledged it after 5 s).

Nothing here imports ``edge_classifier``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from support.broker import LOOPBACK, free_port

__all__ = ["CACHE", "PEERS", "Peer", "PeerError", "start"]

CACHE = Path(os.environ.get("EDGE_CLASSIFIER_PEERS_CACHE", Path.home() / ".cache" / "edge-classifier-peers"))

AEDES_VERSION = "1.2.0"
AMQTT_VERSION = "0.12.1"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # /usr/sbin's wrapper would su to rabbitmq
EPMD = shutil.which("epmd") or "/usr/bin/epmd"

_POLL_INTERVAL = 0.05
_INSTALL_TIMEOUT = 600.0
_IN_USE = re.compile(r"address (already )?in use|eaddrinuse", re.IGNORECASE)


class PeerError(RuntimeError):
    """A peer broker could not be installed, started or stopped; the message says why."""


@dataclass(frozen=True, slots=True)
class Peer:
    """A running broker: its name, where its MQTT listener is, and the file its output goes to."""

    name: str
    host: str
    port: int
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --------------------------------------------------------------------------------------------------
# Installing into the cache
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _cache_lock(name: str) -> Iterator[Path]:
    """The cache folder ``name``, held for this process alone (two test runs may install at once)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield CACHE / name


def _run_install(command: list[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PeerError(f"cannot install {what}: {' '.join(command)}: {exc}") from exc
    if done.returncode != 0:
        raise PeerError(f"cannot install {what}: {' '.join(command)} exited {done.returncode}:\n"
                        f"{done.stdout[-3000:]}{done.stderr[-3000:]}")


_AEDES_SERVER = """\
// One aedes broker on 127.0.0.1:<argv[2]>; prints LISTENING once the port is open.
import { createServer } from 'node:net'
import { Aedes } from 'aedes'

const port = Number(process.argv[2])
const aedes = await Aedes.createBroker()
const server = createServer(aedes.handle)
server.on('error', (err) => { console.error(err); process.exit(1) })
server.listen(port, '127.0.0.1', () => console.log(`LISTENING ${port}`))
const stop = () => server.close(() => aedes.close(() => process.exit(0)))
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
"""


def aedes_script() -> Path:
    """The aedes server script, beside its node_modules (ES modules resolve from the script's folder)."""
    with _cache_lock("aedes") as folder:
        marker = folder / f".installed-{AEDES_VERSION}"
        if not marker.exists():
            npm = shutil.which("npm")
            if npm is None:
                raise PeerError("cannot install aedes: npm is not on PATH (install nodejs and npm)")
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            (folder / "package.json").write_text('{"name": "edge-classifier-peer-aedes", "private": true}\n')
            _run_install([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund",
                          "--loglevel=error", f"aedes@{AEDES_VERSION}"], f"aedes {AEDES_VERSION} with npm")
            marker.touch()
        script = folder / "server.mjs"
        if not script.exists() or script.read_text() != _AEDES_SERVER:
            script.write_text(_AEDES_SERVER)
        return script


def amqtt_command() -> Path:
    """The ``amqtt`` broker command, from a venv of its own in the cache."""
    with _cache_lock("amqtt-venv") as venv:
        marker = venv / f".installed-{AMQTT_VERSION}"
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            # The interpreter running the tests, but never its venv: --without-pip is not used, and
            # the new venv sees no site-packages but its own.
            base = getattr(sys, "_base_executable", sys.executable)
            _run_install([base, "-m", "venv", str(venv)], "a venv for amqtt")
            _run_install([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", f"amqtt=={AMQTT_VERSION}"], f"amqtt {AMQTT_VERSION} with pip")
            marker.touch()
        return venv / "bin" / "amqtt"


# --------------------------------------------------------------------------------------------------
# Readiness: a real CONNECT answered by a CONNACK
# --------------------------------------------------------------------------------------------------


def _connect_packet(client_id: str) -> bytes:
    """An MQTT 3.1.1 CONNECT, clean session, keepalive 10 s."""
    ident = client_id.encode()
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(ident).to_bytes(2, "big") + ident
    return bytes([0x10, len(body)]) + body  # short enough for a one-byte remaining length


def answers_connect(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` takes an MQTT 3.1.1 CONNECT and accepts it (CONNACK, return code 0)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_connect_packet(f"peer-ready-{uuid.uuid4().hex[:8]}"))
            answer = b""
            while len(answer) < 4:
                chunk = sock.recv(4 - len(answer))
                if not chunk:
                    return False
                answer += chunk
            sock.sendall(b"\xe0\x00")  # DISCONNECT
            return answer[0] == 0x20 and answer[3] == 0
    except OSError:
        return False


class _Child:
    """A broker process with its output in ``log_path``, in a process group of its own."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name, self.command, self.log_path = name, command, log_path
        offset = log_path.stat().st_size if log_path.exists() else 0
        self.offset = offset
        with log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                                start_new_session=True)
            except OSError as exc:
                raise PeerError(f"cannot start {name}: {command[0]}: {exc}") from exc

    def output(self) -> str:
        try:
            return self.log_path.read_bytes()[self.offset:].decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, host: str, port: int, timeout: float) -> None:
        """Poll the port until a CONNECT is answered; raise if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        while not answers_connect(host, port):
            if self.process.poll() is not None:
                raise _Exited(self.process.returncode, self.output())
            if time.monotonic() > deadline:
                self.stop()
                raise PeerError(f"{self.name} did not answer an MQTT CONNECT on {host}:{port} within "
                                f"{timeout:g} s; its output:\n{self.output()[-4000:]}")
            time.sleep(_POLL_INTERVAL)  # the port is about to open: a bounded poll, not a guess

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to its process group, then SIGKILL after ``timeout``."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Whatever else is left in its group (a helper process of the broker's).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


class _Exited(Exception):
    def __init__(self, code: int, output: str) -> None:
        super().__init__(code, output)
        self.code, self.output = code, output


@contextlib.contextmanager
def _launch(name: str, make: Callable[[], tuple[_Child, int]], timeout: float) -> Iterator[int]:
    """Start the child ``make`` returns (with its MQTT port) until one binds its (fresh) ports:
    another process may take a port between ``free_port`` and the broker's bind. Yields the port;
    the child is stopped when the block ends."""
    for _attempt in range(3):
        child, port = make()
        try:
            child.wait_ready(LOOPBACK, port, timeout)
            break
        except _Exited as exited:
            child.stop()  # what is left of its process group
            if not _IN_USE.search(exited.output):
                raise PeerError(f"{name} exited with code {exited.code} at start-up:\n{exited.output[-4000:]}") \
                    from None
        except BaseException:
            child.stop()
            raise
    else:
        raise PeerError(f"{name}: no free port found in 3 tries")
    try:
        yield port
    finally:
        child.stop()


# --------------------------------------------------------------------------------------------------
# The peers
# --------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def aedes(work_dir: Path) -> Iterator[Peer]:
    """aedes on node. No MQTT 5 (its README: not supported yet)."""
    node = shutil.which("node")
    if node is None:
        raise PeerError("cannot start aedes: node is not on PATH (install nodejs)")
    script = aedes_script()
    log_path = work_dir / "aedes.log"

    def make() -> tuple[_Child, int]:
        port = free_port()
        return _Child("aedes", [node, str(script), str(port)], log_path, cwd=script.parent), port

    with _launch("aedes", make, timeout=20) as port:
        yield Peer("aedes", LOOPBACK, port, log_path=log_path)


@contextlib.contextmanager
def amqtt(work_dir: Path) -> Iterator[Peer]:
    """amqtt's broker: MQTT 3.1.1 only, anonymous logins allowed."""
    command = amqtt_command()
    log_path = work_dir / "amqtt.log"
    config = work_dir / "amqtt.yaml"

    def make() -> tuple[_Child, int]:
        port = free_port()
        config.write_text(f"""\
listeners:
  default:
    type: tcp
    bind: {LOOPBACK}:{port}
plugins:
  amqtt.plugins.authentication.AnonymousAuthPlugin:
    allow_anonymous: true
""")
        return _Child("amqtt", [str(command), "-c", str(config)], log_path, cwd=work_dir), port

    with _launch("amqtt", make, timeout=30) as port:
        yield Peer("amqtt", LOOPBACK, port, log_path=log_path)


@contextlib.contextmanager
def nats(work_dir: Path) -> Iterator[Peer]:
    """nats-server with JetStream and its MQTT listener (3.1.1, QoS 0 and 1, no '.' in topics)."""
    if not Path(NATS_SERVER).exists():
        raise PeerError(f"cannot start nats-server: {NATS_SERVER} not found (Debian package nats-server)")
    log_path = work_dir / "nats.log"
    config = work_dir / "nats.conf"
    store = work_dir / "jetstream"

    def make() -> tuple[_Child, int]:
        port = free_port()
        config.write_text(f"""\
server_name: edge-classifier-peer
listen: {LOOPBACK}:{free_port()}
jetstream {{
  store_dir: "{store}"
}}
mqtt {{
  listen: {LOOPBACK}:{port}
}}
""")
        return _Child("nats-server", [NATS_SERVER, "-c", str(config)], log_path, cwd=work_dir), port

    with _launch("nats-server", make, timeout=20) as port:
        yield Peer("nats", LOOPBACK, port, log_path=log_path)


@contextlib.contextmanager
def rabbitmq(work_dir: Path) -> Iterator[Peer]:
    """A private RabbitMQ node with rabbitmq_mqtt (3.1.1 only), and an epmd of its own, so that
    nothing it does reaches the machine's node or epmd."""
    if not Path(RABBITMQ_SERVER).exists():
        raise PeerError(f"cannot start RabbitMQ: {RABBITMQ_SERVER} not found (Debian package rabbitmq-server)")
    log_path = work_dir / "rabbitmq.log"
    home = work_dir / "home"  # the Erlang cookie goes here
    home.mkdir(exist_ok=True)
    plugins = work_dir / "enabled_plugins"
    plugins.write_text("[rabbitmq_mqtt].\n")
    config = work_dir / "rabbitmq.conf"
    epmd_port = free_port()
    epmd = _Child("epmd", [EPMD, "-port", str(epmd_port), "-address", LOOPBACK], work_dir / "epmd.log")
    try:
        def make() -> tuple[_Child, int]:
            port, amqp_port, dist_port = free_port(), free_port(), free_port()
            config.write_text(f"""\
listeners.tcp.default = {LOOPBACK}:{amqp_port}
mqtt.listeners.tcp.default = {LOOPBACK}:{port}
mqtt.allow_anonymous = true
loopback_users = none
""")
            env = {
                **os.environ,
                "HOME": str(home),
                "ERL_EPMD_PORT": str(epmd_port),
                "RABBITMQ_NODENAME": f"edge-classifier-peer-{uuid.uuid4().hex[:8]}@localhost",
                "RABBITMQ_NODE_IP_ADDRESS": LOOPBACK,
                "RABBITMQ_NODE_PORT": str(amqp_port),
                "RABBITMQ_DIST_PORT": str(dist_port),
                "RABBITMQ_MNESIA_BASE": str(work_dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(work_dir / "log"),
                "RABBITMQ_LOGS": "-",
                "RABBITMQ_PID_FILE": str(work_dir / "rabbitmq.pid"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
                "RABBITMQ_CONFIG_FILE": str(config),
            }
            return _Child("rabbitmq", [RABBITMQ_SERVER], log_path, env=env, cwd=work_dir), port

        with _launch("rabbitmq", make, timeout=60) as port:
            yield Peer("rabbitmq", LOOPBACK, port, log_path=log_path)
    finally:
        epmd.stop()


PEERS: dict[str, Callable[[Path], contextlib.AbstractContextManager[Peer]]] = {
    "aedes": aedes,
    "amqtt": amqtt,
    "nats": nats,
    "rabbitmq": rabbitmq,
}


@contextlib.contextmanager
def start(name: str, work_dir: Path) -> Iterator[Peer]:
    """The peer ``name`` (a key of ``PEERS``), running until the block ends."""
    work_dir.mkdir(parents=True, exist_ok=True)
    with PEERS[name](work_dir) as peer:
        yield peer
