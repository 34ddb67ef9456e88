"""A stand-in for the Telegram Bot API on loopback, for driving python-telegram-bot in tests.

Use it as ``telegram.Bot(token, base_url=fake.base_url)``. It answers like the Bot API for a
single bot token: ``{"ok": true, "result": ...}`` on success and
``{"ok": false, "error_code": ..., "description": ...}`` on failure, with the same HTTP status.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from ._loopback import LoopbackServer, Signal, client_gone, wait_for_count

JsonDict = dict[str, Any]

MAX_TEXT_CHARS = 4096

# Telegram's wording when fail_next is given no description.
DEFAULT_DESCRIPTIONS: dict[int, str] = {
    400: "Bad Request: chat not found",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}

WEBHOOK_CONFLICT = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)

# Form and multipart bodies carry every value as a string; PTB JSON-encodes the non-strings.
# Telegram converts by parameter, so the fake does too, and leaves text like "123" alone.
_INT_PARAMS = frozenset(
    {"chat_id", "offset", "limit", "timeout", "message_id", "message_thread_id",
     "reply_to_message_id", "max_connections"}
)  # fmt: skip
_BOOL_PARAMS = frozenset(
    {"drop_pending_updates", "disable_notification", "protect_content",
     "disable_web_page_preview", "allow_sending_without_reply"}
)  # fmt: skip
_JSON_PARAMS = frozenset(
    {"allowed_updates", "reply_markup", "entities", "reply_parameters", "link_preview_options"}
)
_SECRET_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MESSAGE_KINDS = ("message", "edited_message", "channel_post", "edited_channel_post")


@dataclass(frozen=True)
class SentTelegram:
    """A sendMessage the fake accepted. ``params`` holds every parameter, decoded."""

    chat_id: int
    text: str
    params: JsonDict
    message_id: int
    accepted_at_monotonic: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Failure:
    status: int
    description: str
    retry_after: int | None
    method: str | None


@dataclass(frozen=True)
class _Hang:
    seconds: float
    method: str | None


class _ApiError(Exception):
    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def response(self) -> web.Response:
        body: JsonDict = {"ok": False, "error_code": self.status, "description": self.description}
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return web.json_response(body, status=self.status)


Handler = Callable[[JsonDict], Awaitable[JsonDict]]
_Queued = TypeVar("_Queued", _Failure, _Hang)


class FakeTelegram:
    """The Bot API for one bot token, on 127.0.0.1."""

    def __init__(self, token: str) -> None:
        self.token = token
        bot_id, _, _ = token.partition(":")
        self.bot_user: JsonDict = {
            "id": int(bot_id) if bot_id.isdigit() else 1000000001,
            "is_bot": True,
            "first_name": "Triage Test Bot",
            "username": "triage_test_bot",
        }
        self.sent: list[SentTelegram] = []
        self.calls: list[tuple[str, JsonDict]] = []
        self.webhook: JsonDict | None = None
        self.pending_updates: list[JsonDict] = []
        self._allowed_updates: list[str] = []
        self._chats: dict[int, JsonDict] = {}
        self._next_update_id = 1
        self._next_message_id = 1
        self._poll_generation = 0
        self._failures: deque[_Failure] = deque()
        self._hangs: deque[_Hang] = deque()
        self._sent_changed = Signal()
        self._updates_changed = Signal()
        self._methods: dict[str, Handler] = {
            "getme": self._get_me,
            "sendmessage": self._send_message,
            "getupdates": self._get_updates,
            "setwebhook": self._set_webhook,
            "deletewebhook": self._delete_webhook,
            "getwebhookinfo": self._get_webhook_info,
        }
        self._server = LoopbackServer(self._build_app())

    @property
    def base_url(self) -> str:
        """In PTB's form: PTB appends the token, then ``/method``."""
        return f"{self._server.origin}/bot"

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        await self._server.close()

    def push_update(self, update: JsonDict) -> JsonDict:
        """Queue an update for getUpdates; an ``update_id`` is assigned if missing."""
        update = dict(update)
        update.setdefault("update_id", self._next_update_id)
        self._remember_chat(update)
        return self._queue(update)

    def push_raw_update(self, update: JsonDict) -> JsonDict:
        """Queue an update exactly as given, however malformed its content: a ``message``
        that is a string, a chat without ``id`` or ``type``, a ``date`` that is not a number.
        Telegram never sends these, but a client must survive them. Only the ``update_id``
        must be an int (assigned if missing), since getUpdates confirms by it."""
        update = dict(update)
        update.setdefault("update_id", self._next_update_id)
        return self._queue(update)

    def _queue(self, update: JsonDict) -> JsonDict:
        self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
        if self._is_allowed(update):
            self.pending_updates.append(update)
            self._updates_changed.fire()
        return update

    def fail_next(
        self,
        status: int,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        method: str | None = "sendMessage",
    ) -> None:
        """Make the next ``times`` calls of ``method`` (any method if None) fail.

        The answer is Telegram's error JSON; ``parameters.retry_after`` is only included
        when ``retry_after`` is given, which is what makes PTB raise ``RetryAfter``.
        """
        text = description or DEFAULT_DESCRIPTIONS.get(status, "Error")
        text = text.format(retry_after=retry_after)
        self._failures.extend(
            _Failure(status, text, retry_after, _canonical(method)) for _ in range(times)
        )

    def hang_next(self, seconds: float, times: int = 1, method: str | None = "sendMessage") -> None:
        """Stall the next ``times`` calls of ``method`` for ``seconds`` before answering.

        A stalled call is still handled afterwards if the caller is waiting; if the caller
        gave up (PTB raises ``TimedOut``) nothing is sent.
        """
        self._hangs.extend(_Hang(seconds, _canonical(method)) for _ in range(times))

    async def wait_for_messages(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline, not a cancel scope for the caller
    ) -> list[SentTelegram]:
        """Wait until at least ``n`` messages were accepted; AssertionError on timeout."""
        return await wait_for_count(self.sent, self._sent_changed, n, timeout, "Telegram messages")

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    async def _dispatch(self, request: web.Request) -> web.Response:
        token, method = _split_path(request.path)
        try:
            params = await _read_params(request)
            self.calls.append((method, params))
            if token != self.token:
                raise _ApiError(401, "Unauthorized")
            handler = self._methods.get(method.lower())
            if handler is None:
                raise _ApiError(404, "Not Found")
            await self._maybe_hang(method, request)
            self._maybe_fail(method)
            body = await handler(params)
        except _ApiError as error:
            return error.response()
        return web.json_response(body)

    async def _maybe_hang(self, method: str, request: web.Request) -> None:
        hang = _take(self._hangs, method)
        if hang is None:
            return
        await self._server.pause(hang.seconds)
        if client_gone(request):
            raise _ApiError(499, "caller hung up before Telegram answered")

    def _maybe_fail(self, method: str) -> None:
        failure = _take(self._failures, method)
        if failure is not None:
            raise _ApiError(failure.status, failure.description, failure.retry_after)

    async def _get_me(self, params: JsonDict) -> JsonDict:
        return _ok({
            **self.bot_user,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        })  # fmt: skip

    async def _send_message(self, params: JsonDict) -> JsonDict:
        chat_id = params.get("chat_id")
        text = params.get("text")
        if chat_id is None or chat_id == "":
            raise _ApiError(400, "Bad Request: chat_id is empty")
        if not isinstance(chat_id, int):
            raise _ApiError(400, "Bad Request: chat not found")
        if not isinstance(text, str) or not text.strip():
            raise _ApiError(400, "Bad Request: message text is empty")
        if len(text) > MAX_TEXT_CHARS:
            raise _ApiError(400, "Bad Request: message is too long")
        message_id = self._next_message_id
        self._next_message_id += 1
        self.sent.append(SentTelegram(chat_id, text, params, message_id))
        self._sent_changed.fire()
        message: JsonDict = {
            "message_id": message_id,
            "from": self.bot_user,
            "chat": self._chat(chat_id),
            "date": int(time.time()),
            "text": text,
        }
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup  # Telegram echoes inline keyboards only
        return _ok(message)

    async def _get_updates(self, params: JsonDict) -> JsonDict:
        if self.webhook is not None:
            raise _ApiError(409, WEBHOOK_CONFLICT)
        self._confirm(params.get("offset"))
        if params.get("allowed_updates") is not None:
            self._set_allowed_updates(params["allowed_updates"])
        limit = min(max(_as_int(params.get("limit"), 100), 1), 100)
        timeout = max(_as_int(params.get("timeout"), 0), 0)
        # Like Telegram, a newer getUpdates ends an older one still waiting, with 409.
        self._poll_generation += 1
        generation = self._poll_generation
        self._updates_changed.fire()
        await self._updates_changed.wait_until(
            lambda: (
                bool(self.pending_updates)
                or generation != self._poll_generation
                or self._server.closed
            ),
            timeout,
        )
        if self.webhook is not None:
            raise _ApiError(409, WEBHOOK_CONFLICT)
        if generation != self._poll_generation:
            raise _ApiError(409, DEFAULT_DESCRIPTIONS[409])
        return _ok(self.pending_updates[:limit])

    async def _set_webhook(self, params: JsonDict) -> JsonDict:
        url = params.get("url") or ""
        if not url:
            return await self._delete_webhook(params)
        if not url.startswith("https://"):
            raise _ApiError(
                400, "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
            )
        secret = params.get("secret_token")
        if secret is not None and not _SECRET_TOKEN.fullmatch(secret):
            raise _ApiError(400, "Bad Request: secret token contains unallowed characters")
        if params.get("allowed_updates") is not None:
            self._set_allowed_updates(params["allowed_updates"])
        if params.get("drop_pending_updates"):
            self.pending_updates.clear()
        already = self.webhook is not None and self.webhook.get("url") == url
        self.webhook = params
        # A waiting getUpdates must now fail with 409, as on Telegram.
        self._poll_generation += 1
        self._updates_changed.fire()
        return _ok(True, "Webhook is already set" if already else "Webhook was set")

    async def _delete_webhook(self, params: JsonDict) -> JsonDict:
        was_set = self.webhook is not None
        self.webhook = None
        if params.get("drop_pending_updates"):
            self.pending_updates.clear()
        return _ok(True, "Webhook was deleted" if was_set else "Webhook is already deleted")

    async def _get_webhook_info(self, params: JsonDict) -> JsonDict:
        info: JsonDict = {
            "url": "",
            "has_custom_certificate": False,
            "pending_update_count": len(self.pending_updates),
        }
        if self.webhook is not None:
            info["url"] = self.webhook["url"]
            info["has_custom_certificate"] = "certificate" in self.webhook
            info["max_connections"] = _as_int(self.webhook.get("max_connections"), 40)
            if self._allowed_updates:
                info["allowed_updates"] = self._allowed_updates
        return _ok(info)

    def _confirm(self, offset: object) -> None:
        if not isinstance(offset, int):
            return
        if offset < 0:
            # A negative offset keeps only the last -offset updates; the rest are forgotten.
            del self.pending_updates[:offset]
        else:
            self.pending_updates = [
                update for update in self.pending_updates if update["update_id"] >= offset
            ]

    def _set_allowed_updates(self, allowed: object) -> None:
        if not isinstance(allowed, list):
            raise _ApiError(400, "Bad Request: can't parse allowed updates")
        # An empty list means "all the default kinds", which the fake treats as everything.
        self._allowed_updates = [str(kind) for kind in allowed]
        self.pending_updates = [u for u in self.pending_updates if self._is_allowed(u)]

    def _is_allowed(self, update: JsonDict) -> bool:
        return not self._allowed_updates or _update_kind(update) in self._allowed_updates

    def _remember_chat(self, update: JsonDict) -> None:
        for kind in _MESSAGE_KINDS:
            chat = update.get(kind, {}).get("chat")
            if isinstance(chat, dict) and isinstance(chat.get("id"), int):
                self._chats[chat["id"]] = chat

    def _chat(self, chat_id: int) -> JsonDict:
        """The chat as Telegram would describe it, from pushed updates when we have seen it."""
        if chat_id in self._chats:
            return self._chats[chat_id]
        if chat_id > 0:
            return {"id": chat_id, "type": "private", "first_name": "Contact"}
        kind = "supergroup" if str(chat_id).startswith("-100") else "group"
        return {"id": chat_id, "type": kind, "title": "Group"}


def _ok(result: object, description: str | None = None) -> JsonDict:
    body: JsonDict = {"ok": True, "result": result}
    if description is not None:
        body["description"] = description
    return body


def _split_path(path: str) -> tuple[str, str]:
    """'/bot123:ABC/sendMessage' -> ('123:ABC', 'sendMessage'); ('', '') when malformed."""
    first, _, method = path.lstrip("/").partition("/")
    if not first.startswith("bot"):
        return "", method
    return first.removeprefix("bot"), method


async def _read_params(request: web.Request) -> JsonDict:
    """Parameters from the query string plus a JSON, urlencoded or multipart body."""
    params: JsonDict = dict(request.query)
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as error:
            raise _ApiError(400, "Bad Request: can't parse JSON") from error
        if not isinstance(body, dict):
            raise _ApiError(400, "Bad Request: JSON object expected")
        params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for name, value in form.items():
            params[name] = value if isinstance(value, str) else value.file.read()
    return {name: _decode(name, value) for name, value in params.items()}


def _decode(name: str, value: object) -> object:
    if not isinstance(value, str):
        return value
    if name in _INT_PARAMS:
        return int(value) if re.fullmatch(r"-?\d+", value) else value
    if name in _BOOL_PARAMS:
        return value.lower() == "true"
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError as error:
            raise _ApiError(400, f"Bad Request: can't parse {name} JSON object") from error
    return value


def _as_int(value: object, default: int) -> int:
    return value if isinstance(value, int) else default


def _update_kind(update: JsonDict) -> str:
    return next((key for key in update if key != "update_id"), "")


def _canonical(method: str | None) -> str | None:
    return None if method is None else method.lower()


def _take(queue: deque[_Queued], method: str) -> _Queued | None:
    """Pop the first queued entry aimed at ``method`` (or at any method)."""
    for entry in queue:
        if entry.method is None or entry.method == method.lower():
            queue.remove(entry)
            return entry
    return None
