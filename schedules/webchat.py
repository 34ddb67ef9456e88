"""End web chats that have been idle past `[webchat] idle_minutes`: staff then see that the
contact has left, and nothing more can be sent to them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from bot.config import Settings
from bot.notify import Notifier
from bot.storage.writer import Writer
from handlers.webchat import expire_idle


class ExpiryDeps(Protocol):
    settings: Settings
    writer: Writer
    notifier: Notifier
    clock: Callable[[], datetime]


async def expire_job(deps: ExpiryDeps) -> list[int]:
    now = deps.clock()
    idle = timedelta(minutes=deps.settings.webchat.idle_minutes)
    changed = await deps.writer.run(lambda s: expire_idle(s, idle, now))
    for conversation_id in changed:
        deps.notifier.conversation(conversation_id)
    return changed
