"""The README's quickstart, run as written in an empty directory with the real console script.

The lines of the README's ``sh`` block under "Quickstart" run one after another in one bash
(``set -e``: any failing line fails the test), with this virtualenv's ``bin`` first on PATH, as
after ``pip install .``. The daemon listens on 127.0.0.1:8080 as the README says.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import jwt
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def quickstart_lines() -> list[str]:
    text = README.read_text()
    section = text.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block is not None, "no ```sh block under ## Quickstart"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_the_two_set_up_commands() -> None:
    lines = README.read_text().splitlines()
    assert lines[2].split("#")[0].strip() == "pip install . && keyrotd run"
    assert lines[3].split("#")[0].strip() == "pip install -e '.[test]' && pytest"
    assert len(lines) <= 320, f"the README has {len(lines)} lines: move details to docs/"


def test_readme_links_resolve() -> None:
    for target in re.findall(r"\]\(([^)#:]+)\)", README.read_text()):
        assert (ROOT / target).exists(), target


@pytest.mark.slow
def test_quickstart_runs_as_written(tmp_path: Path) -> None:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8080)) == 0:
            pytest.fail("127.0.0.1:8080 is in use: the quickstart needs it")
    empty = tmp_path / "empty"
    empty.mkdir()
    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYROTD_")}
    env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    script = "set -e\n" + "\n".join(quickstart_lines()) + "\n"
    out_file, err_file = tmp_path / "stdout", tmp_path / "stderr"
    with out_file.open("w") as out_stream, err_file.open("w") as err_stream:
        shell = subprocess.Popen(
            ["bash", "-c", script],
            cwd=empty,
            env=env,
            stdout=out_stream,
            stderr=err_stream,
            start_new_session=True,
        )
        try:
            code = shell.wait(timeout=120)
        finally:
            # a line that failed leaves the background daemon running: end the session's group
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGTERM)
            shell.wait()
    out = out_file.read_text()
    assert code == 0, out[-3000:] + err_file.read_text()[-3000:]
    served = json.JSONDecoder().raw_decode(out)[0]
    assert served["keys"] and all("d" not in key for key in served["keys"])
    assert "next transition:" in out
    assert re.search(r"\(in \d+h\d+m\)", out), out
    assert re.search(r"^valid: signed by ", out, re.MULTILINE), out
    token = (empty / "token.jwt").read_text().strip()
    header = jwt.get_unverified_header(token)
    public = jwt.PyJWKSet.from_dict(served)[header["kid"]].key
    assert jwt.decode(token, public, [header["alg"]], audience="api")["sub"] == "alice"
    assert (empty / "keyrotd-data").is_dir()
