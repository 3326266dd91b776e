"""The contract every storage backend passes (docs/storage.md, guarantee G6).

A backend's test module -- in keyrotd or in the package of a backend written elsewhere --
subclasses :class:`StorageContract` and provides the fixture ``storage_factory``: a *picklable*
zero-argument callable returning a new Storage on one fresh store (for example
``functools.partial(FileStorage, tmp_path)``)::

    from keyrotd.testing.storage import StorageContract

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage_factory(self, tmp_path):
            return functools.partial(MyStorage, tmp_path / "store")

It is called in child processes started with multiprocessing's "spawn" context. The ``storage``
fixture defaults to one storage made by that factory; a subclass may override it, but it must use
the same store. A store that lives in one process (:mod:`keyrotd.testing.memory`) sets
``concurrent_writers = 0``: the lost-update test then runs no processes and is skipped.

The G8 tests (revisions only go forward) put the backend behind the guard every reader uses
(:class:`keyrotd.storage.revisions.RevisionGuard`, as ``open_storage`` does) and move a document
back with the backend's own write, as anyone who may write the store could.

The lost-update test starts ``concurrent_writers`` processes (50). Spawning a Python process costs
about a quarter of a CPU-second, so a variant of a backend already tested with 50 may lower it.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
from collections.abc import Callable, Iterator
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest

from keyrotd.errors import KeyrotdError, RollbackError
from keyrotd.storage.interface import ConflictError, DocumentTooLargeError, Storage
from keyrotd.storage.revision_file import RevisionFile
from keyrotd.storage.revisions import RevisionGuard

StorageFactory = Callable[[], Storage]

_MAX_ATTEMPTS = 10_000
_TIMEOUT = 120.0


class StorageContract:
    """Tests every Storage must pass; subclass it and provide ``storage_factory``."""

    concurrent_writers = 50
    """Writer processes in the lost-update test; 0 skips it (a store of one process)."""

    @pytest.fixture
    def storage(self, storage_factory: StorageFactory) -> Iterator[Storage]:
        storage = storage_factory()
        yield storage
        storage.close()

    def test_round_trip(self, storage: Storage) -> None:
        version = storage.write("alpha", b'{"keys": []}', None)

        stored = storage.read("alpha")

        assert stored is not None
        assert (stored.data, stored.version) == (b'{"keys": []}', version)
        assert stored.location == storage.location("alpha")

    def test_documents_are_opaque_bytes(self, storage: Storage) -> None:
        data = bytes(range(256)) * 4

        storage.write("alpha", data, None)

        stored = storage.read("alpha")
        assert stored is not None
        assert stored.data == data

    def test_empty_document_round_trips(self, storage: Storage) -> None:
        version = storage.write("alpha", b"", None)

        stored = storage.read("alpha")
        assert stored is not None
        assert (stored.data, stored.version) == (b"", version)

    def test_read_of_a_missing_keyset_is_none(self, storage: Storage) -> None:
        assert storage.read("never-written") is None

    def test_keysets_are_independent(self, storage: Storage) -> None:
        storage.write("alpha", b"a", None)
        storage.write("beta", b"b", None)

        alpha, beta = storage.read("alpha"), storage.read("beta")

        assert alpha is not None
        assert beta is not None
        assert (alpha.data, beta.data) == (b"a", b"b")

    def test_create_if_absent_conflicts_when_present(self, storage: Storage) -> None:
        version = storage.write("alpha", b"first", None)

        with pytest.raises(ConflictError):
            storage.write("alpha", b"second", None)

        stored = storage.read("alpha")
        assert stored is not None
        assert (stored.data, stored.version) == (b"first", version)

    def test_stale_version_conflicts(self, storage: Storage) -> None:
        first = storage.write("alpha", b"one", None)
        second = storage.write("alpha", b"two", first)

        with pytest.raises(ConflictError):
            storage.write("alpha", b"three", first)

        stored = storage.read("alpha")
        assert stored is not None
        assert (stored.data, stored.version) == (b"two", second)

    def test_expected_version_of_a_missing_keyset_conflicts(self, storage: Storage) -> None:
        version = storage.write("alpha", b"one", None)

        with pytest.raises(ConflictError):
            storage.write("beta", b"one", version)

        assert storage.read("beta") is None

    def test_conflict_is_temporary(self, storage: Storage) -> None:
        storage.write("alpha", b"one", None)

        with pytest.raises(ConflictError) as caught:
            storage.write("alpha", b"two", None)

        assert caught.value.temporary

    def test_version_changes_on_every_write(self, storage: Storage) -> None:
        versions = [storage.write("alpha", b"same", None)]
        for _ in range(5):
            versions.append(storage.write("alpha", b"same", versions[-1]))

        assert len(set(versions)) == len(versions)
        stored = storage.read("alpha")
        assert stored is not None
        assert stored.version == versions[-1]

    def test_list_keysets(self, storage: Storage) -> None:
        assert storage.list_keysets() == []

        storage.write("beta", b"b", None)
        storage.write("alpha", b"a", None)

        assert sorted(storage.list_keysets()) == ["alpha", "beta"]

    def test_document_at_the_size_limit_is_accepted(self, storage: Storage) -> None:
        data = b"x" * storage.max_document_size

        storage.write("alpha", data, None)

        stored = storage.read("alpha")
        assert stored is not None
        assert stored.data == data

    def test_document_above_the_size_limit_is_refused(self, storage: Storage) -> None:
        version = storage.write("alpha", b"small", None)

        with pytest.raises(DocumentTooLargeError):
            storage.write("alpha", b"x" * (storage.max_document_size + 1), version)
        with pytest.raises(DocumentTooLargeError):
            storage.write("beta", b"x" * (storage.max_document_size + 1), None)

        stored = storage.read("alpha")
        assert stored is not None
        assert (stored.data, stored.version) == (b"small", version)
        assert storage.read("beta") is None

    @pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 65, "a\nb"])
    def test_unsafe_keyset_names_are_refused(self, storage: Storage, name: str) -> None:
        with pytest.raises(KeyrotdError):
            storage.write(name, b"data", None)
        with pytest.raises(KeyrotdError):
            storage.read(name)

    def test_a_failed_write_leaves_the_stored_document_unchanged(self, storage: Storage) -> None:
        version = storage.write("alpha", b"kept", None)
        before = storage.read("alpha")

        with pytest.raises(ConflictError):
            storage.write("alpha", b"lost", "not-" + version)

        assert storage.read("alpha") == before

    def test_storages_on_one_store_see_each_others_writes(
        self, storage: Storage, storage_factory: StorageFactory
    ) -> None:
        other = storage_factory()
        try:
            version = other.write("alpha", b"from the other", None)
            stored = storage.read("alpha")
        finally:
            other.close()

        assert stored is not None
        assert (stored.data, stored.version) == (b"from the other", version)

    def test_concurrent_writer_processes_lose_no_update(
        self, storage: Storage, storage_factory: StorageFactory
    ) -> None:
        """G6: each process appends its id with read / compare-and-swap / retry."""
        if self.concurrent_writers == 0:
            pytest.skip("the store lives in one process (concurrent_writers = 0)")
        context = multiprocessing.get_context("spawn")
        writers = self.concurrent_writers
        start = context.Barrier(writers)
        results: multiprocessing.Queue[tuple[int, str]] = context.Queue()
        processes = [
            context.Process(
                target=append_own_id, args=(storage_factory, "shared", n, start, results)
            )
            for n in range(writers)
        ]
        try:
            for process in processes:
                process.start()
            versions = dict(_collect(results, processes))
        finally:
            exit_codes = _stop(processes)
            results.close()
            results.join_thread()

        assert exit_codes == [0] * writers

        stored = storage.read("shared")
        assert stored is not None
        ids = json.loads(stored.data)
        assert sorted(ids) == list(range(writers))
        assert len(set(versions.values())) == writers
        assert stored.version == versions[ids[-1]]

    # -- G8: revisions only go forward ---------------------------------------------------------
    def test_g8_a_document_moved_back_is_refused_and_not_written_over(
        self, storage: Storage, storage_factory: StorageFactory, tmp_path: Path
    ) -> None:
        guarded = RevisionGuard(storage_factory(), RevisionFile(tmp_path / "revisions.json"))
        first = guarded.write("alpha", document(1, active="k1"), None)
        second = guarded.write("alpha", document(2, active="k2", revoked="k1"), first)
        moved_back = storage.write("alpha", document(1, active="k1"), second)  # the rollback

        with pytest.raises(RollbackError) as refused:
            guarded.read("alpha")
        with pytest.raises(RollbackError):
            guarded.write("alpha", document(2, active="k3"), moved_back)

        assert (refused.value.accepted, refused.value.found) == (2, 1)
        stored = storage.read("alpha")
        assert stored is not None
        assert (stored.version, stored.data) == (moved_back, document(1, active="k1"))
        guarded.close()

    def test_g8_a_new_reader_with_the_revision_file_refuses_it_too(
        self, storage: Storage, storage_factory: StorageFactory, tmp_path: Path
    ) -> None:
        marks = tmp_path / "revisions.json"
        writer = RevisionGuard(storage_factory(), RevisionFile(marks))
        first = writer.write("alpha", document(1, active="k1"), None)
        writer.write("alpha", document(2, active="k2", revoked="k1"), first)
        writer.close()
        current = storage.read("alpha")
        assert current is not None
        storage.write("alpha", document(1, active="k1"), current.version)

        afresh = RevisionGuard(storage_factory(), RevisionFile(marks))
        forgetful = RevisionGuard(storage_factory())
        try:
            with pytest.raises(RollbackError):
                afresh.read("alpha")
            refused = afresh.read_many(["alpha"])["alpha"]
            accepted = forgetful.read("alpha")  # no revision file: nothing to remember
        finally:
            afresh.close()
            forgetful.close()
        assert isinstance(refused, RollbackError)
        assert accepted is not None

    def test_g8_the_same_revision_with_other_content_is_refused(
        self, storage: Storage, storage_factory: StorageFactory
    ) -> None:
        guarded = RevisionGuard(storage_factory())
        version = guarded.write("alpha", document(1, active="k1"), None)
        storage.write("alpha", document(1, active="k9"), version)

        results = guarded.read_many(["alpha"])

        assert isinstance(results["alpha"], RollbackError)
        guarded.close()

    def test_g8_a_revoked_kid_never_comes_back_even_at_a_higher_revision(
        self, storage: Storage, storage_factory: StorageFactory
    ) -> None:
        guarded = RevisionGuard(storage_factory())
        first = guarded.write("alpha", document(1, active="k1"), None)
        second = guarded.write("alpha", document(2, active="k2", revoked="k1"), first)
        storage.write("alpha", document(3, active="k1"), second)

        with pytest.raises(RollbackError, match="revoked kid k1"):
            guarded.read("alpha")
        guarded.close()

    def test_g8_one_keysets_rollback_hides_no_other(
        self, storage: Storage, storage_factory: StorageFactory
    ) -> None:
        guarded = RevisionGuard(storage_factory())
        version = guarded.write("alpha", document(1, active="k1"), None)
        guarded.write("alpha", document(2, active="k2"), version)
        guarded.write("beta", document(1, active="b1"), None)
        current = storage.read("alpha")
        assert current is not None
        storage.write("alpha", document(1, active="k1"), current.version)

        results = guarded.read_many(["alpha", "beta"])

        assert isinstance(results["alpha"], RollbackError)
        beta = results["beta"]
        assert not isinstance(beta, KeyrotdError) and beta is not None
        assert beta.data == document(1, active="b1")
        guarded.close()


def document(revision: int, *, active: str, revoked: str | None = None) -> bytes:
    """A keyset document as the guard reads it: its revision, its live keys and history."""
    history = [] if revoked is None else [{"kid": revoked, "state": "revoked"}]
    keys = [{"kid": active, "state": "active"}]
    return json.dumps({"revision": revision, "keys": keys, "history": history}).encode()


def append_own_id(
    storage_factory: StorageFactory,
    keyset: str,
    writer_id: int,
    start: Barrier,
    results: multiprocessing.Queue[tuple[int, str]],
) -> None:
    """Child process: append ``writer_id`` to the JSON list, retrying lost compare-and-swaps."""
    storage = storage_factory()
    try:
        start.wait(_TIMEOUT)
        for _ in range(_MAX_ATTEMPTS):
            current = storage.read(keyset)
            ids = [] if current is None else json.loads(current.data)
            expected = None if current is None else current.version
            try:
                version = storage.write(keyset, json.dumps([*ids, writer_id]).encode(), expected)
            except ConflictError:
                continue
            results.put((writer_id, version))
            return
        raise RuntimeError(f"writer {writer_id} lost {_MAX_ATTEMPTS} compare-and-swaps")
    finally:
        storage.close()


def _collect(
    results: multiprocessing.Queue[tuple[int, str]], processes: list[SpawnProcess]
) -> Iterator[tuple[int, str]]:
    for _ in processes:
        try:
            yield results.get(timeout=_TIMEOUT)
        except queue.Empty:
            codes = [p.exitcode for p in processes]
            pytest.fail(f"a writer process reported nothing; exit codes: {codes}")


def _stop(processes: list[SpawnProcess]) -> list[int | None]:
    """Wait for (or end) the started writers; their exit codes."""
    started = [process for process in processes if process.pid is not None]
    for process in started:
        process.join(_TIMEOUT)
        if process.is_alive():
            process.terminate()
            process.join()
    exit_codes = [process.exitcode for process in processes]
    for process in started:
        process.close()
    return exit_codes
