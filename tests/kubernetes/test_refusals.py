"""A Kubernetes signer the API server could not use is refused at start by ``keyrotd run`` and
``keyrotd check-config`` alike: exit 2, one line naming the setting and the fix
(docs/kubernetes.md). And grpcio is loaded only by a daemon that serves the signer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.daemon import free_port, make_daemon
from tests.test_preflight import both_refuse, clean_environment, run_cli

pytest.importorskip("grpc")

GOOD = {
    "name": "sa",
    "algorithm": "ES256",
    "rotation_period": "1h",
    "publish_ahead": "11m",  # above 30s + 5m + max(5m, 30s)
    "token_lifetime": "1h",
}


def _config(
    tmp_path: Path,
    *,
    socket: Path | None = None,
    signer_keyset: str = "sa",
    signer: bool = True,
    **keyset: str,
) -> Path:
    values = {**GOOD, **keyset}
    socket = socket or tmp_path / "signer.sock"
    config = tmp_path / "keyrotd.toml"
    lines = [
        "[storage]",
        f'path = "{tmp_path / "data"}"',
        "[server]",
        f'listen = "127.0.0.1:{free_port()}"',
        'refresh_interval = "30s"',
        'jwks_max_age = "5m"',
        *(
            ["[kubernetes]", f'signer_socket = "{socket}"', f'signer_keyset = "{signer_keyset}"']
            if signer
            else []
        ),
        "[[keysets]]",
        *(f'{key} = "{value}"' for key, value in values.items()),
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def test_a_good_signer_configuration_passes(tmp_path: Path) -> None:
    code, _, err = run_cli(
        "check-config", "--config", str(_config(tmp_path)), env=clean_environment(tmp_path)
    )
    assert code == 0, err


def test_a_signer_keyset_that_names_no_keyset(tmp_path: Path) -> None:
    line = both_refuse(_config(tmp_path, signer_keyset="nope"), clean_environment(tmp_path))
    assert "kubernetes.signer_keyset" in line and '"nope"' in line and "sa" in line


@pytest.mark.parametrize("algorithm", ["PS256", "EdDSA"])
def test_a_keyset_the_api_server_does_not_verify(tmp_path: Path, algorithm: str) -> None:
    line = both_refuse(_config(tmp_path, algorithm=algorithm), clean_environment(tmp_path))
    assert "kubernetes.signer_keyset (sa)" in line and algorithm in line
    assert "RS256, ES256, ES384, ES512" in line


def test_a_token_lifetime_below_the_api_servers_floor(tmp_path: Path) -> None:
    line = both_refuse(_config(tmp_path, token_lifetime="9m59s"), clean_environment(tmp_path))
    assert "token_lifetime" in line and "600s" in line and "10m" in line


def test_a_socket_whose_directory_is_missing(tmp_path: Path) -> None:
    socket = tmp_path / "missing" / "signer.sock"
    line = both_refuse(_config(tmp_path, socket=socket), clean_environment(tmp_path))
    assert "kubernetes.signer_socket" in line and str(socket.parent) in line
    assert not (tmp_path / "data").exists()  # refused before storage is touched


def test_publish_ahead_must_cover_the_api_servers_own_max_age(tmp_path: Path) -> None:
    config = _config(tmp_path, publish_ahead="8m")
    line = both_refuse(config, clean_environment(tmp_path))
    assert "publish_ahead (8m)" in line and "server.jwks_max_age" in line and "10m30s" in line
    # 8m is above 30s + max(5m, 30s): the same keyset is fine when it signs nothing for Kubernetes
    without = _config(tmp_path, publish_ahead="8m", signer=False)
    code, _, err = run_cli(
        "check-config", "--config", str(without), env=clean_environment(tmp_path)
    )
    assert code == 0, err


# -- grpcio only for the signer ------------------------------------------------------------------


def _imports_grpc(*argv: str, cwd: Path) -> bool:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "keyrotd.cli", *argv],
        cwd=cwd,
        env=clean_environment(cwd),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()]
    assert "keyrotd.cli" in modules, done.stderr[-2000:]
    return any(m == "grpc" or m.startswith(("grpc.", "google.protobuf")) for m in modules)


def test_help_and_the_cli_never_import_grpc(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert not _imports_grpc("--help", cwd=tmp_path)
    assert not _imports_grpc("check-config", "--config", str(config), cwd=tmp_path)
    assert not _imports_grpc("rotate", "--config", str(config), cwd=tmp_path)


def _loaded(pid: int, library: str) -> bool:
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_only_a_daemon_serving_the_signer_loads_grpc(tmp_path: Path) -> None:
    plain = make_daemon(tmp_path / "plain").start()
    try:
        assert plain.process is not None
        assert not _loaded(plain.process.pid, "cygrpc")
    finally:
        assert plain.stop() == 0
    socket = tmp_path / "signer.sock"
    signer = make_daemon(
        tmp_path / "signer",
        keysets=[
            {
                "name": "sa",
                "algorithm": "ES256",
                "rotation_period": "1h",
                "publish_ahead": "30m",
                "token_lifetime": "1h",
            }
        ],
    )
    signer.config.write_text(
        signer.config.read_text() + f'\n[kubernetes]\nsigner_socket = "{socket}"\n'
    )
    signer.start()
    try:
        assert signer.process is not None
        assert _loaded(signer.process.pid, "cygrpc")  # the probe sees grpcio when it is there
    finally:
        assert signer.stop() == 0


def test_without_grpcio_both_refuse_and_name_the_extra(tmp_path: Path) -> None:
    """An installation without the ``kubernetes`` extra (grpcio absent, as in a plain
    ``pip install keyrotd``) is refused at start, not met at the first socket call."""
    config = _config(tmp_path)
    probe = (
        "import sys\n"
        "sys.modules['grpc'] = None  # as if grpcio were not installed\n"
        "from keyrotd.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    answers = []
    for command in ("check-config", "run"):
        done = subprocess.run(
            [sys.executable, "-c", probe, command, "--config", str(config)],
            env=clean_environment(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        answers.append(done)
        assert done.returncode == 2, (command, done.stderr[-2000:])
    line = answers[0].stderr
    assert line.count("\n") == 1 and line in answers[1].stderr
    assert "kubernetes.signer_socket" in line and "pip install 'keyrotd[kubernetes]'" in line
    assert not (tmp_path / "data").exists()
