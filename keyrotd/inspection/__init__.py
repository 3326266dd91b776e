"""Why a token is or is not valid: a token, a key source and the time in, a verdict out (pure).

:func:`~keyrotd.inspection.checks.inspect_token` judges a token by a :class:`KeySource` (a
keyset's live keys and history, or a JWKS) at a given ``now``; :func:`render` is the text report
of the :class:`Verdict`. Nothing here reads storage, the configuration, the network or the clock:
``keyrotd inspect`` gathers those (:mod:`keyrotd.cli.inspect`). It never prints key material.
"""

from __future__ import annotations

import json

from keyrotd.inspection.checks import MAX_TOKEN, inspect_token
from keyrotd.inspection.verdict import (
    CAUSES,
    DEFAULT_SKEW,
    KeySource,
    KnownKey,
    Verdict,
)
from keyrotd.times import rfc3339

__all__ = [
    "CAUSES",
    "DEFAULT_SKEW",
    "MAX_TOKEN",
    "KeySource",
    "KnownKey",
    "Verdict",
    "inspect_token",
    "render",
]


def render(verdict: Verdict) -> str:
    """The text report: the verdict line, detail, hint, then the decoded header and claims."""
    if verdict.valid:
        lines = [f"valid: {verdict.detail}"]
    else:
        lines = [f"invalid: {verdict.cause}", f"  {verdict.detail}"]
    if verdict.hint:  # only where one helps
        lines.append(f"  hint: {verdict.hint}")
    lines.append(f"  checked against {verdict.source} at {rfc3339(verdict.checked_at, 'seconds')}")
    if verdict.header is not None:
        lines.append(f"  header: {json.dumps(verdict.header, ensure_ascii=True)}")
    if verdict.claims is not None:
        lines.append(f"  claims: {json.dumps(verdict.claims, ensure_ascii=True)}")
    return "\n".join(lines) + "\n"
