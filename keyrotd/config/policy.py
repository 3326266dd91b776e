"""The policy check: refuse settings that cannot keep the guarantees (docs/guarantees.md)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from keyrotd.config.kubernetes import check_signer
from keyrotd.config.messages import config_error
from keyrotd.durations import format_duration, quote

if TYPE_CHECKING:
    from keyrotd.config.models import KeysetSettings, ServerSettings, Settings
    from keyrotd.rotating import RotateTimes


def check_policy(settings: Settings) -> None:
    """Refuse a policy that cannot keep the guarantees (docs/guarantees.md)."""
    label = "configuration" if settings.config_file is None else str(settings.config_file)
    server = settings.server
    _at_least(label, "server.refresh_interval", server.refresh_interval, above_zero=True)
    _at_least(label, "server.jwks_max_age", server.jwks_max_age, above_zero=False)
    first_index: dict[str, int] = {}
    for index, keyset in enumerate(settings.keysets):
        if keyset.name in first_index:
            raise config_error(
                f"{label}: keysets[{index}].name {quote(keyset.name)} is already the name of "
                f"keysets[{first_index[keyset.name]}]",
                "give every keyset its own name",
            )
        first_index[keyset.name] = index
        _check_keyset(label, f"keysets[{index}]", keyset, server)
    check_signer(settings, label)


def _check_keyset(label: str, where: str, keyset: KeysetSettings, server: ServerSettings) -> None:
    _at_least(label, f"{where}.rotation_period", keyset.rotation_period, above_zero=True)
    _at_least(label, f"{where}.publish_ahead", keyset.publish_ahead, above_zero=True)
    _at_least(label, f"{where}.token_lifetime", keyset.token_lifetime, above_zero=True)
    _at_least(label, f"{where}.clock_skew", keyset.clock_skew, above_zero=False)
    _at_least(label, f"{where}.verifier_cache", keyset.verifier_cache, above_zero=False)
    ahead, period = keyset.publish_ahead, keyset.rotation_period
    if ahead > period:
        raise config_error(
            f"{label}: {where}.publish_ahead ({format_duration(ahead)}) is longer than "
            f"{where}.rotation_period ({format_duration(period)})",
            "a key is published at most one rotation period ahead: "
            "lower publish_ahead or raise rotation_period",
        )
    refresh, max_age, cache = server.refresh_interval, server.jwks_max_age, keyset.verifier_cache
    propagation = settle_time(server, keyset)
    if ahead <= propagation:
        raise config_error(
            f"{label}: {where}.publish_ahead ({format_duration(ahead)}) is not above "
            f"server.refresh_interval + max(server.jwks_max_age, {where}.verifier_cache) "
            f"({format_duration(refresh)} + max({format_duration(max_age)}, "
            f"{format_duration(cache)}) = {format_duration(propagation)})",
            f"verifiers could miss a new key before it signs: raise publish_ahead above "
            f"{format_duration(propagation)}, or lower refresh_interval or jwks_max_age "
            "(verifier_cache only if every verifier refetches sooner: see docs/guarantees.md)",
        )


def settle_time(server: ServerSettings, keyset: KeysetSettings) -> timedelta:
    """How long after its publication every verifier may hold a key: a daemon serves it within
    ``refresh_interval``, a verifier refetches within ``max(jwks_max_age, verifier_cache)``.
    ``publish_ahead`` must exceed it, and ``rotate --now`` waits for it (``keyrotd.rotating``)."""
    return server.refresh_interval + max(server.jwks_max_age, keyset.verifier_cache)


def rotate_times(server: ServerSettings, keyset: KeysetSettings) -> RotateTimes:
    """The times a rotate of ``keyset`` goes by (``keyrotd.rotating``)."""
    from keyrotd.rotating import RotateTimes  # rotate only: not on every load

    return RotateTimes(keyset.publish_ahead, settle_time(server, keyset))


def _at_least(label: str, setting: str, value: timedelta, *, above_zero: bool) -> None:
    if value < timedelta(0) or (above_zero and value == timedelta(0)):
        bound, hint = ("above 0s", "use e.g. 30s") if above_zero else ("0s or more", "use e.g. 0s")
        raise config_error(f"{label}: {setting} ({format_duration(value)}) must be {bound}", hint)
