"""The G8 guard and writes that land while a read is in flight: the older document that read
returns is not a rollback (the daemon's refresh runs beside its own writes and the CLI's)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from keyrotd.storage.file import FileStorage
from keyrotd.storage.interface import ReadResult, Versioned
from keyrotd.storage.revision_file import RevisionFile
from keyrotd.storage.revisions import RevisionGuard
from keyrotd.testing.storage import document


class LateReads(FileStorage):
    """A real file store whose reads, once ``hold`` is armed, return only when it is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold: threading.Event | None = None
        self.reading = threading.Event()

    def read(self, keyset: str) -> Versioned | None:
        stored = super().read(keyset)
        if self.hold is not None:
            self.reading.set()
            self.hold.wait(10)
        return stored


def read_late(guard: RevisionGuard, backend: LateReads, results: list[object]) -> threading.Thread:
    backend.hold = threading.Event()

    def read() -> None:
        try:
            results.append(guard.read("alpha"))
        except Exception as exc:
            results.append(exc)

    thread = threading.Thread(target=read)
    thread.start()
    assert backend.reading.wait(10)
    return thread


@pytest.mark.parametrize("writer", ["this process", "a CLI sharing the revision file"])
def test_a_write_landing_during_a_read_is_no_rollback(tmp_path: Path, writer: str) -> None:
    marks = tmp_path / "revisions.json"
    backend = LateReads(tmp_path / "store")
    guard = RevisionGuard(backend, RevisionFile(marks))
    version = guard.write("alpha", document(1, active="k1"), None)
    other = (
        guard
        if writer == "this process"
        else RevisionGuard(FileStorage(tmp_path / "store"), RevisionFile(marks))
    )
    results: list[object] = []

    thread = read_late(guard, backend, results)
    other.write("alpha", document(2, active="k2", revoked="k1"), version)
    assert backend.hold is not None
    backend.hold.set()
    thread.join(10)
    backend.hold = None

    [late] = results
    assert isinstance(late, Versioned) and late.data == document(1, active="k1")
    again = guard.read("alpha")
    assert again is not None and again.data == document(2, active="k2", revoked="k1")


def test_the_batched_refresh_too(tmp_path: Path) -> None:
    marks = tmp_path / "revisions.json"
    backend = LateReads(tmp_path / "store")
    guard = RevisionGuard(backend, RevisionFile(marks))
    version = guard.write("alpha", document(1, active="k1"), None)
    cli = RevisionGuard(FileStorage(tmp_path / "store"), RevisionFile(marks))
    backend.hold = threading.Event()
    batch: list[dict[str, ReadResult]] = []
    thread = threading.Thread(target=lambda: batch.append(guard.read_many(["alpha"])))
    thread.start()
    assert backend.reading.wait(10)

    cli.write("alpha", document(2, active="k2"), version)
    backend.hold.set()
    thread.join(10)

    assert isinstance(batch[0]["alpha"], Versioned)
