"""The shipped unit under a real systemd: PID 1 of a podman container, the README's recipe inside.

A Debian bookworm root (debootstrap, with systemd) is booted with ``podman run --systemd=always``;
keyrotd is installed in it from this checkout exactly as the README's systemd recipe says, and the
unit, as shipped, is started with no admin token nor clients file, reloaded with a token, started
again with a token and a clients file, and stopped. Every HTTP request is made inside the container
(the daemon listens on its 127.0.0.1:8080), tokens are read there from files, never from argv.

The image holds ``procps`` because the unit's ``ExecReload=/bin/kill`` needs it: a minbase root has
no ``kill`` (every standard Debian install has procps, priority important).
"""

from __future__ import annotations

import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import jwt
import pytest

from tests.ops.containers import HOST_CA_BUNDLE, ROOT, ULIMITS, Podman, debian_image, needs_podman
from tests.support.waiting import wait_for

IMAGE = "localhost/keyrotd-systemd:ci"
PACKAGES = ("python3", "python3-venv", "ca-certificates", "systemd", "systemd-sysv", "procps")
NAME = "keyrotd-systemd-ci"
HOST_CERTS = "/mnt/host-certs"  # the host's CA bundle, for pip behind a TLS proxy (if any)
PIP_CERT = ("-e", f"PIP_CERT={HOST_CERTS}/{HOST_CA_BUNDLE.name}") if HOST_CA_BUNDLE.exists() else ()
CONFIG = "/etc/keyrotd/keyrotd.toml"
TOKEN_FILE = "/etc/keyrotd/admin.token"
CLIENTS_FILE = "/etc/keyrotd/clients.toml"
# The README's systemd recipe, run line by line as root in /root, the checkout being ./keyrotd
RECIPE = (
    "useradd --system --home-dir /var/lib/keyrotd --shell /usr/sbin/nologin keyrotd"
    " && groupadd --system keyrotd-clients",
    "python3 -m venv /opt/keyrotd && /opt/keyrotd/bin/pip install --require-hashes"
    " -r keyrotd/requirements/deploy.txt && /opt/keyrotd/bin/pip install --no-deps ./keyrotd",
    "install -m 0644 keyrotd/config/keyrotd.service /etc/systemd/system/keyrotd.service",
    "install -D -m 0644 keyrotd/README.md /usr/share/doc/keyrotd/README.md",
    "install -d -m 0750 -g keyrotd /etc/keyrotd",
    """printf '[storage]\\npath = "/var/lib/keyrotd"\\n' > /etc/keyrotd/keyrotd.toml""",
    "systemctl daemon-reload && systemctl enable --now keyrotd",
)
BASE_CONFIG = '[storage]\npath = "/var/lib/keyrotd"\n'
# run by the container's python3: GET a path of the daemon, with the token read from a file
FETCH = """
import json, sys, urllib.error, urllib.request
request = urllib.request.Request("http://127.0.0.1:8080" + sys.argv[1])
if len(sys.argv) > 2:
    with open(sys.argv[2]) as token:
        request.add_header("Authorization", "Bearer " + token.read().strip())
try:
    with urllib.request.urlopen(request, timeout=5) as answer:
        print(json.dumps([answer.status, json.loads(answer.read())]))
except urllib.error.HTTPError as error:
    print(json.dumps([error.code, None]))
"""

pytestmark = [pytest.mark.slow, needs_podman]


@dataclass(frozen=True)
class Machine:
    """A running container whose PID 1 is systemd."""

    podman: Podman
    name: str

    def sh(
        self, script: str, *, check: bool = True, stdin: bytes | None = None
    ) -> CompletedProcess[str]:
        interactive = ("-i",) if stdin is not None else ()
        return self.podman.run(
            "exec",
            *interactive,
            "-w",
            "/root",
            *PIP_CERT,
            self.name,
            "sh",
            "-ec",
            script,
            check=check,
            stdin=stdin,
            timeout=300,
        )

    def write(self, path: str, text: str, owner: str = "root:root", mode: str = "0644") -> None:
        self.sh(f"cat > {path} && chown {owner} {path} && chmod {mode} {path}", stdin=text.encode())

    def get(self, path: str, token_file: str | None = None) -> tuple[int, Any]:
        argv = ["python3", "-c", FETCH, path, *([token_file] if token_file else [])]
        answer = self.podman.run("exec", self.name, *argv)
        status, body = json.loads(answer.stdout)
        return int(status), body

    def unit(self, *properties: str) -> dict[str, str]:
        shown = self.sh(f"systemctl show keyrotd {' '.join(f'-p {p}' for p in properties)}")
        pairs = (line.partition("=") for line in shown.stdout.splitlines())
        return {name: value for name, _, value in pairs}

    def journal(self) -> str:
        return self.sh("journalctl -u keyrotd --no-pager -o cat").stdout

    def is_active(self) -> str:
        return self.sh("systemctl is-active keyrotd", check=False).stdout.strip()


def checkout(tar_path: Path) -> Path:
    """What the recipe's pip needs of this checkout (the lock too), and the unit, as a tar."""
    with tarfile.open(tar_path, mode="w") as tar:
        for name in ("pyproject.toml", "README.md", "LICENSE", "keyrotd", "config", "requirements"):
            tar.add(
                ROOT / name,
                arcname=f"keyrotd/{name}",
                filter=lambda info: None if "__pycache__" in info.name else info,
            )
    return tar_path


@pytest.fixture(scope="module")
def machine(podman: Podman) -> Iterator[Machine]:
    image = debian_image(podman, IMAGE, PACKAGES)
    certs = ["-v", f"{HOST_CA_BUNDLE.parent}:{HOST_CERTS}:ro"] if HOST_CA_BUNDLE.exists() else []
    podman.run(
        "run", "-d", "--name", NAME, "--systemd=always", *ULIMITS, *certs, image, "/sbin/init"
    )
    booted = Machine(podman, NAME)
    # systemctl talks to PID 1 over /run/systemd/private, which appears early in the boot
    waited = booted.sh(
        "for _ in $(seq 90); do test -S /run/systemd/private && break; sleep 1; done\n"
        "timeout 90 systemctl is-system-running --wait",
        check=False,
    )
    state = waited.stdout.strip() or waited.stderr.strip()
    if state != "running":
        failed = booted.sh("systemctl --failed --no-pager", check=False)
        logs = podman.run("logs", NAME, check=False)
        output = failed.stdout + logs.stdout + logs.stderr
        raise AssertionError(f"systemd in the container is not running: {state}\n{output[-3000:]}")
    podman.run("cp", str(checkout(podman.root / "keyrotd.tar")), f"{NAME}:/root/keyrotd.tar")
    booted.sh("tar -xf keyrotd.tar && rm keyrotd.tar")
    yield booted
    podman.run("rm", "--force", "--time", "0", NAME, check=False)


@pytest.fixture(scope="module")
def installed(machine: Machine) -> Machine:
    """The README's recipe, whose last line starts the unit (no token, no clients file)."""
    for line in RECIPE:
        try:
            machine.sh(line)
        except AssertionError as error:  # the unit's own words, when it did not start
            journal = machine.sh("journalctl -u keyrotd --no-pager -n 40", check=False)
            raise AssertionError(f"{error}\n{journal.stdout}") from None
    return machine


def restart_with(machine: Machine, config: str) -> None:
    machine.write(CONFIG, config)
    machine.sh("systemctl restart keyrotd")


def make_token_file(machine: Machine) -> None:
    """The admin token as the README says: root:keyrotd, 0640 (made inside, never seen here)."""
    machine.sh(f"python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {TOKEN_FILE}")
    machine.sh(f"chown root:keyrotd {TOKEN_FILE} && chmod 0640 {TOKEN_FILE}")


def test_systemd_is_pid_1(machine: Machine) -> None:
    assert machine.sh("cat /proc/1/comm").stdout.strip() == "systemd"


def test_recipe_is_the_readme_s() -> None:
    readme = (ROOT / "README.md").read_text()
    assert [line for line in RECIPE if line not in readme] == []


def test_unit_starts_without_admin_token_or_clients_file(installed: Machine) -> None:
    # Type=notify: `enable --now` returned, so READY=1 arrived; the unit is active, not restarting
    assert installed.is_active() == "active", installed.journal()[-3000:]
    assert installed.unit("NRestarts", "StatusText") == {
        "NRestarts": "0",
        "StatusText": "serving 1 keysets",
    }
    status, jwks = installed.get("/.well-known/jwks.json")
    assert status == 200 and len(jwks["keys"]) == 2, jwks
    assert installed.get("/signing-key")[0] == 404  # no token configured: the endpoint is absent
    mode = installed.sh("stat -c '%a %U' /var/lib/keyrotd /var/lib/keyrotd/default.json")
    assert mode.stdout.split("\n")[:2] == ["700 keyrotd", "600 keyrotd"]
    # after READY=1, only a WATCHDOG=1 ping moves the unit's watchdog timestamp (every 15 s here)
    pinged = "WatchdogTimestampMonotonic"
    seen = installed.unit(pinged)[pinged]
    wait_for(lambda: installed.unit(pinged)[pinged] != seen, 25, "WATCHDOG=1", every=1)


def test_the_socket_directory_belongs_to_the_issuers_group(installed: Machine) -> None:
    """Issuers join keyrotd-clients for the admin socket, not keyrotd (which reads the token)."""
    shown = installed.sh("stat -c '%U %G %a' /run/keyrotd").stdout.split()
    assert shown == ["keyrotd", "keyrotd-clients", "750"]


def test_reload_adds_the_admin_token(installed: Machine) -> None:
    restart_with(installed, BASE_CONFIG)
    assert installed.get("/signing-key")[0] == 404
    make_token_file(installed)
    installed.write(CONFIG, f'{BASE_CONFIG}[server]\nadmin_token_file = "{TOKEN_FILE}"\n')
    started = installed.unit("ExecMainStartTimestampMonotonic")
    installed.sh("systemctl reload keyrotd")  # ExecReload sends SIGHUP; the daemon reloads alone

    def signing_key() -> Any:
        status, body = installed.get("/signing-key", TOKEN_FILE)
        return body if status == 200 else None

    served = wait_for(signing_key, 20, "GET /signing-key with the admin token after reload")
    active = served["active"]
    assert installed.get("/signing-key")[0] == 401
    assert installed.unit("ExecMainStartTimestampMonotonic") == started  # the same process
    assert installed.is_active() == "active"
    # a token minted with the served key verifies against the served JWKS (PyJWT)
    minted = jwt.encode({"sub": "ci"}, jwt.PyJWK(active).key, "RS256", {"kid": active["kid"]})
    jwks = jwt.PyJWKSet.from_dict(installed.get("/.well-known/jwks.json")[1])
    assert jwt.decode(minted, jwks[active["kid"]].key, ["RS256"])["sub"] == "ci"


def test_unit_starts_with_admin_token_and_clients_file(installed: Machine) -> None:
    make_token_file(installed)
    config = (
        f'{BASE_CONFIG}[server]\nadmin_token_file = "{TOKEN_FILE}"\n'
        f'admin_clients_file = "{CLIENTS_FILE}"\n'
    )
    installed.write(CONFIG, config)
    added = installed.sh(
        f"/opt/keyrotd/bin/keyrotd --config {CONFIG} client add ci --scope signing-key:default"
    )
    installed.sh(f"chown root:keyrotd {CLIENTS_FILE} && chmod 0640 {CLIENTS_FILE}")
    installed.write("/root/ci.token", added.stdout.splitlines()[-1], mode="0600")
    installed.sh("systemctl stop keyrotd && systemctl start keyrotd")

    assert installed.is_active() == "active", installed.journal()[-3000:]
    assert installed.get("/signing-key", TOKEN_FILE)[0] == 200
    assert installed.get("/keysets/default/signing-key", "/root/ci.token")[0] == 200
    assert installed.get("/signing-key")[0] == 401


def test_stop_is_clean_and_the_journal_holds_no_secret(installed: Machine) -> None:
    make_token_file(installed)
    restart_with(installed, f'{BASE_CONFIG}[server]\nadmin_token_file = "{TOKEN_FILE}"\n')
    status, body = installed.get("/signing-key", TOKEN_FILE)
    assert status == 200
    private = body["active"]["d"]
    started = time.monotonic()
    installed.sh("systemctl stop keyrotd")
    assert time.monotonic() - started < 8, "keyrotd did not exit on SIGTERM in time"
    assert installed.is_active() == "inactive"
    assert installed.unit("Result", "ExecMainCode", "ExecMainStatus") == {
        "Result": "success",
        "ExecMainCode": "1",  # CLD_EXITED: it exited by itself, not killed by a signal
        "ExecMainStatus": "0",
    }
    journal = installed.journal()
    tokens = installed.sh(f"cat {TOKEN_FILE}; cat /root/ci.token 2>/dev/null || true").stdout
    # computed apart, so that a failure shows no secret
    tokens_logged = sum(token in journal for token in tokens.split())
    key_logged = private in journal
    assert tokens_logged == 0, "a token is in the journal"
    assert not key_logged, "a private key is in the journal"
