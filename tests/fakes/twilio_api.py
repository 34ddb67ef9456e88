"""A stand-in for Twilio's Messages API on loopback, for driving the real twilio SDK in tests.

Point the SDK at it with ``RedirectingTwilioHttpClient(fake.base_url)``. It answers the way
Twilio's REST API does (status codes, error JSON, Message JSON) for the one endpoint the bot
uses: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from ._loopback import LoopbackServer, Signal, assert_count_stays, client_gone, wait_for_count

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600

# Twilio's own wording for the errors this fake can produce.
ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21609: "Invalid StatusCallback",
    21610: "Attempt to send to unsubscribed recipient",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}

# The code Twilio sends with a bare HTTP failure, used when fail_next is given no code.
_CODE_FOR_STATUS: dict[int, int] = {401: 20003, 404: 20404, 429: 20429, 500: 20500, 503: 20503}

_E164 = re.compile(r"\+[1-9]\d{6,14}")

# GSM 03.38: the 7-bit alphabet an SMS uses unless a character forces UCS-2.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENDED = frozenset("\f^{}\\[~]|€")  # each costs an escape plus the character


@dataclass(frozen=True)
class SentSms:
    """A message the fake accepted, as the SDK sent it."""

    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    accepted_at_monotonic: float = field(default_factory=time.monotonic)
    media_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class TwilioAttempt:
    """One request as the fake saw it, whatever came of it.

    ``status`` is 499 when the caller hung up before the answer (see ``hang_next``).
    """

    method: str
    path: str
    fields: dict[str, str]
    status: int
    error_code: int | None
    at_monotonic: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Failure:
    status: int
    code: int | None
    message: str


class _TwilioError(Exception):
    def __init__(self, status: int, code: int | None, message: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code or 0, "Error")

    def body(self) -> dict[str, Any]:
        more_info = f"https://www.twilio.com/docs/errors/{self.code}" if self.code else None
        return {
            "code": self.code,
            "message": self.message,
            "more_info": more_info,
            "status": self.status,
        }


class FakeTwilio:
    """Twilio's Messages API for one account, on 127.0.0.1."""

    def __init__(self, account_sid: str, auth_token: str) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.sent: list[SentSms] = []
        self.attempts: list[TwilioAttempt] = []
        # Numbers that texted STOP: Twilio itself refuses to message them (error 21610).
        self.opted_out: set[str] = set()
        self._failures: deque[_Failure] = deque()
        self._hangs: deque[float] = deque()
        self._changed = Signal()
        self._server = LoopbackServer(self._build_app())

    @property
    def base_url(self) -> str:
        return self._server.origin

    async def start(self) -> None:
        await self._server.start()

    async def close(self) -> None:
        await self._server.close()

    def fail_next(
        self, status: int, code: int | None = None, message: str | None = None, times: int = 1
    ) -> None:
        """Make the next ``times`` requests fail with Twilio's error JSON.

        Without ``code`` the code Twilio pairs with ``status`` is used (500 -> 20500,
        429 -> 20429). Without ``message`` Twilio's wording for the code is used.
        """
        code = code if code is not None else _CODE_FOR_STATUS.get(status)
        text = message or ERROR_MESSAGES.get(code or 0, "Error")
        self._failures.extend(_Failure(status, code, text) for _ in range(times))

    def hang_next(self, seconds: float, times: int = 1) -> None:
        """Stall the next ``times`` requests for ``seconds`` before answering.

        A stalled request is still handled afterwards if the caller is waiting; if the caller
        gave up, it is recorded in ``attempts`` with status 499 and nothing is sent.
        """
        self._hangs.extend(seconds for _ in range(times))

    def opt_out(self, number: str) -> None:
        """Behave as if ``number`` texted STOP: sends to it now fail with 21610."""
        self.opted_out.add(number)

    async def wait_for_messages(
        self,
        n: int,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline, not a cancel scope for the caller
    ) -> list[SentSms]:
        """Wait until at least ``n`` messages were accepted; AssertionError on timeout."""
        return await wait_for_count(self.sent, self._changed, n, timeout, "Twilio messages")

    async def assert_no_more(self, after: int, wait: float = 0.3) -> None:
        """Fail if more than ``after`` messages are accepted within ``wait`` seconds."""
        await assert_count_stays(self.sent, self._changed, after, wait, "Twilio messages")

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json", self._handle)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        error = _TwilioError(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(error.body(), status=404)

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post()
        fields = {key: str(value) for key, value in form.items()}
        try:
            status, payload = await self._create_message(request, form)
            error_code = None
        except _TwilioError as error:
            status, payload, error_code = error.status, error.body(), error.code
        if client_gone(request):
            status = 499
        self.attempts.append(
            TwilioAttempt(request.method, request.path, fields, status, error_code)
        )
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if status == 401 else None
        return web.json_response(payload, status=status, headers=headers)

    async def _create_message(
        self, request: web.Request, form: MultiDictProxy[Any]
    ) -> tuple[int, dict[str, Any]]:
        self._check_auth(request)
        if self._hangs:
            await self._server.pause(self._hangs.popleft())
            if client_gone(request):
                raise _TwilioError(499, None, "caller hung up before Twilio answered")
        if self._failures:
            failure = self._failures.popleft()
            raise _TwilioError(failure.status, failure.code, failure.message)
        sms = self._validate(form)
        self.sent.append(sms)
        self._changed.fire()
        return 201, self._message_json(sms)

    def _check_auth(self, request: web.Request) -> None:
        if _basic_credentials(request) != (self.account_sid, self.auth_token):
            raise _TwilioError(401, 20003)
        if request.match_info["account_sid"] != self.account_sid:
            raise _TwilioError(404, 20404, f"The requested resource {request.path} was not found")

    def _validate(self, form: MultiDictProxy[Any]) -> SentSms:
        to = _field(form, "To")
        from_ = _field(form, "From")
        service_sid = _field(form, "MessagingServiceSid")
        body = _field(form, "Body") or ""
        media_urls = tuple(str(url) for url in form.getall("MediaUrl", []))
        callback = _field(form, "StatusCallback")
        if not to:
            raise _TwilioError(400, 21604)
        if not _E164.fullmatch(to):
            raise _TwilioError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not from_ and not service_sid:
            raise _TwilioError(400, 21603)
        if not body and not media_urls:
            raise _TwilioError(400, 21602)
        if len(body) > MAX_BODY_CHARS:
            raise _TwilioError(400, 21617)
        if callback is not None and not callback.startswith(("http://", "https://")):
            raise _TwilioError(400, 21609)
        if to in self.opted_out:
            raise _TwilioError(400, 21610)
        prefix = "MM" if media_urls else "SM"
        return SentSms(
            sid=prefix + secrets.token_hex(16),
            to=to,
            from_=from_,
            messaging_service_sid=service_sid,
            body=body,
            status_callback=callback,
            media_urls=media_urls,
        )

    def _message_json(self, sms: SentSms) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC))
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sms.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sms.from_,
            "messaging_service_sid": sms.messaging_service_sid,
            "num_media": str(len(sms.media_urls)),
            "num_segments": str(sms_segments(sms.body)),
            "price": None,
            "price_unit": "USD",
            "sid": sms.sid,
            # Twilio answers "accepted" when a Messaging Service still has to pick the sender.
            "status": "queued" if sms.from_ else "accepted",
            "subresource_uris": {"media": f"{base}/Media.json"},
            "to": sms.to,
            "uri": f"{base}.json",
        }


def sms_segments(body: str) -> int:
    """How many SMS segments Twilio bills for ``body`` (GSM-7 if it fits, otherwise UCS-2).

    Close enough for tests: real splitting never breaks an escape pair across segments.
    """
    if all(char in _GSM7_BASIC or char in _GSM7_EXTENDED for char in body):
        units = sum(2 if char in _GSM7_EXTENDED else 1 for char in body)
        single, per_part = 160, 153
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, per_part = 70, 67
    return 1 if units <= single else math.ceil(units / per_part)


def _basic_credentials(request: web.Request) -> tuple[str, str] | None:
    # Parsed by hand: aiohttp 3.14 deprecates BasicAuth, and its decode() warns.
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("latin-1")
    except (binascii.Error, ValueError):
        return None
    login, colon, password = decoded.partition(":")
    return (login, password) if colon else None


def _field(form: MultiDictProxy[Any], name: str) -> str | None:
    value = form.get(name)
    return None if value is None else str(value)
