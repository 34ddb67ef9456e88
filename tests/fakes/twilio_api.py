"""A stand-in for Twilio's Messages API on loopback, for driving the real twilio SDK in tests.

Point the SDK at it with ``RedirectingTwilioHttpClient(fake.base_url)``. It answers the way
Twilio's REST API does (status codes, error JSON, Message JSON, page JSON) for the two calls
the service needs, both on ``/2010-04-01/Accounts/{AccountSid}/Messages.json``:

* ``POST`` sends a message (the SDK's ``messages.create_async``);
* ``GET`` lists the account's messages (``messages.list_async``), newest first, filtered by
  ``To``, ``From``, ``DateSent``, ``DateSent<`` and ``DateSent>``, paged by ``PageSize`` and
  ``Page``/``PageToken`` as Twilio pages (``next_page_uri`` carries ``PageToken=PA<last sid>``).

A message's life, as at Twilio: the POST answers ``queued`` (``accepted`` when a Messaging
Service picks the sender) with ``date_sent: null``. The fake then moves it to ``sent`` at
once, with ``date_sent`` from its clock, the moment Twilio would a second later. Built with
``send_at_once=False`` it stays queued until ``mark_sent``, to show the window in which Twilio
has a message that no ``DateSent`` filter finds (a message without a sent date never matches
one, at Twilio too).

``DateSent`` filters compare days in UTC, which is all Twilio documents: ``DateSent>`` is on
or after that day, ``DateSent<`` on or before it. The SDK sends a ``datetime`` as
``YYYY-MM-DDTHH:MM:SSZ``; the fake keeps only its UTC day, so such a filter matches the whole
day. Code that reconciles against the list should match on more than the date.

Faults, each for the next call(s) only: ``fail_next`` (Twilio's error JSON, and a
``Retry-After`` header if asked), ``hang_next`` (stall before handling: nothing is sent if the
caller gives up) and ``accept_then_hang`` (take the message, then stall the answer: the
caller times out although Twilio has the message, as when a service dies mid-send).
Dates come from ``clock`` (real UTC now by default), so an in-process service on an injected
clock and the fake agree on what "today" is.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from multidict import MultiDictProxy

from ._loopback import (
    LoopbackServer,
    Signal,
    client_gone,
    take_first,
    wait_for_count,
)

API_VERSION = "2010-04-01"
MAX_BODY_CHARS = 1600
# Twilio's list paging: 50 a page unless PageSize says otherwise; the fake serves at most 1000.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
# The list filters in the order Twilio echoes them in its page URIs.
_LIST_FILTERS = ("To", "From", "DateSent", "DateSent<", "DateSent>")

# Twilio's own wording for the errors this fake can produce.
ERROR_MESSAGES: dict[int, str] = {
    20001: "Invalid parameter",
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


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SentSms:
    """A message the fake accepted, as the SDK sent it, and where Twilio has it now.

    ``status`` is ``queued`` (``accepted`` for a Messaging Service) until the message is
    sent; then it is ``sent`` and ``date_sent`` is set. The fake replaces the entry in
    ``FakeTwilio.sent`` when that happens, so read the list again for the current state.
    """

    sid: str
    to: str
    from_: str | None
    messaging_service_sid: str | None
    body: str
    status_callback: str | None
    accepted_at_monotonic: float = field(default_factory=time.monotonic)
    media_urls: tuple[str, ...] = ()
    status: str = "queued"
    date_created: datetime = field(default_factory=_utc_now)
    date_sent: datetime | None = None


@dataclass(frozen=True)
class TwilioAttempt:
    """One request as the fake saw it, whatever came of it.

    ``status`` is 499 when the caller hung up before the answer (see ``hang_next`` and
    ``accept_then_hang``). ``fields`` holds the form of a POST and the query of a GET.
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
    retry_after: int | None
    method: str | None


@dataclass(frozen=True)
class _Hang:
    seconds: float
    method: str | None


class _TwilioError(Exception):
    def __init__(
        self,
        status: int,
        code: int | None,
        message: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message or ERROR_MESSAGES.get(code or 0, "Error")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        headers = {"WWW-Authenticate": 'Basic realm="Twilio API"'} if self.status == 401 else {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)  # whole seconds, as Twilio sends it
        return headers

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

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        clock: Callable[[], datetime] | None = None,
        *,
        send_at_once: bool = True,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        # Every message Twilio has accepted, oldest first, in its current state.
        self.sent: list[SentSms] = []
        self.attempts: list[TwilioAttempt] = []
        # Numbers that texted STOP: Twilio itself refuses to message them (error 21610).
        self.opted_out: set[str] = set()
        self._clock = clock or _utc_now
        self._send_at_once = send_at_once
        self._failures: deque[_Failure] = deque()
        self._hangs: deque[_Hang] = deque()
        self._lost_answers: deque[float] = deque()
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
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        times: int = 1,
        *,
        retry_after: int | None = None,
        method: str | None = "POST",
    ) -> None:
        """Make the next ``times`` requests fail with Twilio's error JSON.

        Without ``code`` the code Twilio pairs with ``status`` is used (500 -> 20500,
        429 -> 20429). Without ``message`` Twilio's wording for the code is used. With
        ``retry_after`` the answer carries ``Retry-After: <seconds>``, as Twilio's 429 does.
        ``method`` picks the call: ``"POST"`` sends (the default), ``"GET"`` lists, None either.
        """
        code = code if code is not None else _CODE_FOR_STATUS.get(status)
        text = message or ERROR_MESSAGES.get(code or 0, "Error")
        self._failures.extend(
            _Failure(status, code, text, retry_after, method) for _ in range(times)
        )

    def hang_next(self, seconds: float, times: int = 1, method: str | None = "POST") -> None:
        """Stall the next ``times`` requests for ``seconds`` before handling them.

        A stalled request is still handled afterwards if the caller is waiting; if the caller
        gave up, it is recorded in ``attempts`` with status 499 and nothing is sent.
        ``method`` picks the call as in ``fail_next``.
        """
        self._hangs.extend(_Hang(seconds, method) for _ in range(times))

    def accept_then_hang(self, seconds: float, times: int = 1) -> None:
        """Accept the next ``times`` valid sends, then stall ``seconds`` before answering.

        Twilio has the message (it is in ``sent`` and in the list call) but the caller's
        timeout fires first, as when the service is killed or times out after Twilio took
        it. The attempt is recorded, with status 499, once the stall ends or the fake closes;
        a caller still waiting when the stall ends gets the usual 201.
        """
        self._lost_answers.extend(seconds for _ in range(times))

    def mark_sent(self, sid: str | None = None) -> None:
        """Move message ``sid`` (every queued one if None) to ``sent``, dated by the clock.

        Only needed with ``send_at_once=False``; otherwise messages are sent on acceptance.
        """
        if sid is not None and all(sms.sid != sid for sms in self.sent):
            raise KeyError(sid)
        for index, sms in enumerate(self.sent):
            if sms.date_sent is None and sid in (None, sms.sid):
                self.sent[index] = self._sent_now(sms)
        self._changed.fire()

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

    def _build_app(self) -> web.Application:
        app = web.Application()
        messages = f"/{API_VERSION}/Accounts/{{account_sid}}/Messages.json"
        app.router.add_post(messages, self._handle)
        app.router.add_get(messages, self._handle, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        error = _TwilioError(404, 20404, f"The requested resource {request.path} was not found")
        return web.json_response(error.body(), status=404)

    async def _handle(self, request: web.Request) -> web.Response:
        form = await request.post() if request.method == "POST" else request.query
        fields = {key: str(value) for key, value in form.items()}
        headers: dict[str, str] = {}
        try:
            self._check_auth(request)
            await self._fault_before(request)
            if request.method == "POST":
                status, payload = await self._create_message(request, form)
            else:
                status, payload = 200, self._list_page(request.query)
            error_code = None
        except _TwilioError as error:
            status, payload, error_code = error.status, error.body(), error.code
            headers = error.headers()
        if client_gone(request):
            status = 499
        self.attempts.append(
            TwilioAttempt(request.method, request.path, fields, status, error_code)
        )
        return web.json_response(payload, status=status, headers=headers)

    async def _fault_before(self, request: web.Request) -> None:
        """Play the next hang and failure queued for this call, if any."""
        wanted = _for_method(request.method)
        hang = take_first(self._hangs, wanted)
        if hang is not None:
            await self._server.pause(hang.seconds)
            if client_gone(request):
                raise _TwilioError(499, None, "caller hung up before Twilio answered")
        failure = take_first(self._failures, wanted)
        if failure is not None:
            raise _TwilioError(failure.status, failure.code, failure.message, failure.retry_after)

    async def _create_message(
        self, request: web.Request, form: MultiDictProxy[Any]
    ) -> tuple[int, dict[str, Any]]:
        sms = self._validate(form)
        # Twilio's POST answers "queued" even when the message is sent a moment later.
        answer = self._message_json(sms)
        self.sent.append(self._sent_now(sms) if self._send_at_once else sms)
        self._changed.fire()
        if self._lost_answers:
            await self._server.pause(self._lost_answers.popleft())
            if client_gone(request):
                raise _TwilioError(499, None, "caller hung up before Twilio answered")
        return 201, answer

    def _sent_now(self, sms: SentSms) -> SentSms:
        return dataclasses.replace(sms, status="sent", date_sent=self._clock())

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
            # Twilio answers "accepted" when a Messaging Service still has to pick the sender.
            status="queued" if from_ else "accepted",
            date_created=self._clock(),
        )

    def _list_page(self, query: Mapping[str, str]) -> dict[str, Any]:
        """One page of the account's messages, as Twilio's list call answers it."""
        filters = {name: query[name] for name in _LIST_FILTERS if name in query}
        days = {name: _parse_day(value) for name, value in filters.items() if "DateSent" in name}
        page_size = min(_int_param(query, "PageSize", DEFAULT_PAGE_SIZE, minimum=1), MAX_PAGE_SIZE)
        page = _int_param(query, "Page", 0, minimum=0)
        # Newest first by sent date (creation date while queued); later accepted wins a tie.
        order = {sms.sid: (sms.date_sent or sms.date_created, i) for i, sms in enumerate(self.sent)}
        matches = sorted(
            (sms for sms in self.sent if _matches(sms, filters, days)),
            key=lambda sms: order[sms.sid],
            reverse=True,
        )
        first = self._page_start(query.get("PageToken"), page, page_size, matches, order)
        records = matches[first : first + page_size]
        start = page * page_size

        def uri(number: int, token: str | None = None) -> str:
            params = [*filters.items(), ("PageSize", str(page_size)), ("Page", str(number))]
            if token is not None:
                params.append(("PageToken", token))
            return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages.json?{urlencode(params)}"

        more_after = first + page_size < len(matches)
        return {
            "end": start + max(len(records) - 1, 0),
            "first_page_uri": uri(0),
            "messages": [self._message_json(sms) for sms in records],
            "next_page_uri": uri(page + 1, "PA" + records[-1].sid) if more_after else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (
                uri(max(page - 1, 0), "PB" + records[0].sid) if records and first > 0 else None
            ),
            "start": start,
            "uri": uri(page, query.get("PageToken")),
        }

    @staticmethod
    def _page_start(
        token: str | None,
        page: int,
        page_size: int,
        matches: list[SentSms],
        order: dict[str, tuple[datetime, int]],
    ) -> int:
        """Where in ``matches`` the page begins.

        Twilio's tokens name the record a page follows (``PA<sid>``) or precedes (``PB<sid>``),
        so messages accepted while a caller pages do not shift what it reads next. Without a
        token, ``Page`` counts pages from the newest message.
        """
        if token is None:
            return page * page_size
        direction, sid = token[:2], token[2:]
        if direction not in ("PA", "PB") or sid not in order:
            raise _TwilioError(400, 20001, f"Invalid PageToken: {token}")
        if direction == "PA":
            return sum(1 for sms in matches if order[sms.sid] >= order[sid])
        before = sum(1 for sms in matches if order[sms.sid] > order[sid])
        return max(before - page_size, 0)

    def _message_json(self, sms: SentSms) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sms.sid}"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": sms.body,
            "date_created": format_datetime(sms.date_created),
            "date_sent": None if sms.date_sent is None else format_datetime(sms.date_sent),
            "date_updated": format_datetime(sms.date_sent or sms.date_created),
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
            "status": sms.status,
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


def _for_method(method: str) -> Callable[[_Failure | _Hang], bool]:
    return lambda fault: fault.method is None or fault.method.upper() == method


def _matches(sms: SentSms, filters: Mapping[str, str], days: Mapping[str, date]) -> bool:
    if "To" in filters and sms.to != filters["To"]:
        return False
    if "From" in filters and sms.from_ != filters["From"]:
        return False
    if not days:
        return True
    if sms.date_sent is None:  # queued or accepted: Twilio has no sent date to compare
        return False
    day = sms.date_sent.astimezone(UTC).date()
    return (
        day == days.get("DateSent", day)
        and day <= days.get("DateSent<", day)
        and day >= days.get("DateSent>", day)
    )


def _parse_day(value: str) -> date:
    """The UTC day of a DateSent value: ``YYYY-MM-DD``, or a datetime as the SDK sends it."""
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _TwilioError(400, 20001, "Invalid date value.") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).date()


def _int_param(query: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not value.isdigit() or int(value) < minimum:
        raise _TwilioError(400, 20001, f"Invalid {name}: {value}")
    return int(value)
