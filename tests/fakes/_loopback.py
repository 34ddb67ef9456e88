"""What both fake provider servers share: a loopback aiohttp server and event-driven waits."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import TypeVar

from aiohttp import web

T = TypeVar("T")


class Signal:
    """Wakes everyone currently waiting.

    ``fire`` is synchronous so plain methods such as ``push_update`` can call it; each waiter
    re-checks its own condition, so spurious wake-ups are harmless.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait_until(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``condition()`` is true; return False if ``seconds`` pass first."""
        try:
            async with asyncio.timeout(seconds):
                while not condition():
                    await self._event.wait()
        except TimeoutError:
            return condition()
        return True


class LoopbackServer:
    """Serves an aiohttp app on 127.0.0.1 with a port the OS picks, so fakes never collide."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.closed = False
        # Fired on close so handlers that are hanging or long-polling return at once
        # instead of holding up shutdown.
        self.closing = Signal()

    @property
    def origin(self) -> str:
        if self._port is None:
            raise RuntimeError("server not started; await start() first")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("server already started")
        # No access log: tests read recorded calls, not log lines.
        runner = web.AppRunner(self._app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]

    async def close(self) -> None:
        self.closed = True
        self.closing.fire()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def pause(self, seconds: float) -> None:
        """Sleep like a slow provider, but stop early if the server is closing."""
        await self.closing.wait_until(lambda: self.closed, seconds)


def take_first(queue: deque[T], wanted: Callable[[T], bool]) -> T | None:
    """Pop the first queued fault that ``wanted`` accepts; later ones keep their order."""
    for entry in queue:
        if wanted(entry):
            queue.remove(entry)
            return entry
    return None


def client_gone(request: web.Request) -> bool:
    """True if the caller hung up, e.g. its timeout fired while we were stalling."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait_for_count(
    items: Sequence[T], changed: Signal, n: int, seconds: float, what: str
) -> list[T]:
    if not await changed.wait_until(lambda: len(items) >= n, seconds):
        raise AssertionError(
            f"expected at least {n} {what} within {seconds}s, got {len(items)}: {list(items)!r}"
        )
    return list(items)
