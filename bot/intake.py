"""Taking a message in, whatever happens to the database.

Channels call `Intake.take`. It runs the inbound handler through the writer; if the database
cannot take the message in time, the message goes to the encrypted spool instead, and the
channel answers the contact with the safety text straight away. `drain_spool` takes spooled
messages in once the database is back.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy.exc import InterfaceError, OperationalError

from bot.domain import DuplicateMessage, InboundMessage, Language
from bot.metrics import Metrics
from bot.notify import Notifier
from bot.spool import Spool
from bot.storage.writer import Writer, WriterStopped
from handlers.inbound import InboundDeps, take_in
from handlers.keywords import Keyword, looks_spanish, match_keyword
from handlers.replies import reply_text

log = logging.getLogger(__name__)
# No reply at all to these, even in a failure: STOP is confirmed by the provider, and EXIT
# must leave nothing on the screen.
SILENT_KEYWORDS = {Keyword.OPT_OUT, Keyword.EXIT}
# Failures that mean "the database is not there", after which draining waits.
DATABASE_DOWN = (OperationalError, InterfaceError, TimeoutError, WriterStopped)


class Taken(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    SPOOLED = "spooled"


class SpoolFailed(RuntimeError):
    """Neither the database nor the spool could keep the message."""


class Intake:
    def __init__(
        self,
        writer: Writer,
        deps: InboundDeps,
        spool: Spool,
        clock: Callable[[], datetime],
        write_timeout: float,
        notifier: Notifier,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self._writer = writer
        self._deps = deps
        self._spool = spool
        self._clock = clock
        self._write_timeout = write_timeout

    async def take(self, msg: InboundMessage) -> Taken:
        taken = await self._take(msg)
        if self._metrics is not None:
            self._metrics.taken(msg.channel.value, taken.value)
        return taken

    async def _take(self, msg: InboundMessage) -> Taken:
        now = self._clock()
        try:
            outcome = await self._writer.run(
                lambda session: take_in(session, msg, self._deps, now), self._write_timeout
            )
            self._notifier.conversation(outcome.conversation_id)
            self._notifier.escalation(outcome.escalation_id)
            return Taken.STORED
        except DuplicateMessage:
            log.info("inbound_duplicate", extra={"channel": msg.channel.value})
            return Taken.DUPLICATE
        except Exception as exc:
            log.error("inbound_store_failed", extra={"channel": msg.channel.value,
                                                     "error": type(exc).__name__})
        try:
            self._spool.put(msg)
        except OSError as exc:
            log.critical("inbound_spool_failed", extra={"channel": msg.channel.value,
                                                        "error": type(exc).__name__})
            raise SpoolFailed from exc
        log.warning("inbound_spooled", extra={"channel": msg.channel.value})
        return Taken.SPOOLED

    def fallback_text(self, msg: InboundMessage) -> str | None:
        """The safety text for a contact whose message could not be taken in normally.
        Pure: it needs no database."""
        if match_keyword(msg.text, opted_out=False) in SILENT_KEYWORDS:
            return None
        language = Language.ES if looks_spanish(msg.text) else Language.EN
        return reply_text(self._deps.templates, language, "safety")

    async def drain_spool(self) -> int:
        """Take spooled messages in, oldest first; stop at the first database failure."""
        with self._spool.draining() as mine:
            return await self._drain() if mine else 0

    async def _drain(self) -> int:
        taken = 0
        for path, msg in self._spool:
            if msg is None:
                log.error("spool_unreadable", extra={"file": path.name})
                self._spool.hold(path)
                continue
            try:
                outcome = await self._writer.run(
                    lambda s, m=msg: take_in(s, m, self._deps, self._clock(), auto_reply=False),
                    self._write_timeout,
                )
                self._notifier.conversation(outcome.conversation_id)
                self._notifier.escalation(outcome.escalation_id)
            except DuplicateMessage:
                pass
            except DATABASE_DOWN as exc:
                log.warning("spool_drain_paused", extra={"error": type(exc).__name__})
                break
            except Exception as exc:
                # This message fails on its own, every time: set it aside for a person to
                # look at, so it cannot hold up the messages behind it.
                log.error("spool_message_held", extra={"file": path.name,
                                                       "error": type(exc).__name__})
                self._spool.hold(path)
                continue
            self._spool.remove(path)
            taken += 1
        if taken:
            log.info("spool_drained", extra={"count": taken})
        return taken
