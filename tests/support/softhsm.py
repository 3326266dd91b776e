"""A real SoftHSM2 token per test: its own SOFTHSM2_CONF and token directory (fixture `softhsm`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")


@dataclass(frozen=True)
class SoftHsm:
    module: Path
    label: str
    pin: str
    conf: Path

    def custody(self, directory: Path, pin_line: bool = False) -> dict[str, str]:
        """The ``[custody]`` settings of this token, its PIN written to ``directory/pin`` (0600;
        ``pin_line``: ending in a newline, as ``echo`` writes it)."""
        pin_file = directory / "pin"
        pin_file.write_text(self.pin + ("\n" if pin_line else ""))
        pin_file.chmod(0o600)
        return {
            "pkcs11_module": str(self.module),
            "pkcs11_token_label": self.label,
            "pkcs11_pin_file": str(pin_file),
        }

    def custody_toml(self, directory: Path, pin_line: bool = False) -> str:
        """:meth:`custody` as the ``[custody]`` table of a configuration file."""
        settings = self.custody(directory, pin_line)
        return "[custody]\n" + "".join(f'{name} = "{value}"\n' for name, value in settings.items())


@pytest.fixture
def softhsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SoftHsm:
    if not MODULE.exists() or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (Debian package softhsm2)")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    pin = os.urandom(8).hex()
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "keyrotd-test",
            "--pin",
            pin,
            "--so-pin",
            os.urandom(8).hex(),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOFTHSM2_CONF": str(conf)},
    )
    # SoftHSM2 reads SOFTHSM2_CONF when the library is initialised, once a process: start it
    # anew on this test's token directory.
    import pkcs11

    library = pkcs11.lib(str(MODULE))
    library.reinitialize()
    return SoftHsm(module=MODULE, label="keyrotd-test", pin=pin, conf=conf)
