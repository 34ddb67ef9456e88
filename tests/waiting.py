"""Waiting in tests, in one place: for something to happen (a condition polled up to a
deadline), and for quiet (the outbox has nothing left to send, see Service.outbox_idle), after
which a test may assert that nothing more was sent. Nothing here proves absence by sleeping."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
SECONDS = 5.0
EVERY = 0.02


async def eventually(
    check: Callable[[], T | Awaitable[T]],
    what: str | Callable[[], str],
    seconds: float = SECONDS,
    every: float = EVERY,
) -> T:
    """Call `check` (plain or async) until it returns something truthy, and return that.

    After `seconds`, fail with AssertionError naming `what`: a string, or a function that
    makes one at that moment (say, with the end of a service's log). `check` may itself
    raise AssertionError to stop at once (a process that died, say)."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {seconds}s for {what() if callable(what) else what}")
        await asyncio.sleep(every)
