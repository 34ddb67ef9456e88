"""What the Twilio webhooks take: a UTF-8 form body, and fields shaped as Twilio sends them.

Twilio posts application/x-www-form-urlencoded in UTF-8, and each field we read has one
known shape. A request that is anything else did not come from Twilio, or came from a
Twilio that is broken; either way it is refused with a 4xx before it can change anything.
Signed values are checked too: a valid signature proves who sent a value, not that it is sane.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import unquote

from aiohttp import web
from multidict import MultiDict

from bot.domain import MAX_TEXT_CHARS

FORM_TYPE = "application/x-www-form-urlencoded"
# Every MessageStatus a Twilio message resource can report.
MESSAGE_STATUSES = frozenset({
    "accepted", "scheduled", "canceled", "queued", "sending", "sent", "failed", "delivered",
    "undelivered", "receiving", "received", "read", "partially_delivered",
})  # fmt: skip

Check = Callable[[str], object]  # truthy when the value is well formed


def _shaped(pattern: str) -> Check:
    # ASCII digits only ([0-9], never \d, which matches every script's digits), and fullmatch
    # so that nothing (a newline, a NUL) can trail the match.
    return re.compile(pattern).fullmatch


# E.164 (+, then 7 to 15 digits, not starting with 0), or a short code of 3 to 8 digits.
ADDRESS = _shaped(r"\+[1-9][0-9]{6,14}|[0-9]{3,8}")
# A Twilio SID: two capital letters and 32 hex digits (SM..., MM...).
SID = _shaped(r"[A-Z]{2}[0-9a-fA-F]{32}")
MEDIA_COUNT = _shaped(r"10|[0-9]")  # Twilio takes at most 10 media in one message
ERROR_CODE = _shaped(r"[0-9]{0,6}")  # five digits today; empty means none


def _body(value: str) -> bool:
    return len(value) <= MAX_TEXT_CHARS


def _status(value: str) -> bool:
    return value in MESSAGE_STATUSES


@dataclass(frozen=True)
class Rule:
    check: Check
    required: bool = True


# Only the fields we read. The rest (FromCity, ToZip, ...) are signed but never looked at.
INBOUND_FIELDS: Mapping[str, Rule] = {
    "From": Rule(ADDRESS),
    "To": Rule(ADDRESS),  # our number the contact wrote to: replies come from it
    "MessageSid": Rule(SID),
    "SmsSid": Rule(SID, required=False),  # the same value, kept by Twilio for old code
    "NumMedia": Rule(MEDIA_COUNT, required=False),
    "Body": Rule(_body, required=False),
}
STATUS_FIELDS: Mapping[str, Rule] = {
    "MessageSid": Rule(SID),
    "SmsSid": Rule(SID, required=False),
    "MessageStatus": Rule(_status),
    "ErrorCode": Rule(ERROR_CODE, required=False),
}


class FieldInvalid(web.HTTPBadRequest):
    """A signed field Twilio would never send. Carries the field's name, never its value."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(text=f"field {name} {problem}")
        self.field = name


def is_utf8_form(content_type: str | None) -> bool:
    """True for a form whose charset is UTF-8 or not given.

    Parsed here rather than with aiohttp's request.content_type: that goes through the
    stdlib email parser, which raises IndexError on a header such as "...;a*". Every
    parameter whose name starts with "charset" counts (charset*, charset*0, a second
    charset), so none of them can slip another encoding past us."""
    if content_type is None:
        return False
    media_type, *params = content_type.split(";")
    if media_type.strip().lower() != FORM_TYPE:
        return False
    for param in params:
        name, _, value = param.partition("=")
        charset = value.strip().strip('"').strip().lower()
        if name.strip().lower().startswith("charset") and charset != "utf-8":
            return False
    return True


def parse_form(body: bytes) -> MultiDict[str]:
    """The fields of a form body, read as UTF-8 whatever the request claimed.

    Strict UTF-8 both for the raw bytes and for what the %-escapes decode to: Twilio signs
    the decoded text, and a lenient decoder would turn %FF into U+FFFD, a value nobody sent.
    Blank values are kept because Twilio signs them too (an MMS posts "Body=").

    The same pairs as parse_qsl(text, keep_blank_values=True, errors="strict")
    (tests/test_webhook_bad_input.py holds it to that), in a third of the time: parse_qsl
    coerces and unquotes every name and value, and most have nothing to unquote."""
    try:
        text = body.rstrip().decode("utf-8")  # rstrip: as aiohttp's form parser did
        pairs = []
        for field in text.split("&"):
            if field:
                name, _, value = field.partition("=")
                # Tested here rather than in _unquote: most fields need nothing, and a call
                # per name and value was a third of the parse.
                pairs.append((_unquote(name) if "%" in name or "+" in name else name,
                              _unquote(value) if "%" in value or "+" in value else value))
    except ValueError:  # UnicodeDecodeError included
        raise web.HTTPBadRequest(text="body is not a UTF-8 form") from None
    return MultiDict(pairs)


def _unquote(text: str) -> str:
    if "+" in text:
        text = text.replace("+", " ")
    if "%" not in text:
        return text
    # The "+" of a phone number is most of what Twilio escapes: it is replaced before
    # unquote. A "+" can neither begin nor end an escape, so the rest decodes as before.
    text = text.replace("%2B", "+")
    return unquote(text, encoding="utf-8", errors="strict") if "%" in text else text


def checked_fields(form: MultiDict[str], rules: Mapping[str, Rule]) -> dict[str, str]:
    """Each ruled field's one value ("" when it is optional and absent), or FieldInvalid."""
    fields: dict[str, str] = {}
    for name, rule in rules.items():
        values = form.getall(name, [])
        if len(values) > 1:
            raise FieldInvalid(name, "is given more than once")
        if not values and rule.required:
            raise FieldInvalid(name, "is missing")
        if values and not rule.check(values[0]):
            raise FieldInvalid(name, "is not what Twilio sends")
        fields[name] = values[0] if values else ""
    return fields
