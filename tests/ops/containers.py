"""podman as these tests run it, and Debian base images made with debootstrap (no registry here).

podman on this machine needs its own storage on the vfs driver and the runc runtime (crun fails on
rlimits and cgroup v1); the ``podman`` fixture in ``conftest.py`` gives each session one such store.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# runc cannot raise the rlimits podman asks for by default here: ask for ones it can set
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

needs_podman = pytest.mark.skipif(
    shutil.which("podman") is None,
    reason="podman is not installed (.ci/run installs podman, buildah, debootstrap, runc)",
)


@dataclass(frozen=True)
class Podman:
    """podman with its own storage (vfs) and the runc runtime, which work on this machine."""

    root: Path

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.root / "root"),
            "--runroot",
            str(self.root / "runroot"),
            "--storage-driver",
            "vfs",
            "--runtime",
            "runc",
            *args,
        ]

    def run(
        self, *args: str, check: bool = True, stdin: bytes | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args),
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
            )
        return result


def debian_image(podman: Podman, tag: str, packages: Sequence[str]) -> str:
    """Import a Debian bookworm root made by ``debootstrap --variant=minbase`` as image ``tag``."""
    debootstrap = shutil.which("debootstrap")
    assert debootstrap, "debootstrap is needed to make the base image (apt-get install debootstrap)"
    rootfs = podman.root / f"rootfs-{tag.rpartition('/')[2].replace(':', '-')}"
    subprocess.run(
        [
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(packages)}",
            "bookworm",
            str(rootfs),
        ],
        capture_output=True,
        check=True,
        timeout=900,
    )
    tar = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True)
    imported = subprocess.run(
        podman.argv("import", "-", tag), input=tar.stdout, capture_output=True, check=False
    )
    assert imported.returncode == 0, imported.stderr.decode()[-2000:]
    shutil.rmtree(rootfs)
    return tag
