"""Web chat: the coalition's own channel, at /chat, for people who may be on a watched device.

The page leaves as little behind as a web page can: no cookies, no browser storage, no
service worker, nothing from another site. Its token lives in the page's memory only, and
travels in a header (X-Chat-Token), never in a URL. Every answer is `no-store`, sends no
referrer, and carries a strict CSP; only `[webchat] allowed_origins` may frame the page.

Messages go through the same intake and handlers as SMS and Telegram, so every rule holds
(the first reply with the safety text, keywords, emergencies and pages, the safety text
straight back in the answer when storage fails). Replies are outbox rows; the web "sender"
only checks the chat is still open, and the page reads what the outbox has sent, live over a
stream (server-sent events read with fetch, since EventSource cannot send a header), or by
polling.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from bot.config import Settings
from bot.crypto import Cipher
from bot.domain import Channel, InboundMessage, PermanentSendError
from bot.http_errors import expect_handler
from bot.intake import DATABASE_DOWN, Intake, SpoolFailed, Taken
from bot.notify import Change, Notifier
from bot.remote import remote_address
from bot.storage.reader import Reader
from bot.storage.writer import Writer
from handlers import webchat
from handlers.replies import hours_status, reply_text

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
TOKEN_HEADER = "X-Chat-Token"  # noqa: S105 - a header name
PING_SECONDS = 15.0
RECHECK_PINGS = 4  # the chat's session is read again every fourth ping
CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{8,40}")
MAX_BODY = 32 * 1024
# Chats a browser may open in an hour: enough for a person, not for a script.
OPENS_PER_HOUR = 12
PAGE_TEXT = {
    "en": {
        "title": "Chat with us",
        "lang_name": "English",
        "other_lang": "es",
        "other_lang_name": "Español",
        "intro": "Write to us here. You get an answer right away, and staff read every "
                 "conversation.",
        "safety_title": "In immediate danger?",
        "staying_safe": "Quick exit (or the Esc key) leaves this page at once. This chat "
                        "keeps nothing in your browser, but your browser's history may still "
                        "show this site: use a private window, or clear your history after.",
        "reload": "Reloading or closing this page ends the chat.",
        "message": "Message",
        "send": "Send",
        "exit": "Quick exit",
        "you": "You",
        "us": "Automatic reply",
        "staff": "Coalition staff",
        "ended": "This chat has ended. Reload the page to start a new one.",
        "offline": "You seem to be offline. Your message was not sent.",
        "busy": "Too many messages at once. Wait a minute, then try again. In danger? "
                "Call 911.",
        "full": "Our chat is very busy right now. Please try again in a few minutes, or "
                "call the hotline: 1-888-373-7888.",
        "too_long": "That message is too long. Please split it up.",
    },
    "es": {
        "title": "Chatee con nosotros",
        "lang_name": "Español",
        "other_lang": "en",
        "other_lang_name": "English",
        "intro": "Escríbanos aquí. Recibe una respuesta enseguida, y nuestro equipo lee "
                 "cada conversación.",
        "safety_title": "¿En peligro inmediato?",
        "staying_safe": "Salida rápida (o la tecla Esc) sale de esta página al instante. Este "
                        "chat no guarda nada en su navegador, pero el historial puede mostrar "
                        "este sitio: use una ventana privada, o borre el historial después.",
        "reload": "Si recarga o cierra esta página, el chat termina.",
        "message": "Mensaje",
        "send": "Enviar",
        "exit": "Salida rápida",
        "you": "Usted",
        "us": "Respuesta automática",
        "staff": "Equipo de la coalición",
        "ended": "Este chat terminó. Recargue la página para empezar otro.",
        "offline": "Parece que no tiene conexión. Su mensaje no se envió.",
        "busy": "Demasiados mensajes a la vez. Espere un minuto e intente de nuevo. ¿En "
                "peligro? Llame al 911.",
        "full": "Nuestro chat está muy ocupado ahora. Intente de nuevo en unos minutos, o "
                "llame a la línea: 1-888-373-7888.",
        "too_long": "Ese mensaje es demasiado largo. Divídalo, por favor.",
    },
}


@dataclass(frozen=True)
class WebDeps:
    settings: Settings
    clock: Callable[[], datetime]
    reader: Reader
    writer: Writer
    cipher: Cipher
    intake: Intake
    notifier: Notifier

    @property
    def idle(self) -> timedelta:
        return timedelta(minutes=self.settings.webchat.idle_minutes)


DEPS = web.AppKey("webchat_deps", WebDeps)


def _deps(request: web.Request) -> WebDeps:
    return request.config_dict[DEPS]


# --- abuse limits ------------------------------------------------------------------------------


class Limits:
    """Per-browser limits, in memory. A browser is a keyed hash of its address, under a key
    made at start-up and never kept: no address is stored, logged, or recoverable."""

    def __init__(self, per_minute: int) -> None:
        self._key = secrets.token_bytes(32)
        self._per_minute = per_minute
        self._messages: dict[str, list[float]] = {}
        self._opens: dict[str, list[float]] = {}

    def _client(self, address: str) -> str:
        return hmac.new(self._key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def allow_message(self, address: str) -> bool:
        return self._allow(self._messages, self._client(address), self._per_minute, 60.0)

    def allow_open(self, address: str) -> bool:
        return self._allow(self._opens, self._client(address), OPENS_PER_HOUR, 3600.0)

    @staticmethod
    def _allow(book: dict[str, list[float]], client: str, most: int, window: float) -> bool:
        now = time.monotonic()
        if len(book) > 10_000:  # a flood of addresses: forget the oldest, stay bounded
            for stale in list(book)[:5_000]:
                del book[stale]
        recent = [t for t in book.get(client, []) if now - t < window]
        if len(recent) >= most:
            book[client] = recent
            return False
        recent.append(now)
        book[client] = recent
        return True


LIMITS = web.AppKey("webchat_limits", Limits)


# --- answers ------------------------------------------------------------------------------------


def _headers(settings: Settings) -> dict[str, str]:
    origins = settings.webchat.allowed_origins
    ancestors = " ".join(origins) if origins else "'none'"
    headers = {
        "Content-Security-Policy": (
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self'; form-action 'self'; base-uri 'none'; "
            f"frame-ancestors {ancestors}"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), "
                              "notifications=()",
    }
    if not origins:
        headers["X-Frame-Options"] = "DENY"
    return headers


def chat_headers_middleware(settings: Settings) -> Callable[..., Awaitable[web.StreamResponse]]:
    headers = _headers(settings)

    @web.middleware
    async def chat_headers(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(headers)
            raise
        if not response.prepared:
            response.headers.update(headers)
        return response

    return chat_headers


class _TooLarge(web.HTTPClientError):
    status_code = 413  # aiohttp's own class wants sizes, which say nothing useful here


def _error(status: type[web.HTTPException], key: str, language: str = "en") -> web.HTTPException:
    text = PAGE_TEXT.get(language, PAGE_TEXT["en"]).get(key, key)
    return status(text=json.dumps({"error": key, "message": text}),
                  content_type="application/json")


async def _json(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text=json.dumps({"error": "content_type"}),
                                           content_type="application/json")
    raw = await request.read()
    if len(raw) > MAX_BODY:
        raise _error(_TooLarge, "too_long")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_json"}),
                                 content_type="application/json") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_json"}),
                                 content_type="application/json")
    return data


def _token(request: web.Request, allow_body: str | None = None) -> str:
    token = request.headers.get(TOKEN_HEADER, "") or (allow_body or "")
    if not (20 <= len(token) <= 100 and token.isascii() and
            re.fullmatch(r"[A-Za-z0-9_-]+", token)):
        raise _error(web.HTTPUnauthorized, "ended")
    return token


def language_of(request: web.Request) -> str:
    asked = request.query.get("lang", "")
    if asked in PAGE_TEXT:
        return asked
    for part in request.headers.get("Accept-Language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in PAGE_TEXT:
            return code
    return "en"


# --- routes ---------------------------------------------------------------------------------


async def page(request: web.Request) -> web.Response:
    d = _deps(request)
    language = language_of(request)
    templates = d.settings.replies
    status, _ = hours_status(templates, language, d.settings.hours, d.clock())
    return aiohttp_jinja2.render_template("chat.html", request, {
        "lang": language,
        "t": PAGE_TEXT[language],
        "safety": reply_text(templates, language, "safety"),
        "hours": status,
        "exit_url": d.settings.webchat.exit_url,
        "max_chars": d.settings.webchat.max_message_chars,
    })


async def open_session(request: web.Request) -> web.Response:
    d = _deps(request)
    data = await _json(request)
    language = data.get("lang") if data.get("lang") in PAGE_TEXT else "en"
    if not request.config_dict[LIMITS].allow_open(_client(request)):
        raise _error(web.HTTPTooManyRequests, "busy", language)
    now = d.clock()
    try:
        opened = await d.writer.run(lambda s: webchat.open_chat(
            s, d.cipher, language, d.settings.webchat.max_sessions, d.idle, now), notify=False)
    except webchat.TooManyChats:
        raise _error(web.HTTPServiceUnavailable, "full", language) from None
    return web.json_response({"token": opened.token,
                              "idle_minutes": d.settings.webchat.idle_minutes})


async def post_message(request: web.Request) -> web.Response:
    d = _deps(request)
    token = _token(request)
    data = await _json(request)
    text, client_id = data.get("text"), data.get("id")
    language = data.get("lang") if data.get("lang") in PAGE_TEXT else "en"
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        raise web.HTTPBadRequest(text=json.dumps({"error": "empty"}),
                                 content_type="application/json")
    if len(text) > d.settings.webchat.max_message_chars:
        raise _error(_TooLarge, "too_long", language)
    if not isinstance(client_id, str) or not CLIENT_ID.fullmatch(client_id):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_id"}),
                                 content_type="application/json")
    if not request.config_dict[LIMITS].allow_message(_client(request)):
        raise _error(web.HTTPTooManyRequests, "busy", language)
    hash_ = webchat.address_hash(d.cipher, token)
    now = d.clock()
    session_id = None
    try:
        session_id = await d.writer.run(lambda s: webchat.seen(s, hash_, d.idle, now),
                                        d.settings.database.write_timeout_seconds,
                                        notify=False)
    except webchat.ChatClosed:
        raise _error(web.HTTPGone, "ended", language) from None
    except DATABASE_DOWN:
        pass  # the session cannot be checked now: take the message (to the spool) anyway
    msg = InboundMessage(channel=Channel.WEB, address=token,
                         provider_id=f"{hash_[:16]}-{client_id}", text=text, media_count=0,
                         received_at=now)
    try:
        taken = await d.intake.take(msg)
    except SpoolFailed:
        taken = Taken.SPOOLED
    if session_id is not None:  # this chat's stream learns which conversation is its own
        d.notifier.changed(Change("web", session_id))
    fallback = d.intake.fallback_text(msg) if taken is Taken.SPOOLED else None
    return web.json_response({"ok": True, "fallback": fallback})


async def stream(request: web.Request) -> web.StreamResponse:
    """The page's live feed: the replies the outbox has sent, as server-sent events."""
    d = _deps(request)
    hash_ = webchat.address_hash(d.cipher, _token(request))
    after = _after(request.query.get("after", "0"))
    now = d.clock()
    try:
        session_id = await d.reader.run(
            lambda s: webchat.live_session(s, hash_, d.idle, now))
    except webchat.ChatClosed:
        raise _error(web.HTTPGone, "ended") from None
    response = web.StreamResponse(headers={
        **_headers(d.settings), "Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    # The page may go (closed, reloaded, offline) while we write to it: the stream just ends.
    with contextlib.suppress(ConnectionResetError):
        await _follow(request, d, response, hash_, session_id, after)
    return response


async def _follow(request: web.Request, d: WebDeps, response: web.StreamResponse, hash_: str,
                  session_id: int, after: int) -> None:
    """Write each reply the outbox has sent, as it is sent. The stream watches only this
    chat's own changes: its session (a message came from the page) and its conversations."""
    own = Change("web", session_id)
    await response.write(b"retry: 3000\nevent: ready\ndata: {}\n\n")
    with d.notifier.watching(own) as changes:
        watched: set[int] = set()
        pings = 0
        while True:
            # One read for whatever woke it: the page wrote (a first message makes a
            # conversation, to watch from now on), or one of its conversations changed.
            mine, shown = await d.reader.run(_news(d.cipher, hash_, after))
            after = await _send(response, shown, after)
            if mine - watched:
                changes.watch(*(Change("conversation", c) for c in mine - watched))
                watched |= mine
                # Read again now it watches: a reply sent in between is not missed.
                _, shown = await d.reader.run(_news(d.cipher, hash_, after))
                after = await _send(response, shown, after)
            while not await changes.next(PING_SECONDS):
                pings += 1
                # Whether the chat has ended meanwhile (idle too long), read once a minute:
                # with a thousand pages open, a read every ping would be most of the work.
                if pings % RECHECK_PINGS == 0 and not await d.reader.run(
                        lambda s: webchat.is_open(s, hash_, d.idle, d.clock())):
                    await response.write(b"event: ended\ndata: {}\n\n")
                    return
                await response.write(b"event: ping\ndata: {}\n\n")
            if request.transport is None or request.transport.is_closing():
                return  # the page has gone: stop listening now, not at the next write


def _news(cipher: Cipher, hash_: str,
          after: int) -> Callable[[Any], tuple[set[int], list[webchat.Shown]]]:
    """A read of the chat's conversations and the replies sent to it since `after`."""
    return lambda s: (webchat.conversation_ids(s, hash_),
                      webchat.replies_since(s, cipher, hash_, after))


async def _send(response: web.StreamResponse, shown: list[webchat.Shown], after: int) -> int:
    for reply in shown:
        data = json.dumps({"id": reply.id, "text": reply.text, "staff": reply.staff})
        await response.write(f"event: reply\ndata: {data}\n\n".encode())
        after = reply.id
    return after


async def poll(request: web.Request) -> web.Response:
    """The same as the stream, for a page whose stream does not get through (a proxy that
    buffers): what was sent since `after`, and whether the chat is still open."""
    d = _deps(request)
    hash_ = webchat.address_hash(d.cipher, _token(request))
    after = _after(str((await _json(request)).get("after", 0)))
    now = d.clock()

    def read(session: Any) -> tuple[bool, list[webchat.Shown]]:
        return (webchat.is_open(session, hash_, d.idle, now),
                webchat.replies_since(session, d.cipher, hash_, after))

    open_, shown = await d.reader.run(read)
    return web.json_response({
        "open": open_,
        "replies": [{"id": r.id, "text": r.text, "staff": r.staff} for r in shown],
    })


async def read_receipt(request: web.Request) -> web.Response:
    d = _deps(request)
    hash_ = webchat.address_hash(d.cipher, _token(request))
    ids = (await _json(request)).get("ids")
    if not isinstance(ids, list) or len(ids) > 100 or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 < i < 2**63 for i in ids):
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_ids"}),
                                 content_type="application/json")
    now = d.clock()
    await d.writer.run(lambda s: webchat.mark_read(s, hash_, ids, now), notify=False)
    return web.json_response({"ok": True})


async def end(request: web.Request) -> web.Response:
    """Quick exit ("exit") or the page going away ("left"). Sent with sendBeacon as the page
    leaves, so the token may come as the body; the answer is never read."""
    d = _deps(request)
    reason = request.match_info["reason"]
    body = (await request.read())[:200].decode("ascii", "replace").strip()
    hash_ = webchat.address_hash(d.cipher, _token(request, allow_body=body))
    now = d.clock()
    closed = await d.writer.run(lambda s: webchat.end_chat(s, hash_, reason, now))
    d.notifier.conversation(closed)
    return web.json_response({"ok": True})


def _after(raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text=json.dumps({"error": "bad_after"}),
                                 content_type="application/json")
    return int(raw)


def _client(request: web.Request) -> str:
    return remote_address(request, _deps(request).settings.server.trusted_proxies)


def create_webchat(deps: WebDeps) -> web.Application:
    app = web.Application(middlewares=[chat_headers_middleware(deps.settings)],
                          client_max_size=MAX_BODY)
    app[DEPS] = deps
    app[LIMITS] = Limits(deps.settings.webchat.messages_per_minute)
    aiohttp_jinja2.setup(
        app, loader=jinja2.FileSystemLoader(HERE / "web_templates"), autoescape=True,
    )
    eh = {"expect_handler": expect_handler}
    app.router.add_get("", page, **eh)
    app.router.add_post("/api/session", open_session, **eh)
    app.router.add_post("/api/messages", post_message, **eh)
    app.router.add_get("/api/stream", stream, **eh)
    app.router.add_post("/api/poll", poll, **eh)
    app.router.add_post("/api/read", read_receipt, **eh)
    app.router.add_post(r"/api/{reason:exit|left}", end, **eh)
    app.router.add_static("/static", HERE / "web_static", name="static", append_version=False)
    return app


class WebSender:
    """The outbox's "send" for web chat: the page reads sent replies itself, so sending is
    checking that the chat is still open. A reply to a contact who has left fails for good
    (staff see why), and is never shown."""

    def __init__(self, reader: Reader, cipher: Cipher, idle: timedelta,
                 clock: Callable[[], datetime]) -> None:
        self._reader = reader
        self._cipher = cipher
        self._idle = idle
        self._clock = clock

    async def send(self, address: str, text: str, origin: str | None) -> str:
        hash_ = webchat.address_hash(self._cipher, address)
        now = self._clock()
        if not await self._reader.run(lambda s: webchat.is_open(s, hash_, self._idle, now)):
            raise PermanentSendError("web:left")
        return f"web-{secrets.token_hex(10)}"

    async def find_sent(self, address: str, text: str) -> list[str]:
        # Sending again shows nothing twice: the page shows message rows, not sends.
        return []
