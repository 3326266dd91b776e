"""Custody: where the private halves of a keyset's keys live when not in its document.

``storage`` custody keeps them in the document; ``pkcs11`` and ``aws-kms`` keep them in a token or
a KMS, and the document holds only each key's public JWK and its handle (docs/issuers.md). The
seam is :mod:`keyrotd.custody.interface`; each custody is one module, imported only when a keyset
is configured with it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from keyrotd.errors import ConfigError

if TYPE_CHECKING:
    from keyrotd.config import Settings
    from keyrotd.custody.interface import Custody

PIN_SETTING = "custody.pkcs11_pin_file"

_opened: dict[tuple[str, object], Custody] = {}
_opening = threading.Lock()


def check_custody(settings: Settings) -> None:
    """What ``run`` and ``check-config`` check of the custodies the keysets use, without logging
    in to a token or calling KMS: the module exists, the PIN file passes the secret-file rule,
    KMS has a region."""
    kinds = {keyset.custody for keyset in settings.keysets}
    custody = settings.custody
    if "pkcs11" in kinds:
        module = custody.pkcs11_module
        assert module is not None  # the settings refuse a pkcs11 keyset without it
        if not module.is_file():
            raise ConfigError(
                f"custody.pkcs11_module {module} does not exist",
                "give the path of the token's PKCS#11 library, e.g. "
                "/usr/lib/softhsm/libsofthsm2.so",
            )
        read_pin(settings)
    if "aws-kms" in kinds and not custody.aws_kms_region:
        import botocore.session

        if not botocore.session.get_session().get_config_variable("region"):
            raise ConfigError(
                "no AWS region is set for the aws-kms custody",
                "set custody.aws_kms_region (KEYROTD_CUSTODY__AWS_KMS_REGION) or AWS_REGION",
            )


def read_pin(settings: Settings) -> str:
    from keyrotd.secretfiles import read_secret_file

    path = settings.custody.pkcs11_pin_file
    assert path is not None
    pin = read_secret_file(path, PIN_SETTING, max_size=256).strip()
    if not pin:
        raise ConfigError(f"{PIN_SETTING} {path} is empty", "write the token's user PIN into it")
    return pin.decode("utf-8", "replace")


def open_custody(settings: Settings, kind: str) -> Custody:
    """The process's one custody of ``kind`` (``pkcs11`` or ``aws-kms``), opened on first use:
    a PKCS#11 library is initialised once a process, and a KMS client is worth sharing."""
    key = (kind, settings.custody)
    with _opening:
        opened = _opened.get(key)
        if opened is not None:
            return opened
        made: Custody
        if kind == "pkcs11":
            from keyrotd.custody.pkcs11 import Pkcs11Custody

            module = settings.custody.pkcs11_module
            assert module is not None
            made = Pkcs11Custody(module, settings.custody.pkcs11_token_label, read_pin(settings))
        elif kind == "aws-kms":
            from keyrotd.custody.aws_kms import KmsCustody

            made = KmsCustody(
                settings.custody.aws_kms_region, settings.custody.aws_kms_endpoint_url
            )
        else:
            raise ValueError(f"no custody {kind!r}")
        _opened[key] = made
        return made


def close_all() -> None:
    """Close every custody this process opened (at exit, and between tests)."""
    with _opening:
        for custody in _opened.values():
            custody.close()
        _opened.clear()
