"""The commit fan-out: once something is committed, whoever waits on it is told.

Two kinds of listener:
- the outbox worker, woken when a commit queued something to send;
- the console's live views (server-sent events), told what changed (a conversation, an
  escalation) so that a page reads again what it shows. A change carries a kind and a
  number, never content: the page fetches the rest with the viewer's own rights.

Everything here is called after the commit, by whoever ran the unit of work (the writer for
the outbox, the intake and the console for changes), never from inside a unit: a batch can
be rolled back and run again, and a listener must not hear of something that did not happen.
In one process the fan-out is in memory. With several processes on one PostgreSQL
database, a `Relay` carries the same calls to the other processes (LISTEN/NOTIFY).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Change:
    kind: str  # "conversation" or "escalation"
    id: int


RESYNC = Change("resync", 0)  # a view fell behind: read everything again
STREAM_BACKLOG = 256


class Stream:
    """One live view's queue of changes. It is bounded: a view that stops reading gets a
    single RESYNC in place of what it missed, and holds no more memory than that."""

    def __init__(self, index: dict[Change, set[Stream]] | None = None) -> None:
        self._queue: asyncio.Queue[Change] = asyncio.Queue(STREAM_BACKLOG)
        self._behind = False  # a RESYNC waits: anything more would be read anyway
        self._index = index  # a watching stream's entries in the notifier's index
        self._watched: set[Change] = set()

    def watch(self, *changes: Change) -> None:
        """Hear these changes too (a stream made by `Notifier.watching`)."""
        assert self._index is not None, "this stream hears every change already"
        for change in changes:
            if change not in self._watched:
                self._watched.add(change)
                self._index.setdefault(change, set()).add(self)

    def _unwatch(self) -> None:
        assert self._index is not None
        for change in self._watched:
            streams = self._index.get(change)
            if streams is not None:
                streams.discard(self)
                if not streams:
                    del self._index[change]
        self._watched.clear()

    def put(self, change: Change) -> None:
        if self._behind:
            return
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)
            self._behind = True

    async def next(self, seconds: float) -> list[Change]:
        """The changes since the last call, waiting up to `seconds` for one; [] if none."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                first = await self._queue.get()
                changes = [first]
                while not self._queue.empty():
                    changes.append(self._queue.get_nowait())
                self._behind = False
                return changes
        return []


class Relay(Protocol):
    """Carries fan-out calls to other processes sharing the database."""

    def outbox(self) -> None: ...

    def changed(self, change: Change) -> None: ...


class Notifier:
    def __init__(self) -> None:
        self._outbox_listeners: list[Callable[[], None]] = []
        self._streams: set[Stream] = set()  # hear every change (the console's views)
        # Watching streams hear only the changes they watch, found here in one look-up, so
        # a change wakes its one web chat page and not every open page (and RESYNC).
        self._watchers: set[Stream] = set()
        self._index: dict[Change, set[Stream]] = {}
        self.relay: Relay | None = None

    def on_outbox(self, listener: Callable[[], None]) -> None:
        self._outbox_listeners.append(listener)

    def outbox(self, relay: bool = True) -> None:
        """A commit queued outbound messages."""
        for listener in self._outbox_listeners:
            listener()
        if relay and self.relay is not None:
            self.relay.outbox()

    def changed(self, *changes: Change, relay: bool = True) -> None:
        for change in changes:
            for stream in self._streams:
                stream.put(change)
            for stream in self._watchers if change == RESYNC else self._index.get(change, ()):
                stream.put(change)
            if relay and self.relay is not None:
                self.relay.changed(change)

    def conversation(self, conversation_id: int | None) -> None:
        if conversation_id is not None:
            self.changed(Change("conversation", conversation_id))

    def escalation(self, escalation_id: int | None) -> None:
        if escalation_id is not None:
            self.changed(Change("escalation", escalation_id))

    @contextlib.contextmanager
    def stream(self) -> Iterator[Stream]:
        stream = Stream()
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)

    @contextlib.contextmanager
    def watching(self, *changes: Change) -> Iterator[Stream]:
        """A stream that hears only `changes` (more with `stream.watch`), and RESYNC."""
        stream = Stream(self._index)
        self._watchers.add(stream)
        stream.watch(*changes)
        try:
            yield stream
        finally:
            self._watchers.discard(stream)
            stream._unwatch()

    @property
    def streams(self) -> int:
        return len(self._streams) + len(self._watchers)
