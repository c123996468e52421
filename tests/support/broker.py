"""Real Mosquitto brokers and a small synchronous MQTT client for the test suite.

Three pieces, each usable on its own:

- ``MosquittoBroker``: one ``mosquitto`` child process on a free 127.0.0.1 port, with an optional
  password file, ACL file and TLS (optionally mutual TLS). It can be stopped and restarted on the
  same port, and its log can be read back to assert on what the broker saw.
- ``make_tls_files``: a throwaway PKI made with ``cryptography`` (EC P-256, so it is fast): a CA, a
  server certificate for ``localhost`` / ``127.0.0.1``, a client certificate from the same CA, and an
  unrelated second CA (with its own client certificate) for the negative tests.
- ``Probe``: a paho-mqtt 2.x client driven synchronously. Every wait is on a real protocol event
  (CONNACK, SUBACK, PUBACK, an incoming PUBLISH, a disconnect), never on a sleep.

Nothing here imports ``edge_classifier``: the support code must work before the package does.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import pwd
import queue
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = [
    "BrokerError",
    "ConnectFailed",
    "Message",
    "MosquittoBroker",
    "Probe",
    "ProbeError",
    "TlsFiles",
    "free_port",
    "make_tls_files",
]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
LOOPBACK = "127.0.0.1"

# Printed once every listener is open (mosquitto 2.0: "mosquitto version 2.0.11 running").
_RUNNING_LINE = re.compile(rb"mosquitto version \S+ running")
_ADDRESS_IN_USE = b"Address already in use"
_POLL_INTERVAL = 0.01


class BrokerError(RuntimeError):
    """The broker process could not be started or stopped; the message carries its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a test PKI. ``other_*`` come from a CA unrelated to ``ca_cert``."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca_cert: Path
    other_client_cert: Path
    other_client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edge-classifier tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    is_ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    """Sign ``key``'s public half as ``subject``; self-signed when ``issuer`` is None."""
    now = datetime.datetime.now(datetime.UTC)
    issuer_name = issuer[0].subject if issuer else _name(subject)
    signing_key = issuer[1] if issuer else key
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
    )
    if is_ca:
        usage = {"key_cert_sign": True, "crl_sign": True, "digital_signature": True}
    else:
        usage = {"key_cert_sign": False, "crl_sign": False, "digital_signature": True}
        purpose = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([purpose]), critical=False)
    builder = builder.add_extension(
        x509.KeyUsage(
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            encipher_only=False,
            decipher_only=False,
            **usage,
        ),
        critical=True,
    )
    if server:
        san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(signing_key, hashes.SHA256())


def make_tls_files(directory: Path) -> TlsFiles:
    """Write a CA, a server and a client certificate from it, and an unrelated CA, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    ca_key, other_ca_key = new_key(), new_key()
    ca = _issue("edge-classifier test CA", ca_key, None, is_ca=True)
    other_ca = _issue("unrelated test CA", other_ca_key, None, is_ca=True)
    server_key, client_key, other_client_key = new_key(), new_key(), new_key()
    files = TlsFiles(
        ca_cert=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        other_ca_cert=directory / "other-ca.crt",
        other_client_cert=directory / "other-client.crt",
        other_client_key=directory / "other-client.key",
    )
    _write_cert(files.ca_cert, ca)
    _write_cert(files.other_ca_cert, other_ca)
    _write_cert(files.server_cert, _issue("localhost", server_key, (ca, ca_key), server=True))
    _write_key(files.server_key, server_key)
    _write_cert(files.client_cert, _issue("test-client", client_key, (ca, ca_key)))
    _write_key(files.client_key, client_key)
    _write_cert(files.other_client_cert, _issue("stranger", other_client_key, (other_ca, other_ca_key)))
    _write_key(files.other_client_key, other_client_key)
    return files


# --------------------------------------------------------------------------------------------------
# The broker process
# --------------------------------------------------------------------------------------------------


class MosquittoBroker:
    """A ``mosquitto`` child process listening on 127.0.0.1 only, configured from ``work_dir``.

    ``port`` defaults to a free one. ``allow_anonymous`` defaults to True unless ``password_users``
    is given. With ``tls`` the single listener speaks TLS; ``require_certificate`` makes it mutual.
    """

    host = LOOPBACK

    def __init__(
        self,
        work_dir: Path,
        *,
        port: int | None = None,
        password_users: dict[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
        require_certificate: bool = False,
        allow_anonymous: bool | None = None,
        start_timeout: float = 5.0,
        stop_timeout: float = 5.0,
        persistence: bool = False,
        extra: tuple[str, ...] = (),
    ) -> None:
        """``extra``: more lines for mosquitto.conf (``max_queued_messages 0``, say)."""
        if require_certificate and tls is None:
            raise ValueError("require_certificate=True needs tls files")
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._port_given = port is not None
        self._port = port if port is not None else free_port()
        self.password_users = dict(password_users) if password_users is not None else None
        self.acl = acl
        self.tls = tls
        self.require_certificate = require_certificate
        self.allow_anonymous = password_users is None if allow_anonymous is None else allow_anonymous
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        # With persistence, sessions (subscriptions and the messages queued for offline
        # persistent clients) are saved at stop and restored at restart.
        self.persistence = persistence
        self.extra = extra
        self.conf_path = self.work_dir / "mosquitto.conf"
        self.log_path = self.work_dir / "mosquitto.log"
        self.password_path = self.work_dir / "passwd"
        self.acl_path = self.work_dir / "acl"
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<MosquittoBroker {self.host}:{self.port} {state} tls={self.tls is not None}>"

    # -- configuration -----------------------------------------------------------------------------

    def _write_files(self) -> None:
        lines = [
            f"listener {self._port} {LOOPBACK}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            *(["persistence true", f"persistence_location {self.work_dir}/"] if self.persistence
              else ["persistence false"]),
            "log_dest stderr",
            "log_type all",
            # Without it the broker's Nagle delays meet the clients' delayed ACKs: ~40 ms a round trip.
            "set_tcp_nodelay true",
            "connection_messages true",
            "log_timestamp true",
            *self.extra,
        ]
        if os.geteuid() == 0:
            # As root mosquitto would drop to the "mosquitto" user, which cannot read files in the
            # (0700) pytest tmp directories; "user root" keeps it as the user running the tests.
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        if self.password_users is not None:
            # Plain "user:password" lines, then hashed in place by mosquitto_passwd -U.
            text = "".join(f"{user}:{password}\n" for user, password in self.password_users.items())
            self.password_path.write_text(text)
            self.password_path.chmod(0o600)
            subprocess.run([MOSQUITTO_PASSWD, "-U", str(self.password_path)], check=True, capture_output=True)
            lines.append(f"password_file {self.password_path}")
        if self.acl is not None:
            self.acl_path.write_text(self.acl if self.acl.endswith("\n") else self.acl + "\n")
            lines.append(f"acl_file {self.acl_path}")
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                f"require_certificate {'true' if self.require_certificate else 'false'}",
            ]
        self.conf_path.write_text("\n".join(lines) + "\n")

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Launch mosquitto and return once its log says the listener is open."""
        if self._closed:
            raise BrokerError(f"{self!r} is closed")
        if self.running:
            return self
        self._write_files()
        for _attempt in range(5):
            try:
                self._launch()
                return self
            except _PortTaken:
                if self._port_given:
                    raise BrokerError(f"port {self._port} is already in use:\n{self.log_text()}") from None
                # Another process took our probed free port between the probe and the bind: pick again.
                self._port = free_port()
                self._write_files()
        raise BrokerError(f"no free port found for mosquitto:\n{self.log_text()}")

    def _launch(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            # The child keeps its own copy of the descriptor; ours closes when this block ends.
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout
        while True:
            new_output = self._log_bytes()[offset:]
            if _RUNNING_LINE.search(new_output):
                return
            if self._process.poll() is not None:
                self._reap()
                if _ADDRESS_IN_USE in new_output:
                    raise _PortTaken
                raise BrokerError(f"mosquitto exited at start-up:\n{new_output.decode(errors='replace')}")
            if time.monotonic() > deadline:
                self._terminate()
                raise BrokerError(
                    f"mosquitto did not open port {self._port} within {self.start_timeout}s:\n"
                    f"{new_output.decode(errors='replace')}"
                )
            time.sleep(_POLL_INTERVAL)  # bounded polling of the log file, not a synchronisation guess

    def stop(self) -> None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL. Does nothing if not running."""
        if self._process is not None:
            self._terminate()

    def restart(self) -> Self:
        """Stop, then start again on the same port (mosquitto sets SO_REUSEADDR on its listener,
        so the TIME_WAIT connections the stop leaves behind do not block the new bind)."""
        self.stop()
        self._port_given = True  # clients know this port now: never move to another one
        return self.start()

    def kill(self) -> None:
        """SIGKILL, as a crash would: clients get no clean shutdown."""
        if self._process is not None:
            if self._process.poll() is None:
                self._process.kill()
            self._reap()

    def close(self) -> None:
        """Stop the broker for good. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self.stop()

    def _terminate(self) -> None:
        process = self._process
        assert process is not None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                process.kill()
        self._reap()

    def _reap(self) -> None:
        if self._process is not None:
            self._process.wait()
            self._process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- the log -----------------------------------------------------------------------------------

    def _log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log_text(self) -> str:
        """Everything the broker has logged so far, across restarts."""
        return self._log_bytes().decode(errors="replace")

    def wait_for_log(self, pattern: str, timeout: float = 5.0, *, after: int = 0) -> re.Match[str]:
        """Wait until the log (from character ``after`` on) matches ``pattern``; the broker logs
        asynchronously to what clients observe, so assertions on the log must wait for it."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), after)
            if match:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"broker log has no {pattern!r} after {timeout}s:\n{self.log_text()}")
            time.sleep(_POLL_INTERVAL)


def _close_sockets_in(exc: BaseException) -> None:
    """Close the sockets left in the frames of ``exc``'s traceback.

    paho 2.2 does not close the SSL socket when the TLS handshake fails in ``connect()``: it lives
    on only in ``_ssl_wrap_socket``'s frame, and would warn (ResourceWarning) when collected."""
    for frame, _line in traceback.walk_tb(exc.__traceback__):
        for value in frame.f_locals.values():
            if isinstance(value, socket.socket):
                with contextlib.suppress(OSError):
                    value.close()


class _PortTaken(Exception):
    """Internal: mosquitto could not bind its port."""


# --------------------------------------------------------------------------------------------------
# The probe client
# --------------------------------------------------------------------------------------------------


class ProbeError(RuntimeError):
    """A probe operation failed or timed out."""


class ConnectFailed(ProbeError):
    """The broker refused the connection, or the connection dropped before CONNACK.

    ``reason_code`` is paho's ReasonCode for a CONNACK refusal, else None (``reason`` says why).
    """

    def __init__(self, reason: str, reason_code: ReasonCode | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.reason_code = reason_code


@dataclass(frozen=True, slots=True)
class Message:
    """A received PUBLISH, copied out of paho's MQTTMessage on the network thread."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None = field(default=None, compare=False)

    @property
    def text(self) -> str:
        return self.payload.decode()

    @property
    def response_topic(self) -> str | None:
        return getattr(self.properties, "ResponseTopic", None)

    @property
    def correlation_data(self) -> bytes | None:
        return getattr(self.properties, "CorrelationData", None)


class Probe:
    """A synchronous MQTT test client; every method returns once the broker has answered.

    Example::

        with Probe(broker.host, broker.port) as probe:
            probe.subscribe("a/#")
            probe.publish("a/b", b"x", qos=1)
            assert probe.expect("a/b").payload == b"x"
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        client_id: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_cert: Path | None = None,
        client_cert: Path | None = None,
        client_key: Path | None = None,
        keepalive: int = 10,
        reconnect_delay: float = 0.05,
        clean_session: bool = True,
    ) -> None:
        self.host, self.port, self.protocol = host, port, protocol
        self.client_id = client_id or f"probe-{uuid.uuid4().hex[:8]}"
        self.keepalive = keepalive
        # clean_session=False (MQTT 3.1.1): the broker keeps the subscriptions and queues messages
        # while the probe is away, across a broker restart too when the broker has persistence.
        session = {} if protocol == MQTTProtocolVersion.MQTTv5 else {"clean_session": clean_session}
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=protocol, **session
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        if ca_cert is not None or client_cert is not None:
            self._client.tls_set(
                ca_certs=str(ca_cert) if ca_cert else None,
                certfile=str(client_cert) if client_cert else None,
                keyfile=str(client_key) if client_key else None,
            )
        # paho reconnects by itself after a lost connection; keep the wait short for tests. The
        # type hint says int, the code (a sleep loop on a float deadline) takes any number.
        self._client.reconnect_delay_set(min_delay=reconnect_delay, max_delay=1)  # type: ignore[arg-type]
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish

        # Everything below is written by paho's network thread (the callbacks) and read by the test
        # thread. The lock guards the plain fields; the test thread waits on the condition (connection
        # state), on per-SUBACK events, or on the message queue, all set by the callbacks.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._ready = False  # connected, and every filter subscribed again
        self._down = False  # the connection dropped or was refused
        self._connack: ReasonCode | None = None
        self._disconnect_reason: ReasonCode | str | None = None
        self._subscriptions: dict[str, int] = {}
        self._subacks: dict[int, tuple[threading.Event, list[ReasonCode]]] = {}
        self._resubscribe_mid: int | None = None
        self._pubacks: dict[int, ReasonCode] = {}
        # Messages cross from paho's network thread to the test thread through this queue.
        self._inbox: queue.Queue[Message] = queue.Queue()
        self._held: list[Message] = []  # received but not yet claimed by expect()/collect()
        self._started = False
        self._closed = False
        self.connects = 0  # successful CONNACKs so far, reconnects included

    # -- paho callbacks: these run on paho's network thread ----------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        sock = client.socket()
        if sock is not None:  # paho leaves Nagle on: small packets would wait for delayed ACKs
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self._connack = reason_code
            if reason_code.is_failure:
                self._disconnect_reason = reason_code
                self._down = True
                self._changed.notify_all()
                return
            self.connects += 1
            self._down = False
            filters = list(self._subscriptions.items())
            if not filters:
                self._ready = True
                self._changed.notify_all()
                return
        # A clean session forgot our subscriptions: renew them; _on_subscribe sets _ready on SUBACK.
        result, mid = client.subscribe(filters)
        with self._lock:
            self._resubscribe_mid = mid if result == mqtt.MQTT_ERR_SUCCESS else None

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode, properties: Any
    ) -> None:
        with self._lock:
            self._ready = False
            self._disconnect_reason = reason_code
            self._down = True
            self._changed.notify_all()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode], properties: Any
    ) -> None:
        with self._lock:
            if mid == self._resubscribe_mid:
                self._resubscribe_mid = None
                self._ready = True
                self._changed.notify_all()
                return
            event, codes = self._subacks.setdefault(mid, (threading.Event(), []))
            codes.extend(reason_codes)
        event.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Any
    ) -> None:
        # paho calls this before it marks the MQTTMessageInfo published, so publish() finds the
        # code here once wait_for_publish() returns.
        with self._lock:
            self._pubacks[mid] = reason_code

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        properties = getattr(msg, "properties", None)
        self._inbox.put(Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), properties))

    # -- connection --------------------------------------------------------------------------------

    def connect(self, timeout: float = 5.0, *, properties: Properties | None = None) -> Self:
        """Connect and wait for the CONNACK; raise ConnectFailed on refusal, TLS failure or timeout."""
        try:
            # Blocking TCP connect and TLS handshake: a bad server certificate raises right here.
            self._client.connect(self.host, self.port, keepalive=self.keepalive, properties=properties)
        except OSError as exc:  # ssl.SSLError is an OSError
            _close_sockets_in(exc)
            self._shutdown()
            raise ConnectFailed(f"{type(exc).__name__}: {exc}") from exc
        self._client.loop_start()
        self._started = True
        with self._changed:
            settled = self._changed.wait_for(lambda: self._ready or self._down, timeout)
            ready, reason, connack = self._ready, self._disconnect_reason, self._connack
        if not settled:
            self._shutdown()
            raise ConnectFailed(f"no CONNACK from {self.host}:{self.port} within {timeout}s")
        if not ready:
            self._shutdown()
            if connack is not None and connack.is_failure:
                raise ConnectFailed(f"connection refused: {connack}", connack)
            raise ConnectFailed(f"connection dropped before CONNACK: {reason}")
        return self

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._ready

    @property
    def disconnect_reason(self) -> ReasonCode | str | None:
        with self._lock:
            return self._disconnect_reason

    def wait_disconnected(self, timeout: float = 5.0) -> ReasonCode | str | None:
        """Wait until paho reports the connection lost; return the reason it gave."""
        with self._changed:
            down = self._changed.wait_for(lambda: self._down, timeout)
        if not down:
            raise ProbeError(f"{self.client_id} still connected after {timeout}s")
        return self.disconnect_reason

    def wait_connected(self, timeout: float = 5.0) -> None:
        """Wait for paho's automatic reconnect (and the renewed subscriptions) to complete."""
        with self._changed:
            ready = self._changed.wait_for(lambda: self._ready, timeout)
        if not ready:
            raise ProbeError(f"{self.client_id} not reconnected after {timeout}s: {self.disconnect_reason}")

    def close(self) -> None:
        """Disconnect cleanly and stop paho's network thread. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        self._client.disconnect()
        if self._started:
            self._client.loop_stop()
            self._started = False
        # paho has no public close(): its socket and wake-up socket pair are only closed by
        # Client.__del__, too late for ResourceWarning-as-error. Close them now.
        self._client._reset_sockets()

    def __enter__(self) -> Self:
        return self.connect() if not self._started else self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- subscribe / publish -----------------------------------------------------------------------

    def subscribe(self, *topic_filters: str, qos: int = 1, timeout: float = 5.0) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK; return its reason codes (refusals included: the
        caller asserts on them). The filters are renewed after every reconnect."""
        filters = [(topic_filter, qos) for topic_filter in topic_filters]
        result, mid = self._client.subscribe(filters)
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise ProbeError(f"subscribe {topic_filters} not sent: {mqtt.error_string(result)}")
        with self._lock:
            # The SUBACK may already have arrived: setdefault finds the callback's entry then.
            event, codes = self._subacks.setdefault(mid, (threading.Event(), []))
        if not event.wait(timeout):
            raise ProbeError(f"no SUBACK for {topic_filters} within {timeout}s")
        with self._lock:
            del self._subacks[mid]
            for (topic_filter, granted_qos), code in zip(filters, codes, strict=False):
                if not code.is_failure:
                    self._subscriptions[topic_filter] = granted_qos
        return codes

    def publish(
        self,
        topic: str,
        payload: bytes | str = b"",
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        timeout: float = 5.0,
    ) -> ReasonCode | None:
        """Publish and wait until it is done: written (QoS 0), PUBACK (1) or PUBCOMP (2).

        Return the reason code of the PUBACK / PUBREC under MQTT 5 (mosquitto answers a publish its
        ACL denies with 0x87 "Not authorized" there), else None."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ProbeError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        try:
            info.wait_for_publish(timeout)
        except RuntimeError as exc:  # paho raises it when the connection is lost mid-publish
            raise ProbeError(f"publish to {topic} failed: {exc}") from exc
        if not info.is_published():
            raise ProbeError(f"publish to {topic} not completed within {timeout}s")
        with self._lock:
            code = self._pubacks.pop(info.mid, None)
        return code if qos > 0 and self.protocol == MQTTProtocolVersion.MQTTv5 else None

    # -- receiving ---------------------------------------------------------------------------------

    def _next(self, matches: Any, deadline: float) -> Message | None:
        for index, message in enumerate(self._held):
            if matches(message):
                return self._held.pop(index)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                # Crossing point: messages put by paho's network thread are taken here, in the test thread.
                message = self._inbox.get(timeout=remaining)
            except queue.Empty:
                return None
            if matches(message):
                return message
            self._held.append(message)
        return None

    def expect(self, topic_filter: str = "#", timeout: float = 5.0) -> Message:
        """The next received message whose topic matches ``topic_filter``; others stay queued."""
        found = self._next(lambda m: mqtt.topic_matches_sub(topic_filter, m.topic), time.monotonic() + timeout)
        if found is None:
            raise ProbeError(f"no message on {topic_filter!r} within {timeout}s (held: {self._held})")
        return found

    def collect(self, n: int, timeout: float = 5.0, topic_filter: str = "#") -> list[Message]:
        """The next ``n`` messages matching ``topic_filter``, in arrival order."""
        deadline = time.monotonic() + timeout
        messages: list[Message] = []
        while len(messages) < n:
            found = self._next(lambda m: mqtt.topic_matches_sub(topic_filter, m.topic), deadline)
            if found is None:
                raise ProbeError(f"got {len(messages)} of {n} messages within {timeout}s: {messages}")
            messages.append(found)
        return messages

    def pending(self) -> list[Message]:
        """Messages received so far and not yet claimed; does not wait."""
        while True:
            try:
                self._held.append(self._inbox.get_nowait())
            except queue.Empty:
                return list(self._held)

    # -- MQTT 5 request / response -----------------------------------------------------------------

    def request(
        self,
        topic: str,
        payload: bytes | str = b"",
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float = 5.0,
        qos: int = 1,
    ) -> Message:
        """Publish a request with ResponseTopic and CorrelationData and return the response that
        echoes the correlation data. Subscribes to ``response_topic`` first if needed."""
        if self.protocol != MQTTProtocolVersion.MQTTv5:
            raise ProbeError("request/response properties need MQTT 5")
        response_topic = response_topic or f"probe/{self.client_id}/response"
        correlation_data = correlation_data if correlation_data is not None else uuid.uuid4().bytes
        with self._lock:
            subscribed = response_topic in self._subscriptions
        if not subscribed:
            self.subscribe(response_topic, qos=qos, timeout=timeout)
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = response_topic
        properties.CorrelationData = correlation_data
        self.publish(topic, payload, qos=qos, properties=properties, timeout=timeout)

        def is_response(message: Message) -> bool:
            return message.topic == response_topic and message.correlation_data == correlation_data

        found = self._next(is_response, time.monotonic() + timeout)
        if found is None:
            raise ProbeError(f"no response on {response_topic} to {topic} within {timeout}s")
        return found

    def reply(self, request: Message, payload: bytes | str = b"", qos: int = 1) -> None:
        """Answer ``request`` as an MQTT 5 responder: to its response topic, echoing its correlation data."""
        if request.response_topic is None:
            raise ProbeError(f"message on {request.topic} has no response topic")
        properties = Properties(PacketTypes.PUBLISH)
        if request.correlation_data is not None:
            properties.CorrelationData = request.correlation_data
        self.publish(request.response_topic, payload, qos=qos, properties=properties)
