"""The signing key of a keyset at this instant, for ``POST .../sign`` and the Kubernetes signer.

Both read the :class:`~keyrotd.daemon.state.Board` (memory). A storage key signs in this process
(imported once per served view); a custody key signs in its custody, off the event loop. A custody
key that another writer destroyed meanwhile (it retired it) makes the keyset be read again
(``resync``) and the signature is made by the key active then: never an error for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from keyrotd.custody.interface import CustodyKeyGoneError, CustodyProvider, CustodySigner
from keyrotd.daemon.state import Board, ServedKeyset
from keyrotd.errors import KeyrotdError, TemporaryStorageError
from keyrotd.kubernetes.signer import ActiveKey, PublishedKeys
from keyrotd.signing import SigningKey

_T = TypeVar("_T")


class Signers:
    """Who signs for a keyset now (see the module docstring)."""

    def __init__(
        self, board: Board, custody: CustodyProvider | None, resync: Callable[[str], None]
    ) -> None:
        self.board = board
        self.custody = custody
        self.resync = resync

    def current(self, name: str) -> ServedKeyset:
        published = self.board.current(name, time.time())
        if published is None:
            raise TemporaryStorageError(f"keyset {name} is not loaded yet")
        return published

    def active(self, published: ServedKeyset) -> SigningKey:
        """The active key of ``published`` as a signer; LookupError when it has none."""
        if published.settings.custody == "storage":
            return published.signer
        key = published.keyset.active
        if key is None or key.handle is None:
            raise LookupError(f"keyset {published.name} has no active key")
        if self.custody is None:
            raise KeyrotdError(f"keyset {published.name}: no custody is open")
        return CustodySigner(key.kid, key.alg, key.handle, self.custody(published.settings.custody))

    def with_active(self, name: str, use: Callable[[SigningKey], _T]) -> _T:
        """``use(signer)`` with the key active now; once more after a re-read of storage when
        the custody no longer has that key."""
        try:
            return use(self.active(self.current(name)))
        except CustodyKeyGoneError:
            self.resync(name)
            return use(self.active(self.current(name)))


class BoardKeys:
    """A :class:`~keyrotd.kubernetes.signer.KeySource` over one keyset of the board."""

    def __init__(self, signers: Signers, keyset: str) -> None:
        self.signers = signers
        self.keyset = keyset

    def active(self) -> ActiveKey:
        signer = self.signers.active(self.signers.current(self.keyset))
        return ActiveKey(signer.kid, signer.alg, signer.sign)

    def resync(self) -> None:
        self.signers.resync(self.keyset)

    def published(self) -> PublishedKeys:
        published = self.signers.current(self.keyset)
        health = self.signers.board.snapshot.health.get(self.keyset)
        last = health.last_success if health is not None else None
        read_at = datetime.fromtimestamp(last if last is not None else 0, UTC)
        changes = published.changes_at
        next_change = datetime.fromtimestamp(changes, UTC) if changes != float("inf") else None
        return PublishedKeys(published.keyset.jwks()["keys"], read_at, next_change)
