"""What the writing commands print of a keyset's transitions, and the refusal of a keyset that
has no keys yet: shared by ``commands``, ``backup``, ``import_command`` and ``sign_command``."""

from __future__ import annotations

from keyrotd.errors import KeyrotdError
from keyrotd.lifecycle.events import Transition
from keyrotd.model import Keyset
from keyrotd.times import rfc3339


def print_transitions(name: str, transitions: tuple[Transition, ...]) -> None:
    for t in transitions:
        note = f" (exception to publish-ahead: {t.exception})" if t.exception else ""
        print(f"{name}: {t.event} {t.kid} at {rfc3339(t.at)}{note}")


def require_keys(keyset: Keyset, location: str) -> None:
    if not keyset.keys:
        raise KeyrotdError(
            f"keyset {keyset.name} has no keys yet ({location})",
            "run `keyrotd rotate` once, or start `keyrotd run`",
        )
