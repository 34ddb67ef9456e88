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
