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
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self, expire: Callable[[T], None], done: Callable[[T], bool]) -> None:
        self._expire = expire  # called once for a call still waiting at its deadline
        self._done = done
        self._waiting: dict[float, deque[tuple[float, T]]] = {}
        self._timers: dict[float, asyncio.TimerHandle] = {}

    def add(self, loop: asyncio.AbstractEventLoop, call: T, timeout: float) -> None:
        waiting = self._waiting.setdefault(timeout, deque())
        # Calls that ended leave from the front as new ones come, so the FIFO is about as
        # long as the calls in flight (behind a call that is stuck, one timeout's worth).
        while waiting and self._done(waiting[0][1]):
            waiting.popleft()
        waiting.append((loop.time() + timeout, call))
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
        while waiting and (waiting[0][0] <= now or self._done(waiting[0][1])):
            _, call = waiting.popleft()
            if not self._done(call):
                self._expire(call)
        if waiting:
            # The loop may run a timer a hair before its time: then this one waits again.
            self._timers[timeout] = loop.call_at(waiting[0][0], self._due, loop, timeout)
        else:
            del self._timers[timeout]
