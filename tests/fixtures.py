"""Load the recorded provider payloads in tests/fixtures/ and sign Twilio webhooks.

All data is fictional: numbers are in the +1 314 555 01XX range and SIDs are zero-filled.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from twilio.request_validator import RequestValidator

FIXTURES_DIR = Path(__file__).parent / "fixtures"

# The identities the fixture files use, so tests can build matching fakes and requests.
ACCOUNT_SID = "AC00000000000000000000000000000001"
AUTH_TOKEN = "00000000000000000000000000000000"
MESSAGING_SERVICE_SID = "MG00000000000000000000000000000002"
OUR_NUMBER = "+13145550100"
CONTACT_NUMBER = "+13145550123"
TELEGRAM_TOKEN = "1000000001:AAFakeTokenForTestsOnly_0000000000"
TELEGRAM_CONTACT_ID = 700000123

_MESSAGE_KINDS = ("message", "edited_message", "channel_post", "edited_channel_post")


def load_twilio_form(name: str, **overrides: str) -> dict[str, str]:
    """Fields of a Twilio webhook fixture in the order Twilio sent them, with ``overrides``.

    ``name`` is a file in fixtures/twilio/, with or without ".txt". Overridden fields keep
    their place; new ones go at the end.
    """
    path = FIXTURES_DIR / "twilio" / (name if name.endswith(".txt") else f"{name}.txt")
    # keep_blank_values because an MMS posts "Body=" and the empty field still gets signed.
    fields = dict(parse_qsl(path.read_text().strip(), keep_blank_values=True))
    fields.update(overrides)
    return fields


def encode_form(fields: dict[str, str]) -> str:
    """URL-encode ``fields`` the way Twilio does for a webhook body."""
    return urlencode(fields)


def twilio_signature(auth_token: str, url: str, fields: dict[str, str]) -> str:
    """The X-Twilio-Signature Twilio would send when posting ``fields`` to ``url``."""
    return RequestValidator(auth_token).compute_signature(url, fields)


def load_telegram_update(
    name: str,
    *,
    update_id: int | None = None,
    chat_id: int | None = None,
    user_id: int | None = None,
    text: str | None = None,
) -> dict[str, Any]:
    """A Telegram update fixture from fixtures/telegram/, with or without ".json".

    ``chat_id`` sets the chat's id, and also the sender's id in a private chat (where the two
    are the same person); ``user_id`` sets the sender's id alone. ``text`` replaces the text,
    or the caption of a media message.
    """
    path = FIXTURES_DIR / "telegram" / (name if name.endswith(".json") else f"{name}.json")
    update: dict[str, Any] = json.loads(path.read_text())
    if update_id is not None:
        update["update_id"] = update_id
    message = _message_of(update)
    if chat_id is not None:
        message["chat"]["id"] = chat_id
        if message["chat"]["type"] == "private":
            message["from"]["id"] = chat_id
    if user_id is not None:
        message["from"]["id"] = user_id
    if text is not None:
        message["caption" if "caption" in message else "text"] = text
    return update


def unparseable_telegram_update(
    *, update_id: int, chat_id: int, text: str, first_name: str
) -> dict[str, Any]:
    """A private text message that python-telegram-bot cannot parse (its ``date`` is not a
    number) but that carries a text, a chat id and a name, as a leaking log would show."""
    update = load_telegram_update("text_message", update_id=update_id, chat_id=chat_id, text=text)
    message = update["message"]
    message["date"] = "yesterday"
    message["from"]["first_name"] = message["chat"]["first_name"] = first_name
    return update


def _message_of(update: dict[str, Any]) -> dict[str, Any]:
    for kind in _MESSAGE_KINDS:
        if kind in update:
            return update[kind]
    raise ValueError(f"update has no message: {sorted(update)}")


_HEADER = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")
_KEY_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=")


def set_config_keys(example: str, changes: Mapping[str, Mapping[str, object]]) -> str:
    """The text of a TOML config (config.example.toml) with each [section] key's value
    replaced, for a service started as a subprocess. Every key must already be in its
    section, so a key renamed in config.example.toml fails here instead of being ignored."""
    pending = {section: dict(keys) for section, keys in changes.items()}
    section = ""
    lines = []
    for line in example.splitlines():
        if header := _HEADER.match(line):
            section = header["name"]
        elif (key := _KEY_LINE.match(line)) and key["key"] in pending.get(section, {}):
            # JSON strings, numbers, booleans and lists of strings are also valid TOML.
            line = f"{key['key']} = {json.dumps(pending[section].pop(key['key']))}"
        lines.append(line)
    missing = {section: sorted(keys) for section, keys in pending.items() if keys}
    if missing:
        raise ValueError(f"config.example.toml lacks {missing}")
    return "\n".join(lines) + "\n"


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`base` (a parsed config) with the tables of `extra` merged in, key by key."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
