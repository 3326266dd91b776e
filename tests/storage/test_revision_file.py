"""``storage.revision_file`` (G8): shared, concurrent-safe, never lowered, 0600, owned like the
store's files."""

from __future__ import annotations

import os
import pwd
import threading
from pathlib import Path

import pytest

from keyrotd.errors import StorageError
from keyrotd.storage.revision_file import Mark, RevisionFile


def test_a_mark_is_never_lowered_and_a_revoked_kid_never_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "revisions.json"
    RevisionFile(path).record({"api": Mark(5, "d5", frozenset({"k1"}))})

    RevisionFile(path).record({"api": Mark(3, "d3", frozenset({"k2"}))})

    assert RevisionFile(path).load() == {"api": Mark(5, "d5", frozenset({"k1", "k2"}))}


def test_it_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "revisions.json"
    old = os.umask(0)
    try:
        RevisionFile(path).record({"api": Mark(1)})
    finally:
        os.umask(old)

    assert path.stat().st_mode & 0o777 == 0o600


def test_concurrent_writers_lose_no_mark(tmp_path: Path) -> None:
    path = tmp_path / "revisions.json"

    def raise_marks(writer: int) -> None:
        marks = RevisionFile(path)  # one file (and lock descriptor) per writer
        for revision in range(1, 21):
            marks.record({f"ks{writer}": Mark(revision), "shared": Mark(writer * 100 + revision)})

    threads = [threading.Thread(target=raise_marks, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    marks = RevisionFile(path).load()
    assert {name: mark.revision for name, mark in marks.items()} == {
        **{f"ks{n}": 20 for n in range(6)},
        "shared": 520,
    }


def test_a_damaged_file_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "revisions.json"
    path.write_text("{not json")

    with pytest.raises(StorageError, match=str(path)):
        RevisionFile(path).load()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_root_gives_it_to_the_owner_of_the_store(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    store = tmp_path / "store"
    store.mkdir()
    os.chown(store, nobody.pw_uid, nobody.pw_gid)
    path = tmp_path / "revisions.json"

    RevisionFile(path, owner_of=store).record({"api": Mark(1)})

    for made in (path, tmp_path / "revisions.json.lock"):
        info = made.stat()
        assert (info.st_uid, info.st_gid) == (nobody.pw_uid, nobody.pw_gid), made


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file away")
def test_a_root_cli_leaves_the_revision_file_to_the_owner_of_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyrotd.cli import main

    nobody = pwd.getpwnam("nobody")
    store = tmp_path / "store"
    store.mkdir(mode=0o700)
    os.chown(store, nobody.pw_uid, nobody.pw_gid)
    marks = tmp_path / "revisions.json"
    config = tmp_path / "keyrotd.toml"
    config.write_text(f'[storage]\npath = "{store}"\nrevision_file = "{marks}"\n')

    assert main(["rotate", "--config", str(config)]) == 0

    capsys.readouterr()
    for made in (marks, tmp_path / "revisions.json.lock"):
        info = made.stat()
        assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (
            nobody.pw_uid,
            nobody.pw_gid,
            0o600,
        ), made
    assert RevisionFile(marks).load()["default"].revision == 1


def test_a_missing_directory_is_a_configuration_error_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyrotd.cli import main

    config = tmp_path / "keyrotd.toml"
    marks = tmp_path / "nowhere" / "revisions.json"
    config.write_text(f'[storage]\npath = "{tmp_path / "store"}"\nrevision_file = "{marks}"\n')

    assert main(["status", "--config", str(config)]) == 2

    err = capsys.readouterr().err
    assert f"the directory {tmp_path / 'nowhere'} does not exist" in err


def test_check_config_finds_the_missing_directory_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from keyrotd.cli import main

    config = tmp_path / "keyrotd.toml"
    marks = tmp_path / "nowhere" / "revisions.json"
    config.write_text(f'[storage]\npath = "{tmp_path / "store"}"\nrevision_file = "{marks}"\n')

    assert main(["check-config", "--config", str(config)]) == 2

    assert "does not exist" in capsys.readouterr().err
