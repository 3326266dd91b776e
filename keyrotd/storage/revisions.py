"""G8, revisions only go forward: one guard in front of every backend, for every reader.

:func:`keyrotd.storage.open_storage` wraps each backend in a :class:`RevisionGuard`, so that the
daemon, the CLI and the Python issuer (and any backend added later) refuse alike a keyset document
whose ``revision`` (the writer raises it on every write, :mod:`keyrotd.writer`) is lower than the
highest one accepted, or equal to it with other content (a SHA-256 of the document), or that holds
a kid once revoked: a copied-back file, a restored backup, an ``AWSCURRENT`` label moved back.

A refused document is a :class:`RollbackError` for that keyset: readers keep what they accepted,
the writer writes nothing on top (its read fails first, and a write at or below the mark is
refused here too). Each refused revision is logged once as ``storage.rollback_detected``
(``keyset``, ``accepted``, ``found``) and handed to ``on_rollback`` (the daemon's counter).

The marks live in memory for the life of the process and, with ``storage.revision_file``
(:mod:`keyrotd.storage.revision_file`), across processes and restarts. A document the guard cannot
parse is passed through untouched: the reader reports it as corrupt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from keyrotd.errors import KeyrotdError, RollbackError
from keyrotd.storage.interface import ReadResult, Storage, Versioned
from keyrotd.storage.revision_file import Mark, RevisionFile

__all__ = ["RevisionGuard", "Summary", "summarize"]

log = logging.getLogger("keyrotd.storage")

_LIVE = frozenset({"pending", "active", "retired"})

_HINT = (
    "put the newer document back, or bring keys back with `keyrotd restore BACKUP` (the one "
    "way back: it writes forward); keyrotd serves what it accepted and writes nothing on top"
)


@dataclass(frozen=True)
class Summary:
    """What the guard needs of a keyset document: its revision, digest and kids."""

    revision: int
    digest: str
    live: frozenset[str]
    revoked: frozenset[str]


def summarize(data: bytes) -> Summary | None:
    """The revision and kids of a keyset document; None if it is not one (the reader says so)."""
    try:
        document = json.loads(data)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    revision = document.get("revision", 0)
    keys, history = document.get("keys", []), document.get("history", [])
    if type(revision) is not int or not isinstance(keys, list) or not isinstance(history, list):
        return None
    entries = [e for e in (*keys, *history) if isinstance(e, dict) and type(e.get("kid")) is str]
    live = frozenset(e["kid"] for e in entries if e.get("state") in _LIVE)
    revoked = frozenset(e["kid"] for e in entries if e.get("state") == "revoked")
    return Summary(revision, hashlib.sha256(data).hexdigest(), live, revoked)


def _nothing(keyset: str) -> None:
    """The default ``on_rollback``: no counter to raise."""


class RevisionGuard:
    """A :class:`Storage` that refuses documents going back (see the module docstring)."""

    def __init__(
        self,
        backend: Storage,
        revision_file: RevisionFile | None = None,
        on_rollback: Callable[[str], None] = _nothing,
    ) -> None:
        self.backend = backend
        self.max_document_size = backend.max_document_size
        self.revision_file = revision_file
        self.on_rollback = on_rollback
        self._lock = threading.Lock()
        self._marks: dict[str, Mark] = {}
        self._unsaved: dict[str, Mark] = {}
        self._summaries: dict[str, tuple[bytes, Summary | None]] = {}
        self._reported: set[tuple[str, int, str]] = set()

    # -- the Storage interface ---------------------------------------------------------------
    def location(self, keyset: str) -> str:
        return self.backend.location(keyset)

    def read(self, keyset: str) -> Versioned | None:
        before = self.accepted(keyset)  # what was accepted before the read began (see _accept)
        stored = self.backend.read(keyset)
        if stored is not None:
            self._accept(keyset, stored, before)
            self._save()
        return stored

    def read_many(self, keysets: Sequence[str]) -> dict[str, ReadResult]:
        try:
            recorded = self._recorded()  # one look at the revision file for the whole batch
        except KeyrotdError as error:
            return dict.fromkeys(keysets, error)
        with self._lock:
            remembered = {k: self._marks.get(k) for k in keysets}
        results = self.backend.read_many(keysets)
        for keyset, result in results.items():
            if isinstance(result, Versioned):
                before = _merged(remembered.get(keyset), recorded.get(keyset))
                try:
                    self._accept(keyset, result, before)
                except KeyrotdError as error:
                    results[keyset] = error
        try:
            self._save()
        except KeyrotdError as error:
            for keyset in self._unsaved:
                if keyset in results:
                    results[keyset] = error
        return results

    def write(self, keyset: str, data: bytes, expected_version: str | None) -> str:
        summary = summarize(data)
        if summary is not None:
            self._refuse_to_write_back(keyset, summary)
        version = self.backend.write(keyset, data, expected_version)
        if summary is not None:
            with self._lock:
                self._raise(keyset, summary, self._mark(keyset))
            self._save()
        return version

    def list_keysets(self) -> list[str]:
        return self.backend.list_keysets()

    def close(self) -> None:
        self.backend.close()

    # -- the marks ---------------------------------------------------------------------------
    def accepted(self, keyset: str) -> Mark | None:
        """The high-water mark of ``keyset``: this process's and the revision file's."""
        with self._lock:
            return self._mark(keyset)

    def _recorded(self) -> dict[str, Mark]:
        return {} if self.revision_file is None else self.revision_file.load()

    def _mark(self, keyset: str) -> Mark | None:
        """This process's mark of ``keyset`` merged with the revision file's."""
        return _merged(self._marks.get(keyset), self._recorded().get(keyset))

    def _accept(self, keyset: str, stored: Versioned, before: Mark | None) -> None:
        """Check ``stored`` against ``before``, the mark as it was when the read began: a write
        (by this process or another) that lands while the read is in flight raises the mark,
        and the older document the read may still return is not a rollback."""
        summary = self._summary(keyset, stored.data)
        if summary is None:
            return
        with self._lock:
            if before is not None and _goes_back(summary, before):
                self._report(keyset, before, summary, stored.location)
            self._raise(keyset, summary, before)

    def _raise(self, keyset: str, summary: Summary, known: Mark | None) -> None:
        """Under the lock: take ``summary`` as accepted, never lowering a mark; what differs
        from ``known`` (the file's and this process's mark) is saved."""
        new = Mark(summary.revision, summary.digest, summary.revoked).merge(known)
        new = new.merge(self._marks.get(keyset))
        self._marks[keyset] = new
        if new != known:
            self._unsaved[keyset] = new

    def _save(self) -> None:
        with self._lock:
            unsaved = dict(self._unsaved)
            if self.revision_file is None:
                self._unsaved.clear()
        if self.revision_file is None or not unsaved:
            return
        self.revision_file.record(unsaved)
        with self._lock:
            for keyset, mark in unsaved.items():
                if self._unsaved.get(keyset) == mark:
                    del self._unsaved[keyset]

    def _summary(self, keyset: str, data: bytes) -> Summary | None:
        """``summarize(data)``, parsed once per document: the same bytes object (the file
        store's unchanged read), or bytes with the same digest, reuse the last summary."""
        cached = self._summaries.get(keyset)
        if cached is not None and cached[0] is data:
            return cached[1]
        last = None if cached is None else cached[1]
        if last is not None and hashlib.sha256(data).hexdigest() == last.digest:
            self._summaries[keyset] = (data, last)
            return last
        summary = summarize(data)
        self._summaries[keyset] = (data, summary)
        return summary

    def _report(self, keyset: str, mark: Mark, summary: Summary, location: str) -> None:
        """Log and count a refused revision once; raise its :class:`RollbackError`."""
        key = (keyset, summary.revision, summary.digest)
        if key not in self._reported:
            self._reported.add(key)
            log.error(
                "keyset %s: refused revision %d of %s, revision %d being accepted already "
                "(a rollback)",
                keyset,
                summary.revision,
                location,
                mark.revision,
                extra={
                    "event": "storage.rollback_detected",
                    "keyset": keyset,
                    "accepted": mark.revision,
                    "found": summary.revision,
                },
            )
            self.on_rollback(keyset)
        message = _refusal(keyset, location, summary, mark)
        raise RollbackError(keyset, mark.revision, summary.revision, message, _HINT)

    def _refuse_to_write_back(self, keyset: str, summary: Summary) -> None:
        with self._lock:
            mark = self._mark(keyset)
        if mark is None:
            return
        back = summary.live & mark.revoked
        if summary.revision > mark.revision and not back:
            return
        what = (
            f"it would bring back the revoked kid {min(back)}"
            if back
            else f"revision {mark.revision} is accepted already"
        )
        raise RollbackError(
            keyset,
            mark.revision,
            summary.revision,
            f"keyset {keyset}: refusing to write revision {summary.revision}: {what} (its "
            f"document was deleted or rolled back)",
            "bring its keys back with `keyrotd restore BACKUP`",
        )


def _merged(mine: Mark | None, recorded: Mark | None) -> Mark | None:
    return recorded if mine is None else mine.merge(recorded)


def _refusal(keyset: str, location: str, summary: Summary, mark: Mark) -> str:
    back = summary.live & mark.revoked
    if back:
        why = f"it brings back the revoked kid {min(back)}"
    elif summary.revision < mark.revision:
        why = f"below revision {mark.revision}, accepted already"
    else:
        why = "the revision accepted already, with other content"
    return (
        f"keyset {keyset}: refused revision {summary.revision} of {location}: {why}; it was "
        f"rolled back"
    )


def _goes_back(summary: Summary, mark: Mark) -> bool:
    """Lower than the mark, the same revision with other content, or a revoked kid back."""
    if summary.revision < mark.revision or summary.live & mark.revoked:
        return True
    other = bool(mark.digest) and summary.digest != mark.digest
    return summary.revision == mark.revision and summary.revision > 0 and other
