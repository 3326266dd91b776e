"""The Kubernetes signer's checks (docs/kubernetes.md); its settings are
``models.KubernetesSettings``.

The API server verifies RS256, ES256, ES384 and ES512 only, refuses a signer whose longest token
lifetime is under 600 s, and republishes the keys it fetched with a cache lifetime of its own: the
signer keyset's ``publish_ahead`` must cover one more ``jwks_max_age`` than other keysets'.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Final

from keyrotd.config.messages import config_error
from keyrotd.config.models import KeysetSettings, Settings
from keyrotd.durations import format_duration, quote

SIGNER_ALGORITHMS: Final = ("RS256", "ES256", "ES384", "ES512")
MIN_TOKEN_LIFETIME: Final = timedelta(seconds=600)


def signer_keyset(settings: Settings) -> KeysetSettings | None:
    """The keyset that signs service-account tokens, when the signer is configured."""
    kubernetes = settings.kubernetes
    if kubernetes.signer_socket is None:
        return None
    if not kubernetes.signer_keyset:
        return settings.keysets[0]
    return next((k for k in settings.keysets if k.name == kubernetes.signer_keyset), None)


def check_signer(settings: Settings, label: str) -> None:
    """Refuse a signer keyset the API server cannot use, or whose policy its cache breaks."""
    if settings.kubernetes.signer_socket is None:
        return
    keyset = signer_keyset(settings)
    if keyset is None:
        known = ", ".join(k.name for k in settings.keysets)
        raise config_error(
            f"{label}: kubernetes.signer_keyset {quote(settings.kubernetes.signer_keyset)} "
            "names no keyset",
            f"use one of: {known}",
        )
    where = f"kubernetes.signer_keyset ({keyset.name})"
    if keyset.algorithm not in SIGNER_ALGORITHMS:
        raise config_error(
            f"{label}: {where} uses {keyset.algorithm}, which the Kubernetes API server does "
            "not verify",
            f"use a keyset of {', '.join(SIGNER_ALGORITHMS)}",
        )
    if keyset.token_lifetime < MIN_TOKEN_LIFETIME:
        raise config_error(
            f"{label}: {where} has token_lifetime {format_duration(keyset.token_lifetime)}, "
            "below the API server's floor of 600s",
            "raise its token_lifetime to 10m or more",
        )
    server = settings.server
    refresh, max_age = server.refresh_interval, server.jwks_max_age
    needed = refresh + max_age + max(max_age, keyset.verifier_cache)
    if keyset.publish_ahead <= needed:
        raise config_error(
            f"{label}: {where} publish_ahead ({format_duration(keyset.publish_ahead)}) is not "
            "above server.refresh_interval + server.jwks_max_age + max(server.jwks_max_age, "
            f"verifier_cache) ({format_duration(needed)}): the API server republishes the "
            "keys it fetched with a cache lifetime of its own",
            f"raise publish_ahead above {format_duration(needed)}",
        )


def check_signer_socket(settings: Settings) -> None:
    """The socket's directory exists and grpcio is installed (``run`` and ``check-config``; not a
    storage read, and grpcio is looked for, never imported)."""
    from importlib.util import find_spec

    from keyrotd.config.messages import missing_socket_directory

    path: Path | None = settings.kubernetes.signer_socket
    if path is None:
        return
    if not path.parent.is_dir():
        raise missing_socket_directory("kubernetes.signer_socket", path)
    if find_spec("grpc") is None:
        raise config_error(
            "kubernetes.signer_socket is set but grpcio is not installed",
            "pip install 'keyrotd[kubernetes]' (or remove [kubernetes] signer_socket)",
        )
