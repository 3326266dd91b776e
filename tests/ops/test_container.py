"""The container image, built from ``config/Containerfile`` and run with podman, end to end.

No registry is reachable here, so the base image is made from Debian packages (debootstrap) and
passed as the ``BASE`` build argument; the Containerfile itself is used unchanged. The image is
built, run with a volume and the admin token as a podman secret mounted as docs/operations.md says;
the JWKS is fetched from the host, the signing key from the admin unix socket inside (the published
port serves no admin endpoint), a token signed with it is verified with PyJWT, ``keyrotd status``
runs inside, the health check runs, the container restarts with the same keys and stops with
exit 0. A secret mounted with podman's default mode (0444) is refused.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.error
import urllib.request
from typing import Any

import jwt
import pytest

from tests.ops.containers import HOST_CA_BUNDLE, ROOT, ULIMITS, Podman, debian_image, needs_podman
from tests.support.daemon import free_port
from tests.support.waiting import wait_for

IMAGE = "localhost/keyrotd:ci"
BASE = "localhost/keyrotd-base:ci"
UID = 10001

pytestmark = [pytest.mark.slow, needs_podman]


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    base = debian_image(podman, BASE, ["python3", "python3-venv", "ca-certificates"])
    # pip inside the build must trust what the host trusts (a TLS proxy's CA, if any)
    ca = ["-v", f"{HOST_CA_BUNDLE.parent}:/run/host-certs:ro"] if HOST_CA_BUNDLE.exists() else []
    pip_cert = f"/run/host-certs/{HOST_CA_BUNDLE.name}" if ca else ""
    podman.run(
        "build",
        "--format",
        "docker",
        "--isolation",
        "chroot",
        "--pull=never",
        "--build-arg",
        f"BASE={base}",
        "--build-arg",
        f"PIP_CERT={pip_cert}",
        *ca,
        "-f",
        str(ROOT / "config" / "Containerfile"),
        "-t",
        IMAGE,
        str(ROOT),
        timeout=900,
    )
    return IMAGE


def get(url: str, token: str | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, None


def jwks_when_up(port: int) -> dict[str, Any]:
    def fetch() -> dict[str, Any] | None:
        try:
            status, body = get(f"http://127.0.0.1:{port}/.well-known/jwks.json")
        except OSError:
            return None
        return body if status == 200 and body["keys"] else None

    return wait_for(fetch, 90, "the container's JWKS", every=0.5)


# run by the container's python: GET the signing key over the admin socket, the token from a file
SIGNING_KEY = """
import http.client, json, socket, sys
class Unix(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect("/run/keyrotd/admin.sock")
headers = {}
if len(sys.argv) > 1:
    with open(sys.argv[1]) as token:
        headers["Authorization"] = "Bearer " + token.read().strip()
connection = Unix("localhost", timeout=5)
connection.request("GET", "/keysets/default/signing-key", headers=headers)
answer = connection.getresponse()
body = answer.read()
print(json.dumps([answer.status, json.loads(body) if answer.status == 200 else None]))
"""


def signing_key_inside(podman: Podman, name: str, *token_file: str) -> tuple[int, Any]:
    shown = podman.run("exec", "-i", name, "python", "-", *token_file, stdin=SIGNING_KEY.encode())
    status, body = json.loads(shown.stdout)
    return status, body


def run_options(port: int, volume: str) -> list[str]:
    return [
        *ULIMITS,
        "-p",
        f"127.0.0.1:{port}:8080",
        "-v",
        f"{volume}:/var/lib/keyrotd",
        "-e",
        "KEYROTD_SERVER__ADMIN_TOKEN_FILE=/run/secrets/admin.token",
    ]


def test_image_has_its_health_check_and_user(podman: Podman, image: str) -> None:
    inspected = json.loads(podman.run("image", "inspect", image).stdout)[0]
    assert inspected["Healthcheck"]["Test"][:2] == ["CMD", "python"]
    assert inspected["Config"]["User"] == f"{UID}:{UID}"


def test_image_can_be_the_api_servers_token_signer(podman: Podman, image: str) -> None:
    # the kubernetes extra (grpcio) is in the image: the sidecar of docs/kubernetes.md
    probe = (
        "import grpc\n"
        "from keyrotd.kubernetes.signer import serve\n"
        "from keyrotd.kubernetes.externaljwt.v1 import api_pb2_grpc\n"
        "from keyrotd.kubernetes.externaljwt.v1alpha1 import api_pb2_grpc as alpha\n"
        "print(api_pb2_grpc.ExternalJWTSignerServicer.__name__, grpc.__version__)\n"
    )
    shown = podman.run("run", "--rm", *ULIMITS, "--entrypoint", "python", image, "-c", probe)
    assert shown.stdout.startswith("ExternalJWTSignerServicer "), shown.stdout + shown.stderr


def test_container_end_to_end(podman: Podman, image: str) -> None:
    token = secrets.token_urlsafe(32)
    podman.run("secret", "create", "admin.token", "-", stdin=token.encode())
    port, name = free_port(), "keyrotd-ci"
    secret = f"admin.token,mode=0400,uid={UID}"
    podman.run(
        "run", "-d", "--name", name, "--secret", secret, *run_options(port, "kr-data"), image
    )

    jwks = jwks_when_up(port)
    kids = [key["kid"] for key in jwks["keys"]]
    assert all(set(key) & {"d", "p", "q", "dp", "dq", "qi", "k"} == set() for key in jwks["keys"])

    published = f"http://127.0.0.1:{port}/keysets/default/signing-key"
    assert get(published, token)[0] == 404  # no admin endpoint on the published port
    assert signing_key_inside(podman, name)[0] == 401
    status, signing = signing_key_inside(podman, name, "/run/secrets/admin.token")
    assert status == 200
    active = signing["active"]
    assert active["kid"] == kids[0]
    private = jwt.PyJWK(active).key
    minted = jwt.encode({"sub": "ci", "aud": "api"}, private, "RS256", {"kid": active["kid"]})
    public = jwt.PyJWKSet.from_dict(jwks)[active["kid"]].key
    assert jwt.decode(minted, public, ["RS256"], audience="api")["sub"] == "ci"

    shown = podman.run("exec", name, "keyrotd", "status")
    assert f"  active   {kids[0][:8]}" in shown.stdout, shown.stdout
    as_json = json.loads(podman.run("exec", name, "keyrotd", "status", "--json").stdout)
    assert [k["kid"] for k in as_json["keysets"][0]["keys"]] == kids

    health = podman.run("healthcheck", "run", name, check=False)
    assert health.returncode == 0, health.stdout + health.stderr

    podman.run("restart", "--time", "10", name)
    assert [key["kid"] for key in jwks_when_up(port)["keys"]] == kids

    started = time.monotonic()
    podman.run("stop", "--time", "10", name)
    assert time.monotonic() - started < 8, "keyrotd did not exit on SIGTERM (podman killed it)"
    state = json.loads(podman.run("inspect", name).stdout)[0]["State"]
    assert state["ExitCode"] == 0, state


def test_default_secret_mode_is_refused_with_a_clear_error(podman: Podman, image: str) -> None:
    """podman mounts a secret 0444 unless told otherwise: others could read the admin token."""
    token = secrets.token_urlsafe(32)
    podman.run("secret", "create", "open.token", "-", stdin=token.encode())
    name = "keyrotd-ci-open-secret"
    podman.run(
        "run",
        "-d",
        "--name",
        name,
        "--secret",
        "open.token,target=admin.token",
        *run_options(free_port(), "kr-refused"),
        image,
    )
    exit_code = podman.run("wait", name, timeout=60).stdout.strip()
    logs = podman.run("logs", name)
    assert exit_code == "2", logs.stdout + logs.stderr
    assert "/run/secrets/admin.token" in logs.stderr, logs.stderr
    assert f"--secret NAME,mode=0400,uid={UID}" in logs.stderr, logs.stderr
    assert token not in logs.stdout + logs.stderr
