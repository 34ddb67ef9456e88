"""One database read for many pages asking the same thing at once.

When a conversation arrives, every open queue page is told, and each fetches its rows within
a few milliseconds of the others: fifty staff online, fifty identical reads, one after the
other on the same database. Here they share one.

What keeps it fresh: a request only ever shares a read that began after it asked, so what it
gets is at least as new as a read of its own would have been. While a read of a key runs,
whoever asks waits for the next one, which begins when the running one ends, and everyone
who asked by then gets that one. Nothing is kept after a read is handed out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")


class SharedReads:
    def __init__(self) -> None:
        self._next: dict[Hashable, asyncio.Future[Any]] = {}  # asked for, not begun yet
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """`read()`'s result, from a run that began after this call. `read` must depend
        on `key` alone: whoever asks first supplies it for everyone asking with that key."""
        waiting = self._next.get(key)
        if waiting is None:
            waiting = asyncio.get_running_loop().create_future()
            # Its outcome is taken even if every asker has gone: no "never retrieved" noise.
            waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._next[key] = waiting
            task = asyncio.create_task(self._run(key, waiting, read))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        # Shielded: one asker giving up does not cancel the read the others wait for.
        return await asyncio.shield(waiting)  # type: ignore[no-any-return]

    async def _run(self, key: Hashable, future: asyncio.Future[Any],
                   read: Callable[[], Awaitable[Any]]) -> None:
        running = self._running.get(key)
        if running is not None:
            await asyncio.wait([running])  # it began before some of ours asked
        del self._next[key]  # from now on, askers wait for the read after this one
        self._running[key] = future
        try:
            future.set_result(await read())
        except asyncio.CancelledError:  # shutting down
            future.cancel()
            raise
        except Exception as exc:  # every asker gets the error, as if it had read itself
            future.set_exception(exc)
        finally:
            if self._running.get(key) is future:
                del self._running[key]
