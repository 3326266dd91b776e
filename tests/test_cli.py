"""The operator CLI, in-process through ``main(argv)`` and once as a real console script."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.resources
import io
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import jwt
import pytest

from keyrotd.cli import build_parser, main
from keyrotd.cli.handover import handover_notices
from keyrotd.cli.parser import COMMANDS
from keyrotd.config import load_settings
from keyrotd.errors import UsageError
from keyrotd.keys import PRIVATE_MEMBERS, NewKey, generate_key
from keyrotd.lifecycle.commands import Revoke, Rotate, plan
from keyrotd.model import ALGORITHMS, Keyset
from keyrotd.storage import open_storage
from tests.support.clock import T0, ManualClock
from tests.support.keysets import POLICY, open_writer
from tests.support.preload import preload


def write_config(directory: Path, body: str) -> Path:
    path = directory / "keyrotd.toml"
    path.write_text(body)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("alg", ALGORITHMS)
def test_rotate_jwks_and_signing_key_work_with_pyjwt(
    alg: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(in_tmp, f'[[keysets]]\nname = "default"\nalgorithm = "{alg}"\n')
    code, out, err = run(capsys, "rotate")
    assert (code, err) == (0, "")
    assert "key.created" in out

    code, out, _ = run(capsys, "jwks")
    assert code == 0
    jwks = json.loads(out)
    for jwk in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["alg"] == alg
        assert jwk["use"] == "sig"
    keyset = jwt.PyJWKSet.from_dict(jwks)

    code, out, _ = run(capsys, "signing-key")
    assert code == 0
    private = jwt.PyJWK.from_dict(json.loads(out))
    token = jwt.encode(
        {"sub": "alice", "aud": "api"},
        private.key,
        algorithm=alg,
        headers={"kid": private.key_id},
    )
    verifier = keyset[private.key_id]
    claims = jwt.decode(token, verifier.key, algorithms=[alg], audience="api")
    assert claims["sub"] == "alice"


def test_empty_directory_bootstraps_default_keyset_with_defaults(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "rotate")
    assert code == 0
    assert "first key of a new keyset" in out
    data = in_tmp / "keyrotd-data"
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert oct((data / "default.json").stat().st_mode & 0o777) == "0o600"

    code, out, _ = run(capsys, "status", "--json")
    report = json.loads(out)["keysets"][0]
    assert [k["state"] for k in report["keys"]].count("active") == 1

    code, again, _ = run(capsys, "rotate")
    assert code == 0
    assert "key.created" not in again  # repeating rotate adds no further key


def test_rotate_now_says_it_is_an_emergency(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "rotate")
    _, before, _ = run(capsys, "status", "--json")
    pending = [k for k in json.loads(before)["keysets"][0]["keys"] if k["state"] == "pending"]
    code, out, _ = run(capsys, "rotate", "--now", "--force")  # published a moment ago
    assert code == 0
    first, second = out.splitlines()[:2]
    assert re.fullmatch(
        rf"EMERGENCY ROTATION of keyset default: {re.escape(pending[0]['kid'])} signs from \S+Z, "
        r"an exception to publish_ahead \(1d\)",
        first,
    )
    published = pending[0]["created_at"].split(".")[0].removesuffix("Z") + "Z"
    assert second.startswith(f"  it was published at {published}, ") or second.startswith(
        "  it was published just now: "
    )


def test_revoke_active_hands_over_and_drops_it_from_the_jwks(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "rotate")
    _, out, _ = run(capsys, "signing-key")
    kid = json.loads(out)["kid"]
    code, out, _ = run(capsys, "revoke", kid)
    assert code == 0
    lines = out.splitlines()
    assert re.fullmatch(  # who may reject what: see the notices' tests below
        rf"REVOKED the active key {re.escape(kid)} of keyset default: \S+ signs from \S+Z, an "
        r"exception to publish_ahead \(1d\)",
        lines[0],
    )
    assert lines[1].startswith("  it was published at ") or lines[1].startswith(
        "  it was published just now: "
    )
    assert lines[2].startswith(f"  tokens signed with {kid} are rejected by verifiers ")
    assert f"key.revoked {kid}" in lines[3]
    _, out, _ = run(capsys, "jwks")
    assert kid not in {k["kid"] for k in json.loads(out)["keys"]}
    _, out, _ = run(capsys, "signing-key")
    assert json.loads(out)["kid"] != kid
    code, out, _ = run(capsys, "revoke", kid)
    assert code == 0
    assert "already revoked" in out


def test_revoke_unknown_kid_fails_with_one_line(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "rotate")
    code, out, err = run(capsys, "revoke", "nope-nope")
    assert code == 1
    assert out == ""
    assert (
        err == "keyrotd: keyset default has no key with kid nope-nope: list the kids with "
        "`keyrotd status`\n"
    )


def test_jwks_before_any_key_explains_what_to_do(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (in_tmp / "keyrotd-data").mkdir()  # the store is there (no store at all: test_config_paths)
    code, _, err = run(capsys, "jwks")
    assert code == 1
    assert err.count("\n") == 1
    assert "run `keyrotd rotate` once" in err


def test_status_text(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "rotate")
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert out.startswith("keyset default (RS256) at ")
    assert "  active   " in out
    assert "next transition:" in out


def test_config_accepted_before_and_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(
        tmp_path, f'[storage]\npath = "{tmp_path / "store"}"\n[[keysets]]\nname = "api"\n'
    )
    assert run(capsys, "--config", str(config), "rotate")[0] == 0
    code, out, _ = run(capsys, "status", "--config", str(config), "--json")
    assert code == 0
    assert json.loads(out)["keysets"][0]["name"] == "api"


def test_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--version")
    assert (code, out) == (0, "keyrotd 0.1.0\n")
    code, out, _ = run(capsys, "--help")
    assert code == 0
    assert "signing-key" in out


def parsers(only: str | None = None) -> dict[str, argparse.ArgumentParser]:
    """Every parser of the command line by its prog name: ``keyrotd``, ``keyrotd rotate`` ...
    (``only``: those ``build_parser(only)`` builds for a run of that command)."""
    found: dict[str, argparse.ArgumentParser] = {}
    todo = [build_parser(only)]
    while todo:
        parser = todo.pop()
        found[parser.prog] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += action.choices.values()
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_run_builds_the_parsers_of_its_command_alone_the_same(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keyrotd NAME ...`` builds NAME's parsers only (docs/benchmarks.md): the same as in the
    whole parser, so that what NAME accepts, refuses and prints does not change."""
    whole = parsers()
    alone = parsers(name)
    assert set(alone) == {"keyrotd"} | {p for p in whole if p.split()[1:2] == [name]}
    for prog in set(alone) - {"keyrotd"}:
        assert alone[prog].format_help() == whole[prog].format_help(), prog
        code, out, _ = run(capsys, *prog.split()[1:], "--help")
        assert (code, out) == (0, whole[prog].format_help()), prog
    with pytest.raises(UsageError) as refused:
        build_parser().parse_args([name, "--no-such-option=1"])
    code, _, err = run(capsys, name, "--no-such-option=1")
    assert (code, err) == (2, f"keyrotd: {' '.join(str(refused.value).split())}\n")


def test_the_parsers_cover_every_command_of_the_contract() -> None:
    commands = {prog.removeprefix("keyrotd ") for prog in parsers()} - {"keyrotd"}
    assert commands >= {"run", "status", "rotate", "revoke", "jwks", "signing-key", "inspect",
                        "check-config"}  # fmt: skip


@pytest.mark.parametrize("prog", sorted(parsers()))
def test_every_argument_of_every_command_has_a_line_of_help(
    prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = parsers()[prog]
    arguments = [a for a in parser._actions if not isinstance(a, argparse._SubParsersAction)]
    for action in arguments:
        name = "/".join(action.option_strings) or action.metavar or action.dest
        assert action.help and action.help != argparse.SUPPRESS, f"{prog}: {name} has no help"
        assert action.help.strip() == action.help and "\n" not in action.help
    code, out, _ = run(capsys, *prog.split()[1:], "--help")
    assert code == 0
    flat = " ".join(out.split())
    for action in arguments:
        assert str(action.help) % {"default": action.default, "prog": prog} in flat


def test_usage_error_is_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "rotate", "--bogus")
    assert code == 2
    assert err.count("\n") == 1
    assert "unrecognized arguments: --bogus" in err


REPOSITORY = Path(__file__).resolve().parents[1]


def test_the_packaged_example_is_config_keyrotd_toml() -> None:
    """The example ships inside the package; ``config/keyrotd.toml`` is the same file (copy it
    over ``keyrotd/example.toml`` after changing it)."""
    shipped = importlib.resources.files("keyrotd").joinpath("example.toml").read_bytes()
    assert shipped == (REPOSITORY / "config" / "keyrotd.toml").read_bytes(), (
        "run `cp config/keyrotd.toml keyrotd/example.toml`"
    )
    pyproject = tomllib.loads((REPOSITORY / "pyproject.toml").read_text())
    assert "example.toml" in pyproject["tool"]["setuptools"]["package-data"]["keyrotd"]


def test_check_config_example_prints_it_even_beside_a_broken_config(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(in_tmp, "[server]\nlisen = '127.0.0.1:1'\n")
    code, _, err = run(capsys, "check-config")
    assert code == 2
    assert err.endswith("(see `keyrotd check-config --example`)\n")  # the hint works:
    code, out, err = run(capsys, "check-config", "--example")
    assert (code, err) == (0, "")
    assert out == (REPOSITORY / "config" / "keyrotd.toml").read_text()
    example = in_tmp / "example.toml"
    example.write_text(out)
    code, out, _ = run(capsys, "--config", str(example), "check-config")
    assert (code, out.splitlines()[0]) == (0, f"configuration OK ({example})")


def test_no_error_hint_names_a_file_pip_does_not_install() -> None:
    sources = (REPOSITORY / "keyrotd").rglob("*.py")
    assert [path for path in sources if "config/keyrotd.toml" in path.read_text()] == []


def test_check_config(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check-config")
    assert code == 0
    assert out.startswith("configuration OK (built-in defaults)")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("[server]\nlisen = '127.0.0.1:1'\n", "server.lisen"),
        ("[[keysets]]\nname = 'a'\nrotation_period = 'banana'\n", "rotation_period"),
        ("[[keysets]]\nname = 'a'\nrsa_key_size = 1024\n", "rsa_key_size"),
        (
            "[[keysets]]\nname = 'a'\nrotation_period = '1h'\npublish_ahead = '2h'\n",
            "publish_ahead",
        ),
    ],
)
def test_bad_configuration_exits_2_with_one_line(
    body: str, needle: str, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(in_tmp, body)
    for command in (["rotate"], ["check-config"], ["status"]):
        code, out, err = run(capsys, *command)
        assert code == 2, err
        assert out == ""
        assert err.count("\n") == 1, err
        assert needle in err
        assert "Traceback" not in err


def main_as_unprivileged_user(argv: list[str]) -> tuple[int, str, str]:
    """``main(argv)`` in this (spawned) process, as nobody when started as root: exit code,
    stdout and stderr. The first argument pair is ``--config PATH``."""
    if os.geteuid() == 0:
        # The interpreter's and the checkout's files may not be readable by nobody.
        preload()
        with contextlib.redirect_stdout(io.StringIO()):
            main([*argv[:2], "check-config"])
        os.setgid(65534)
        os.setuid(65534)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def run_unprivileged(*argv: str) -> tuple[int, str, str]:
    """``keyrotd ARGV`` in a spawned process, as nobody when the tests run as root."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(main_as_unprivileged_user, list(argv)).result(timeout=60)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory any user can traverse (pytest's own temp root is private to its user)."""
    path = Path(tempfile.mkdtemp(prefix="keyrotd-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def unreadable_store(open_dir: Path) -> tuple[Path, Path]:
    """A store directory the (unprivileged) user cannot read, and a config naming it."""
    store = open_dir / "store"
    store.mkdir(mode=0o700)
    config = write_config(open_dir, f'[storage]\npath = "{store}"\n')
    config.chmod(0o644)
    if os.geteuid() != 0:
        store.chmod(0o000)
    return store, config


def test_unreadable_storage_directory_exits_2_naming_it(open_dir: Path) -> None:
    store, config = unreadable_store(open_dir)
    code, _, err = run_unprivileged("--config", str(config), "status")
    assert code == 2, err
    assert err.count("\n") == 1
    assert str(store) in err
    assert "Traceback" not in err


def test_tampered_encrypted_store_exits_nonzero_and_is_left_unchanged(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = in_tmp / "store.key"
    key_file.write_text("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n")
    key_file.chmod(0o600)
    write_config(in_tmp, f'[storage]\nencryption_key_file = "{key_file}"\n')
    assert run(capsys, "rotate")[0] == 0
    document = in_tmp / "keyrotd-data" / "default.json"
    raw = bytearray(document.read_bytes())
    middle = len(raw) // 2
    raw[middle] = ord("A") if raw[middle] != ord("A") else ord("B")
    document.write_bytes(bytes(raw))
    before = document.read_bytes()
    for command in (["status"], ["rotate"], ["rotate", "--now"], ["jwks"]):
        code, _, err = run(capsys, *command)
        assert code != 0
        assert str(document) in err
        assert err.count("\n") == 1
    assert document.read_bytes() == before


def test_console_script_in_an_empty_directory(tmp_path: Path) -> None:
    exe = shutil.which("keyrotd", path=os.path.dirname(sys.executable))
    assert exe is not None, "the console script is installed with the package"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    for command in (["check-config", "--example"], ["rotate"], ["jwks"], ["signing-key"]):
        result = subprocess.run(
            [exe, *command], cwd=tmp_path, capture_output=True, text=True, env=env, check=False
        )
        assert result.returncode == 0, result.stderr
    jwt.PyJWK.from_dict(json.loads(result.stdout))


HEAVY = (
    "boto3",
    "botocore",
    "apscheduler",
    "httptools",
    "uvloop",
    "prometheus_client",
    "grpc",
    "hvac",
    "requests",
    "pytest",
)
"""Never loaded by file-backend commands (pytest: only keyrotd.testing imports it)."""


@pytest.mark.parametrize("argv", [["--help"], ["status"], ["rotate"], ["jwks"]])
def test_file_backend_commands_import_nothing_heavy(argv: list[str], tmp_path: Path) -> None:
    probe = (
        "import sys, contextlib, io\n"
        "from keyrotd.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main({argv!r})\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    if argv == ["jwks"]:
        subprocess.run(
            [sys.executable, "-m", "keyrotd.cli", "rotate"],
            cwd=tmp_path,
            env=env,
            check=True,
            capture_output=True,
        )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# -- who may reject what after an emergency (literal times) ----------------------------------------

REFRESH, MAX_AGE = timedelta(seconds=30), timedelta(minutes=5)


def emergency(
    command: Rotate | Revoke | None, at: timedelta, successor_at: timedelta | None
) -> tuple[list[str], str, str]:
    """Key A active since T0, a successor B published at T0 + ``successor_at`` (or none), then
    ``command`` at T0 + ``at``: the notices, A's and the new signing key's kids."""
    first, second = generate_key("ES256"), generate_key("ES256")
    keyset = plan(Keyset("default"), POLICY, T0, fresh=(first,)).keyset
    if successor_at is not None:
        keyset = plan(keyset, POLICY, T0 + successor_at, fresh=(second,)).keyset
        assert keyset.pending[0].kid == second.kid
    result = plan(keyset, POLICY, T0 + at, command or Revoke(first.kid), fresh=(second,))
    assert result.keyset.active is not None and result.keyset.active.kid == second.kid
    lines = handover_notices(result.keyset, result.transitions, POLICY, REFRESH, MAX_AGE)
    return lines, first.kid, second.kid


def test_rotate_now_says_who_may_reject_the_successor_published_3m12s_ago() -> None:
    lines, _, b = emergency(Rotate(now=True), timedelta(hours=12, minutes=3, seconds=12),
                            timedelta(hours=12))  # fmt: skip
    assert lines == [
        f"EMERGENCY ROTATION of keyset default: {b} signs from 2026-03-01T12:03:12Z, an "
        "exception to publish_ahead (12h)",
        "  it was published at 2026-03-01T12:00:00Z, 3m12s ago: verifiers whose JWKS was fetched "
        "before 2026-03-01T12:00:30Z (a daemon serves a change within refresh_interval, 30s) may "
        "reject tokens signed with it until they refetch; those that honour Cache-Control "
        "(max-age 5m) have refetched by 2026-03-01T12:05:30Z",
    ]


def test_rotate_now_with_a_successor_published_long_ago() -> None:
    lines, _, _ = emergency(Rotate(now=True), timedelta(hours=23), timedelta(hours=12))
    assert lines[1] == (
        "  it was published at 2026-03-01T12:00:00Z, 11h ago: verifiers whose JWKS was fetched "
        "before 2026-03-01T12:00:30Z (a daemon serves a change within refresh_interval, 30s) may "
        "reject tokens signed with it until they refetch; those that honour Cache-Control "
        "(max-age 5m) hold it already"
    )


def test_rotate_now_without_a_successor_publishes_one_that_nobody_has_yet() -> None:
    lines, _, b = emergency(Rotate(now=True), timedelta(hours=3), None)
    assert lines == [
        f"EMERGENCY ROTATION of keyset default: {b} signs from 2026-03-01T03:00:00Z, an "
        "exception to publish_ahead (12h)",
        "  it was published just now: verifiers whose JWKS was fetched before "
        "2026-03-01T03:00:30Z (a daemon serves a change within refresh_interval, 30s) may "
        "reject tokens signed with it until they refetch; those that honour Cache-Control "
        "(max-age 5m) have refetched by 2026-03-01T03:05:30Z",
    ]


def test_revoking_the_active_key_a_moment_after_its_successor_was_published() -> None:
    lines, a, b = emergency(None, timedelta(hours=12, seconds=2), timedelta(hours=12))
    assert lines == [
        f"REVOKED the active key {a} of keyset default: {b} signs from 2026-03-01T12:00:02Z, an "
        "exception to publish_ahead (12h)",
        "  it was published at 2026-03-01T12:00:00Z, 2s ago: verifiers whose JWKS was fetched "
        "before 2026-03-01T12:00:30Z (a daemon serves a change within refresh_interval, 30s) may "
        "reject tokens signed with it until they refetch; those that honour Cache-Control "
        "(max-age 5m) have refetched by 2026-03-01T12:05:30Z",
        f"  tokens signed with {a} are rejected by verifiers whose JWKS was fetched after "
        "2026-03-01T12:00:32Z; a verifier holding an older copy accepts them until it refetches "
        "(by 2026-03-01T12:05:32Z if it honours Cache-Control)",
    ]


def test_revoking_a_retired_key_says_only_who_rejects_its_tokens() -> None:
    first, second = generate_key("ES256"), generate_key("ES256")
    keyset = plan(Keyset("default"), POLICY, T0, fresh=(first,)).keyset
    keyset = plan(keyset, POLICY, T0 + timedelta(hours=12), fresh=(second,)).keyset
    keyset = plan(keyset, POLICY, T0 + timedelta(days=1)).keyset  # A retires
    result = plan(keyset, POLICY, T0 + timedelta(days=1, minutes=10), Revoke(first.kid))
    assert handover_notices(result.keyset, result.transitions, POLICY, REFRESH, MAX_AGE) == [
        f"  tokens signed with {first.kid} are rejected by verifiers whose JWKS was fetched after "
        "2026-03-02T00:10:30Z; a verifier holding an older copy accepts them until it refetches "
        "(by 2026-03-02T00:15:30Z if it honours Cache-Control)",
    ]


# -- output to a closed pipe (`keyrotd status | head -1`) ------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["status"], ["status", "--json"], ["jwks"], ["check-config", "--example"], ["--help"]],
)
def test_output_to_a_closed_pipe_ends_quietly(argv: list[str], tmp_path: Path) -> None:
    """The reader went away (``| head -1``) before keyrotd wrote: exit 0 or death by SIGPIPE,
    nothing on stderr, never "internal error"."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    cli = [sys.executable, "-m", "keyrotd.cli"]
    subprocess.run([*cli, "rotate"], cwd=tmp_path, env=env, check=True, capture_output=True)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        result = subprocess.run(
            [*cli, *argv], cwd=tmp_path, env=env, stdout=write_end, stderr=subprocess.PIPE,
            text=True, check=False, timeout=60,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.returncode in (0, -signal.SIGPIPE), result.stderr
    assert result.stderr == ""


# -- revoke KID: every keyset, and a prefix as `status` shows ---------------------------------


def two_keysets(directory: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    """Keysets ``a`` and ``b`` (ES256), each with an active key and a pending successor: their
    kids, active first."""
    write_config(directory, '[[keysets]]\nname = "a"\nalgorithm = "ES256"\n'
                            '[[keysets]]\nname = "b"\nalgorithm = "ES256"\n')  # fmt: skip
    for name in ("a", "b"):
        assert run(capsys, "rotate", "--keyset", name)[0] == 0
    _, out, _ = run(capsys, "status", "--json")
    return {ks["name"]: [k["kid"] for k in ks["keys"]] for ks in json.loads(out)["keysets"]}


def test_revoke_without_keyset_finds_the_kid_in_any_keyset(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kids = two_keysets(in_tmp, capsys)
    pending = kids["b"][1]
    code, out, err = run(capsys, "revoke", pending)
    assert (code, err) == (0, ""), err
    assert f"b: key.revoked {pending} at " in out
    _, out, _ = run(capsys, "jwks", "--keyset", "b")
    assert pending not in {k["kid"] for k in json.loads(out)["keys"]}
    _, out, _ = run(capsys, "jwks", "--keyset", "a")
    assert [k["kid"] for k in json.loads(out)["keys"]] == kids["a"]


def test_revoke_takes_the_eight_characters_status_shows(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kids = two_keysets(in_tmp, capsys)
    active = kids["b"][0]
    _, shown, _ = run(capsys, "status", "--keyset", "b")
    assert f" {active[:8]} " in shown
    code, out, err = run(capsys, "revoke", active[:8])
    assert code == 0, err  # stderr: the warning an emergency logs
    assert f"REVOKED the active key {active} of keyset b: " in out
    code, out, _ = run(capsys, "revoke", active[:10], "--keyset", "b")
    assert (code, out) == (
        0,
        f"b: {active} is already revoked and out of the JWKS; nothing to do\n",
    )


@pytest.mark.parametrize("length", [3, 7])
def test_revoke_refuses_a_prefix_shorter_than_eight_characters(
    length: int, in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kids = two_keysets(in_tmp, capsys)
    # "--": a kid is base64url, and one that starts with "-" would read as an option
    code, out, err = run(capsys, "revoke", "--", kids["a"][0][:length])
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "at least 8 characters" in err, err
    _, out, _ = run(capsys, "status", "--json")
    assert [len(ks["keys"]) for ks in json.loads(out)["keysets"]] == [2, 2]  # nothing revoked


def keysets_of(directory: Path, made: dict[str, list[NewKey]]) -> None:
    """Keysets written by the manager from the keys given (an active key and its successor
    each): kids that no real key pair would give, such as one kid in two keysets."""
    config = write_config(directory, "".join(
        f'[[keysets]]\nname = "{name}"\nalgorithm = "ES256"\n' for name in made
    ))  # fmt: skip
    settings = load_settings(str(config), environ={})
    storage = open_storage(settings.storage)
    for name, keys in made.items():
        factory = iter(keys)
        keyset = settings.keyset(name)
        open_writer(storage, keyset, key_factory=lambda *_: next(factory)).apply()  # noqa: B023
    storage.close()


def test_revoke_names_the_keysets_holding_the_kid(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = generate_key("ES256")
    keysets_of(in_tmp, {"a": [shared, generate_key("ES256")], "b": [shared, generate_key("ES256")]})
    code, out, err = run(capsys, "revoke", shared.kid[:12])
    assert (code, out) == (1, "")
    assert err == (
        f"keyrotd: kid {shared.kid} is in more than one keyset (a, b): choose one with --keyset\n"
    )
    code, out, err = run(capsys, "revoke", shared.kid, "--keyset", "b")
    assert code == 0, err
    assert f"b: key.revoked {shared.kid} at " in out


def test_revoke_names_the_kids_an_ambiguous_prefix_matches(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = (
        dataclasses.replace(generate_key("ES256"), kid=f"SamePrefix{n}") for n in ("1", "2")
    )
    keysets_of(in_tmp, {"a": [first, generate_key("ES256")], "b": [second, generate_key("ES256")]})
    code, out, err = run(capsys, "revoke", "SamePref")
    assert (code, out) == (1, "")
    assert err == (
        "keyrotd: SamePref matches more than one kid: SamePrefix1 (keyset a), SamePrefix2 "
        "(keyset b): give more of the kid\n"
    )
    code, out, err = run(capsys, "revoke", "SamePref", "--keyset", "b")
    assert code == 0, err
    assert "REVOKED the active key SamePrefix2 of keyset b: " in out


def test_revoke_looks_past_a_keyset_it_cannot_read(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kids = two_keysets(in_tmp, capsys)
    broken = in_tmp / "keyrotd-data" / "a.json"
    broken.write_text("{not json")
    code, out, err = run(capsys, "revoke", kids["b"][1])
    assert code == 0, err
    assert f"b: key.revoked {kids['b'][1]} at " in out
    assert err.startswith("keyrotd: not searched: ") and str(broken) in err
    code, out, err = run(capsys, "revoke", "nosuchkid")  # perhaps in a: say why it is unknown
    assert (code, out) == (1, "")
    assert str(broken) in err and err.count("\n") == 1


def test_revoke_unknown_kid_in_every_keyset(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    two_keysets(in_tmp, capsys)
    code, out, err = run(capsys, "revoke", "nosuchkid")
    assert (code, out) == (1, "")
    assert err == (
        "keyrotd: no keyset has a key with kid nosuchkid (searched a, b): list the kids with "
        "`keyrotd status`\n"
    )


# -- rotate: nothing to bring forward; rotate --now only for a successor verifiers hold -----------


def at(clock: ManualClock, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), clock)
    out, err = capsys.readouterr()
    return code, out, err


def store_bytes(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((directory / "keyrotd-data").glob("*.json"))}


def test_rotate_says_when_there_is_nothing_to_bring_forward(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(T0)
    assert at(clock, capsys, "rotate")[0] == 0  # the first key signs, a successor is published
    _, report, _ = at(clock, capsys, "status", "--json")
    [successor] = [k for k in json.loads(report)["keysets"][0]["keys"] if k["state"] == "pending"]
    said = (
        f"default: nothing to bring forward: {successor['kid']}, published at "
        "2026-03-01T00:00:00Z, activates at 2026-03-02T00:00:00Z, as soon as publish_ahead (1d) "
        "allows; `keyrotd rotate --now` activates it at once, as an emergency"
    )
    clock.advance(timedelta(minutes=1))
    before = store_bytes(in_tmp)
    code, out, err = at(clock, capsys, "rotate")
    assert (code, err) == (0, "")
    assert out == f"{said}, from 2026-03-01T00:05:30Z (before that, only with --force)\n"
    clock.advance(timedelta(hours=1))
    code, out, err = at(clock, capsys, "rotate")
    assert (code, err, out) == (0, "", f"{said}\n")
    assert store_bytes(in_tmp) == before


def test_rotate_now_refuses_a_successor_published_a_moment_ago(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """refresh_interval 30s + max(jwks_max_age 5m, verifier_cache 30s): 5m30s after publication
    every verifier holds the successor; before that, --now is refused unless --force."""
    clock = ManualClock(T0)
    assert at(clock, capsys, "rotate")[0] == 0
    clock.advance(timedelta(minutes=5, seconds=29))
    before = store_bytes(in_tmp)
    code, out, err = at(clock, capsys, "rotate", "--now")
    assert (code, out) == (1, "")
    _, report, _ = at(clock, capsys, "status", "--json")
    [successor] = [k for k in json.loads(report)["keysets"][0]["keys"] if k["state"] == "pending"]
    assert err == (
        f"keyrotd: keyset default: refusing rotate --now: its successor {successor['kid']} was "
        "published at 2026-03-01T00:00:00Z, 5m29s ago, and verifiers may not hold it before "
        "2026-03-01T00:05:30Z (refresh_interval + max(jwks_max_age, verifier_cache) = 5m30s "
        "after its publication): they could reject the tokens it signs: run `keyrotd rotate "
        "--now` again from 2026-03-01T00:05:30Z, or add --force to activate it anyway\n"
    )
    assert store_bytes(in_tmp) == before  # nothing changed
    clock.advance(timedelta(seconds=1))
    code, out, _ = at(clock, capsys, "rotate", "--now")
    assert code == 0
    assert out.startswith(f"EMERGENCY ROTATION of keyset default: {successor['kid']} signs from ")


def test_rotate_now_twice_is_refused_the_second_time(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = ManualClock(T0)
    assert at(clock, capsys, "rotate")[0] == 0
    clock.advance(timedelta(hours=2))
    assert at(clock, capsys, "rotate", "--now")[0] == 0  # a new successor is published at once
    clock.advance(timedelta(seconds=3))
    code, _, err = at(clock, capsys, "rotate", "--now")
    assert code == 1
    assert "2026-03-01T02:00:00Z, 3s ago" in err and "--force" in err
    code, out, _ = at(clock, capsys, "rotate", "--now", "--force")
    assert code == 0
    assert "EMERGENCY ROTATION of keyset default: " in out
    assert "it was published at 2026-03-01T02:00:00Z, 3s ago" in out


def test_rotate_now_refuses_when_no_successor_is_published(
    in_tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_config(in_tmp, '[[keysets]]\nname = "k"\nalgorithm = "ES256"\n'
                         'rotation_period = "2h"\npublish_ahead = "1h"\n')  # fmt: skip
    clock = ManualClock(T0)
    assert at(clock, capsys, "rotate")[0] == 0
    _, report, _ = at(clock, capsys, "status", "--json")
    [successor] = [k for k in json.loads(report)["keysets"][0]["keys"] if k["state"] == "pending"]
    clock.advance(timedelta(minutes=5))
    assert at(clock, capsys, "revoke", successor["kid"])[0] == 0  # the next one is due in 55m
    clock.advance(timedelta(minutes=5))
    before = store_bytes(in_tmp)
    code, out, err = at(clock, capsys, "rotate", "--now")
    assert (code, out) == (1, "")
    assert err == (
        "keyrotd: keyset k: refusing rotate --now: no successor is published, and a new key "
        "would sign before verifiers hold it (refresh_interval + max(jwks_max_age, "
        "verifier_cache) = 5m30s after its publication): run `keyrotd rotate` now to publish "
        "one and `keyrotd rotate --now` from 2026-03-01T00:15:30Z, or add --force to sign with "
        "a new key at once\n"
    )
    assert store_bytes(in_tmp) == before
    code, out, _ = at(clock, capsys, "rotate", "--now", "--force")
    assert code == 0 and "EMERGENCY ROTATION of keyset k: " in out


def test_force_goes_with_now(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "rotate", "--force")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "--force" in err and "--now" in err
