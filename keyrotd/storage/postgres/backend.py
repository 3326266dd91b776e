"""The PostgreSQL backend: one row per keyset, swapped by one conditional ``UPDATE``.

Table (created if missing)::

    name text PRIMARY KEY, revision bigint NOT NULL, document text NOT NULL,
    updated_at timestamptz NOT NULL

- ``document`` is the envelope of :mod:`keyrotd.storage.sealing` (plain with a SHA-256, or
  AES-256-GCM with ``encryption_key_file``) binding the keyset name and ``revision``; the
  version of a document is ``str(revision)``.
- Write: ``INSERT ... ON CONFLICT DO NOTHING`` at revision 1 to create, else ``UPDATE ... SET
  revision = r + 1 ... WHERE name = %s AND revision = r``; no row touched is a lost
  compare-and-swap (:class:`ConflictError`). The same statement (so the same transaction)
  sends ``pg_notify(table, name)`` for the row it changed, so listeners hear of it when it
  commits (:mod:`keyrotd.storage.postgres.listener`): one round trip a write.
- ``read_many`` (the periodic refresh) is one query whatever the number of keysets: it passes
  the revisions this storage last saw and gets back only the rows whose revision differs.
- Connections come from a psycopg_pool pool that checks each connection it hands out, and
  reconnects by itself after a server restart. Connection, shutdown, resource and
  serialization failures (SQLSTATE classes 08, 57, 53, 40) and a pool timeout are
  :class:`TemporaryStorageError`; everything else is a permanent :class:`StorageError`.
  Messages name the host, database and table, never the connection string.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from keyrotd.errors import ConfigError, KeyrotdError
from keyrotd.model import KEYSET_NAME
from keyrotd.storage.interface import (
    ConflictError,
    CorruptDocumentError,
    DocumentTooLargeError,
    ReadResult,
    StorageError,
    TemporaryStorageError,
    Versioned,
    checked_name,
)
from keyrotd.storage.postgres.listener import Listener
from keyrotd.storage.postgres.settings import MAX_DOCUMENT_SIZE
from keyrotd.storage.sealing import KEY_SIZE, EnvelopeError, seal, unseal

__all__ = ["PostgresStorage", "where"]

PRELOAD_FOR: Final = 30.0
"""Seconds the rows loaded by the first read serve each keyset's first read."""
_NOT_PRELOADED: Final = object()
RECONNECT_FOR: Final = 3.0
"""Seconds one background reconnection of the pool keeps trying (its delays double from 1 s);
then the next use starts a new one at once. Without this bound a server back after a 10 s
outage would be reached up to 15 s later, and a replica would lag the others that long."""
POOL_TIMEOUT: Final = 5.0
"""Longest wait for a connection of the pool: an unreachable server fails a read this fast."""
CONNECT_TIMEOUT: Final = 5
_TEMPORARY_CLASSES: Final = ("08", "57", "53", "40")
_TEMPORARY_HINT: Final = (
    "the PostgreSQL server is unreachable, restarting or overloaded; keyrotd retries by itself "
    "and keeps serving the keys it loaded"
)

log = logging.getLogger("keyrotd.storage")


def where(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string, for messages (no user, no password)."""
    params = conninfo_to_dict(conninfo)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or '?'}"


def with_ca(conninfo: str, ca_file: Path | None) -> str:
    """The connection string verifying the server with ``ca_file`` (``sslmode=verify-full``),
    unless it sets ``sslmode`` or ``sslrootcert`` itself."""
    params = conninfo_to_dict(conninfo)
    if ca_file is None or "sslmode" in params or "sslrootcert" in params:
        return conninfo
    return make_conninfo(conninfo, sslmode="verify-full", sslrootcert=str(ca_file))


class PostgresStorage:
    """Keyset documents as rows of one PostgreSQL table (see the module docstring)."""

    max_document_size: int = MAX_DOCUMENT_SIZE

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = "keyrotd_keysets",
        ca_file: Path | None = None,
        encryption_key: bytes | None = None,
        pool_timeout: float = POOL_TIMEOUT,
    ) -> None:
        if encryption_key is not None and len(encryption_key) != KEY_SIZE:
            raise ConfigError("the storage encryption key is not 32 bytes", "use a 256-bit key")
        _quiet_library_logging()
        try:
            self._conninfo = with_ca(conninfo, ca_file)
            self.where = where(self._conninfo)
        except psycopg.ProgrammingError:
            raise ConfigError(
                "storage.dsn_file does not hold a valid libpq connection string",
                "use keyword=value pairs (host=... dbname=... user=... password=...) or a "
                "postgresql:// URI",
            ) from None
        self.table = table
        self._table = sql.Identifier(*table.split("."))
        self._key = encryption_key
        self._sender = uuid.uuid4().hex
        """Sent with each notification, so that this storage's listener skips its own."""
        self._ready = False
        self._pool_timeout = pool_timeout
        self._seen: dict[str, Versioned | None] = {}
        """What the last read of each keyset found: the refresh asks only for other revisions."""
        self._lock = threading.Lock()
        self._preload_lock = threading.Lock()
        self._preload: dict[str, tuple[int, str]] | None = None
        self._preload_until = 0.0
        self._preload_taken: set[str] = set()
        self._listener: Listener | None = None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=4,
            open=False,
            timeout=pool_timeout,
            check=ConnectionPool.check_connection,
            kwargs={"connect_timeout": CONNECT_TIMEOUT, "autocommit": True},
            reconnect_timeout=RECONNECT_FOR,
            name="keyrotd",
        )
        self._pool.open(wait=False)

    # -- the Storage interface ---------------------------------------------------------------
    def location(self, keyset: str) -> str:
        return f"PostgreSQL table {self.table}, row {keyset!r} ({self.where})"

    def read(self, keyset: str) -> Versioned | None:
        checked_name(keyset)
        row = self._preloaded(keyset)
        if row is _NOT_PRELOADED:
            with self._connection("read", keyset) as conn:
                row = conn.execute(
                    sql.SQL("SELECT revision, document FROM {} WHERE name = %s").format(
                        self._table
                    ),
                    (keyset,),
                ).fetchone()
        found = None if row is None else self._opened(keyset, row[0], row[1])
        with self._lock:
            self._seen[keyset] = found
        return found

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        """One query: the rows of ``keysets`` whose revision is not the one last seen."""
        wanted = list(dict.fromkeys(keysets))
        results: dict[str, ReadResult] = {}
        names: list[str] = []
        for keyset in wanted:
            try:
                checked_name(keyset)
            except KeyrotdError as error:
                results[keyset] = error
            else:
                names.append(keyset)
        self._newer_than_preloaded(names)
        with self._lock:
            known = [self._seen.get(name) for name in names]
        revisions = [None if seen is None else int(seen.version) for seen in known]
        query = sql.SQL(
            "SELECT k.name, t.revision, t.document"
            " FROM unnest(%s::text[], %s::bigint[]) AS k(name, known)"
            " LEFT JOIN {} AS t ON t.name = k.name"
            " WHERE t.revision IS DISTINCT FROM k.known"
        ).format(self._table)
        try:
            with self._connection("refresh", None) as conn:
                rows = conn.execute(query, (names, revisions)).fetchall()
        except KeyrotdError as error:
            return {keyset: results.get(keyset, error) for keyset in wanted}
        changed = {row[0]: row for row in rows}
        with self._lock:
            for name, seen in zip(names, known, strict=True):
                if name not in changed:
                    results[name] = seen
                    continue
                _, revision, document = changed[name]
                try:
                    found = None if revision is None else self._opened(name, revision, document)
                except KeyrotdError as error:
                    results[name] = error
                    continue
                self._seen[name] = results[name] = found
        return {keyset: results[keyset] for keyset in wanted}

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        checked_name(keyset)
        if len(data) > MAX_DOCUMENT_SIZE:
            raise DocumentTooLargeError(
                f"the document for {self.location(keyset)} is {len(data)} bytes, above "
                f"keyrotd's limit of {MAX_DOCUMENT_SIZE} bytes; nothing was written",
                "keep fewer keys in the keyset (a shorter rotation_period or token_lifetime "
                "retires keys sooner) or use a smaller algorithm",
            )
        if expected_version is not None and not expected_version.isdigit():
            raise self._conflict(keyset, expected_version)
        revision = 1 if expected_version is None else int(expected_version) + 1
        self._newer_than_preloaded([keyset])
        document = seal(keyset, revision, data, self._key).decode("ascii")
        if expected_version is None:
            change = sql.SQL(
                "INSERT INTO {} (name, revision, document, updated_at)"
                " VALUES (%(name)s, 1, %(document)s, now()) ON CONFLICT (name) DO NOTHING"
            )
        else:
            change = sql.SQL(
                "UPDATE {} SET revision = %(revision)s, document = %(document)s,"
                " updated_at = now() WHERE name = %(name)s AND revision = %(read)s"
            )
        # one statement, so one transaction: the notification is sent if and only if the row
        # changed, when it commits
        statement = sql.SQL(
            "WITH changed AS ({} RETURNING name) SELECT pg_notify(%(channel)s, %(payload)s)"
            " FROM changed"
        ).format(change.format(self._table))
        values = {
            "name": keyset,
            "document": document,
            "revision": revision,
            "read": revision - 1,
            "channel": self.table,
            "payload": f"{keyset} {self._sender}",
        }
        with self._connection("write", keyset) as conn:
            changed = conn.execute(statement, values).rowcount
        if changed != 1:
            raise self._conflict(keyset, expected_version)
        version = str(revision)
        with self._lock:
            self._seen[keyset] = Versioned(data, version, self.location(keyset))
        return version

    def list_keysets(self) -> list[str]:
        with self._connection("list", None) as conn:
            rows = conn.execute(
                sql.SQL("SELECT name FROM {} ORDER BY name").format(self._table)
            ).fetchall()
        return [name for (name,) in rows if KEYSET_NAME.fullmatch(name)]

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
        self._pool.close(timeout=1.0)

    # -- changes made elsewhere ----------------------------------------------------------------
    def watch(self, on_change: Callable[[str | None], None]) -> None:
        """Call ``on_change(keyset)`` when another process commits a change of ``keyset``, and
        ``on_change(None)`` after the listening connection was (re)established: changes made
        while it was down were not heard. Runs in a thread of its own until :meth:`close`."""

        def heard(payload: str) -> None:
            keyset, _, sender = payload.partition(" ")
            if sender != self._sender and KEYSET_NAME.fullmatch(keyset):
                on_change(keyset)

        self._listener = Listener(self._conninfo, self.table, heard, lambda: on_change(None))
        self._listener.start()

    # -- helpers -------------------------------------------------------------------------------
    def _preloaded(self, keyset: str) -> Any:
        """The first read of this storage loads every row in one query; each keyset's first
        read within :data:`PRELOAD_FOR` seconds takes its row from there (a daemon's start-up
        reads 10,000 keysets one by one: one query, not 10,000). A row taken so is at most that
        old: a write on it is still a compare-and-swap, and a lost one re-reads from the table."""
        with self._preload_lock:
            if self._preload is None:  # a failure here leaves it None: tried again next read
                with self._connection("read", None) as conn:
                    rows = conn.execute(
                        sql.SQL("SELECT name, revision, document FROM {}").format(self._table)
                    ).fetchall()
                self._preload = {name: (revision, doc) for name, revision, doc in rows}
                self._preload_until = time.monotonic() + PRELOAD_FOR
            if time.monotonic() > self._preload_until:
                self._preload.clear()
                self._preload_taken.clear()
                self._preload_until = math.inf  # over: never again
            if self._preload_until == math.inf or keyset in self._preload_taken:
                return _NOT_PRELOADED
            self._preload_taken.add(keyset)
            return self._preload.pop(keyset, None)

    def _newer_than_preloaded(self, keysets: Sequence[str]) -> None:
        """A refresh or a write saw these keysets: a preloaded row of theirs is older."""
        with self._preload_lock:
            if self._preload_until != math.inf:
                self._preload_taken.update(keysets)
                for keyset in keysets:
                    if self._preload is not None:
                        self._preload.pop(keyset, None)

    @contextmanager
    def _connection(self, operation: str, keyset: str | None) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection in autocommit mode (a read is one statement; a write opens its
        own transaction), the table made first if need be; psycopg's and the pool's failures
        translated into keyrotd's errors."""
        what = f"{operation} of {self.location(keyset) if keyset else 'table ' + self.table}"
        try:
            with self._pool.connection() as conn:
                if not self._ready:
                    self._create_table(conn)
                yield conn
        except PoolTimeout:
            raise TemporaryStorageError(
                f"{what} failed: no connection to PostgreSQL ({self.where}) within "
                f"{self._pool_timeout:g}s",
                _TEMPORARY_HINT,
            ) from None
        except psycopg.Error as error:
            raise self._failure(what, error) from None

    def _create_table(self, conn: psycopg.Connection[Any]) -> None:
        """The table, created if missing; an advisory lock serialises concurrent creators (the
        ``CREATE`` privilege is needed only when it is missing)."""
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,)).fetchone()
        if not (exists and exists[0]):
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY,"
                        " revision bigint NOT NULL CHECK (revision > 0),"
                        " document text NOT NULL,"
                        " updated_at timestamptz NOT NULL DEFAULT now())"
                    ).format(self._table)
                )
        self._ready = True

    def _failure(self, what: str, error: psycopg.Error) -> StorageError:
        state = error.sqlstate or ""
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        detail = f"{state + ': ' if state else ''}{first}"
        if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError) and (
            not state or state.startswith(_TEMPORARY_CLASSES)
        ):
            return TemporaryStorageError(f"{what} failed: {detail}", _TEMPORARY_HINT)
        if state.startswith(_TEMPORARY_CLASSES):
            return TemporaryStorageError(f"{what} failed: {detail}", _TEMPORARY_HINT)
        if state == "42501":
            hint = (
                f"grant keyrotd's role SELECT, INSERT and UPDATE on {self.table} (and CREATE on "
                "its schema until the table exists); see docs/storage.md"
            )
        else:
            hint = "see the PostgreSQL message; the row was left as it was"
        return StorageError(f"{what} failed: {detail}", hint)

    def _opened(self, keyset: str, revision: int, document: str) -> Versioned:
        location = self.location(keyset)
        try:
            opened = unseal(keyset, document.encode("utf-8"), self._key)
        except EnvelopeError as error:
            raise CorruptDocumentError(
                f"{location} is not a document keyrotd wrote: {error}; it was left untouched",
                "restore the row from a backup, or check storage.encryption_key_file",
            ) from None
        if opened.revision != revision:
            raise CorruptDocumentError(
                f"{location} is at revision {revision} but its document was sealed at "
                f"{opened.revision} (edited?); it was left untouched",
                "restore the row from a backup",
            )
        return Versioned(opened.data, str(revision), location)

    def _conflict(self, keyset: str, expected: str | None) -> ConflictError:
        return ConflictError(
            f"{self.location(keyset)} changed since it was read (expected revision "
            f"{expected or 'none'})",
            "re-read the keyset and try again",
        )


def _quiet_library_logging() -> None:
    """psycopg_pool logs each failed reconnection at WARNING: keyrotd's own storage events say
    it once (storage.read_failed, then storage.recovered)."""
    logger = logging.getLogger("psycopg")
    if logger.level < logging.ERROR:
        logger.setLevel(logging.ERROR)
