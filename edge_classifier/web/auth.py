"""Who may use the web view: the password (or bearer token), and when one is required.

The secret comes from ``web.password_file``, else the systemd credential ``web-password``
(``$CREDENTIALS_DIRECTORY/web-password``), else ``web.password``, as the MQTT password does.
Listening on anything but loopback without one is refused (a ConfigError: exit 78), so a
daemon can never serve its camera to the network unprotected. With a secret, every request
needs it: HTTP Basic (``web.username`` and the secret) or ``Authorization: Bearer <secret>``;
both are compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from edge_classifier.config.schema import WebConfig
from edge_classifier.config.secrets import read_secret
from edge_classifier.errors import ConfigError

__all__ = ["CREDENTIAL_NAME", "UNIT_CREDENTIAL", "Gate", "is_loopback", "open_gate", "resolve_secret"]

CREDENTIAL_NAME = "web-password"  # the systemd credential (LoadCredential=web-password:...)
UNIT_CREDENTIAL = Path("/etc/edge-classifier/web-password")  # what the shipped unit loads as it


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); names other than
    ``localhost`` are not trusted to resolve to loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_secret(config: WebConfig, environ: Mapping[str, str] = os.environ) -> str | None:
    """The web password: ``password_file``, else the systemd credential, else ``password``.

    A trailing newline is ignored and an empty password means none. Never logged.
    """
    return read_secret(config.password_file, config.password, credential=CREDENTIAL_NAME, key="web.password_file",
                       environ=environ)


@dataclasses.dataclass(frozen=True, slots=True)
class Gate:
    """Checks one request's ``Authorization`` header; without a secret everyone may pass."""

    username: str
    secret: str | None = dataclasses.field(default=None, repr=False)

    @property
    def required(self) -> bool:
        return self.secret is not None

    def allows(self, authorization: str | None) -> bool:
        if self.secret is None:
            return True
        if not authorization:
            return False
        scheme, _, value = authorization.strip().partition(" ")
        value = value.strip()
        secret = self.secret.encode("utf-8")
        if scheme.lower() == "bearer":
            return hmac.compare_digest(value.encode("utf-8"), secret)
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, ValueError):
            return False
        # Both compared (no early exit on the user name), each in constant time.
        user_ok = hmac.compare_digest(user.encode("utf-8"), self.username.encode("utf-8"))
        return hmac.compare_digest(password.encode("utf-8"), secret) and user_ok


def open_gate(config: WebConfig, environ: Mapping[str, str] = os.environ) -> Gate:
    """The gate for ``config``; ConfigError when the listener would be open to the network
    without a password."""
    secret = resolve_secret(config, environ)
    if secret is None and not is_loopback(config.host):
        raise ConfigError([f"web.host: {config.host!r} is not a loopback address, so the web view needs a "
                           "password: set web.password_file (or the systemd credential "
                           f"{CREDENTIAL_NAME}), or listen on 127.0.0.1"])
    return Gate(config.username, secret)
