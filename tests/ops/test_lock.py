"""``requirements/deploy.txt``, the hashed lock the deployment recipes install from, is kept fresh:
it pins every runtime dependency of ``pyproject.toml`` at a version that dependency accepts, every
pin carries hashes, and the Containerfile and the README's systemd recipe install from it with
``--require-hashes``. Regenerate it with the command at its top after changing dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements" / "deploy.txt"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")


def pins() -> dict[str, tuple[Version, int]]:
    """Name -> (pinned version, number of hashes) of every entry of the lock."""
    found: dict[str, tuple[Version, int]] = {}
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text())
    for entry in entries:
        match = PIN.match(entry)
        if match:
            name, version = match.groups()
            found[canonicalize_name(name)] = (Version(version), entry.count("--hash=sha256:"))
    return found


def test_the_lock_pins_every_runtime_dependency_at_a_satisfying_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = pins()
    assert locked, LOCK
    for line in project["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in {LOCK.name}: regenerate it"
        version, _ = locked[name]
        assert requirement.specifier.contains(version, prereleases=True), (name, str(version))


def test_the_lock_pins_the_kubernetes_extra_the_image_serves() -> None:
    # the image and the systemd recipe can be the API server's token signer (docs/kubernetes.md)
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    locked = pins()
    for line in extra["optional-dependencies"]["kubernetes"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{name} is not in {LOCK.name}: regenerate it"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), name
    assert "--extra=kubernetes" in LOCK.read_text().split("\n\n")[0]


def test_every_pin_has_hashes() -> None:
    for name, (_, hashes) in pins().items():
        assert hashes >= 1, name


def test_the_recipes_install_from_the_lock_with_hashes_required() -> None:
    install = "pip install --require-hashes -r requirements/deploy.txt"
    assert install in (ROOT / "config" / "Containerfile").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "--require-hashes -r keyrotd/requirements/deploy.txt" in readme
    assert "pip install --no-deps ./keyrotd" in readme
