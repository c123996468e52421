"""Signed models: ed25519 signatures of the owner, checked against pinned public keys.

A signature is a small JSON file beside the model, ``<model>.sig``::

    {"format": "edge-classifier-signature/1", "name": "x.tflite", "role": "classifier",
     "sha256": "<the model's sha256>", "key": "<key id>", "signature": "<base64>"}

It signs (ed25519, RFC 8032) the message ``edge-classifier-signature/1\\nname=...\\nrole=...
\\nsha256=...\\n``: the model's contents, its file name and its role, so a signed extractor
cannot be renamed into a classifier, nor a signed model swapped for another of the same
name. Public keys are written ``ed25519:<base64 of the 32 raw bytes>`` (``model.trusted_keys``
pins one or more); the key id is the first 16 hex digits of the sha256 of those bytes.

With keys pinned, every path that makes a file the running model (start, the ``model``
command, the store watcher, SIGHUP, ``models pull``) calls :func:`check_signature`, which
refuses a model without a signature file, signed by another key, for another name, role
or contents. Without keys pinned nothing is checked (as before).

Why ``cryptography``: a kept, audited library already packaged everywhere the daemon runs
(``python3-cryptography`` on Raspberry Pi OS), with ed25519 built in and no network use.
minisign would need its binary or a reimplementation of its format; Sigstore needs its
online services (Fulcio, Rekor) that a device on a closed network cannot reach.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from edge_classifier.errors import StoreError, UsageError
from edge_classifier.store.files import atomic_write_bytes, file_sha256

__all__ = ["SIGNATURE_SUFFIX", "check_signature", "generate_key", "key_id", "parse_public_key", "public_key_text",
           "sign_model", "signature_path", "verify_model"]

FORMAT = "edge-classifier-signature/1"
SIGNATURE_SUFFIX = ".sig"
MAX_SIGNATURE_BYTES = 4096
_KEY_PREFIX = "ed25519:"


def signature_path(model: Path) -> Path:
    return model.with_name(model.name + SIGNATURE_SUFFIX)


def _message(name: str, role: str, sha256: str) -> bytes:
    return f"{FORMAT}\nname={name}\nrole={role}\nsha256={sha256}\n".encode()


def parse_public_key(text: str) -> bytes:
    """The 32 raw bytes of an ``ed25519:<base64>`` public key; ValueError naming the problem."""
    if not isinstance(text, str) or not text.startswith(_KEY_PREFIX):
        raise ValueError(f"Invalid public key: {text!r} (expected ed25519:<base64 of 32 bytes>)")
    try:
        raw = base64.b64decode(text[len(_KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"Invalid public key: {text!r} (not base64)") from None
    if len(raw) != 32:
        raise ValueError(f"Invalid public key: {text!r} ({len(raw)} bytes, an ed25519 key has 32)")
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(raw: bytes) -> str:
    return _KEY_PREFIX + base64.b64encode(raw).decode()


def generate_key(private_path: Path) -> str:
    """A new ed25519 key: the private key to ``private_path`` (PEM, 0600, never overwritten);
    returns the public key text to pin in ``model.trusted_keys``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(f"{private_path}: already exists; a key is never overwritten") from exc
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return public_key_text(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def sign_model(model: Path, private_path: Path, role: str = "classifier") -> Path:
    """Write ``<model>.sig`` for ``model`` with the private key in ``private_path``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise UsageError(f"{private_path}: private key not found") from exc
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{private_path}: not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{private_path}: not an ed25519 key")
    sha256 = file_sha256(model)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    signature = key.sign(_message(model.name, role, sha256))
    body = {"format": FORMAT, "name": model.name, "role": role, "sha256": sha256, "key": key_id(raw),
            "signature": base64.b64encode(signature).decode()}
    target = signature_path(model)
    atomic_write_bytes(target, (json.dumps(body, indent=1) + "\n").encode())
    return target


def verify_model(model: Path, trusted: Sequence[str], *, role: str = "classifier", sha256: str | None = None,
                 signature: Path | None = None, name: str | None = None) -> str | None:
    """Why ``model`` is not validly signed by one of the ``trusted`` keys for ``role`` (and
    under ``name``, default its file name), or None when it is."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name = name or model.name
    sig_path = signature or signature_path(model)
    try:
        if sig_path.stat().st_size > MAX_SIGNATURE_BYTES:
            return f"{sig_path.name}: over {MAX_SIGNATURE_BYTES} bytes, not a signature"
        body = json.loads(sig_path.read_bytes())
    except FileNotFoundError:
        return f"{name} is not signed (no {signature_path(Path(name)).name} beside it) and model.trusted_keys is set"
    except (OSError, ValueError) as exc:
        return f"{sig_path.name}: not a readable signature file: {exc}"
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return f"{sig_path.name}: not an {FORMAT} signature file"
    keys = {key_id(raw): raw for raw in (parse_public_key(text) for text in trusted)}
    raw = keys.get(str(body.get("key")))
    if raw is None:
        return f"{name}: signed by key {str(body.get('key'))[:16]!r}, which is not in model.trusted_keys"
    if body.get("name") != name:
        return f"{name}: the signature is for the file name {str(body.get('name'))[:80]!r}, not {name!r}"
    if body.get("role") != role:
        return f"{name}: signed as {str(body.get('role'))[:40]!r}, not as a {role}"
    actual = sha256 or file_sha256(model)
    if body.get("sha256") != actual:
        return f"{name}: its contents are not what was signed (the file changed after signing)"
    try:
        signature_bytes = base64.b64decode(str(body.get("signature")), validate=True)
        Ed25519PublicKey.from_public_bytes(raw).verify(signature_bytes, _message(name, role, actual))
    except (binascii.Error, ValueError, InvalidSignature):
        return f"{name}: bad signature (it does not verify with key {key_id(raw)})"
    return None


def check_signature(model: Path, trusted: Sequence[str], *, name: str | None = None,
                    signature: Path | None = None) -> None:
    """StoreError when keys are pinned and ``model`` (and, for ``x_edgetpu.tflite``, its CPU
    twin beside it, which runs when the TPU cannot) is not validly signed as a classifier."""
    if not trusted:
        return
    problem = verify_model(model, trusted, name=name, signature=signature)
    if problem is None and model.stem.endswith("_edgetpu"):
        twin = model.with_name(model.stem.removesuffix("_edgetpu") + model.suffix)
        if twin.is_file():
            problem = verify_model(twin, trusted)
    if problem is not None:
        raise StoreError(f"refused: {problem}")
