"""Reply texts, per language, from the config's templates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from bot.config import render_template
from bot.hours import BusinessHours, describe_opening

Templates = Mapping[str, Mapping[str, str]]


def reply_text(templates: Templates, language: str, key: str, **values: str) -> str:
    return render_template(templates[language], key, **values)


def hours_status(
    templates: Templates, language: str, hours: BusinessHours, now: datetime
) -> tuple[str, datetime | None]:
    """The sentence saying whether staff are in, and the next opening when they are not."""
    if hours.is_open(now):
        return reply_text(templates, language, "hours_open"), None
    opening = hours.next_opening(now)
    if opening is None:
        return reply_text(templates, language, "hours_unknown"), None
    when = describe_opening(opening, now, language)
    return reply_text(templates, language, "hours_closed", next_opening=when), opening


def first_contact(
    templates: Templates, language: str, hours: BusinessHours, now: datetime
) -> tuple[str, datetime | None]:
    status, opening = hours_status(templates, language, hours, now)
    text = reply_text(
        templates,
        language,
        "first_contact",
        hours_status=status,
        intake_question=reply_text(templates, language, "intake_question"),
    )
    return text, opening


class FirstReplies:
    """first_contact() computed once per language and minute.

    Business hours start and end on whole minutes (and so do daylight-saving changes), so
    whether staff are in, the next opening and "today/tomorrow" cannot change within a
    minute; the calendar work is done once instead of for every new conversation.
    """

    def __init__(self, templates: Templates, hours: BusinessHours) -> None:
        self._templates = templates
        self._hours = hours
        self._cache: dict[tuple[str, datetime], tuple[str, datetime | None]] = {}

    def __call__(self, language: str, now: datetime) -> tuple[str, datetime | None]:
        key = (language, now.replace(second=0, microsecond=0))
        found = self._cache.get(key)
        if found is None:
            if len(self._cache) > 16:
                self._cache.clear()
            found = self._cache[key] = first_contact(self._templates, language, self._hours, now)
        return found
