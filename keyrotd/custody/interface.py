"""The custody seam: what a place that holds private keys and signs with them must do.

A custody creates a keypair for a keyset and an algorithm, signs JWS signing input with it (the
signature already in JOSE's format: r‖s for ECDSA), destroys it, and lists the keys it holds that
keyrotd created, with the time each was created, so that a writer can destroy the orphans (keys
no document names, older than :data:`ORPHAN_GRACE`). Nothing here ever holds private key material.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from keyrotd.errors import KeyrotdError
from keyrotd.model import Jwk

ORPHAN_GRACE: Final = timedelta(minutes=10)
"""A custody key no document names is destroyed once it is older than this: long enough for the
writer that created it to finish its compare-and-swap (or lose it and clean up itself)."""


@dataclass(frozen=True)
class CustodyKey:
    """A key held in custody: its kid (the RFC 7638 thumbprint), public JWK and handle."""

    kid: str
    alg: str
    public_jwk: Jwk
    handle: str
    """What the document stores to find the key again (for PKCS#11 the kid; for KMS its ARN)."""
    created_at: datetime


class CustodyError(KeyrotdError):
    """The custody refused an operation (a mechanism or key spec it lacks, access denied)."""

    temporary = False


class CustodyUnavailableError(CustodyError):
    """The token or KMS cannot be reached now (removed, logged out, throttled): try again later."""

    temporary = True


class CustodyKeyGoneError(CustodyError):
    """The handle names no key any more: another writer destroyed it. Re-read storage."""

    temporary = True


class PrivateKeyUnavailableError(KeyrotdError):
    """``signing-key`` on a keyset whose keys live in custody: no private key can be handed out.

    ``GET .../signing-key`` answers it as 409 and ``keyrotd signing-key`` exits 1, in these words.
    """

    def __init__(self, keyset: str, custody: str) -> None:
        super().__init__(
            f"keyset {keyset} keeps its keys in {custody} custody: its private keys never "
            "leave it, so there is no signing key to hand out",
            f"sign through keyrotd instead: POST /keysets/{keyset}/sign (scope sign:{keyset}), "
            f"`keyrotd sign --keyset {keyset}`, or Issuer.from_url(..., remote=True)",
        )
        self.keyset = keyset
        self.custody = custody


CustodyProvider = Callable[[str], "Custody"]
"""The custody of a kind (``pkcs11``, ``aws-kms``), opened once a process."""


class Custody(Protocol):
    """One place that holds private keys. Every method may block on the token or the network."""

    name: str
    """``pkcs11`` or ``aws-kms``: how ``keyrotd status`` and errors name it."""

    def create(self, keyset: str, alg: str, rsa_key_size: int, now: datetime) -> CustodyKey:
        """Generate a keypair inside the custody, non-extractable, labelled for ``keyset``."""
        ...

    def sign(self, handle: str, alg: str, signing_input: bytes) -> bytes:
        """The JWS signature of ``signing_input`` (ASCII header.payload) in JOSE's format."""
        ...

    def destroy(self, handle: str) -> None:
        """Destroy the key (idempotent: a key already gone is not an error)."""
        ...

    def held(self, keyset: str) -> list[CustodyKey]:
        """Every key keyrotd created in this custody for ``keyset``, with its creation time."""
        ...

    def close(self) -> None:
        """Release sessions and connections."""
        ...


@dataclass(frozen=True)
class CustodySigner:
    """A custody key as a JWS signer (``keyrotd.signing.SigningKey``): the custody signs."""

    kid: str
    alg: str
    handle: str
    custody: Custody

    def sign(self, signing_input: bytes) -> bytes:
        return self.custody.sign(self.handle, self.alg, signing_input)
