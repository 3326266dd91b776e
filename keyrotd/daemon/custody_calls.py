"""Where ``POST .../sign`` runs a custody's signature: never on the event loop.

A KMS answers over the network, many calls at once: a pool of threads. A PKCS#11 token answers one
call at a time in this process: python-pkcs11 initialises the module without locking callbacks
(``C_Initialize(NULL)``), which tells it that no two threads call it at once, and the custody keeps
one session under a lock (keyrotd/custody/pkcs11.py). More threads than one only queue on that
lock, and each costs wake-ups and GIL hand-overs on the way. So a token gets one thread, which
takes every request waiting at once and answers them to the loop in one wake-up, a batch at most
``HAND_BACK_AFTER`` old (docs/benchmarks.md measured why).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

_T = TypeVar("_T")
_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[..., Any], tuple[Any, ...]]
_Answer = tuple["asyncio.Future[Any]", bool, Any]

SERIAL_CUSTODIES: Final = frozenset({"pkcs11"})
"""The custodies whose calls one thread makes, in turn."""
HAND_BACK_AFTER: Final = 0.001
"""Seconds the oldest answer of a batch may wait for the rest before it goes back to the loop."""


class CustodyCalls:
    """Runs ``fn(*args)`` for a custody off the loop: in turn on one thread for a token, on a
    pool of ``workers`` threads for a KMS."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="keyrotd-custody")
        self._serial = SerialWorker("keyrotd-token")

    async def run(self, custody: str, fn: Callable[..., _T], *args: Any) -> _T:
        if custody in SERIAL_CUSTODIES:
            return await self._serial.run(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)


class SerialWorker:
    """One daemon thread, started on first use, running calls in the order they came; a call that
    never returns (a token that stopped answering) holds this thread, never the process's exit."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()
        if self._thread is None:
            self._start()
        self._calls.put((loop, future, fn, args))
        return await future

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                thread.start()
                self._thread = thread

    def _work(self) -> None:
        pending: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        oldest = 0.0
        while True:
            try:
                call = self._calls.get(block=not pending)
            except queue.Empty:  # nothing waits: the answers made so far go back now
                _hand_back(pending)
                continue
            loop, future, fn, args = call
            try:
                answer: _Answer = (future, True, fn(*args))
            except BaseException as error:  # handed to the request that waits for it
                answer = (future, False, error)
            if not pending:
                oldest = time.monotonic()
            pending.setdefault(loop, []).append(answer)
            if time.monotonic() - oldest >= HAND_BACK_AFTER:
                _hand_back(pending)


def _hand_back(pending: dict[asyncio.AbstractEventLoop, list[_Answer]]) -> None:
    for loop, answers in pending.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, answers)
    pending.clear()


def _settle(answers: list[_Answer]) -> None:
    """On the loop: each waiting request gets its answer (one cancelled meanwhile gets none)."""
    for future, ok, value in answers:
        if future.cancelled():
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
