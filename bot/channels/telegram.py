"""Telegram through python-telegram-bot: webhook or long polling in, the Bot API out.

We use PTB's `Bot` (requests, parsing, errors) but not its `Application` dispatch: an update
must be durably written BEFORE Telegram is told we have it. In webhook mode that means
answering the POST only after the write; in polling mode it means advancing the getUpdates
offset only after the write, which PTB's Updater does not do (it confirms on fetch).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import warnings
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from telegram import Bot, Chat, Update
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError

from bot.config import TelegramSettings
from bot.domain import (
    MAX_TEXT_CHARS,
    Channel,
    InboundMessage,
    PermanentSendError,
    TemporarySendError,
)
from bot.http_errors import expect_handler
from bot.intake import Intake, SpoolFailed, Taken

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 - a header name
POLL_TIMEOUT = timedelta(seconds=25)
POLL_READ_MARGIN = timedelta(seconds=10)
RESTART_BACKOFF_MIN = 1.0
RESTART_BACKOFF_MAX = 30.0
UNAUTHORIZED_PAUSE = 60.0
MEDIA_FIELDS = ("photo", "video", "voice", "audio", "document", "sticker", "animation",
                "video_note", "contact", "location")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def make_bot(settings: TelegramSettings) -> PollingBot:
    return PollingBot(settings.token.reveal(), base_url=settings.api_base_url)


def retry_after_seconds(exc: RetryAfter) -> float:
    # PTB 22 warns when retry_after is read as an int; it may be either type.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def parse_update(update: Update, received_at: datetime) -> InboundMessage | None:
    """A private-chat message, or None for anything we do not take (edits, groups,
    channel posts): contacts write to the bot one to one.

    ValueError for an update Telegram would never send. PTB builds its objects from whatever
    JSON it is given without checking types, so every field we use is checked here."""
    if not _is_json_safe_int(update.update_id) or update.update_id < 0:
        raise ValueError("update_id out of range")
    message = update.message
    if message is None:
        return None
    chat = message.chat
    if not isinstance(chat, Chat) or not _is_json_safe_int(chat.id):
        raise ValueError("message without a chat")
    if not isinstance(chat.type, str):
        raise ValueError("chat without a type")
    if chat.type != "private":
        return None
    if chat.id <= 0:  # a private chat's id is the person's user id, always positive
        raise ValueError("private chat id out of range")
    text = _text(message.text) or _text(message.caption)
    media = sum(1 for name in MEDIA_FIELDS if getattr(message, name, None))
    return InboundMessage(
        channel=Channel.TELEGRAM,
        address=str(chat.id),
        provider_id=str(update.update_id),
        text=text,
        media_count=media,
        received_at=received_at,
        is_start=text.strip().split("@")[0].split(" ")[0] == "/start",
    )


def _is_json_safe_int(value: object) -> bool:
    # Telegram's ids fit in 52 bits, so that a double can hold them; bool is an int subclass.
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53


def _text(value: object) -> str:
    """A text or caption: "" when absent, ValueError when it is not a text we can store."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError("text is not a string")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError("text too long")
    if LONE_SURROGATE.search(value):  # JSON's \ud800 escapes: a str UTF-8 cannot encode
        raise ValueError("text is not valid Unicode")
    return value


class TelegramWebhook:
    def __init__(
        self, bot: Bot, settings: TelegramSettings, intake: Intake, clock: Callable[[], datetime]
    ) -> None:
        self._bot = bot
        self._secret = settings.webhook_secret.reveal().encode()
        self._intake = intake
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [web.post(WEBHOOK_PATH, self.handle, expect_handler=expect_handler)]

    async def handle(self, request: web.Request) -> web.Response:
        given = request.headers.get(SECRET_HEADER, "")
        # aiohttp hands raw header bytes over as lone surrogates, which .encode() cannot
        # take. The secret is ASCII by config (A-Z a-z 0-9 _ -), so anything else is wrong.
        if not given.isascii() or not hmac.compare_digest(given.encode(), self._secret):
            log.warning("telegram_secret_invalid")
            raise web.HTTPForbidden(text="invalid secret token")
        data = await _json_body(request)
        try:
            msg = parse_update(Update.de_json(data, self._bot), self._clock())
        except Exception:  # PTB trusts its input's shape; a forged one can raise anything
            raise web.HTTPBadRequest(text="not a Telegram update") from None
        if msg is None:
            return web.json_response({})
        try:
            taken = await self._intake.take(msg)
        except SpoolFailed:
            # Not kept anywhere: a non-2xx makes Telegram deliver the update again later.
            raise web.HTTPServiceUnavailable(text="try again") from None
        if taken is Taken.SPOOLED:
            text = self._intake.fallback_text(msg)
            if text:
                # Telegram runs a method given in the webhook's answer: the reply needs
                # neither the database nor an outgoing request.
                return web.json_response(
                    {"method": "sendMessage", "chat_id": int(msg.address), "text": text}
                )
        return web.json_response({})


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        # ValueError covers bad UTF-8, bad JSON and an integer of more than 4,300 digits;
        # RecursionError, arrays nested thousands deep.
        raise web.HTTPBadRequest(text="body is not UTF-8 JSON") from None
    update_id = data.get("update_id") if isinstance(data, dict) else None
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise web.HTTPBadRequest(text="missing update_id")
    return data


async def register_webhook(bot: Bot, public_url: str, settings: TelegramSettings) -> None:
    """Tell Telegram where to post updates; retried until it works, as Telegram may be
    unreachable when the service starts."""
    backoff = 1.0
    while True:
        try:
            await bot.initialize()
            await bot.set_webhook(
                url=public_url + WEBHOOK_PATH,
                secret_token=settings.webhook_secret.reveal(),
                allowed_updates=["message"],
            )
            log.info("telegram_webhook_set")
            return
        except TelegramError as exc:
            log.error("telegram_webhook_failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 60.0)


class PollingBot(Bot):
    """A Bot that can fetch getUpdates' answer unparsed.

    `Bot.get_updates` parses the whole batch at once, so one update PTB cannot read fails them
    all (and PTB logs the raw batch, contents and all, at CRITICAL). PTB has no public way to
    get the raw list: `do_api_request("getUpdates")` emits a PTBUserWarning, an error under our
    warning filter, because `get_updates` exists. So this posts what `get_updates` posts,
    through `Bot._post`: private, but the one method every Bot API call goes through, so it
    is the least likely to change; if it did, the polling tests would fail, not pass quietly.
    """

    async def get_raw_updates(
        self,
        offset: int | None,
        timeout: timedelta,  # noqa: ASYNC109 - how long Telegram holds the long poll
        allowed_updates: list[str],
    ) -> list[object]:
        data = {"timeout": timeout, "offset": offset, "allowed_updates": allowed_updates}
        # As get_updates does: the long poll's own timeout, plus the time to answer.
        read_timeout = timeout.total_seconds() + POLL_READ_MARGIN.total_seconds()
        result = await self._post("getUpdates", data, read_timeout=read_timeout)
        if not isinstance(result, list):
            raise TelegramError("getUpdates did not answer a list")
        return result


class UnconfirmableBatch(RuntimeError):
    """getUpdates answered entries of which none had an update_id to confirm it by."""


class TelegramPoller:
    """Long polling inside our own loop, for coalitions with no public URL.

    The offset moves past an update only once it is durably taken in, or deliberately skipped
    because no retry could ever take it in (an update that cannot be parsed). Whatever stops a
    round of polling, an outage or a crash, is logged by its type, reported by `healthy` until
    a getUpdates succeeds again, and followed by a fresh start after a capped backoff.
    """

    def __init__(self, bot: PollingBot, intake: Intake, clock: Callable[[], datetime]) -> None:
        self._bot = bot
        self._intake = intake
        self._clock = clock
        self._offset: int | None = None
        self._ready = False  # initialized, and the webhook deleted
        self._healthy = True

    @property
    def healthy(self) -> bool:
        """False from a failure of polling until the next getUpdates succeeds."""
        return self._healthy

    @property
    def offset(self) -> int | None:
        return self._offset

    async def run(self) -> None:
        backoff = RESTART_BACKOFF_MIN
        try:
            while True:
                try:
                    await self._poll()
                    backoff = RESTART_BACKOFF_MIN
                    continue
                except asyncio.CancelledError:
                    raise
                except RetryAfter as exc:
                    self._healthy = False
                    await asyncio.sleep(retry_after_seconds(exc))
                    continue
                except (InvalidToken, Forbidden):
                    log.error("telegram_polling_unauthorized")
                    pause = UNAUTHORIZED_PAUSE
                except (TelegramError, SpoolFailed, UnconfirmableBatch) as exc:
                    log.warning("telegram_polling_error", extra={"error": type(exc).__name__})
                    pause = backoff
                except Exception as exc:  # a bug, or an answer PTB trips on: restart all the same
                    log.error("telegram_polling_crashed", extra={"error": type(exc).__name__})
                    pause = backoff
                self._healthy = False
                self._ready = False  # a restart starts from the beginning
                await asyncio.sleep(pause)
                backoff = min(backoff * 2, RESTART_BACKOFF_MAX)
        finally:
            self._healthy = False  # however the loop ends, nothing polls any more

    async def _poll(self) -> None:
        if not self._ready:  # Telegram may be unreachable at start: run() keeps trying
            await self._bot.initialize()
            await self._bot.delete_webhook(drop_pending_updates=False)
            self._ready = True
        entries = await self._bot.get_raw_updates(
            offset=self._offset,
            # After a failure, a short poll: readyz learns at once that Telegram answers again.
            timeout=POLL_TIMEOUT if self._healthy else timedelta(0),
            allowed_updates=["message"],
        )
        self._healthy = True
        await self.take_batch(entries)

    async def take_batch(self, entries: list[object]) -> None:
        before = self._offset
        for entry in entries:
            await self._take(entry)
        if entries and self._offset == before:
            # Nothing in the batch could be confirmed: asking again at once would get the same
            # batch back at once. Fail the round, so the next one waits out the backoff.
            raise UnconfirmableBatch

    async def _take(self, entry: object) -> None:
        update_id = entry.get("update_id") if isinstance(entry, dict) else None
        if not isinstance(update_id, int) or isinstance(update_id, bool):
            log.warning("telegram_update_without_id")  # no id: nothing to confirm it by
            return
        try:
            msg = parse_update(Update.de_json(entry, self._bot), self._clock())
        except Exception:  # PTB trusts its input's shape; a malformed one can raise anything
            # Skipped: asking again cannot fix it. Its id only: the content is the contact's.
            log.warning("telegram_update_unparseable", extra={"update_id": update_id})
            msg = None
        if msg is not None:
            taken = await self._intake.take(msg)  # SpoolFailed: offset stays, asked again
            if taken is Taken.SPOOLED:
                await self._fallback_reply(msg)
        self._offset = max(self._offset or 0, update_id + 1)

    async def _fallback_reply(self, msg: InboundMessage) -> None:
        text = self._intake.fallback_text(msg)
        if not text:
            return
        try:
            # The one send that bypasses the outbox: the database behind it is down.
            await self._bot.send_message(chat_id=int(msg.address), text=text)
        except TelegramError as exc:
            log.error("telegram_fallback_failed", extra={"error": type(exc).__name__})


class TelegramSender:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def send(self, address: str, text: str, origin: str | None) -> str:
        try:
            message = await self._bot.send_message(chat_id=int(address), text=text)
        except RetryAfter as exc:
            raise TemporarySendError("telegram:429", retry_after_seconds(exc)) from None
        except Forbidden:
            # The person blocked the bot or deleted their account: nothing will get through.
            raise PermanentSendError("telegram:403") from None
        except (BadRequest, InvalidToken) as exc:
            raise PermanentSendError(f"telegram:{type(exc).__name__}") from None
        except TelegramError as exc:  # NetworkError, TimedOut, 5xx
            raise TemporarySendError(f"telegram:{type(exc).__name__}") from None
        return str(message.message_id)

    async def find_sent(self, address: str, text: str) -> list[str]:
        # The Bot API cannot list what a bot sent, so a send left in doubt (a crash or a
        # timeout mid-send) is sent again: Telegram delivery is at least once.
        return []
