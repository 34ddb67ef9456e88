"""SMS through Twilio: the signed webhooks in, and the sender out.

Verify, then parse: no field is used until the request's X-Twilio-Signature checks out
against the configured public URL plus the request's path and query, and then each field we
read must have the shape Twilio gives it (bot/channels/twilio_form.py).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from urllib.parse import urlparse

from aiohttp import ClientConnectorError, ClientError, hdrs, web
from multidict import MultiDict
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator, get_signature_algorithm
from twilio.rest import Client
from twilio.twiml.messaging_response import MessagingResponse

from bot.channels.twilio_form import (
    INBOUND_FIELDS,
    STATUS_FIELDS,
    FieldInvalid,
    Rule,
    checked_fields,
    is_utf8_form,
    parse_form,
)
from bot.channels.twilio_http import RedirectingTwilioHttpClient, TwilioRateLimited
from bot.config import SmsSettings
from bot.domain import Channel, InboundMessage, PermanentSendError, TemporarySendError
from bot.http_errors import expect_handler
from bot.intake import Intake, SpoolFailed, Taken
from bot.notify import Notifier
from bot.storage.writer import Writer
from handlers.delivery import record_delivery

log = logging.getLogger(__name__)
INBOUND_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/status"
TWIML = "application/xml"
# Twilio error codes that will not change on a retry. 21610: the recipient replied STOP.
OPTED_OUT_CODES = {21610}
PERMANENT_CODES = {21211, 21408, 21612, 21614, 30003, 30004, 30005, 30006}
# How far back Twilio's message list is read to reconcile a send left in doubt.
RECONCILE_LOOKBACK = 20
# Twilio statuses of a message that never left Twilio: sending it again is no repeat.
NEVER_SENT_STATUSES = {"failed", "canceled"}

# Header values arrive from aiohttp decoded with surrogateescape, so raw bytes become lone
# surrogates. A signature is base64 and the settings header a short list of ASCII key=value
# pairs: anything longer or outside printable ASCII cannot be from Twilio, and must reach
# neither the validator (which encodes and logs what it is given) nor our logs.
MAX_SIGNATURE_HEADER = 256
SIGNATURE_HEADER = "X-Twilio-Signature"
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
PARSED_URLS_KEPT = 16


class SignatureInvalid(Exception):
    pass


class TwilioWebhooks:
    def __init__(
        self,
        settings: SmsSettings,
        public_url: str,
        intake: Intake,
        writer: Writer,
        clock: Callable[[], datetime],
        notifier: Notifier,
    ) -> None:
        self._validator = RequestValidator(settings.auth_token.reveal())
        self._public_url = public_url
        self._intake = intake
        self._writer = writer
        self._clock = clock
        self._notifier = notifier
        self._empty_twiml = str(MessagingResponse())  # the usual answer, built once
        self._parsed_urls: dict[str, str] = {}

    def routes(self) -> list[web.RouteDef]:
        return [web.post(INBOUND_PATH, self.inbound, expect_handler=expect_handler),
                web.post(STATUS_PATH, self.status, expect_handler=expect_handler)]

    async def _verified_fields(
        self, request: web.Request, rules: Mapping[str, Rule]
    ) -> dict[str, str]:
        """Refuse what cannot be read (415, 400), then what is not signed (403), then signed
        values Twilio would never send (400). Nothing is changed before all three pass."""
        if not is_utf8_form(request.headers.get(hdrs.CONTENT_TYPE)):
            # 415, as for any other media type we do not take: a charset is a parameter of
            # the media type, so a form in latin-1 is a type we do not take (RFC 9110's
            # 415), not a malformed body (400). We read every body as UTF-8 in any case.
            raise web.HTTPUnsupportedMediaType(text="expected a UTF-8 form body")
        form = parse_form(await request.read())
        try:
            self._check_signature(request, form)
        except SignatureInvalid:
            log.warning("twilio_signature_invalid", extra={"path": request.path})
            raise web.HTTPForbidden(text="invalid signature") from None
        try:
            return checked_fields(form, rules)
        except FieldInvalid as exc:
            log.warning("twilio_field_invalid", extra={"path": request.path, "field": exc.field})
            raise

    def _check_signature(self, request: web.Request, form: MultiDict[str]) -> None:
        signature = _ascii_header(request, SIGNATURE_HEADER)
        algorithm = get_signature_algorithm(_ascii_header(request, SETTINGS_HEADER))
        url = self._public_url + request.rel_url.path_qs
        if not signature:
            raise SignatureInvalid
        # validate() signs the URL twice, with and without the default port, as Twilio's
        # own signing is inconsistent about it. Twilio almost always signs the URL as given,
        # which is one of the two (urlparse(url).geturl(), as validate() builds them): it is
        # tried alone first, with the library's signing, and validate() runs only when that
        # does not match. So nothing passes that validate() would refuse.
        with contextlib.suppress(ValueError):  # an algorithm the library does not know
            expected = self._validator.compute_signature(self._as_parsed(url), form, algorithm)
            if hmac.compare_digest(expected.encode(), signature.encode()):
                return
        if not self._validator.validate(url, form, signature, algorithm):
            raise SignatureInvalid

    def _as_parsed(self, url: str) -> str:
        """urlparse(url).geturl(), kept for the few URLs Twilio posts to."""
        found = self._parsed_urls.get(url)
        if found is None:
            if len(self._parsed_urls) >= PARSED_URLS_KEPT:
                self._parsed_urls.clear()  # a stranger's many query strings: start again
            found = self._parsed_urls[url] = urlparse(url).geturl()
        return found

    async def inbound(self, request: web.Request) -> web.Response:
        fields = await self._verified_fields(request, INBOUND_FIELDS)
        msg = parse_inbound(fields, self._clock())
        try:
            taken = await self._intake.take(msg)
        except SpoolFailed:
            taken = Taken.SPOOLED  # lost to us, but the contact still gets the safety text
        text = self._intake.fallback_text(msg) if taken is Taken.SPOOLED else None
        if not text:
            # Normal replies go out through the outbox; the webhook answer stays empty.
            return web.Response(text=self._empty_twiml, content_type=TWIML)
        twiml = MessagingResponse()
        twiml.message(text)
        return web.Response(text=str(twiml), content_type=TWIML)

    async def status(self, request: web.Request) -> web.Response:
        fields = await self._verified_fields(request, STATUS_FIELDS)
        sid, status = fields["MessageSid"], fields["MessageStatus"]
        error_code = fields["ErrorCode"] or None
        now = self._clock()
        delivery = await self._writer.run(
            lambda s: record_delivery(s, sid, status, error_code, now)
        )
        if delivery is not None:
            self._notifier.conversation(delivery.conversation_id)
            self._notifier.escalation(delivery.escalation_id)
        return web.Response(text=self._empty_twiml, content_type=TWIML)


def _ascii_header(request: web.Request, name: str) -> str:
    value = request.headers.get(name, "")
    if len(value) > MAX_SIGNATURE_HEADER or not (value.isascii() and value.isprintable()):
        raise SignatureInvalid
    return value


def parse_inbound(fields: Mapping[str, str], received_at: datetime) -> InboundMessage:
    """Only what the flow needs, from fields already checked against INBOUND_FIELDS.
    Location fields (FromCity, FromZip, ...) are never read."""
    return InboundMessage(
        channel=Channel.SMS,
        address=fields["From"],
        provider_id=fields["MessageSid"],
        text=fields["Body"],
        media_count=int(fields["NumMedia"] or 0),
        received_at=received_at,
        # Our number the contact wrote to: with several numbers, the reply comes from it.
        our_address=fields["To"] or None,
    )


class TwilioSender:
    """Sends with the real twilio SDK. Build inside the running loop; close on shutdown."""

    def __init__(self, settings: SmsSettings, status_callback_url: str, timeout: float) -> None:
        base = None if settings.api_base_url == "https://api.twilio.com" else settings.api_base_url
        self._http = RedirectingTwilioHttpClient(base, timeout=timeout)
        self._client = Client(
            settings.account_sid, settings.auth_token.reveal(), http_client=self._http
        )
        self._service = bool(settings.messaging_service_sid)
        self._origin = (
            {"messaging_service_sid": settings.messaging_service_sid}
            if self._service
            else {"from_": settings.from_number}
        )
        self._status_callback = status_callback_url

    async def send(self, address: str, text: str, origin: str | None) -> str:
        # A reply goes from the number the contact wrote to, unless a Messaging Service
        # picks the sender.
        sender = self._origin if self._service or not origin else {"from_": origin}
        try:
            message = await self._client.messages.create_async(
                to=address, body=text, status_callback=self._status_callback, **sender
            )
        except Exception as exc:
            raise _send_error(exc) from None
        return str(message.sid)

    async def find_sent(self, address: str, text: str) -> list[str]:
        """Twilio's own record, for a message a crash or timeout left in doubt: the most
        recent messages to `address` with exactly this text, newest first."""
        try:
            recent = await self._client.messages.list_async(to=address, limit=RECONCILE_LOOKBACK)
        except TwilioRateLimited as exc:
            raise _send_error(exc) from None
        except TwilioException as exc:
            # A failed page of a list is the SDK's bare TwilioException, without a status.
            raise TemporarySendError(f"twilio:list:{type(exc).__name__}") from None
        except Exception as exc:
            raise _send_error(exc) from None
        return [
            str(m.sid) for m in recent
            if m.body == text and str(m.status) not in NEVER_SENT_STATUSES
        ]

    async def close(self) -> None:
        await self._http.close()


def _send_error(exc: Exception) -> Exception:
    """What a failed Twilio call means for the outbox."""
    if isinstance(exc, TwilioRateLimited):
        return TemporarySendError("twilio:429", retry_after=exc.retry_after)
    if isinstance(exc, TwilioRestException):
        return _classify(exc)
    if isinstance(exc, ClientConnectorError):
        # No connection was made, so Twilio cannot have the message.
        return TemporarySendError(f"network:{type(exc).__name__}")
    if isinstance(exc, ClientError | OSError | TimeoutError):
        return TemporarySendError(f"network:{type(exc).__name__}", in_doubt=True)
    raise exc


def _classify(exc: TwilioRestException) -> Exception:
    reason = f"twilio:{exc.status}:{exc.code or '-'}"
    if exc.code in OPTED_OUT_CODES:
        return PermanentSendError(reason, opted_out=True)
    if exc.status == 429 or exc.status >= 500:
        return TemporarySendError(reason)
    if exc.code in PERMANENT_CODES or 400 <= exc.status < 500:
        return PermanentSendError(reason)
    return TemporarySendError(reason)
