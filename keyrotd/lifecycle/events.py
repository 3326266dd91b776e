"""What happens to keys: the transitions a plan reports and the instants it changes by itself.

Apart from the commands (:mod:`keyrotd.lifecycle.commands`), so that readers of the plan's times
(``status``, its timeline, the served views) load the planner without the commands it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

EventName = Literal[
    "key.created",
    "key.activated",
    "key.retired",
    "key.expired",
    "key.revoked",
    "key.confirmed",
    "key.retained",
]
FIRST_KEY: Final = "first key of a new keyset"
IMPORTED: Final = "import --as active"


@dataclass(frozen=True)
class Transition:
    """One lifecycle event. ``exception`` names the reason when G2 was bypassed on purpose."""

    event: EventName
    kid: str
    at: datetime
    exception: str | None = None


@dataclass(frozen=True)
class Due:
    """One instant at which the plan changes by itself (no command, only time passing), what
    happens then and to which key (None: a successor not made yet). The planner says them
    (``Planner.due``); the scheduler, the served views, ``status`` and its timeline read them."""

    at: datetime
    event: EventName
    kid: str | None
    reason: str
