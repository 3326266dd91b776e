"""Relative paths (README.md, Configuration): a file's against its directory, the environment's and
the defaults' against the working directory; readers never create a store that is not there."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from keyrotd.cli import main
from keyrotd.config import load_settings
from keyrotd.errors import ConfigError


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory that is not the configuration's."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def config_in(directory: Path, body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keyrotd.toml"
    path.write_text(body, encoding="utf-8")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_files_relative_paths_follow_the_file(tmp_path: Path, elsewhere: Path) -> None:
    config = config_in(
        tmp_path / "etc",
        '[storage]\npath = "data"\n[server]\nadmin_token_file = "../secrets/token"\n',
    )
    settings = load_settings(str(config), environ={})
    assert settings.storage.path == tmp_path / "etc" / "data"
    assert settings.server.admin_token_file == tmp_path / "secrets" / "token"


def test_relative_config_path_itself_and_the_environment(tmp_path: Path, elsewhere: Path) -> None:
    config_in(elsewhere / "conf", '[storage]\npath = "./data"\n')
    settings = load_settings("conf/keyrotd.toml", environ={})
    assert settings.storage.path == elsewhere / "conf" / "data"
    overridden = load_settings("conf/keyrotd.toml", environ={"KEYROTD_STORAGE__PATH": "from-env"})
    assert overridden.storage.path == elsewhere / "from-env"


def test_defaults_resolve_against_the_working_directory(elsewhere: Path) -> None:
    assert load_settings(None, environ={}).storage.path == elsewhere / "keyrotd-data"


def test_a_missing_secret_file_is_named_by_its_absolute_path(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_in(tmp_path / "etc", '[server]\nadmin_token_file = "token"\n')
    code, _, err = run(capsys, "check-config", "--config", str(config))
    assert code == 2
    assert str(tmp_path / "etc" / "token") in err


@pytest.mark.parametrize(
    "argv", [["status"], ["status", "--json"], ["jwks"], ["signing-key"], ["revoke", "x" * 43]]
)
def test_readers_find_no_store_exit_1_naming_it_and_create_nothing(
    argv: list[str], tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_in(tmp_path / "etc", '[storage]\npath = "data"\n')
    code, out, err = run(capsys, "--config", str(config), *argv)
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert str(tmp_path / "etc" / "data") in err
    assert "rotate" not in err and "keyrotd run" not in err
    assert not (tmp_path / "etc" / "data").exists()
    assert os.listdir(elsewhere) == []


def test_writers_create_the_store_where_the_file_says(
    tmp_path: Path, elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_in(tmp_path / "etc", '[storage]\npath = "data"\n')
    code, _, _ = run(capsys, "rotate", "--config", str(config))
    assert code == 0
    assert (tmp_path / "etc" / "data" / "default.json").is_file()
    assert os.listdir(elsewhere) == []
    code, out, _ = run(capsys, "status", "--config", str(config))
    assert code == 0
    assert str(tmp_path / "etc" / "data" / "default.json") in out


def test_rotate_with_the_defaults_still_creates_the_quickstart_store(
    elsewhere: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "rotate")[0] == 0
    assert (elsewhere / "keyrotd-data" / "default.json").is_file()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ('[storage]\ntype = "file"\nregion = "eu-west-1"\n', ("region", '"aws"', '"file"')),
        ('[storage]\nregion = "eu-west-1"\n', ("region", '"aws"', '"file"')),
        ('[storage]\ntype = "aws"\nregion = "eu-west-1"\npath = "/srv"\n', ("path", '"file"')),
    ],
)
def test_a_setting_of_another_storage_type_is_refused_naming_its_type(
    body: str, words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_in(tmp_path, body)
    for command in ("check-config", "status"):
        code, out, err = run(capsys, command, "--config", str(config))
        assert (code, out) == (2, ""), err
        assert err.count("\n") == 1
        assert all(word in err for word in words), err


def test_the_example_and_defaults_of_other_types_are_fine(tmp_path: Path) -> None:
    config = config_in(
        tmp_path,
        '[storage]\ntype = "aws"\nregion = "eu-west-1"\nencryption_key_file = ""\n'
        'path = "./keyrotd-data"\n',
    )
    assert load_settings(str(config), environ={}).storage.region == "eu-west-1"


def test_an_images_file_store_variable_does_not_stop_a_file_choosing_aws(tmp_path: Path) -> None:
    """config/Containerfile sets KEYROTD_STORAGE__PATH for its file store."""
    config = config_in(tmp_path, '[storage]\ntype = "aws"\nregion = "eu-west-1"\n')
    image = {"KEYROTD_STORAGE__PATH": "/var/lib/keyrotd"}
    settings = load_settings(str(config), environ=image)
    assert settings.storage.type == "aws"
    assert "KEYROTD_STORAGE__PATH" not in settings.source
    with pytest.raises(ConfigError, match='region is a setting of storage type "aws"'):
        load_settings(None, environ={"KEYROTD_STORAGE__REGION": "eu-west-1"})
    with pytest.raises(ConfigError, match='path is a setting of storage type "file"'):
        load_settings(str(config), environ={**image, "KEYROTD_STORAGE__TYPE": "aws"})
