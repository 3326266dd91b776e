"""Crashes on a keyset in PKCS#11 custody (docs/issuers.md): writers SIGKILLed at random moments
on a real SoftHSM2 token, mostly while they make keys in it or write the document.

After every kill the store loads with one active key and nothing lost (the checks of
``test_crash.py``), and every key the document may sign with is still in the token. Once the
10-minute grace has passed (a writer whose clock is 11 minutes later), the token holds exactly
the keys the document names: every object labelled ``keyrotd/default/...`` belongs to one of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from keyrotd.custody.pkcs11 import LABEL_PREFIX, Pkcs11Custody
from keyrotd.lifecycle.commands import TICK
from keyrotd.model import Keyset
from keyrotd.writer import KeysetSpec, KeysetWriter
from tests.support.softhsm import SoftHsm

from .crash_harness import POLICY, CrashRun

KILLS = 110
WORKER = Path(__file__).with_name("crash_worker_custody.py")


def named(keyset: Keyset) -> set[str]:
    """The handles of the keys whose private half the document keeps in custody."""
    return {k.handle for k in keyset.keys if k.handle is not None and k.holds_private}


class CustodyCrashRun(CrashRun):
    """:class:`CrashRun` on a keyset whose keys live in the test's SoftHSM2 token."""

    hsm: SoftHsm
    lives_with_orphans = 0
    unavailable = 0
    """Temporary errors the writers met (and retried)."""

    def custody(self) -> Pkcs11Custody:
        if not hasattr(self, "_custody"):
            self._custody = Pkcs11Custody(self.hsm.module, self.hsm.label, self.hsm.pin)
        return self._custody

    def spec(self) -> KeysetSpec:
        return KeysetSpec("default", self.algorithm, 2048, POLICY, custody="pkcs11")

    def _bootstrap(self) -> None:
        outcome = KeysetWriter(
            self.storage(), self.spec(), self.now, custody=self.custody()
        ).apply()
        self.history.report(outcome.transitions)
        self.history.observe(outcome.keyset)

    def _replay(self, lines: list[str]) -> str | None:
        self.unavailable += sum(line.startswith("U ") for line in lines)
        return super()._replay(lines)

    def check(self, in_flight: str | None) -> None:
        super().check(in_flight)
        keyset = self.load()
        held = {k.handle for k in self.custody().held("default")}
        missing = named(keyset) - held
        assert not missing, f"keys the document signs with are gone from the token: {missing}"
        if held - named(keyset):
            self.lives_with_orphans += 1

    def labelled_objects(self) -> dict[str, set[str]]:
        """Every object (either half) keyrotd labelled for the keyset: id -> object classes."""
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        found: dict[str, set[str]] = {}

        def scan(session: Any) -> None:
            # objects with key material, either half (a writer killed mid-generation may leave a
            # public half alone); one whose attributes cannot be read is labelled by nobody
            for kind in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY, ObjectClass.SECRET_KEY):
                for obj in session.get_objects({Attribute.CLASS: kind}):
                    try:
                        label = str(obj[Attribute.LABEL])
                        kid = bytes(obj[Attribute.ID]).decode("ascii", "replace")
                    except pkcs11.exceptions.PKCS11Error:
                        continue
                    if label.startswith(f"{LABEL_PREFIX}default/"):
                        found.setdefault(kid, set()).add(str(kind))

        self.custody()._run("scanning", scan)
        return found


@pytest.fixture
def run(tmp_path: Path, softhsm: SoftHsm) -> Iterator[CustodyCrashRun]:
    CustodyCrashRun.hsm = softhsm
    extra: dict[str, object] = {
        "module": str(softhsm.module),
        "token_label": softhsm.label,
        "pin": softhsm.pin,
    }
    crash = CustodyCrashRun(
        tmp_path,
        encrypted=False,
        algorithm="ES256",
        seed=21,
        worker=WORKER,
        extra=extra,
        ready_line="L",
    )
    try:
        yield crash
    finally:
        crash.close()
        crash.custody().close()


@pytest.mark.slow
def test_sigkilled_custody_writers_lose_nothing_and_leave_no_orphan_after_the_grace(
    run: CustodyCrashRun,
) -> None:
    while run.figures.lives < KILLS:
        run.life(max_delay=0.4)
    print(
        run.figures.line("pkcs11"),
        f"; {run.lives_with_orphans} kills left orphans; {run.unavailable} temporary errors",
    )
    assert run.figures.kills_in_flight > 0
    assert run.figures.rotations > 10, "the writers make no progress"
    assert run.lives_with_orphans > 0, "no kill landed between making a key and writing it"

    # A clean writer 11 minutes later: its sweep destroys every orphan, whatever its age was.
    later = run.now() + timedelta(minutes=11)
    manager = KeysetWriter(run.storage(), run.spec(), lambda: later, custody=run.custody())
    manager.apply(TICK)
    keyset = manager.load().keyset
    run.history.observe(keyset, later)
    run.history.check_nothing_lost(keyset)
    objects = run.labelled_objects()
    assert set(objects) == named(keyset), (
        f"custody holds keys the document does not name: {objects}"
    )
    for kid, classes in objects.items():
        assert len(classes) == 2, f"{kid}: only {classes}"
