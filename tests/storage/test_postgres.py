"""PostgreSQL storage on a real server: the shared contract (G8 included), the table, the
one-query refresh, sealing, LISTEN/NOTIFY, errors and what messages show (docs/storage.md)."""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.errors import CorruptDocumentError, TemporaryStorageError
from keyrotd.storage.interface import Versioned
from keyrotd.storage.postgres.backend import PostgresStorage
from keyrotd.testing.storage import StorageContract, StorageFactory
from tests.support.daemon import free_port
from tests.support.postgres import PASSWORD, PostgresServer, make_tls_files
from tests.support.waiting import wait_for


class TestPostgresStorage(StorageContract):
    concurrent_writers = 16  # each spawned writer imports psycopg and opens a pool: 50 cost minutes

    @pytest.fixture
    def storage_factory(self, postgres_dsn: str) -> StorageFactory:
        return functools.partial(PostgresStorage, postgres_dsn)


class TestEncryptedPostgresStorage(StorageContract):
    concurrent_writers = 6  # the compare-and-swap does not depend on sealing: the plain run has 16

    @pytest.fixture
    def storage_factory(self, postgres_dsn: str, encryption_key: bytes) -> StorageFactory:
        return functools.partial(PostgresStorage, postgres_dsn, encryption_key=encryption_key)


@pytest.fixture
def storage(postgres_dsn: str) -> Iterator[PostgresStorage]:
    opened = PostgresStorage(postgres_dsn)
    yield opened
    opened.close()


def test_the_table_is_made_with_its_columns(
    storage: PostgresStorage, postgres_server: PostgresServer, postgres_database: str
) -> None:
    storage.write("alpha", b"a", None)

    columns = postgres_server.psql(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'keyrotd_keysets' ORDER BY ordinal_position",
        postgres_database,
    )
    assert columns.splitlines() == [
        "name|text",
        "revision|bigint",
        "document|text",
        "updated_at|timestamp with time zone",
    ]
    row = postgres_server.psql("SELECT name, revision FROM keyrotd_keysets", postgres_database)
    assert row == "alpha|1"


def test_a_refresh_is_one_query_and_returns_only_changed_rows(
    storage: PostgresStorage,
    postgres_dsn: str,
    postgres_server: PostgresServer,
    postgres_database: str,
) -> None:
    names = [f"ks{n}" for n in range(50)]
    for name in names:
        storage.write(name, name.encode(), None)
    other = PostgresStorage(postgres_dsn)
    try:
        first = storage.read_many(names)  # every row: nothing was read yet by this storage
        current = other.read("ks7")
        assert current is not None
        other.write("ks7", b"changed", current.version)
        postgres_server.forget_statements(postgres_database)

        second = storage.read_many(names)
        third = storage.read_many(names)
    finally:
        other.close()

    assert {name: r.data for name, r in first.items() if isinstance(r, Versioned)} == {
        name: name.encode() for name in names
    }
    changed = second["ks7"]
    assert isinstance(changed, Versioned)
    assert (changed.data, changed.version) == (b"changed", "2")
    assert third == second
    statements = postgres_server.statements(postgres_database)
    assert sum(calls for calls, _ in statements.values()) == 2, statements  # one per refresh
    (refresh,) = [rows for query, (calls, rows) in statements.items() if "unnest" in query]
    assert refresh == 1  # ks7 once, then nothing


def test_sealed_rows_hold_no_plaintext_and_need_the_key(
    postgres_dsn: str, postgres_server: PostgresServer, postgres_database: str
) -> None:
    sealed = PostgresStorage(postgres_dsn, encryption_key=os.urandom(32))
    try:
        sealed.write("alpha", b'{"d": "PRIVATE-MARKER"}', None)
    finally:
        sealed.close()
    stored = postgres_server.psql("SELECT document FROM keyrotd_keysets", postgres_database)
    assert "AES-256-GCM" in stored
    assert "PRIVATE-MARKER" not in stored
    assert "PRIVATE-MARKER" not in base64.b64decode(json.loads(stored)["ciphertext"]).decode(
        "latin-1"
    )

    plain = PostgresStorage(postgres_dsn)
    try:
        with pytest.raises(CorruptDocumentError, match="keyrotd_keysets, row 'alpha'"):
            plain.read("alpha")
    finally:
        plain.close()


def test_an_edited_row_is_refused_naming_it_and_left_alone(
    storage: PostgresStorage, postgres_server: PostgresServer, postgres_database: str
) -> None:
    storage.write("alpha", b"a", None)
    postgres_server.psql(
        "UPDATE keyrotd_keysets SET revision = 5 WHERE name = 'alpha'", postgres_database
    )

    with pytest.raises(CorruptDocumentError, match=r"revision 5 .* sealed at 1"):
        storage.read("alpha")
    result = storage.read_many(["alpha"])["alpha"]
    assert isinstance(result, CorruptDocumentError)
    assert postgres_server.psql("SELECT revision FROM keyrotd_keysets", postgres_database) == "5"


def test_a_write_notifies_listeners_of_other_storages_only(
    storage: PostgresStorage, postgres_dsn: str
) -> None:
    heard: list[str | None] = []
    listening = threading.Event()

    def on_change(name: str | None) -> None:
        heard.append(name)
        listening.set()

    storage.watch(on_change)
    assert listening.wait(10)  # connected: None, "read everything"
    other = PostgresStorage(postgres_dsn)
    try:
        storage.write("mine", b"m", None)
        started = time.monotonic()
        other.write("theirs", b"t", None)
        wait_for(lambda: "theirs" in heard, 5, "the notification of another storage's write")
        elapsed = time.monotonic() - started
    finally:
        other.close()

    assert elapsed < 1.0
    assert heard == [None, "theirs"]


def test_an_unreachable_server_is_a_temporary_error_that_shows_no_password(
    postgres_server: PostgresServer,
) -> None:
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} dbname=keyrotd user=keyrotd password={PASSWORD}"
    storage = PostgresStorage(dsn, pool_timeout=1.0)
    try:
        with pytest.raises(TemporaryStorageError) as caught:
            storage.read("alpha")
        results = storage.read_many(["alpha", "beta"])
    finally:
        storage.close()

    message = str(caught.value) + " " + (caught.value.hint or "")
    assert f"127.0.0.1:{port}/keyrotd" in message
    assert PASSWORD not in message
    assert all(isinstance(r, TemporaryStorageError) for r in results.values())


def test_tls_with_ca_file_verifies_the_server(tmp_path: Path) -> None:
    server = PostgresServer.make(tls=True)
    try:
        database = server.new_database()
        assert server.tls_ca is not None
        verified = PostgresStorage(server.dsn(database), ca_file=server.tls_ca)
        try:
            verified.write("alpha", b"over TLS", None)
            ssl_in_use = server.psql(
                "SELECT bool_and(ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)"
                f" WHERE a.datname = '{database}' AND a.client_addr IS NOT NULL",
                database,
            )
        finally:
            verified.close()
        other_ca = make_tls_files(tmp_path)  # another test CA: the server does not verify
        wrong = PostgresStorage(server.dsn(database), ca_file=other_ca, pool_timeout=2.0)
        try:
            with pytest.raises(TemporaryStorageError):
                wrong.read("alpha")
        finally:
            wrong.close()
    finally:
        server.destroy()

    assert ssl_in_use == "t"


def postgres_config(directory: Path, storage: str) -> Path:
    config = directory / "keyrotd.toml"
    config.write_text(
        f'[storage]\ntype = "postgres"\n{storage}\n'
        '[[keysets]]\nname = "main"\nalgorithm = "ES256"\n'
    )
    return config


def test_status_says_where_the_keyset_lives_and_never_the_password(
    tmp_path: Path,
    postgres_server: PostgresServer,
    postgres_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn_file = postgres_server.dsn_file(tmp_path, postgres_database)
    config = postgres_config(tmp_path, f'dsn_file = "{dsn_file}"')

    assert main(["--config", str(config), "check-config"]) == 0
    assert main(["--config", str(config), "rotate", "--keyset", "main"]) == 0
    assert main(["--config", str(config), "status"]) == 0

    out = capsys.readouterr().out
    where = f"127.0.0.1:{postgres_server.port}/{postgres_database}"
    assert f"keyset main (ES256) at PostgreSQL table keyrotd_keysets, row 'main' ({where})" in out
    assert PASSWORD not in out


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ("", 'storage.dsn_file is not set, and storage.type = "postgres" needs it'),
        ('dsn_file = "{open}"', "storage.dsn_file {open} is accessible to other users (mode 644)"),
        ('dsn_file = "{empty}"', "storage.dsn_file {empty} does not hold a connection string"),
        ('dsn_file = "{dsn}"\nregion = "eu-west-1"', 'region is a setting of storage type "aws"'),
        ('dsn_file = "{dsn}"\ntable = "Bad-Name"', "is not a valid PostgreSQL table name"),
    ],
)
def test_check_config_refuses_bad_postgres_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], storage: str, expected: str
) -> None:
    files = {
        "open": tmp_path / "open.dsn",
        "empty": tmp_path / "empty.dsn",
        "dsn": tmp_path / "ok.dsn",
    }
    files["open"].write_text(f"host=db password={PASSWORD}\n")
    files["open"].chmod(0o644)
    files["empty"].write_text("  \n")
    files["empty"].chmod(0o600)
    files["dsn"].write_text(f"host=db password={PASSWORD}\n")
    files["dsn"].chmod(0o600)
    config = postgres_config(tmp_path, storage.format(**files))

    assert main(["--config", str(config), "check-config"]) == 2

    err = capsys.readouterr().err
    assert expected.format(**files) in err
    assert PASSWORD not in err


def test_first_reads_are_one_query_and_never_older_than_a_refresh_or_write(
    storage: PostgresStorage,
    postgres_dsn: str,
    postgres_server: PostgresServer,
    postgres_database: str,
) -> None:
    names = [f"ks{n}" for n in range(20)]
    writer = PostgresStorage(postgres_dsn)
    try:
        versions = {name: writer.write(name, b"1", None) for name in names}
        postgres_server.forget_statements(postgres_database)
        first = [storage.read(name) for name in names[:10]]  # a daemon's start-up
        statements = postgres_server.statements(postgres_database)
        writer.write("ks15", b"2", versions["ks15"])  # after the preload
        writer.write("ks16", b"2", versions["ks16"])
        refreshed = storage.read_many(["ks15"])["ks15"]
        after_refresh = storage.read("ks15")
        own = storage.write("ks17", b"mine", versions["ks17"])
        after_write = storage.read("ks17")
        unrefreshed = storage.read("ks16")  # preloaded, older: refreshed by the next refresh
        refreshed_16 = storage.read_many(["ks16"])["ks16"]
    finally:
        writer.close()

    assert [r.data for r in first if r is not None] == [b"1"] * 10
    assert sum(calls for calls, _ in statements.values()) <= 2, statements  # table check + load
    assert isinstance(refreshed, Versioned) and refreshed.data == b"2"
    assert after_refresh is not None and after_refresh.data == b"2"
    assert after_write is not None and (after_write.data, after_write.version) == (b"mine", own)
    assert unrefreshed is not None and unrefreshed.data == b"1"
    assert isinstance(refreshed_16, Versioned) and refreshed_16.data == b"2"


def test_psycopg_loads_only_when_a_postgres_storage_opens() -> None:
    probe = (
        "import sys, keyrotd.cli, keyrotd.config, keyrotd.storage, keyrotd.storage.postgres\n"
        "assert not any(m.startswith('psycopg') for m in sys.modules), 'psycopg imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
