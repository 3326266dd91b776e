"""Temp files a killed writer leaves behind hold a whole document, private keys included.

They must not outlive the crash: the next process to open the keyset removes them, whether or not
it has anything to write (a clean writer whose tick plans nothing used to leave them; seen as a
leftover ``.tmp`` in ``tests/faults/test_crash.py``). A temp file of a writer still in flight
(its lock held) is never touched.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from keyrotd.lifecycle.commands import TICK
from keyrotd.storage.file import FileStorage
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.clock import T0_DECEMBER as T0
from tests.support.keysets import HOURLY as POLICY

LEFTOVER = ".default.json." + "ab" * 16 + ".tmp"


def bootstrapped(store: Path) -> None:
    KeysetWriter(
        FileStorage(store), KeysetSpec("default", "EdDSA", 2048, POLICY), lambda: T0
    ).apply()


def crashed_writer_leftover(store: Path) -> Path:
    leftover = store / LEFTOVER
    fd = os.open(leftover, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b'{"a document with private keys": "..."}')
    os.close(fd)
    return leftover


def temp_files(store: Path) -> list[str]:
    return sorted(name for name in os.listdir(store) if name.endswith(".tmp"))


def test_a_clean_writer_with_nothing_to_write_removes_a_crashed_writers_temp_file(
    tmp_path: Path,
) -> None:
    bootstrapped(tmp_path)
    crashed_writer_leftover(tmp_path)

    spec = KeysetSpec("default", "EdDSA", 2048, POLICY)
    outcome = KeysetWriter(FileStorage(tmp_path), spec, lambda: T0).apply(TICK)

    assert not outcome.written  # nothing was due: no write took the lock
    assert temp_files(tmp_path) == []


def test_a_reader_removes_leftovers_once_and_never_those_of_a_writer_in_flight(
    tmp_path: Path,
) -> None:
    bootstrapped(tmp_path)
    leftover = crashed_writer_leftover(tmp_path)
    lock = os.open(tmp_path / "default.lock", os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a writer is in flight: its temp file is not stale
        storage = FileStorage(tmp_path)
        assert storage.read("default") is not None
        assert temp_files(tmp_path) == [LEFTOVER]
    finally:
        os.close(lock)
    # The writer finished (or died) with its file in place: the next process removes it.
    assert FileStorage(tmp_path).read("default") is not None
    assert not leftover.exists()
