"""The on-disk envelope of a file-stored keyset document, plain or AES-256-GCM sealed.

Plain (no encryption key configured)::

    {"format": "keyrotd/envelope/v1", "keyset": "default", "revision": 3,
     "encryption": "none", "sha256": "<hex>", "payload": "<base64 document>"}

Encrypted (``encryption_key_file`` set)::

    {"format": "keyrotd/envelope/v1", "keyset": "default", "revision": 3,
     "encryption": "AES-256-GCM", "nonce": "<base64, 12 bytes>",
     "ciphertext": "<base64 ciphertext and 16-byte tag>"}

Both bind the keyset name and the revision: the SHA-256 digest and the GCM associated data cover
``keyrotd/envelope/v1\\n<keyset>\\n<revision>\\n``, so a document copied to another keyset name or
an edited revision is refused. The plain digest detects corruption and careless edits; only the
encrypted form resists a deliberate forger. With a key configured, a plain document is refused
(it could have been planted). Any defect raises :class:`EnvelopeError`; the caller adds the path.
The key file is read by :func:`keyrotd.secretfiles.load_encryption_key`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENVELOPE_FORMAT: Final = "keyrotd/envelope/v1"
KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
_PLAIN: Final = "none"
_AES_GCM: Final = "AES-256-GCM"
_HEADER_FIELDS: Final = frozenset({"format", "keyset", "revision", "encryption"})
_FIELDS: Final = {
    _PLAIN: _HEADER_FIELDS | {"sha256", "payload"},
    _AES_GCM: _HEADER_FIELDS | {"nonce", "ciphertext"},
}


class EnvelopeError(ValueError):
    """The stored bytes are not an intact envelope for this keyset; ``str()`` says why."""


class KeyRequiredError(EnvelopeError):
    """The envelope is encrypted but no encryption key is configured."""


@dataclass(frozen=True)
class Opened:
    """What an envelope holds once checked."""

    revision: int
    data: bytes


def seal(keyset: str, revision: int, data: bytes, key: bytes | None) -> bytes:
    """The envelope bytes for ``data`` at ``revision``; encrypted when ``key`` is given."""
    envelope: dict[str, object] = {
        "format": ENVELOPE_FORMAT,
        "keyset": keyset,
        "revision": revision,
    }
    header = _bound_header(keyset, revision)
    if key is None:
        digest = hashlib.sha256(header + data).hexdigest()
        envelope |= {"encryption": _PLAIN, "sha256": digest, "payload": _b64(data)}
    else:
        nonce = os.urandom(NONCE_SIZE)
        ciphertext = AESGCM(key).encrypt(nonce, data, header)
        envelope |= {"encryption": _AES_GCM, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
    return (json.dumps(envelope, indent=2) + "\n").encode("ascii")


def unseal(keyset: str, blob: bytes, key: bytes | None) -> Opened:
    """Check and open an envelope written by :func:`seal` for ``keyset``."""
    envelope = _parse(blob)
    encryption = envelope.get("encryption")
    if envelope.get("format") != ENVELOPE_FORMAT or encryption not in _FIELDS:
        raise EnvelopeError("not a keyrotd envelope (unknown format or encryption)")
    if set(envelope) != _FIELDS[encryption]:
        raise EnvelopeError("the envelope has missing or unexpected fields")
    if envelope["keyset"] != keyset:
        raise EnvelopeError("it was written for another keyset (copied or renamed?)")
    revision = envelope["revision"]
    if type(revision) is not int or revision < 1:
        raise EnvelopeError("the revision is not a positive integer")
    header = _bound_header(keyset, revision)
    if encryption == _PLAIN:
        return Opened(revision, _open_plain(envelope, header, key))
    return Opened(revision, _open_sealed(envelope, header, key))


def _bound_header(keyset: str, revision: int) -> bytes:
    return f"{ENVELOPE_FORMAT}\n{keyset}\n{revision}\n".encode()


def _open_plain(envelope: dict[str, Any], header: bytes, key: bytes | None) -> bytes:
    if key is not None:
        raise EnvelopeError("it is not encrypted although an encryption key is configured")
    data = _unb64(envelope["payload"], "payload")
    expected = hashlib.sha256(header + data).hexdigest()
    digest = envelope["sha256"]
    if not isinstance(digest, str) or not hmac.compare_digest(digest, expected):
        raise EnvelopeError("the SHA-256 digest does not match (corrupted or edited)")
    return data


def _open_sealed(envelope: dict[str, Any], header: bytes, key: bytes | None) -> bytes:
    if key is None:
        raise KeyRequiredError("it is encrypted but no encryption key is configured")
    nonce = _unb64(envelope["nonce"], "nonce")
    ciphertext = _unb64(envelope["ciphertext"], "ciphertext")
    if len(nonce) != NONCE_SIZE:
        raise EnvelopeError("the nonce is not 12 bytes")
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise EnvelopeError(
            "authentication failed (wrong encryption key, or the file was modified)"
        ) from None


def _parse(blob: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(blob.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except EnvelopeError:
        raise
    except (ValueError, RecursionError):
        raise EnvelopeError("it is not valid JSON (truncated or overwritten?)") from None
    if not isinstance(envelope, dict):
        raise EnvelopeError("it is not a JSON object")
    return envelope


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EnvelopeError("it repeats a field")
    return result


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(text: object, field: str) -> bytes:
    """Strict base64: only the canonical encoding is accepted, so every edit is noticed."""
    if isinstance(text, str):
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if _b64(raw) == text:
                return raw
    raise EnvelopeError(f"the {field} is not valid base64")
