"""The one answer to "was this kid ever revoked in this keyset?".

A revoked kid never comes back (docs/guarantees.md): ``import`` (and anything else that adds a key
by kid) asks :func:`ever_revoked`. The document's history remembers revoked kids (bounded by
``model.HISTORY_LIMIT``); ``elsewhere`` adds the kids a longer memory outside the document holds.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from keyrotd.model import Key, KeyState


def ever_revoked(kid: str, history: Iterable[Key], elsewhere: Collection[str] = ()) -> bool:
    """Whether ``kid`` was revoked: in the document's ``history`` or in ``elsewhere``."""
    if kid in elsewhere:
        return True
    return any(key.kid == kid and key.state is KeyState.REVOKED for key in history)
