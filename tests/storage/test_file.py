"""File storage: the shared contract, plus layout, modes, tamper detection and errors."""

from __future__ import annotations

import base64
import fcntl
import functools
import json
import multiprocessing
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from keyrotd.errors import (
    ConfigError,
    ConflictError,
    CorruptDocumentError,
    KeyrotdError,
    StorageError,
    TemporaryStorageError,
)
from keyrotd.storage.file import FileStorage, load_encryption_key
from keyrotd.storage.interface import Storage
from keyrotd.testing.storage import StorageContract, StorageFactory
from tests.support.preload import CLI_AS_NOBODY

SECRET = b'{"private": "SECRET-MARKER-d-p-q"}'


class TestPlainFileStorage(StorageContract):
    @pytest.fixture
    def storage_factory(self, tmp_path: Path) -> StorageFactory:
        return functools.partial(FileStorage, tmp_path / "store")


class TestEncryptedFileStorage(StorageContract):
    concurrent_writers = 10  # locking does not depend on encryption: the plain run has 50

    @pytest.fixture
    def storage_factory(self, tmp_path: Path, encryption_key: bytes) -> StorageFactory:
        return functools.partial(FileStorage, tmp_path / "store", encryption_key=encryption_key)


@pytest.fixture(params=["plain", "encrypted"])
def make_storage(
    request: pytest.FixtureRequest, tmp_path: Path, encryption_key: bytes
) -> Callable[[], FileStorage]:
    """Storages on ``tmp_path / "store"``, plain or encrypted (the test runs with both)."""
    key = encryption_key if request.param == "encrypted" else None
    return functools.partial(FileStorage, tmp_path / "store", encryption_key=key)


@pytest.fixture
def storage(make_storage: Callable[[], FileStorage]) -> Iterator[FileStorage]:
    storage = make_storage()
    yield storage
    storage.close()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# Layout and modes


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o277])
def test_directories_are_0700_and_files_0600_whatever_the_umask(
    tmp_path: Path, set_umask: Callable[[int], int], umask: int
) -> None:
    set_umask(umask)
    storage = FileStorage(tmp_path / "a" / "b" / "store")

    version = storage.write("default", SECRET, None)
    storage.write("default", SECRET, version)

    for directory in ("a", "a/b", "a/b/store"):
        assert mode(tmp_path / directory) == 0o700, directory
    assert mode(tmp_path / "a/b/store/default.json") == 0o600
    assert mode(tmp_path / "a/b/store/default.lock") == 0o600


def test_an_existing_lock_file_is_made_0600(storage: FileStorage, tmp_path: Path) -> None:
    storage.write("default", SECRET, None)
    lock = tmp_path / "store" / "default.lock"
    lock.chmod(0o644)

    storage.write("default", SECRET, "1")

    assert mode(lock) == 0o600


def test_reads_create_nothing(storage: FileStorage, tmp_path: Path) -> None:
    assert storage.read("default") is None
    assert storage.list_keysets() == []
    assert not (tmp_path / "store").exists()


def test_location_is_the_absolute_document_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    storage = FileStorage(Path("store"))

    assert storage.location("default") == str(tmp_path / "store" / "default.json")


def test_the_version_is_the_revision(storage: FileStorage, tmp_path: Path) -> None:
    versions = [storage.write("default", SECRET, None)]
    versions.append(storage.write("default", SECRET, versions[-1]))

    envelope = json.loads((tmp_path / "store" / "default.json").read_bytes())

    assert versions == ["1", "2"]
    assert envelope["revision"] == 2
    assert envelope["keyset"] == "default"
    assert envelope["format"] == "keyrotd/envelope/v1"


def test_plain_envelope(tmp_path: Path) -> None:
    FileStorage(tmp_path).write("default", SECRET, None)

    envelope = json.loads((tmp_path / "default.json").read_bytes())

    assert set(envelope) == {"format", "keyset", "revision", "encryption", "sha256", "payload"}
    assert envelope["encryption"] == "none"
    assert base64.b64decode(envelope["payload"]) == SECRET


def test_encrypted_envelope_holds_no_plaintext(tmp_path: Path, encryption_key: bytes) -> None:
    storage = FileStorage(tmp_path, encryption_key=encryption_key)
    storage.write("default", SECRET, None)
    first = json.loads((tmp_path / "default.json").read_bytes())
    storage.write("default", SECRET, "1")
    second = json.loads((tmp_path / "default.json").read_bytes())

    assert set(first) == {"format", "keyset", "revision", "encryption", "nonce", "ciphertext"}
    assert first["encryption"] == "AES-256-GCM"
    assert len(base64.b64decode(first["nonce"])) == 12
    assert first["nonce"] != second["nonce"]
    raw = (tmp_path / "default.json").read_bytes()
    assert b"SECRET-MARKER" not in raw
    assert base64.b64encode(SECRET) not in raw


def test_list_keysets_ignores_other_files(storage: FileStorage, tmp_path: Path) -> None:
    storage.write("alpha", SECRET, None)
    for name in ("notes.txt", ".hidden.json", "bad name.json", ".alpha.json.0a.tmp"):
        (tmp_path / "store" / name).write_bytes(b"x")
    (tmp_path / "store" / "subdir").mkdir()

    assert storage.list_keysets() == ["alpha"]


# Tamper detection: every damaged document is refused, named, and left byte for byte as it was


def written_document(storage: FileStorage, tmp_path: Path) -> tuple[Path, bytes]:
    storage.write("default", SECRET, None)
    storage.write("default", SECRET, "1")
    path = tmp_path / "store" / "default.json"
    return path, path.read_bytes()


def assert_refused_and_untouched(storage: FileStorage, path: Path, keyset: str) -> None:
    damaged = path.read_bytes()
    with pytest.raises(CorruptDocumentError) as on_read:
        storage.read(keyset)
    with pytest.raises(CorruptDocumentError):
        storage.write(keyset, b"replacement", None)
    with pytest.raises(CorruptDocumentError):
        storage.write(keyset, b"replacement", "2")
    assert path.read_bytes() == damaged
    message = str(on_read.value)
    assert str(path) in message
    assert "left untouched" in message
    assert "SECRET-MARKER" not in message
    assert on_read.value.exit_code == 1
    assert not on_read.value.temporary


@pytest.mark.parametrize("mask", [0x01, 0x20, 0x80])
def test_every_flipped_byte_is_detected(storage: FileStorage, tmp_path: Path, mask: int) -> None:
    path, original = written_document(storage, tmp_path)

    for position in range(len(original)):
        damaged = bytearray(original)
        damaged[position] ^= mask
        path.write_bytes(damaged)

        assert_refused_and_untouched(storage, path, "default")


def test_every_truncation_is_detected(storage: FileStorage, tmp_path: Path) -> None:
    path, original = written_document(storage, tmp_path)

    for length in range(len(original) - 1):  # dropping only the final newline is harmless
        path.write_bytes(original[:length])

        assert_refused_and_untouched(storage, path, "default")


@pytest.mark.parametrize(
    "content",
    [b"", b"not json", b"\xff\xfe\x00", b"[]", b"null", b"{}", b"[" * 100_000, b" " * 3_000_000],
)
def test_garbage_is_detected(storage: FileStorage, tmp_path: Path, content: bytes) -> None:
    path, _ = written_document(storage, tmp_path)
    path.write_bytes(content)

    assert_refused_and_untouched(storage, path, "default")


@pytest.mark.parametrize(
    ("field", "value"),
    [("revision", 3), ("revision", 1), ("revision", "2"), ("revision", True), ("format", "x")],
)
def test_edited_fields_are_detected(
    storage: FileStorage, tmp_path: Path, field: str, value: Any
) -> None:
    path, original = written_document(storage, tmp_path)
    envelope = json.loads(original)
    envelope[field] = value
    path.write_text(json.dumps(envelope))

    assert_refused_and_untouched(storage, path, "default")


def test_an_added_field_is_detected(storage: FileStorage, tmp_path: Path) -> None:
    path, original = written_document(storage, tmp_path)
    path.write_text(json.dumps({**json.loads(original), "note": "hi"}))

    assert_refused_and_untouched(storage, path, "default")


def test_a_document_copied_to_another_keyset_is_detected(
    storage: FileStorage, tmp_path: Path
) -> None:
    path, _ = written_document(storage, tmp_path)
    copy = path.with_name("other.json")
    shutil.copyfile(path, copy)

    assert_refused_and_untouched(storage, copy, "other")


def test_a_copy_with_its_keyset_field_edited_is_detected(
    storage: FileStorage, tmp_path: Path
) -> None:
    path, original = written_document(storage, tmp_path)
    copy = path.with_name("other.json")
    copy.write_text(json.dumps({**json.loads(original), "keyset": "other"}))

    assert_refused_and_untouched(storage, copy, "other")


def test_an_oversized_file_is_detected(storage: FileStorage, tmp_path: Path) -> None:
    path, original = written_document(storage, tmp_path)
    path.write_bytes(original + b" " * 3 * storage.max_document_size)

    assert_refused_and_untouched(storage, path, "default")


def test_a_wrong_encryption_key_is_detected(tmp_path: Path, encryption_key: bytes) -> None:
    FileStorage(tmp_path, encryption_key=encryption_key).write("default", SECRET, None)
    other_key = bytes(b ^ 1 for b in encryption_key)

    assert_refused_and_untouched(
        FileStorage(tmp_path, encryption_key=other_key), tmp_path / "default.json", "default"
    )


def test_a_plain_document_in_an_encrypted_store_is_refused(
    tmp_path: Path, encryption_key: bytes
) -> None:
    """A planted plain document must not inject keys into an encrypted store."""
    FileStorage(tmp_path).write("default", SECRET, None)

    assert_refused_and_untouched(
        FileStorage(tmp_path, encryption_key=encryption_key), tmp_path / "default.json", "default"
    )


def test_an_encrypted_document_without_the_key_is_a_config_error(
    tmp_path: Path, encryption_key: bytes
) -> None:
    FileStorage(tmp_path, encryption_key=encryption_key).write("default", SECRET, None)
    original = (tmp_path / "default.json").read_bytes()
    plain = FileStorage(tmp_path)

    with pytest.raises(ConfigError, match="encryption_key_file") as caught:
        plain.read("default")
    with pytest.raises(ConfigError):
        plain.write("default", SECRET, "1")

    assert str(tmp_path / "default.json") in str(caught.value)
    assert (tmp_path / "default.json").read_bytes() == original


# Failed writes, stale temp files, the lock


def store_files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "store"))


def test_a_conflicting_write_leaves_the_file_intact(storage: FileStorage, tmp_path: Path) -> None:
    path, original = written_document(storage, tmp_path)

    with pytest.raises(ConflictError, match=r"default\.json"):
        storage.write("default", b"lost", "1")

    assert path.read_bytes() == original
    assert store_files(tmp_path) == ["default.json", "default.lock"]


def test_a_failed_fsync_leaves_the_file_intact_and_no_temp_file(
    storage: FileStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, original = written_document(storage, tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="Input/output error"):
        storage.write("default", b"new", "2")
    monkeypatch.undo()

    assert path.read_bytes() == original
    assert store_files(tmp_path) == ["default.json", "default.lock"]
    assert storage.write("default", b"new", "2") == "3"


def test_stale_temp_files_break_nothing(storage: FileStorage, tmp_path: Path) -> None:
    storage.write("default", SECRET, None)
    store = tmp_path / "store"
    stale_default = store / ".default.json.tmp"  # what crashed writers leave
    stale_other = store / ".other.json.tmp"
    for stale in (stale_default, stale_other):
        stale.write_bytes(b"half a docu")

    assert storage.list_keysets() == ["default"]
    assert storage.read("other") is None
    stored = storage.read("default")
    assert stored is not None
    assert stored.data == SECRET
    assert storage.write("default", b"next", "1") == "2"
    assert storage.write("other", b"first", None) == "1"

    assert not stale_default.exists()
    assert not stale_other.exists()
    assert storage.list_keysets() == ["default", "other"]


def test_a_held_lock_times_out_as_a_temporary_error(tmp_path: Path) -> None:
    storage = FileStorage(tmp_path, lock_timeout=0.05)
    storage.write("default", SECRET, None)
    original = (tmp_path / "default.json").read_bytes()

    with (tmp_path / "default.lock").open("rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(TemporaryStorageError, match=r"default\.lock") as caught:
            storage.write("default", b"new", "1")

    assert caught.value.temporary
    assert (tmp_path / "default.json").read_bytes() == original
    assert storage.write("default", b"new", "1") == "2"


def test_other_os_errors_are_storage_errors_naming_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    storage = FileStorage(tmp_path / "file" / "store")

    with pytest.raises(StorageError, match=re.escape(str(tmp_path / "file"))) as caught:
        storage.write("default", SECRET, None)

    assert type(caught.value) is StorageError


# Configuration errors


def permission_probe() -> tuple[str, dict[str, str]]:
    """What each operation raises on an unreadable storage directory and key file."""
    base = Path(tempfile.mkdtemp())
    directory = base / "store"
    FileStorage(directory).write("default", SECRET, None)
    key_path = base / "storage.key"
    key_path.write_text(base64.b64encode(bytes(32)).decode())
    attempts: dict[str, Callable[[], object]] = {
        "read": lambda: FileStorage(directory).read("default"),
        "write": lambda: FileStorage(directory).write("default", SECRET, "1"),
        "list": lambda: FileStorage(directory).list_keysets(),
        "create": lambda: FileStorage(directory / "sub").write("default", SECRET, None),
        "key": lambda: load_encryption_key(key_path),
    }
    try:
        key_path.chmod(0)
        directory.chmod(0)
        return str(directory), {name: outcome(attempt) for name, attempt in attempts.items()}
    finally:
        directory.chmod(0o700)
        shutil.rmtree(base)


def outcome(attempt: Callable[[], object]) -> str:
    try:
        attempt()
    except KeyrotdError as error:
        return f"{type(error).__name__} exit {error.exit_code}: {error}"
    return "no error"


def permission_probe_as_nobody() -> tuple[str, dict[str, str]]:
    os.setgid(65534)
    os.setuid(65534)
    return permission_probe()


def run_permission_probe() -> tuple[str, dict[str, str]]:
    """Run the probe unprivileged: as root, in a child process that drops to nobody."""
    if os.geteuid() != 0:
        return permission_probe()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        try:
            return pool.submit(permission_probe_as_nobody).result(timeout=60)
        except PermissionError:
            pytest.skip("running as root without the right to drop privileges")


def test_an_unreadable_directory_is_a_config_error() -> None:
    directory, outcomes = run_permission_probe()

    for name in ("read", "write", "list", "create"):
        assert outcomes[name].startswith("ConfigError exit 2: permission denied on "), name
        assert directory in outcomes[name], name
        assert "\n" not in outcomes[name]
    assert outcomes["key"].startswith(
        "ConfigError exit 2: storage.encryption_key_file "
        f"{Path(directory).parent}/storage.key cannot be read (Permission denied): chmod 600 "
    )


def test_the_key_file_is_read_as_an_operator_makes_it(
    key_file: Path, encryption_key: bytes
) -> None:
    assert load_encryption_key(key_file) == encryption_key


@pytest.mark.parametrize(
    "content",
    [None, b"", b"not base64!", base64.b64encode(bytes(16)), base64.b64encode(bytes(33))],
    ids=["missing", "empty", "not-base64", "16-bytes", "33-bytes"],
)
def test_a_bad_key_file_is_a_config_error(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "storage.key"
    if content is not None:
        path.write_bytes(content)
        path.chmod(0o600)

    with pytest.raises(ConfigError) as caught:
        load_encryption_key(path)

    message = str(caught.value)
    assert str(path) in message
    assert "32 random bytes, base64" in message
    assert "head -c32 /dev/urandom | base64" in message
    assert caught.value.exit_code == 2


def test_a_key_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="32 random bytes, base64"):
        load_encryption_key(tmp_path)


def test_a_short_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileStorage(tmp_path, encryption_key=bytes(16))


def test_from_settings(tmp_path: Path, key_file: Path) -> None:
    def settings(key: Path | None) -> Any:
        return SimpleNamespace(type="file", path=tmp_path / "store", encryption_key_file=key)

    FileStorage.from_settings(settings(key_file)).write("default", SECRET, None)

    assert b"SECRET" not in (tmp_path / "store" / "default.json").read_bytes()
    with pytest.raises(ConfigError):
        FileStorage.from_settings(settings(None)).read("default")
    stored = FileStorage.from_settings(settings(key_file)).read("default")
    assert stored is not None
    assert stored.data == SECRET


def test_file_storage_is_a_storage(tmp_path: Path) -> None:
    storage: Storage = FileStorage(tmp_path)

    assert storage.max_document_size == 1024 * 1024


# Ownership: a CLI run by root writes files the daemon's user can still use (docs/cli.md)

NOBODY = 65534


def cli(config: Path, *argv: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process, as root or as nobody; it must succeed."""
    entry = ["-c", CLI_AS_NOBODY] if as_nobody else ["-m", "keyrotd.cli"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    done = subprocess.run(
        [sys.executable, *entry, "--config", str(config), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
        cwd=config.parent,
        check=False,
    )
    assert done.returncode == 0, (argv, as_nobody, done.stdout, done.stderr)
    return done


def owners(directory: Path) -> dict[str, tuple[int, int, str]]:
    return {
        path.name: (path.stat().st_uid, path.stat().st_gid, oct(stat.S_IMODE(path.stat().st_mode)))
        for path in sorted(directory.iterdir())
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: a root CLI on a store owned by nobody")
def test_a_cli_run_by_root_keeps_the_store_owned_by_its_owner() -> None:
    """``rotate --now`` as root left root-owned files: the daemon (nobody) went 503."""
    base = Path(tempfile.mkdtemp(prefix="keyrotd-owner-"))
    try:
        base.chmod(0o755)
        store = base / "store"
        store.mkdir(mode=0o700)
        os.chown(store, NOBODY, NOBODY)
        config = base / "keyrotd.toml"
        config.write_text(
            f'[storage]\npath = "{store}"\n[[keysets]]\nalgorithm = "ES256"\n'
            '[[keysets]]\nname = "other"\nalgorithm = "ES256"\n'
        )
        cli(config, "rotate", as_nobody=True)  # the daemon's user made the store
        first = json.loads(cli(config, "status", "--json").stdout)["keysets"][0]

        cli(config, "rotate", "--now", "--force")  # the emergency, as root
        cli(config, "revoke", first["keys"][0]["kid"])
        cli(config, "rotate", "--keyset", "other")  # root writes a keyset's first files

        mine = (NOBODY, NOBODY, "0o600")
        files = {
            f"{name}.{kind}": mine for name in ("default", "other") for kind in ("json", "lock")
        }
        assert owners(store) == files
        for keyset in ("default", "other"):  # nobody still reads and writes them
            cli(config, "rotate", "--now", "--force", "--keyset", keyset, as_nobody=True)
        after = json.loads(cli(config, "status", "--json", as_nobody=True).stdout)["keysets"]
        assert [keyset["version"] for keyset in after] == [str(int(first["version"]) + 3), "2"]
        assert owners(store) == files
    finally:
        shutil.rmtree(base)


def test_an_unchanged_document_is_not_read_again(make_storage: Callable[[], FileStorage]) -> None:
    """The refresh of 10,000 unchanged keysets costs a stat each: the second read returns what
    the first read made (the same object), without opening and checking the file again."""
    writer = make_storage()
    writer.write("default", SECRET, None)
    reader = make_storage()
    first = reader.read("default")
    assert first is not None
    assert reader.read("default") is first
    assert writer.read("default") is writer.read("default")  # the writer knows what it wrote


def test_every_write_of_another_process_is_seen_even_at_the_same_size(
    make_storage: Callable[[], FileStorage],
) -> None:
    """A write renames a new file over the document: a new inode, whatever its size and however
    soon after the last one, so the cheap change test never hides one."""
    writer, reader = make_storage(), make_storage()
    version = writer.write("default", b"document-000", None)
    for n in range(1, 60):
        assert reader.read("default") is not None
        version = writer.write("default", b"document-%03d" % n, version)
        seen = reader.read("default")
        assert seen is not None
        assert (seen.data, seen.version) == (b"document-%03d" % n, version)
    assert list_dir(writer) == ["default.json", "default.lock"]


def list_dir(storage: FileStorage) -> list[str]:
    return sorted(os.listdir(Path(storage.location("default")).parent))
