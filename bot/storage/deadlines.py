"""Callers' timeouts on the writer: one timer per timeout length, not one per call.

Every inbound message waits on the writer with the same write timeout, and a timer per
message (call_later, then cancel once it committed) cost about 2% of a message's CPU
(README, Benchmarks). Calls with one timeout length reach their deadlines in the order they
began to wait, so each length keeps its calls in a FIFO, and one timer waits for the oldest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self, expire: Callable[[T], None]) -> None:
        self._expire = expire  # called once for a call whose future is not done at its deadline
        self._waiting: dict[float, deque[tuple[float, asyncio.Future[Any], T]]] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}

    def add(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], call: T,
            timeout: float) -> None:
        waiting = self._waiting.setdefault(timeout, deque())
        # Calls that ended leave from the front as new ones come, so the FIFO is about as
        # long as the calls in flight (behind a call that is stuck, one timeout's worth).
        while waiting and waiting[0][1].done():
            waiting.popleft()
        waiting.append((loop.time() + timeout, future, call))
        if timeout not in self._timers:
            self._timers[timeout] = loop.call_at(waiting[0][0], self._due, loop, timeout)

    def cancel(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()

    def _due(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        waiting = self._waiting[timeout]
        now = loop.time()
        while waiting and (waiting[0][0] <= now or waiting[0][1].done()):
            _, future, call = waiting.popleft()
            if not future.done():
                self._expire(call)
        if waiting:
            # The loop may run a timer a hair before its time: then this one waits again.
            self._timers[timeout] = loop.call_at(waiting[0][0], self._due, loop, timeout)
        else:
            del self._timers[timeout]
