"""A backend installed as a package: found through its ``keyrotd.storage`` entry point, its
settings validated like a built-in's, and run by a real daemon and CLI (docs/storage.md, Writing
a backend).

The throwaway package is built and installed by pip itself (``pip install --target``, offline,
with a build backend of its own in the package so nothing is downloaded), then put on the
``PYTHONPATH`` of the ``keyrotd`` subprocesses only: this test process never imports it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.config import render_config
from tests.support.daemon import make_daemon

PYPROJECT = """\
[build-system]
requires = []
build-backend = "tinybuild"
backend-path = ["."]

[project]
name = "keyrotd-dirstore"
version = "0.1"

[project.entry-points."keyrotd.storage"]
dirstore = "dirstore:BACKEND"
"""

BACKEND_MODULE = '''\
"""A tiny file-backed keyrotd backend: two processes share it through the directory."""

import fcntl
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from keyrotd.errors import ConflictError, DocumentTooLargeError
from keyrotd.storage.interface import BaseStorage, Versioned
from keyrotd.storage.registry import Backend


class DirSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    directory: Path
    encryption_key_file: Path | None = None  # declared by the file type too (unused here)


class DirStorage(BaseStorage):
    max_document_size = 1 << 20

    def __init__(self, settings: DirSettings) -> None:
        self.root = settings.directory
        self.root.mkdir(parents=True, exist_ok=True)

    def location(self, keyset):
        return f"dirstore:{self.root / keyset}"

    def read(self, keyset):
        try:
            version, _, data = (self.root / keyset).read_bytes().partition(b"\\n")
        except FileNotFoundError:
            return None
        return Versioned(data, version.decode(), self.location(keyset))

    def write(self, keyset, data, expected_version):
        if len(data) > self.max_document_size:
            raise DocumentTooLargeError("too large", "keep fewer keys")
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = self.read(keyset)
            if (None if current is None else current.version) != expected_version:
                raise ConflictError("changed since it was read", "re-read")
            version = str(1 if current is None else int(current.version) + 1)
            temp = self.root / f".{keyset}.tmp"
            temp.write_bytes(version.encode() + b"\\n" + data)
            os.replace(temp, self.root / keyset)
            return version

    def list_keysets(self):
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith("."))


BACKEND = Backend(settings=DirSettings, open=DirStorage, max_document_size=1 << 20)
'''

BUILD_BACKEND = '''\
"""PEP 517, offline: a wheel of dirstore.py with the entry points pyproject.toml declares."""

import base64
import hashlib
import tomllib
import zipfile
from pathlib import Path


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    stem = f"{project['name'].replace('-', '_')}-{project['version']}"
    info = f"{stem}.dist-info"
    points = "".join(
        f"[{group}]\\n" + "".join(f"{name} = {target}\\n" for name, target in entries.items())
        for group, entries in project["entry-points"].items()
    )
    files = {
        "dirstore.py": Path("dirstore.py").read_bytes(),
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\\nName: {project['name']}\\nVersion: {project['version']}\\n"
        ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\\nGenerator: tinybuild\\nRoot-Is-Purelib: true\\n"
        b"Tag: py3-none-any\\n",
        f"{info}/entry_points.txt": points.encode(),
    }
    record = []
    name = f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(Path(wheel_directory) / name, "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{path},sha256={digest.decode()},{len(data)}")
        record.append(f"{info}/RECORD,,")
        wheel.writestr(f"{info}/RECORD", "\\n".join(record) + "\\n")
    return name
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory pip installed the throwaway backend package into."""
    source = tmp_path_factory.mktemp("dirstore-source")
    (source / "pyproject.toml").write_text(PYPROJECT)
    (source / "dirstore.py").write_text(BACKEND_MODULE)
    (source / "tinybuild.py").write_text(BUILD_BACKEND)
    target = tmp_path_factory.mktemp("dirstore-installed")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--isolated", "--no-index"]
    subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
        check=True,
        timeout=300,
    )
    assert (target / "dirstore.py").is_file()
    return target


def keyrotd(
    plugin_path: Path, config: Path, *argv: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyrotd.cli", "--config", str(config), *argv],
        env=environment(plugin_path),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def environment(plugin_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    return {**env, "PYTHONPATH": os.pathsep.join([str(plugin_path), *sys.path])}


def write_config(tmp_path: Path, storage: Mapping[str, object]) -> Path:
    config = tmp_path / "keyrotd.toml"
    config.write_text(render_config({"storage": storage}, [{"name": "main"}]))
    return config


@pytest.mark.slow  # pip, check-config, a daemon and two CLIs: about 10 s
def test_a_packaged_backend_is_checked_run_and_rotated_by_a_daemon_and_the_cli(
    plugin_path: Path, tmp_path: Path
) -> None:
    store = tmp_path / "dirstore"
    storage = {"type": "dirstore", "directory": store, "revision_file": tmp_path / "marks.json"}
    daemon = make_daemon(tmp_path, storage=storage, env=environment(plugin_path))

    checked = keyrotd(plugin_path, daemon.config, "check-config")
    assert checked.returncode == 0, checked.stderr

    daemon.start()
    try:
        before = daemon.get("/keysets/main/jwks.json").json()
        assert (store / "main").is_file()  # the daemon wrote its keyset through the plugin

        rotated = keyrotd(plugin_path, daemon.config, "rotate", "--now", "--force")
        assert rotated.returncode == 0, rotated.stderr
        daemon.wait_for(
            lambda: daemon.get("/keysets/main/jwks.json").json() != before,
            10,
            "the daemon to serve the rotation the CLI wrote through the plugin",
        )
        status = keyrotd(plugin_path, daemon.config, "status", "--json")
        assert status.returncode == 0, status.stderr
        assert f"dirstore:{store / 'main'}" in status.stdout
    finally:
        assert daemon.stop() == 0
    assert "main" in json.loads((tmp_path / "marks.json").read_text())["keysets"]


@pytest.mark.parametrize(
    ("storage", "words"),
    [
        # a key of the plugin's type refused beside a built-in type, naming the plugin
        (
            {"type": "file", "directory": "/srv/keys"},
            ['directory is a setting of storage type "dirstore", not of "file"'],
        ),
        # a built-in type's key refused beside the plugin's type
        (
            {"type": "dirstore", "directory": "/srv/keys", "region": "eu-west-1"},
            ['region is a setting of storage type "aws", not of "dirstore"'],
        ),
        # a key two types declare: both named
        (
            {"type": "aws", "region": "eu-west-1", "encryption_key_file": "/srv/key"},
            [
                'encryption_key_file is a setting of storage type "file", "vault", "postgres" or '
                '"dirstore", not of "aws"'
            ],
        ),
        # the plugin's model is validated like a built-in one: unknown keys and bad values
        ({"type": "dirstore", "directory": "/srv/keys", "bogus": 1}, ["unknown setting"]),
        ({"type": "dirstore", "directory": ["x"]}, ["storage.directory"]),
        # the unknown-type refusal names the installed type too
        (
            {"type": "nosuch"},
            ['"nosuch" is not allowed', '"file", "aws", "vault", "postgres" or "dirstore"'],
        ),
    ],
)
def test_a_packaged_backends_settings_are_validated_like_a_built_in_ones(
    plugin_path: Path, tmp_path: Path, storage: Mapping[str, object], words: list[str]
) -> None:
    config = write_config(tmp_path, storage)

    refused = keyrotd(plugin_path, config, "check-config")

    assert (refused.returncode, refused.stdout) == (2, "")
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert all(word in refused.stderr for word in words), refused.stderr
