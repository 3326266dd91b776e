"""The file store as an attack surface: a file keyrotd did not create is refused, naming it, and
no read of the store waits (docs/storage.md, "Files keyrotd did not create").

A writer to the store directory (the daemon's user, or anyone who got its rights) may put there a
FIFO, a device, a symlink or a hard link to a file it could not otherwise touch. keyrotd never
reads such a file as a document, never waits on it, and a CLI run by root never changes its owner
or mode (with ``fs.protected_hardlinks=0`` the daemon's user could otherwise take ``/etc/shadow``
from the next root ``rotate``).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from keyrotd.errors import StorageError
from keyrotd.storage.file import FileStorage
from tests.support.preload import CLI_AS_NOBODY

SECRET = b'{"private": "SECRET-MARKER-d-p-q"}'
BOUND = 5.0
"""Seconds any read or write of the store may take here (a FIFO opened blocking waits forever)."""
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod)")


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def storage(store: Path) -> FileStorage:
    storage = FileStorage(store)
    storage.write("default", SECRET, None)
    return storage


def within_bound(call: Callable[[], object], fifo: Path | None = None) -> BaseException | None:
    """Run ``call`` in a thread; its error (None if it returned). Fails if it takes longer than
    ``BOUND`` -- after releasing a reader blocked on ``fifo``, so the test run goes on."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as error:
            outcome.append(error)
        else:
            outcome.append(None)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    if thread.is_alive():
        if fifo is not None:
            with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "wb"):
                pass  # the blocked reader sees end of file
        thread.join(BOUND)
        pytest.fail(f"still waiting after {BOUND}s")
    return outcome[0]


def refused(call: Callable[[], object], path: Path, what: str, fifo: Path | None = None) -> str:
    error = within_bound(call, fifo)
    assert isinstance(error, StorageError), error
    assert str(path) in str(error) and what in str(error), str(error)
    assert "\n" not in str(error)
    return str(error)


def replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def test_a_fifo_over_the_document_is_refused_without_waiting(
    storage: FileStorage, store: Path
) -> None:
    document = store / "default.json"
    replace_with_fifo(document)
    refused(lambda: storage.read("default"), document, "a FIFO", fifo=document)
    refused(lambda: FileStorage(store).read("default"), document, "a FIFO", fifo=document)
    refused(lambda: storage.write("default", SECRET, "1"), document, "a FIFO", fifo=document)
    assert stat.S_ISFIFO(os.lstat(document).st_mode)  # left as it was found


def test_a_fifo_over_the_lock_file_is_refused_and_left_alone(
    storage: FileStorage, store: Path
) -> None:
    lock = store / "default.lock"
    replace_with_fifo(lock)
    os.chmod(lock, 0o644)
    refused(lambda: storage.write("default", SECRET, "1"), lock, "a FIFO", fifo=lock)
    info = os.lstat(lock)
    assert stat.S_ISFIFO(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o644


def test_a_symlinked_document_is_refused(storage: FileStorage, store: Path, tmp_path: Path) -> None:
    document = store / "default.json"
    elsewhere = tmp_path / "elsewhere.json"
    document.rename(elsewhere)
    document.symlink_to(elsewhere)  # a valid document, reached through a link
    refused(lambda: FileStorage(store).read("default"), document, "a symbolic link")
    refused(lambda: storage.write("default", SECRET, "1"), document, "a symbolic link")


def test_a_hard_linked_document_is_refused(
    storage: FileStorage, store: Path, tmp_path: Path
) -> None:
    document = store / "default.json"
    os.link(document, tmp_path / "second-name.json")
    refused(lambda: FileStorage(store).read("default"), document, "2 links")
    refused(lambda: storage.write("default", SECRET, "1"), document, "2 links")


def test_a_lock_file_hard_linked_to_another_file_is_left_alone(
    storage: FileStorage, store: Path, tmp_path: Path
) -> None:
    """The writer's own file, linked in as the lock: its mode is not "repaired" to 0600."""
    lock = store / "default.lock"
    lock.unlink()
    victim = tmp_path / "victim"
    victim.write_bytes(b"not keyrotd's")
    victim.chmod(0o644)
    os.link(victim, lock)
    refused(lambda: storage.write("default", SECRET, "1"), lock, "2 links")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert victim.read_bytes() == b"not keyrotd's"
    assert storage.read("default") is not None  # reads take no lock: still served


@needs_root
def test_a_device_over_the_document_is_refused(storage: FileStorage, store: Path) -> None:
    document = store / "default.json"
    document.unlink()
    os.mknod(document, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless
    refused(lambda: FileStorage(store).read("default"), document, "a character device")


@needs_root
def test_a_document_owned_by_another_user_is_refused(storage: FileStorage, store: Path) -> None:
    document = store / "default.json"
    os.chown(document, NOBODY, NOBODY)
    refused(lambda: FileStorage(store).read("default"), document, f"owned by uid {NOBODY}")
    refused(lambda: storage.write("default", SECRET, "1"), document, f"owned by uid {NOBODY}")
    assert os.stat(document).st_uid == NOBODY


# -- the real CLI, run by root on a store owned by nobody (as a daemon running as nobody has it)


CLI_BOUND = 20.0
"""Seconds a CLI run may take: a run blocked on a FIFO is killed and the test fails."""


def cli(config: Path, *argv: str, as_nobody: bool = False) -> subprocess.CompletedProcess[str]:
    entry = ["-c", CLI_AS_NOBODY] if as_nobody else ["-m", "keyrotd.cli"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    try:
        return subprocess.run(
            [sys.executable, *entry, "--config", str(config), *argv],
            capture_output=True,
            text=True,
            timeout=CLI_BOUND,
            env=environ,
            cwd=config.parent,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"keyrotd {' '.join(argv)} still running after {CLI_BOUND}s")


def fails_naming(done: subprocess.CompletedProcess[str], path: Path, what: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    [line] = done.stderr.splitlines()
    assert str(path) in line and what in line, line
    assert "Traceback" not in done.stderr


@pytest.fixture
def nobody_store() -> Iterator[tuple[Path, Path]]:
    """(config, store): a store owned by nobody with keyset ``default`` written by nobody."""
    if os.geteuid() != 0:
        pytest.skip("needs root: a root CLI on a store owned by nobody")
    base = Path(tempfile.mkdtemp(prefix="keyrotd-hostile-"))
    try:
        base.chmod(0o755)
        store = base / "store"
        store.mkdir(mode=0o700)
        os.chown(store, NOBODY, NOBODY)
        config = base / "keyrotd.toml"
        config.write_text(f'[storage]\npath = "{store}"\n[[keysets]]\nalgorithm = "ES256"\n')
        done = cli(config, "rotate", as_nobody=True)
        assert done.returncode == 0, done.stderr
        yield config, store
    finally:
        shutil.rmtree(base)


def stand_in_for_shadow(base: Path) -> Path:
    """A root-owned 0640 file outside the store, as /etc/shadow is."""
    shadow = base / "shadow"
    shadow.write_text("root:$6$not-a-real-hash:19000:0:99999:7:::\n")
    os.chown(shadow, 0, 42)
    shadow.chmod(0o640)
    return shadow


def kid(config: Path) -> str:
    """The active kid of ``default``, read from the store before it was tampered with."""
    done = cli(config, "status", "--json")
    assert done.returncode == 0, done.stderr
    [keyset] = json.loads(done.stdout)["keysets"]
    return str(next(k["kid"] for k in keyset["keys"] if k["state"] == "active"))


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.mark.parametrize("name", ["default.lock", "default.json"])
def test_a_root_cli_never_chowns_a_file_hard_linked_into_the_store(
    nobody_store: tuple[Path, Path], name: str
) -> None:
    """With fs.protected_hardlinks=0 nobody can link /etc/shadow into its store; root can always
    link, so the test links a stand-in as root."""
    config, store = nobody_store
    shadow = stand_in_for_shadow(config.parent)
    active = kid(config)
    (store / name).unlink()
    os.link(shadow, store / name)
    for argv in (("rotate", "--now", "--force"), ("revoke", active)):
        fails_naming(cli(config, *argv), store / name, "links")
        assert owner_and_mode(shadow) == (0, 42, 0o640)
    assert shadow.read_text().startswith("root:")


def test_a_root_cli_refuses_a_lock_file_owned_by_another_user(
    nobody_store: tuple[Path, Path],
) -> None:
    config, store = nobody_store
    lock = store / "default.lock"
    os.chown(lock, 0, 0)
    os.chmod(lock, 0o644)
    fails_naming(cli(config, "rotate", "--now", "--force"), lock, "owned by uid 0")
    assert owner_and_mode(lock) == (0, 0, 0o644)


@pytest.mark.parametrize("name", ["default.json", "default.lock"])
def test_a_fifo_in_the_store_never_hangs_the_cli(
    nobody_store: tuple[Path, Path], name: str
) -> None:
    config, store = nobody_store
    fifo = store / name
    replace_with_fifo(fifo)
    os.chown(fifo, NOBODY, NOBODY)
    fails_naming(cli(config, "rotate", "--now", "--force"), fifo, "a FIFO")
    fails_naming(cli(config, "rotate", "--now", "--force", as_nobody=True), fifo, "a FIFO")
    if name == "default.json":
        fails_naming(cli(config, "status"), fifo, "a FIFO")
    info = os.lstat(fifo)
    assert stat.S_ISFIFO(info.st_mode) and (info.st_uid, stat.S_IMODE(info.st_mode)) == (
        NOBODY,
        0o600,
    )


@needs_root
def test_a_root_client_command_never_chowns_a_lock_hard_linked_beside_the_clients_file(
    tmp_path: Path,
) -> None:
    """The clients file's lock goes through the same ``own`` as the store's files."""
    directory = tmp_path / "etc"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    config = tmp_path / "keyrotd.toml"
    config.write_text('[server]\nadmin_clients_file = "etc/clients.toml"\n')
    assert cli(config, "client", "add", "ci", "--scope", "rotate:*").returncode == 0
    shadow = stand_in_for_shadow(tmp_path)
    lock = directory / "clients.toml.lock"
    lock.unlink()
    os.link(shadow, lock)
    done = cli(config, "client", "add", "ops", "--scope", "revoke:*")
    assert done.returncode == 2, done.stderr  # stdout would hold a token
    [line] = done.stderr.splitlines()
    assert "left alone" in line, line
    assert owner_and_mode(shadow) == (0, 42, 0o640)
