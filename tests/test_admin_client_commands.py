"""``keyrotd client add|list|remove``: in-process through ``main(argv)``, and as real processes."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keyrotd.admin_clients import load_clients_file, load_registry
from keyrotd.cli import main

TOKEN = re.compile(r"[A-Za-z0-9_-]{43,}")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [name for name in os.environ if name.startswith("KEYROTD_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keyrotd.toml").write_text(
        '[server]\nadmin_clients_file = "clients.toml"\n[[keysets]]\nname = "default"\n'
    )
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def add(capsys: pytest.CaptureFixture[str], name: str, *scopes: str) -> str:
    """The token ``client add`` printed on the last line of stdout."""
    argv = ["client", "add", name, *(arg for scope in scopes for arg in ("--scope", scope))]
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, "")
    token = out.splitlines()[-1]
    assert TOKEN.fullmatch(token), out
    return token


def test_add_prints_a_token_once_and_keeps_only_its_hash(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = add(capsys, "ci", "rotate:default", "signing-key:*")
    path = workdir / "clients.toml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((workdir / "clients.toml.lock").stat().st_mode) == 0o600
    content = path.read_text()
    assert token not in content
    assert hashlib.sha256(token.encode()).hexdigest() in content
    (client,) = load_clients_file(path)
    assert client.token_sha256 == hashlib.sha256(token.encode()).hexdigest()
    found = load_registry(None, path).authenticate(f"Bearer {token}".encode())
    assert found is not None and found.name == "ci"
    assert found.allows("rotate", "default") and not found.allows("revoke", "default")
    assert len(token) >= 43  # secrets.token_urlsafe(32): 256 bits
    assert add(capsys, "ci2", "rotate:default") != token


def test_list_prints_name_and_scopes_and_never_a_hash(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "client", "list") == (
        0,
        "",
        f"keyrotd: no clients yet: {workdir / 'clients.toml'} does not exist\n",  # absolute
    )
    tokens = [
        add(capsys, "ci", "rotate:default", "signing-key:*"),
        add(capsys, "ops", "revoke:*", "revoke:*"),
    ]
    code, out, err = run(capsys, "client", "list")
    assert (code, out, err) == (0, "ci rotate:default,signing-key:*\nops revoke:*\n", "")
    for token in tokens:
        assert hashlib.sha256(token.encode()).hexdigest() not in out
    # --config before or after the command
    assert run(capsys, "--config", "keyrotd.toml", "client", "list")[1] == out
    assert run(capsys, "client", "list", "--config", "keyrotd.toml")[1] == out


def test_remove_drops_only_that_client_and_keeps_the_rest_as_written(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "clients.toml"
    keep = add(capsys, "ci", "rotate:default")
    gone = add(capsys, "bot", "revoke:*")
    add(capsys, "ops", "signing-key:*")
    text = path.read_text()
    text = text.replace('[[clients]]\nname = "ops"', '# on call\n[[clients]]\nname = "ops"')
    path.write_text(text.replace('name = "ci"', 'name = "ci"  # the pipeline'))
    code, out, err = run(capsys, "client", "remove", "bot")
    assert (code, err) == (0, "")
    assert out.startswith(f"client bot removed from {workdir / 'clients.toml'}")
    remaining = path.read_text()
    assert "# the pipeline" in remaining and "# on call\n[[clients]]" in remaining
    assert [c.name for c in load_clients_file(path)] == ["ci", "ops"]
    registry = load_registry(None, path)
    assert registry.authenticate(f"Bearer {gone}".encode()) is None
    assert registry.authenticate(f"Bearer {keep}".encode()) is not None
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_remove_rewrites_a_file_whose_tables_it_cannot_tell_apart(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "clients.toml"
    add(capsys, "ci", "rotate:default")
    add(capsys, "bot", "revoke:*")
    ci, bot = load_clients_file(path)
    inline = ", ".join(
        f'{{name = "{c.name}", token_sha256 = "{c.token_sha256}", scopes = ["{c.scope_text}"]}}'
        for c in (ci, bot)
    )
    path.write_text(f"clients = [{inline}]\n")  # no [[clients]] line to cut at
    assert run(capsys, "client", "remove", "ci")[0] == 0
    assert load_clients_file(path) == (bot,)
    assert path.read_text().count("[[clients]]") == 1


def test_add_rewrites_a_file_it_cannot_append_to(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "clients.toml"
    add(capsys, "ci", "rotate:default")
    (ci,) = load_clients_file(path)
    inline = f'{{name = "ci", token_sha256 = "{ci.token_sha256}", scopes = ["rotate:default"]}}'
    path.write_text(f"clients = [{inline}]\n")
    token = add(capsys, "ops", "revoke:*")  # a [[clients]] table after that array is invalid TOML
    assert [c.name for c in load_clients_file(path)] == ["ci", "ops"]
    assert load_registry(None, path).authenticate(f"Bearer {token}".encode()) is not None


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["add", "ci", "--scope", "rotate:default"], 1, "client ci already exists in {dir}"),
        (["remove", "nobody"], 1, "no client nobody in {dir}"),
        (["add", "x", "--scope", "rotate"], 2, "--scope 'rotate' is not a scope"),
        (["add", "x", "--scope", "delete:default"], 2, "--scope 'delete:default' is not a scope"),
        (["add", "x", "--scope", "rotate:a b"], 2, "KEYSET is neither a keyset name nor *"),
        (["add", "bad name", "--scope", "rotate:*"], 2, "'bad name' is not a valid client name"),
        (["add", "x"], 2, "the following arguments are required: --scope"),
    ],
)
def test_refusals_change_nothing(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    add(capsys, "ci", "rotate:default")
    before = (workdir / "clients.toml").read_bytes()
    got, out, err = run(capsys, "client", *argv)
    assert (got, out) == (code, "")
    message = message.replace("{dir}", str(workdir / "clients.toml"))  # shown absolute
    assert err.startswith("keyrotd: ") and message in err and err.count("\n") == 1
    assert (workdir / "clients.toml").read_bytes() == before


def test_a_bad_scope_creates_no_file(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "client", "add", "x", "--scope", "rotate:")[0] == 2
    assert not (workdir / "clients.toml").exists()


def test_no_clients_file_setting_is_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "keyrotd.toml").write_text("")
    for argv in (["add", "ci", "--scope", "rotate:*"], ["list"], ["remove", "ci"]):
        code, out, err = run(capsys, "client", *argv)
        assert (code, out) == (2, "")
        assert "server.admin_clients_file is not set" in err
        assert "KEYROTD_SERVER__ADMIN_CLIENTS_FILE" in err


def test_the_setting_can_come_from_the_environment(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "keyrotd.toml").write_text("")
    monkeypatch.setenv("KEYROTD_SERVER__ADMIN_CLIENTS_FILE", str(workdir / "env-clients.toml"))
    add(capsys, "ci", "rotate:*")
    assert [c.name for c in load_clients_file(workdir / "env-clients.toml")] == ["ci"]


def test_admin_is_taken_only_beside_an_admin_token(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add(capsys, "admin", "rotate:*")
    run(capsys, "client", "remove", "admin")
    token_file = workdir / "admin.token"
    token_file.write_text("the-admin-token-of-32-characters\n")
    token_file.chmod(0o600)
    config = (workdir / "keyrotd.toml").read_text()
    (workdir / "keyrotd.toml").write_text(
        config.replace("[server]\n", '[server]\nadmin_token_file = "admin.token"\n')
    )
    code, out, err = run(capsys, "client", "add", "admin", "--scope", "rotate:*")
    assert (code, out) == (1, "")
    assert "client admin is the admin token (server.admin_token_file)" in err


def test_a_scope_on_an_unconfigured_keyset_is_noted(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "client", "add", "ci", "--scope", "rotate:later")
    assert code == 0 and TOKEN.fullmatch(out.splitlines()[-1])
    assert err == (
        "keyrotd: note: keyset later is not in the configuration; the scope takes effect if "
        "it is added\n"
    )


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ('[[clients]]\nname = "ci"\n', 0o600, "token_sha256 is missing"),
        ("[[clients\n", 0o600, "invalid TOML"),
        ("", 0o644, "is accessible to other users (mode 644)"),
    ],
)
def test_a_bad_existing_file_is_never_overwritten(
    workdir: Path, capsys: pytest.CaptureFixture[str], content: str, mode: int, message: str
) -> None:
    path = workdir / "clients.toml"
    path.write_text(content)
    path.chmod(mode)
    for argv in (["add", "x", "--scope", "rotate:*"], ["remove", "ci"], ["list"]):
        code, out, err = run(capsys, "client", *argv)
        assert (code, out) == (2, "")
        shown = f"{path}{'' if mode == 0o644 else ':'}"  # the resolved, absolute path
        assert f"server.admin_clients_file {shown}" in err
        assert message in err
    assert path.read_text() == content
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_group_readable_file_stays_group_readable(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = workdir / "clients.toml"
    add(capsys, "ci", "rotate:*")
    path.chmod(0o640)
    add(capsys, "ops", "revoke:*")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_symlinked_file_is_not_replaced(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = workdir / "real.toml"
    real.write_text("")
    real.chmod(0o600)
    (workdir / "clients.toml").symlink_to(real)
    code, _, err = run(capsys, "client", "add", "ci", "--scope", "rotate:*")
    assert code == 2 and "is a symbolic link" in err
    assert (workdir / "clients.toml").is_symlink() and real.read_text() == ""


def test_a_missing_directory_is_named(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "keyrotd.toml").write_text('[server]\nadmin_clients_file = "no/such/c.toml"\n')
    code, _, err = run(capsys, "client", "add", "ci", "--scope", "rotate:*")
    assert code == 2 and f"the directory {workdir / 'no' / 'such'} does not exist" in err


def keyrotd_exe() -> str:
    exe = shutil.which("keyrotd", path=os.path.dirname(sys.executable))
    assert exe is not None, "the console script is installed with the package"
    return exe


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}


def test_the_console_script_adds_and_lists(workdir: Path) -> None:
    argv = [keyrotd_exe(), "client", "add", "ci", "--scope", "signing-key:default"]
    added = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), check=False)
    assert (added.returncode, added.stderr) == (0, "")
    token = added.stdout.splitlines()[-1]
    assert TOKEN.fullmatch(token)
    assert token not in (workdir / "clients.toml").read_text()
    listed = subprocess.run(
        [keyrotd_exe(), "client", "list"], capture_output=True, text=True, env=clean_env()
    )
    assert (listed.returncode, listed.stdout) == (0, "ci signing-key:default\n")
    assert load_registry(None, workdir / "clients.toml").authenticate(f"Bearer {token}".encode())


# Imports done, each process waits for the go file, then runs the real CLI at the same moment.
RACER = """
import os, sys, time
from keyrotd.cli import main
while not os.path.exists("go"):
    time.sleep(0.001)
sys.exit(main(["client", "add", sys.argv[1], "--scope", "rotate:default"]))
"""


def test_concurrent_adds_lose_no_client(workdir: Path) -> None:
    names = [f"racer-{index}" for index in range(8)]
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        for name in names
    ]
    time.sleep(1.5)  # let every racer import keyrotd and start polling
    (workdir / "go").touch()
    tokens = {}
    for name, racer in zip(names, racers, strict=True):
        out, err = racer.communicate(timeout=60)
        assert (racer.returncode, err) == (0, "")
        tokens[name] = out.splitlines()[-1]
    registry = load_registry(None, workdir / "clients.toml")
    assert sorted(client.name for client in registry.clients) == sorted(names)
    for name, token in tokens.items():
        found = registry.authenticate(f"Bearer {token}".encode())
        assert found is not None and found.name == name


NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to write files for another user")
def test_root_keeps_the_owner_of_the_directory_then_of_the_file(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = workdir / "etc"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    (workdir / "keyrotd.toml").write_text('[server]\nadmin_clients_file = "etc/clients.toml"\n')
    add(capsys, "ci", "rotate:*")
    for name in ("clients.toml", "clients.toml.lock"):
        owner = (directory / name).stat()
        assert (owner.st_uid, owner.st_gid) == (NOBODY, NOBODY), name
    os.chown(directory / "clients.toml", NOBODY, 0)  # the file's own owner now wins
    add(capsys, "ops", "revoke:*")
    assert run(capsys, "client", "remove", "ci")[0] == 0
    owner = (directory / "clients.toml").stat()
    assert (owner.st_uid, owner.st_gid) == (NOBODY, 0)
    assert sorted(os.listdir(directory)) == ["clients.toml", "clients.toml.lock"]  # no temp left


HEAVY = ("boto3", "botocore", "apscheduler", "httptools", "prometheus_client", "keyrotd.daemon")


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["--help"], (*HEAVY, "pydantic", "keyrotd.admin_clients")),
        (["client", "add", "--help"], (*HEAVY, "pydantic", "keyrotd.admin_clients")),
        (["client", "add", "ci", "--scope", "rotate:*"], HEAVY),
        (["client", "list"], HEAVY),
    ],
)
def test_client_commands_start_fast(
    workdir: Path, argv: list[str], absent: tuple[str, ...]
) -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from keyrotd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({argv!r}) == 0\n"
        f"print(','.join(m for m in {absent!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=clean_env(), check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stderr
