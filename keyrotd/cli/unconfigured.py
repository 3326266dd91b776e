"""The keysets storage holds that the configuration no longer lists, as ``status`` notes them.

A running daemon keeps serving such a keyset's JWKS, rotating nothing, until its restart
(docs/operations.md). Storage lists its keysets with ``Storage.list_keysets``: the file store from
its directory, AWS with ``ListSecrets`` under the prefix; where listing fails (AWS without
``secretsmanager:ListSecrets``) the note is left out, the status is not.
"""

from __future__ import annotations

from keyrotd.config import Settings
from keyrotd.errors import KeyrotdError
from keyrotd.storage import Storage


def unconfigured(settings: Settings, storage: Storage) -> list[str]:
    """The stored keysets the configuration does not list, by name ([] where none or unknown)."""
    try:
        stored = storage.list_keysets()
    except KeyrotdError:
        return []
    configured = {keyset.name for keyset in settings.keysets}
    return sorted(name for name in stored if name not in configured)


def unconfigured_note(names: list[str]) -> str:
    """One line for the end of ``status``."""
    which = f"keyset {names[0]}" if len(names) == 1 else "keysets " + ", ".join(names)
    return (
        f"note: storage also holds {which}, which the configuration no longer lists: a running "
        "daemon serves its JWKS until it restarts, and nothing rotates it\n"
    )
