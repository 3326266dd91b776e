"""What one poll of the ``observe`` URLs saw: the input of the propagation rule.

The daemon's observer polls each URL the way a verifier would (``daemon/observe_fetch.py``) and
hands the planner one :class:`Poll` (``lifecycle.commands.Observed``), to which
:mod:`keyrotd.propagation` applies the rule. Apart from the rule, so that readers of a keyset's
progress (``status``) load the rule without the polls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Answer:
    """One URL's answer to one poll: the kids served (None: an error) and its cache lifetime."""

    kids: frozenset[str] | None
    max_age: timedelta = timedelta(0)

    def serves(self, kid: str) -> bool:
        return self.kids is not None and kid in self.kids


@dataclass(frozen=True)
class Poll:
    """The answers of one poll of every observed URL, all received by ``at``."""

    at: datetime
    answers: Mapping[str, Answer]
    refresh_interval: timedelta = timedelta(0)
