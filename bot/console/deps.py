"""What the console's routes are given: built by the composition root, read from the app."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aiohttp import web

from bot.config import Settings
from bot.crypto import Cipher
from bot.notify import Notifier
from bot.storage.reader import Reader
from bot.storage.writer import Writer
from handlers.escalation import EscalationDeps
from handlers.staff_auth import AuthPolicy, SignedIn


@dataclass(frozen=True)
class ConsoleDeps:
    settings: Settings
    clock: Callable[[], datetime]
    reader: Reader
    writer: Writer
    cipher: Cipher
    notifier: Notifier
    policy: AuthPolicy
    escalation: EscalationDeps

    @property
    def secure_cookies(self) -> bool:
        return self.settings.server.public_url.startswith("https://")


DEPS = web.AppKey("console_deps", ConsoleDeps)
ME = web.RequestKey("console_me", SignedIn)


def deps(request: web.Request) -> ConsoleDeps:
    return request.config_dict[DEPS]


def me(request: web.Request) -> SignedIn:
    """The signed-in staff member; the access middleware lets no request without one reach
    a route that calls this."""
    return request[ME]
