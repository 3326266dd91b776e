"""The vault storage type on a real OpenBao (``bao server -dev``): the storage contract, the
compare-and-swap on KV versions, sealing, AppRole login and token renewal (docs/storage.md)."""

from __future__ import annotations

import functools
import http.server
import json
import time
import uuid
from pathlib import Path
from typing import ClassVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from keyrotd.errors import ConfigError, CorruptDocumentError, StorageError, TemporaryStorageError
from keyrotd.storage.interface import ConflictError
from keyrotd.storage.vault import VaultSettings, open_vault
from keyrotd.testing.storage import StorageContract, StorageFactory
from tests.support.http import local_server
from tests.support.openbao import BaoServer, TestCA


def settings(server: BaoServer, token_file: Path, **more: object) -> VaultSettings:
    prefix = f"test-{uuid.uuid4().hex[:12]}/"
    values: dict[str, object] = {"url": server.url, "path_prefix": prefix, "token_file": token_file}
    return VaultSettings(**(values | more))


class TestVaultStorage(StorageContract):
    concurrent_writers = 6  # the file store runs 50; each spawn (importing hvac) costs a second

    @pytest.fixture
    def storage_factory(self, bao_dev: BaoServer, vault_token_file: Path) -> StorageFactory:
        return functools.partial(open_vault, settings(bao_dev, vault_token_file))


class TestSealedVaultStorage(StorageContract):
    concurrent_writers = 3  # the same compare-and-swap as above, sealed

    @pytest.fixture
    def storage_factory(
        self, bao_dev: BaoServer, vault_token_file: Path, key_file: Path
    ) -> StorageFactory:
        chosen = settings(bao_dev, vault_token_file, encryption_key_file=key_file)
        return functools.partial(open_vault, chosen)


def test_the_secret_is_the_envelope_at_the_kv_version(
    bao_dev: BaoServer, vault_token_file: Path, key_file: Path
) -> None:
    chosen = settings(bao_dev, vault_token_file, encryption_key_file=key_file)
    storage = open_vault(chosen)
    first = storage.write("alpha", b'{"private": "half"}', None)
    second = storage.write("alpha", b'{"private": "other half"}', first)

    stored = bao_dev.api("GET", f"secret/data/{chosen.path_prefix}alpha")

    data = stored["data"]
    assert isinstance(data, dict)
    assert (first, second, data["metadata"]["version"]) == ("1", "2", 2)
    assert data["data"]["encryption"] == "AES-256-GCM"
    assert data["data"]["revision"] == 2
    assert "half" not in json.dumps(stored)
    storage.close()


def test_a_value_copied_back_from_an_old_version_is_refused(
    bao_dev: BaoServer, vault_token_file: Path
) -> None:
    chosen = settings(bao_dev, vault_token_file)
    storage = open_vault(chosen)
    first = storage.write("alpha", b"one", None)
    storage.write("alpha", b"two", first)
    path = f"secret/data/{chosen.path_prefix}alpha"
    old = bao_dev.api("GET", f"{path}?version=1")["data"]
    assert isinstance(old, dict)
    bao_dev.api("POST", path, {"data": old["data"]})  # version 3 holds version 1's value

    with pytest.raises(CorruptDocumentError, match="written as version 1"):
        storage.read("alpha")
    with pytest.raises(ConflictError):
        storage.write("alpha", b"three", "2")
    storage.close()


def test_a_deleted_current_version_is_an_error_not_an_empty_keyset(
    bao_dev: BaoServer, vault_token_file: Path
) -> None:
    chosen = settings(bao_dev, vault_token_file)
    storage = open_vault(chosen)
    storage.write("alpha", b"one", None)
    bao_dev.api("DELETE", f"secret/data/{chosen.path_prefix}alpha")

    with pytest.raises(CorruptDocumentError, match="was deleted"):
        storage.read("alpha")
    storage.close()


def test_http_to_another_host_is_refused_naming_storage_url(vault_token_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"storage\.url = 'http://vault\.example:8200'"):
        VaultSettings(url="http://vault.example:8200", token_file=vault_token_file)
    VaultSettings(url="http://[::1]:8200", token_file=vault_token_file)
    VaultSettings(url="https://vault.example:8200", token_file=vault_token_file)


def test_a_token_file_others_can_read_is_refused(bao_dev: BaoServer, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(bao_dev.root_token)
    token_file.chmod(0o644)

    with pytest.raises(ConfigError, match=r"storage.token_file .* accessible to other users") as e:
        open_vault(VaultSettings(url=bao_dev.url, token_file=token_file))
    assert bao_dev.root_token not in str(e.value) + e.value.hint


def _approle(
    bao_dev: BaoServer, tmp_path: Path, token_ttl: str, max_ttl: str = "1h"
) -> tuple[Path, Path]:
    """An AppRole whose policy is the one docs/storage.md gives; its id files."""
    policy = Path(__file__).parents[2] / "docs" / "vault-policy.hcl"
    name = f"keyrotd-{uuid.uuid4().hex[:8]}"
    bao_dev.api("PUT", f"sys/policies/acl/{name}", {"policy": policy.read_text()})
    mounts = bao_dev.api("GET", "sys/auth")
    if "approle/" not in mounts.get("data", mounts):  # type: ignore[operator]
        bao_dev.api("POST", "sys/auth/approle", {"type": "approle"})
    bao_dev.api(
        "POST",
        f"auth/approle/role/{name}",
        {"token_policies": [name], "token_ttl": token_ttl, "token_max_ttl": max_ttl},
    )
    role_id = bao_dev.api("GET", f"auth/approle/role/{name}/role-id")["data"]
    secret_id = bao_dev.api("POST", f"auth/approle/role/{name}/secret-id")["data"]
    assert isinstance(role_id, dict) and isinstance(secret_id, dict)
    role_file, secret_file = tmp_path / "role-id", tmp_path / "secret-id"
    role_file.write_text(role_id["role_id"])
    secret_file.write_text(secret_id["secret_id"])
    role_file.chmod(0o600)
    secret_file.chmod(0o600)
    return role_file, secret_file


def test_approle_login_with_the_documented_policy(bao_dev: BaoServer, tmp_path: Path) -> None:
    role_file, secret_file = _approle(bao_dev, tmp_path, "10m")
    chosen = VaultSettings(
        url=bao_dev.url,
        path_prefix="keyrotd/",
        auth="approle",
        role_id_file=role_file,
        secret_id_file=secret_file,
    )
    storage = open_vault(chosen)
    name = f"k{uuid.uuid4().hex[:8]}"
    version = storage.write(name, b"document", None)
    stored = storage.read(name)

    assert stored is not None and (stored.data, stored.version) == (b"document", version)
    assert name in storage.list_keysets()
    assert made(storage.request_counts(), "login") == 1
    storage.close()

    outside = VaultSettings(
        url=bao_dev.url,
        path_prefix="elsewhere/",
        auth="approle",
        role_id_file=role_file,
        secret_id_file=secret_file,
    )
    with pytest.raises(StorageError, match="denied") as denied:
        open_vault(outside).read("alpha")
    assert secret_file.read_text() not in str(denied.value)


def test_a_short_lived_token_is_renewed_then_replaced_by_a_new_login(
    bao_dev: BaoServer, tmp_path: Path
) -> None:
    role_file, secret_file = _approle(bao_dev, tmp_path, "2s", max_ttl="4s")
    storage = open_vault(
        VaultSettings(
            url=bao_dev.url,
            path_prefix="keyrotd/",
            auth="approle",
            role_id_file=role_file,
            secret_id_file=secret_file,
        )
    )
    name = f"k{uuid.uuid4().hex[:8]}"
    version = storage.write(name, b"document", None)
    deadline = time.monotonic() + 9  # more than twice the token's longest life
    while time.monotonic() < deadline:
        stored = storage.read(name)
        assert stored is not None and stored.version == version
        time.sleep(0.25)

    counts = storage.request_counts()
    assert made(counts, "renew-self") >= 1
    assert made(counts, "login") >= 2
    storage.close()


def made(counts: dict[str, int], kind: str) -> int:
    """Requests of one kind (``login``, ``renew-self``, ``data``), whatever their method."""
    return sum(n for key, n in counts.items() if key.split(" ", 1)[1] == kind)


class TokenReviews(http.server.BaseHTTPRequestHandler):
    """The Kubernetes API's TokenReview, as OpenBao's Kubernetes auth calls it: every token
    presented is the service account keyrotd/keyrotd."""

    reviewed: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).reviewed.append(review["spec"]["token"])
        user = {"username": "system:serviceaccount:keyrotd:keyrotd", "uid": "uid-1"}
        status = {"authenticated": True, "user": user, "audiences": review["spec"].get("audiences")}
        body = json.dumps({**review, "status": status}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_kubernetes_login_presents_the_service_account_token(
    bao_dev: BaoServer, tmp_path: Path
) -> None:
    claims = {
        "iss": "kubernetes/serviceaccount",
        "sub": "system:serviceaccount:keyrotd:keyrotd",
        "kubernetes.io/serviceaccount/namespace": "keyrotd",
        "kubernetes.io/serviceaccount/service-account.name": "keyrotd",
        "kubernetes.io/serviceaccount/service-account.uid": "uid-1",
    }
    signer = ec.generate_private_key(ec.SECP256R1())  # OpenBao parses only asymmetric JWTs
    account_token = jwt.encode(claims, signer, algorithm="ES256")
    token_file = tmp_path / "serviceaccount-token"
    token_file.write_text(account_token)
    policy = (Path(__file__).parents[2] / "docs" / "vault-policy.hcl").read_text()
    bao_dev.api("PUT", "sys/policies/acl/keyrotd-k8s", {"policy": policy})
    mount = "kubernetes"  # where keyrotd logs in (this test alone enables it)
    with local_server(TokenReviews) as kubernetes_api:
        if f"{mount}/" not in bao_dev.api("GET", "sys/auth"):
            bao_dev.api("POST", f"sys/auth/{mount}", {"type": "kubernetes"})
        bao_dev.api(
            "POST",
            f"auth/{mount}/config",
            {
                "kubernetes_host": kubernetes_api,
                "kubernetes_ca_cert": TestCA.make(tmp_path / "k8s-ca").ca_file.read_text(),
                "disable_local_ca_jwt": True,
            },
        )
        bao_dev.api(
            "POST",
            f"auth/{mount}/role/keyrotd",
            {
                "bound_service_account_names": ["keyrotd"],
                "bound_service_account_namespaces": ["keyrotd"],
                "token_policies": ["keyrotd-k8s"],
                "token_ttl": "10m",
            },
        )
        chosen = VaultSettings(url=bao_dev.url, auth="kubernetes", kubernetes_role="keyrotd")
        storage = open_vault(chosen, service_account_token=token_file)
        name = f"k{uuid.uuid4().hex[:8]}"
        version = storage.write(name, b"document", None)
        stored = storage.read(name)
        storage.close()

    assert stored is not None and stored.version == version
    assert TokenReviews.reviewed == [account_token]
    missing = open_vault(chosen, service_account_token=tmp_path / "absent")
    with pytest.raises(StorageError, match="cannot read the service-account token"):
        missing.read(name)


def test_a_revoked_approle_token_is_replaced_by_a_new_login(
    bao_dev: BaoServer, tmp_path: Path
) -> None:
    role_file, secret_file = _approle(bao_dev, tmp_path, "10m")
    chosen = VaultSettings(
        url=bao_dev.url, auth="approle", role_id_file=role_file, secret_id_file=secret_file
    )
    storage = open_vault(chosen)
    name = f"k{uuid.uuid4().hex[:8]}"
    version = storage.write(name, b"document", None)
    bao_dev.api("PUT", "sys/leases/revoke-prefix/auth/approle/login")  # every AppRole token

    stored = storage.read(name)  # 403, a new login, the read again

    assert stored is not None and stored.version == version
    assert made(storage.request_counts(), "login") == 2
    storage.close()


def test_a_refused_token_is_read_again_from_token_file(bao_dev: BaoServer, tmp_path: Path) -> None:
    policy = (Path(__file__).parents[2] / "docs" / "vault-policy.hcl").read_text()
    bao_dev.api("PUT", "sys/policies/acl/keyrotd-token", {"policy": policy})

    def child_token() -> str:
        answer = bao_dev.api("POST", "auth/token/create", {"policies": ["keyrotd-token"]})
        auth = answer["auth"]
        assert isinstance(auth, dict)
        return str(auth["client_token"])

    token_file = tmp_path / "vault.token"
    first = child_token()
    token_file.write_text(first)
    token_file.chmod(0o600)
    storage = open_vault(VaultSettings(url=bao_dev.url, token_file=token_file))
    name = f"k{uuid.uuid4().hex[:8]}"
    storage.write(name, b"document", None)
    bao_dev.api("POST", "auth/token/revoke", {"token": first})
    token_file.write_text(child_token())  # as Vault Agent's sink rewrites it

    stored = storage.read(name)

    assert stored is not None and stored.data == b"document"
    storage.close()


class Refusing(http.server.BaseHTTPRequestHandler):
    """A server that answers every request with ``status`` (a throttling or failing Vault)."""

    status: ClassVar[int] = 429

    def do_GET(self) -> None:
        body = b'{"errors": ["try again later"]}'
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.parametrize("status", [412, 429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_temporary(
    tmp_path: Path, vault_token_file: Path, status: int
) -> None:
    Refusing.status = status
    with local_server(Refusing) as url:
        storage = open_vault(VaultSettings(url=url, token_file=vault_token_file))
        with pytest.raises(TemporaryStorageError, match=f"answered {status}"):
            storage.read("alpha")
        with pytest.raises(TemporaryStorageError):
            storage.write("alpha", b"document", None)
        storage.close()
    unreachable = open_vault(VaultSettings(url=url, token_file=vault_token_file))
    with pytest.raises(TemporaryStorageError, match="unreachable"):
        unreachable.read("alpha")
