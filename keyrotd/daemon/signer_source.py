"""What the Kubernetes signer reads of the daemon: the board's keys, signed in memory or custody.

Every answer comes from the :class:`~keyrotd.daemon.state.Board` (memory): the signing key at this
instant, the JWKS's keys, when storage was last read and when the set changes next. A signature by
a storage key is made here; by a custody key, in the custody (one call). A custody key another
writer destroyed meanwhile makes the keyset be read again (``resync``) and the signature is made
by the key active then: never an error for that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from keyrotd.custody.interface import CustodyKeyGoneError, CustodyProvider
from keyrotd.daemon.state import Board, Published
from keyrotd.errors import KeyrotdError, TemporaryStorageError
from keyrotd.kubernetes.signer import ActiveKey, PublishedKeys
from keyrotd.model import Key


class BoardKeys:
    """A :class:`~keyrotd.kubernetes.signer.KeySource` over one keyset of the board."""

    def __init__(
        self,
        board: Board,
        keyset: str,
        custody: CustodyProvider | None,
        resync: Callable[[str], None],
    ) -> None:
        self.board = board
        self.keyset = keyset
        self.custody = custody
        self.resync = resync
        self._imported: tuple[str, object] | None = None
        self._lock = threading.Lock()

    def _current(self) -> Published:
        published = self.board.current(self.keyset, time.time())
        if published is None:
            raise TemporaryStorageError(f"keyset {self.keyset} is not loaded yet")
        return published

    def active(self) -> ActiveKey:
        key = self._current().keyset.active
        if key is None:
            raise TemporaryStorageError(f"keyset {self.keyset} has no active key")
        return ActiveKey(key.kid, key.alg, lambda data: self._sign(key, data))

    def _sign(self, key: Key, data: bytes) -> bytes:
        if key.in_custody:
            return self._sign_in_custody(key, data)
        algorithm = JWSRegistry.algorithms[key.alg]
        with self._lock:
            imported = self._imported
            if imported is None or imported[0] != key.kid:
                imported = self._imported = (key.kid, JWKRegistry.import_key(dict(key.private())))
        signature: bytes = algorithm.sign(data, imported[1])
        return signature

    def _sign_in_custody(self, key: Key, data: bytes) -> bytes:
        assert key.handle is not None
        settings = self._current().settings
        if self.custody is None:
            raise KeyrotdError(f"keyset {self.keyset}: no {settings.custody} custody is open")
        custody = self.custody(settings.custody)
        try:
            return custody.sign(key.handle, key.alg, data)
        except CustodyKeyGoneError:
            self.resync(self.keyset)  # another writer retired it: read storage, sign anew
            current = self._current().keyset.active
            if current is None or current.kid == key.kid or current.handle is None:
                raise
            return custody.sign(current.handle, current.alg, data)

    def published(self) -> PublishedKeys:
        snapshot = self.board.snapshot
        published = self._current()
        health = snapshot.health.get(self.keyset)
        last = health.last_success if health is not None else None
        read_at = datetime.fromtimestamp(last if last is not None else 0, UTC)
        changes = published.changes_at
        next_change = datetime.fromtimestamp(changes, UTC) if changes != float("inf") else None
        return PublishedKeys(published.keyset.jwks()["keys"], read_at, next_change)
