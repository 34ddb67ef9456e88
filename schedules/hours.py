"""At each opening, one line to the staff chat (`[console] staff_chat_id`): how many wait,
and how many emergencies came in while staff were out. Any number of replicas run this; the
opening's unique row lets one of them send it, once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from bot.config import Settings
from bot.crypto import Cipher
from bot.storage.writer import Writer
from handlers.staff_notices import StaffChat, opening_digest

log = logging.getLogger(__name__)


class DigestDeps(Protocol):
    settings: Settings
    writer: Writer
    cipher: Cipher
    clock: Callable[[], datetime]


async def digest_job(deps: DigestDeps) -> datetime | None:
    settings = deps.settings
    chat = StaffChat(settings.console.staff_chat_id, settings.server.public_url)
    now = deps.clock()
    try:
        return await deps.writer.run(
            lambda s: opening_digest(s, chat, deps.cipher, settings.hours, now))
    except Exception as exc:  # the database is down: the next run tries again
        log.warning("opening_digest_failed", extra={"error": type(exc).__name__})
        return None
