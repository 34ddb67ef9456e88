"""How times and labels read on console pages."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

CATEGORIES = {
    "need_help_now": "Needs help now",
    "connect_services": "Connect with services",
    "get_involved": "Get involved",
    "other": "Other",
}
CHANNELS = {"sms": "SMS", "telegram": "Telegram", "web": "Web chat"}
OUTCOMES = {
    "referred": "Referred",
    "information_given": "Information given",
    "no_response": "No response",
    "spam": "Spam",
    "quick_exit": "Contact closed it (EXIT)",
    "erased": "Erased by the contact",
}
LANGUAGES = {"en": "English", "es": "Spanish"}


def waited(since: datetime | None, now: datetime) -> str:
    """'4 min', '2 h 5 min', '3 days': how long someone has been waiting."""
    if since is None:
        return "answered"
    minutes = max(int((now - since).total_seconds() // 60), 0)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days = hours // 24
    return "1 day" if days == 1 else f"{days} days"


def filters(zone: ZoneInfo, clock: Callable[[], datetime]) -> dict[str, Callable[..., Any]]:
    def local(moment: datetime | None) -> str:
        if moment is None:
            return ""
        here = moment.astimezone(zone)
        today = clock().astimezone(zone).date()
        if here.date() == today:
            return here.strftime("%H:%M")
        return here.strftime("%a %d %b %H:%M")

    return {
        "local": local,
        "waited": lambda since: waited(since, clock()),
        "category": lambda key: CATEGORIES.get(key or "", "Not said yet"),
        "channel": lambda key: CHANNELS.get(key, key),
        "outcome": lambda key: OUTCOMES.get(key or "", key or ""),
        "language": lambda key: LANGUAGES.get(key, key),
    }
