"""The files that guard secrets (README.md, Configuration): the one rule and its exact refusals."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pydantic
import pytest

from keyrotd.config import ServerSettings, Settings, StorageSettings
from keyrotd.errors import ConfigError
from keyrotd.secretfiles import (
    check_files,
    load_admin_token,
    load_encryption_key,
    permission_hint,
    read_secret_file,
)

KEY = bytes(range(32))
KEY_HINT = "it must hold 32 random bytes, base64-encoded; make one with: head -c32 /dev/urandom"


def secret(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def refusal(path: Path, *, setting: str = "server.admin_token_file") -> ConfigError:
    with pytest.raises(ConfigError) as raised:
        read_secret_file(path, setting)
    return raised.value


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o440], ids=oct)
def test_modes_without_group_write_or_others_pass(tmp_path: Path, mode: int) -> None:
    path = secret(tmp_path / "token", b"s3cret\n", mode)
    assert read_secret_file(path, "server.admin_token_file") == b"s3cret\n"


@pytest.mark.parametrize("mode", [0o644, 0o444, 0o620, 0o604, 0o602, 0o601, 0o660], ids=oct)
def test_group_write_or_any_bit_for_others_is_refused_with_the_fix(
    tmp_path: Path, mode: int
) -> None:
    path = secret(tmp_path / "token", b"do-not-show-me", mode)
    error = refusal(path)
    assert error.message == (
        f"server.admin_token_file {path} is accessible to other users (mode {mode:03o})"
    )
    assert error.hint == permission_hint(path)
    assert f"uid {os.geteuid()}" in error.hint
    assert "do-not-show-me" not in str(error)


def test_missing_directory_and_oversized_files(tmp_path: Path) -> None:
    missing = refusal(tmp_path / "absent")
    assert str(missing) == (
        f"server.admin_token_file {tmp_path / 'absent'} does not exist: "
        "create it, or unset server.admin_token_file"
    )
    assert refusal(tmp_path).message == f"server.admin_token_file {tmp_path} is not a regular file"
    big = secret(tmp_path / "big", b"x" * 11)
    with pytest.raises(ConfigError) as raised:
        read_secret_file(big, "storage.encryption_key_file", max_size=10)
    assert str(raised.value) == (
        f"storage.encryption_key_file {big} is larger than 10 bytes: "
        "check storage.encryption_key_file"
    )
    assert read_secret_file(secret(tmp_path / "fits", b"x" * 10), "s", max_size=10) == b"x" * 10


def test_a_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    assert refusal(fifo).message == f"server.admin_token_file {fifo} is not a regular file"


def test_admin_token_is_stripped_and_must_not_be_empty(tmp_path: Path) -> None:
    token = b"abc" + b"0" * 29  # 32 characters, the fewest accepted
    assert load_admin_token(secret(tmp_path / "token", b"  " + token + b"\n")) == token
    blank = secret(tmp_path / "blank", b" \n\t")
    with pytest.raises(ConfigError) as raised:
        load_admin_token(blank)
    assert str(raised.value) == (
        f"server.admin_token_file {blank} is empty: "
        "write a random token into it, e.g. `openssl rand -hex 32`"
    )


def test_encryption_key_is_32_bytes_of_base64(tmp_path: Path) -> None:
    encoded = base64.b64encode(KEY)
    wrapped = encoded[:20] + b"\n" + encoded[20:] + b"\n"
    assert load_encryption_key(secret(tmp_path / "key", wrapped)) == KEY
    for name, data, problem in [
        ("short", base64.b64encode(KEY[:16]), "(it decodes to 16 bytes)"),
        ("garbage", b"not base64!", "(not base64)"),
    ]:
        path = secret(tmp_path / name, data)
        with pytest.raises(ConfigError) as raised:
            load_encryption_key(path)
        assert raised.value.message == (
            f"storage.encryption_key_file {path} does not hold a 32-byte key {problem}"
        )
        assert raised.value.hint.startswith(KEY_HINT)
        assert raised.value.hint.endswith(f"base64 > {path} && chmod 600 {path}")


def test_check_files_reads_every_configured_file(tmp_path: Path) -> None:
    token = secret(tmp_path / "token", b"abc" + b"0" * 29 + b"\n")
    key = secret(tmp_path / "key", base64.b64encode(KEY))
    server = ServerSettings(admin_token_file=token)
    check_files(Settings(server=server, storage=StorageSettings(encryption_key_file=key)))
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"^storage\.encryption_key_file .* \(mode 644\)"):
        check_files(Settings(server=server, storage=StorageSettings(encryption_key_file=key)))
    foreign = 'of storage type "file", "vault" or "postgres", not of "aws"'
    with pytest.raises(pydantic.ValidationError, match=foreign):
        StorageSettings(type="aws", encryption_key_file=key)  # aws seals nothing: refused
    token.chmod(0o444)
    with pytest.raises(ConfigError, match=r"^server\.admin_token_file .* \(mode 444\)"):
        check_files(Settings(server=server))
