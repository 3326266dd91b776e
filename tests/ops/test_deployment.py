"""The deployment as shipped gives issuers no more than the admin socket: the unit creates
``/run/keyrotd`` for it (``RuntimeDirectory``, as ``ProtectSystem=strict`` allows nothing else),
owned by a group issuers join that is not the group reading ``/etc/keyrotd`` (where the
full-power token lives); the container publishes no admin endpoint over plain HTTP."""

from __future__ import annotations

import re

from tests.ops.test_systemd import README, ROOT, UNIT, directives

CONTAINERFILE = ROOT / "config" / "Containerfile"


def test_the_unit_creates_the_socket_directory_for_a_group_that_cannot_read_the_token() -> None:
    pairs = directives(UNIT.read_text())
    values = dict(pairs)
    assert values["ProtectSystem"] == "strict"
    assert values["RuntimeDirectory"] == "keyrotd"
    mode = int(values.get("RuntimeDirectoryMode", "0755"), 8)
    assert mode & 0o050 == 0o050 and mode & 0o007 == 0, oct(mode)  # the group may enter
    # the group that reads /etc/keyrotd, as the README's recipe makes it
    recipe = re.search(r"install -d -m 0750 -g (\S+) /etc/keyrotd", README.read_text())
    assert recipe is not None
    config_group = recipe.group(1)
    socket_group = values["Group"]  # owns /run/keyrotd and the socket created in it
    assert socket_group != config_group
    supplementary = " ".join(v for k, v in pairs if k == "SupplementaryGroups").split()
    assert config_group in supplementary  # the daemon still reads its configuration
    # a private user namespace maps no supplementary group: the start fails (216/GROUP)
    assert values.get("PrivateUsers", "no") == "no"
    assert f"groupadd --system {socket_group}" in README.read_text()


def test_the_container_publishes_no_admin_endpoint_over_plain_http() -> None:
    text = CONTAINERFILE.read_text()
    assert "KEYROTD_SERVER__LISTEN=0.0.0.0:8080" in text
    assert "KEYROTD_SERVER__ADMIN_LISTEN=unix:/run/keyrotd/admin.sock" in text
    assert "install -d -m 0750 -o keyrotd -g keyrotd /run/keyrotd" in text
