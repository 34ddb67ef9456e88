"""Bad input at the webhooks, case by case (tests/test_fuzz_webhooks.py generates the rest).

Every header or body the service cannot take gets a 4xx and changes nothing, before or after
the signature check. Signed values Twilio would never send are refused with 400: not stored,
not spooled, not answered. Each case here was once a 500 or a stored absurdity.

A refused request changes nothing, so the cases of one test share one running service, and
after each case the test checks that it is still untouched."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict

from bot.channels.twilio_form import parse_form
from bot.storage.models import Contact, Message, Outbox, ProviderEvent
from tests.conftest import PUBLIC_URL, WEBHOOK_SECRET, Service, StartService
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import AUTH_TOKEN, load_telegram_update, load_twilio_form, twilio_signature
from tests.raw_http import Headers, raw_post

INBOUND_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/status"
TELEGRAM_PATH = "/webhooks/telegram"
FORM = "application/x-www-form-urlencoded"
SID = "SM" + "ab" * 16
TABLES = (ProviderEvent, Message, Contact, Outbox)
TELEGRAM_HEADERS = [(b"Content-Type", b"application/json"),
                    (b"X-Telegram-Bot-Api-Secret-Token", WEBHOOK_SECRET.encode())]


@dataclass
class World:
    """The running service with both channels, the fakes, and every log record."""

    svc: Service
    twilio: FakeTwilio
    telegram: FakeTelegram
    caplog: pytest.LogCaptureFixture

    async def assert_refused(self, case: str, status: int, expected: int) -> None:
        assert status == expected, f"{case}: answered {status}, not {expected}"
        await self.assert_untouched(case)

    async def assert_untouched(self, case: str = "") -> None:
        for model in TABLES:
            assert await self.svc.all(model) == [], f"{case}: {model.__name__} rows written"
        spool = self.svc.services.spool
        assert len(spool) == 0, f"{case}: the message was spooled"
        held = spool.directory / "held"
        assert not held.is_dir() or not any(held.iterdir()), f"{case}: a message was held"
        # With no outbox row the worker has nothing to send, so there is nothing to wait for.
        assert self.twilio.sent == [] and self.telegram.sent == [], f"{case}: sent something"
        bad = [f"{r.name} {r.levelname} {r.getMessage()}" for r in self.caplog.records
               if r.levelno >= logging.ERROR or r.exc_info]
        assert bad == [], f"{case}: logged {bad}"


@pytest.fixture
async def world(
    start_service: StartService, fake_twilio: FakeTwilio, fake_telegram: FakeTelegram,
    caplog: pytest.LogCaptureFixture,
) -> World:
    caplog.set_level(logging.DEBUG)
    svc = await start_service(fake_twilio, fake_telegram)
    return World(svc, fake_twilio, fake_telegram, caplog)


def inbound_form(**overrides: str) -> dict[str, str]:
    return load_twilio_form("inbound_sms", **{"MessageSid": SID, "SmsMessageSid": SID,
                                              "SmsSid": SID, **overrides})


async def post_signed(
    svc: Service,
    path: str,
    fields: Mapping[str, str] | Sequence[tuple[str, str]],
    content_type: bytes = FORM.encode(),
    headers: Headers = (),
) -> int:
    """POST ``fields`` with a valid X-Twilio-Signature, whatever else is odd about it."""
    pairs = list(fields.items()) if isinstance(fields, Mapping) else list(fields)
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, MultiDict(pairs))  # type: ignore[arg-type]
    return await raw_post(
        svc.client,
        path,
        [(b"Content-Type", content_type), (b"X-Twilio-Signature", signature.encode()),
         *headers],
        urlencode(pairs).encode(),
    )


# --- Twilio: headers and body ----------------------------------------------------------------

UNDECODABLE_CHARSETS = {
    "unknown codec": "; charset=x-no-such-codec",
    "utf-16": "; charset=utf-16",
    "latin-1": "; charset=latin-1",
    "a second charset": "; charset=utf-8; charset=latin-1",
    "RFC 2231 charset": "; charset*=utf-16''x",
    "empty charset": "; charset=",
}


async def test_undecodable_charset_is_refused_before_any_side_effect(world: World) -> None:
    for case, suffix in UNDECODABLE_CHARSETS.items():
        for path in (INBOUND_PATH, STATUS_PATH):
            form = inbound_form() if path == INBOUND_PATH else load_twilio_form("status_delivered")
            status = await post_signed(world.svc, path, form, (FORM + suffix).encode())
            await world.assert_refused(f"{case} at {path}", status, 415)


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "Utf-8 "])
async def test_utf8_charset_in_any_spelling_is_taken_in(world: World, charset: str) -> None:
    status = await post_signed(world.svc, INBOUND_PATH, inbound_form(),
                               f"{FORM}; charset={charset}".encode())

    assert status == 200
    assert len(await world.svc.all(ProviderEvent)) == 1


async def test_content_type_the_email_parser_chokes_on_is_not_a_500(world: World) -> None:
    # The stdlib parser behind aiohttp's request.content_type raises IndexError on ";a*".
    status = await post_signed(world.svc, STATUS_PATH, load_twilio_form("status_delivered"),
                               f"{FORM};a*".encode())
    await world.assert_untouched()
    status = await post_signed(world.svc, INBOUND_PATH, inbound_form(), f"{FORM};a*".encode())

    assert status == 200
    assert len(await world.svc.all(ProviderEvent)) == 1


async def test_percent_encoded_non_utf8_is_refused(world: World) -> None:
    form = inbound_form(Body="\ufffd")  # what a lenient decoder makes of %FF, signed as such
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + INBOUND_PATH, form)
    body = urlencode(form).replace("%EF%BF%BD", "%FF").encode()
    headers = [(b"Content-Type", FORM.encode()), (b"X-Twilio-Signature", signature.encode())]

    status = await raw_post(world.svc.client, INBOUND_PATH, headers, body)

    await world.assert_refused("%FF", status, 400)


ODD_SIGNATURE_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {
    "signature not ASCII": [(b"X-Twilio-Signature", b"\xff\xfe")],
    "signature UTF-8": [(b"X-Twilio-Signature", b"caf\xc3\xa9")],
    "signature huge": [(b"X-Twilio-Signature", b"A" * 4000)],
    "settings not ASCII": [(b"X-Twilio-Webhooks-Signature-Settings", b"algorithm=\xff")],
    "settings unknown algorithm": [(b"X-Twilio-Webhooks-Signature-Settings", b"algorithm=MD5")],
    "settings other algorithm": [(b"X-Twilio-Webhooks-Signature-Settings",
                                  b"key=k,algorithm=HMAC_SHA256")],
    "settings huge": [(b"X-Twilio-Webhooks-Signature-Settings", b"algorithm=" + b"A" * 4000)],
}


async def test_odd_signature_headers_are_refused(world: World) -> None:
    form = inbound_form()
    good = twilio_signature(AUTH_TOKEN, PUBLIC_URL + INBOUND_PATH, form).encode()
    for case, headers in ODD_SIGNATURE_HEADERS.items():
        if not any(name == b"X-Twilio-Signature" for name, _ in headers):
            headers = [*headers, (b"X-Twilio-Signature", good)]  # valid, for HMAC-SHA1
        status = await raw_post(world.svc.client, INBOUND_PATH,
                                [(b"Content-Type", FORM.encode()), *headers],
                                urlencode(form).encode())
        await world.assert_refused(case, status, 403)


async def test_settings_header_naming_no_algorithm_means_hmac_sha1(world: World) -> None:
    headers = [(b"X-Twilio-Webhooks-Signature-Settings", b",,=,algorithm,=x=")]

    assert await post_signed(world.svc, INBOUND_PATH, inbound_form(), headers=headers) == 200


# --- any endpoint: what aiohttp itself stumbles on --------------------------------------------

ENDPOINTS = (INBOUND_PATH, STATUS_PATH, TELEGRAM_PATH)


def signed_request(path: str) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Headers and body of a request to ``path`` that would be taken in as it is."""
    if path == TELEGRAM_PATH:
        return list(TELEGRAM_HEADERS), telegram_body()
    form = inbound_form() if path == INBOUND_PATH else load_twilio_form("status_delivered")
    signature = twilio_signature(AUTH_TOKEN, PUBLIC_URL + path, form)
    return ([(b"Content-Type", FORM.encode()), (b"X-Twilio-Signature", signature.encode())],
            urlencode(form).encode())


async def test_body_that_does_not_inflate_is_refused_with_400(world: World) -> None:
    for path in ENDPOINTS:
        headers, body = signed_request(path)
        status = await raw_post(world.svc.client, path,
                                [*headers, (b"Content-Encoding", b"gzip")], body)
        await world.assert_refused(f"gzip that is not at {path}", status, 400)


async def test_header_with_a_control_byte_is_a_400_and_a_warning_without_the_bytes(
    world: World,
) -> None:
    for path in ENDPOINTS:
        headers, body = signed_request(path)
        status = await raw_post(world.svc.client, path,
                                [*headers, (b"X-Note", b"sec\x01ret-ish")], body)
        await world.assert_refused(f"control byte at {path}", status, 400)
    logged = [r for r in world.caplog.records if r.name == "aiohttp.server"]
    assert [r.getMessage() for r in logged] == ["http_request_malformed"] * len(ENDPOINTS)
    assert all(r.levelno == logging.WARNING and not r.exc_info for r in logged)


async def test_unknown_expect_header_is_refused_with_417(world: World) -> None:
    for path in ENDPOINTS:
        headers, body = signed_request(path)
        for expect in (b"\x80", b"caf\xc3\xa9", b"x"):
            status = await raw_post(world.svc.client, path, [*headers, (b"Expect", expect)],
                                    body)
            await world.assert_refused(f"Expect {expect!r} at {path}", status, 417)


async def test_expect_100_continue_is_still_honoured(world: World) -> None:
    headers, body = signed_request(INBOUND_PATH)
    headers.append((b"Expect", b"100-continue"))

    assert await raw_post(world.svc.client, INBOUND_PATH, headers, body) == 200
    assert len(await world.svc.all(ProviderEvent)) == 1


# --- Twilio: signed values Twilio would never send -------------------------------------------

ABSURD_ADDRESSES = {
    "a word": "hello",
    "500 characters": "+1" + "3" * 498,
    "a NUL byte": "+1314555\x000123",
    "a trailing newline": "+13145550123\n",
    "a leading space": " +13145550123",
    "Arabic-Indic digits": "+\u0663\u0661\u0664\u0665\u0665\u0665\u0660\u0661\u0662\u0663",
    "a leading zero": "+0123456789",
    "16 digits": "+1314555012345678",
    "a 2-digit short code": "12",
    "9 digits without +": "123456789",
    "empty": "",
    "a lone +": "+",
    "another channel": "whatsapp:+13145550123",
}


async def test_signed_absurd_from_is_refused_and_not_stored(world: World) -> None:
    for case, from_ in ABSURD_ADDRESSES.items():
        status = await post_signed(world.svc, INBOUND_PATH, inbound_form(From=from_))
        await world.assert_refused(f"From {case}", status, 400)


async def test_signed_absurd_to_is_refused_and_not_stored(world: World) -> None:
    for case, to in ABSURD_ADDRESSES.items():
        status = await post_signed(world.svc, INBOUND_PATH, inbound_form(To=to))
        await world.assert_refused(f"To {case}", status, 400)
    form = inbound_form()
    del form["To"]
    await world.assert_refused("no To", await post_signed(world.svc, INBOUND_PATH, form), 400)


@pytest.mark.parametrize("from_", ["+13145550123", "+4930901820", "55501", "233"])
async def test_signed_e164_or_short_code_sender_is_taken_in(world: World, from_: str) -> None:
    assert await post_signed(world.svc, INBOUND_PATH, inbound_form(From=from_)) == 200
    assert len(await world.svc.all(ProviderEvent)) == 1


MALFORMED_SIDS = {
    "short": "SM123",
    "lower-case prefix": "sm" + "0" * 32,
    "not hex": "SM" + "g" * 32,
    "a NUL byte": "SM" + "0" * 31 + "\x00",
    "one letter": "S" + "0" * 33,
    "33 hex digits": "SM" + "0" * 33,
    "long": "SM" + "0" * 500,
    "empty": "",
}


async def test_signed_malformed_message_sid_is_refused(world: World) -> None:
    for case, sid in MALFORMED_SIDS.items():
        form = inbound_form(MessageSid=sid, SmsSid=sid, SmsMessageSid=sid)
        status = await post_signed(world.svc, INBOUND_PATH, form)
        await world.assert_refused(f"MessageSid {case}", status, 400)
        status = await post_signed(world.svc, INBOUND_PATH, inbound_form(SmsSid=sid))
        await world.assert_refused(f"SmsSid {case} beside a good MessageSid", status, 400)
    form = inbound_form()
    del form["MessageSid"]
    await world.assert_refused("no MessageSid",
                               await post_signed(world.svc, INBOUND_PATH, form), 400)


ABSURD_MEDIA_COUNTS = {
    "25 digits": "1" * 25,
    "eleven": "11",
    "negative": "-1",
    "a decimal": "1.0",
    "a space": " 1",
    "Arabic-Indic one": "\u0661",
    "empty": "",
    "a leading zero": "01",
}


async def test_signed_huge_num_media_is_refused_not_spooled(world: World) -> None:
    for case, num_media in ABSURD_MEDIA_COUNTS.items():
        status = await post_signed(world.svc, INBOUND_PATH, inbound_form(NumMedia=num_media))
        await world.assert_refused(f"NumMedia {case}", status, 400)


async def test_signed_body_over_10000_characters_is_refused(world: World) -> None:
    status = await post_signed(world.svc, INBOUND_PATH, inbound_form(Body="x" * 10_001))
    await world.assert_refused("10,001 characters", status, 400)


async def test_signed_body_of_10000_characters_is_taken_in(world: World) -> None:
    assert await post_signed(world.svc, INBOUND_PATH, inbound_form(Body="é" * 10_000)) == 200
    [inbound] = [m for m in await world.svc.all(Message) if m.direction == "in"]
    assert world.svc.decrypt(inbound.body_enc) == "é" * 10_000


SECOND_VALUES = {"From": "+13145550177", "To": "+13145550101", "MessageSid": "SM" + "cd" * 16,
                 "NumMedia": "0", "Body": "other"}


async def test_signed_duplicated_field_is_refused(world: World) -> None:
    for field, second in SECOND_VALUES.items():
        pairs = [*inbound_form().items(), (field, second)]
        status = await post_signed(world.svc, INBOUND_PATH, pairs)
        await world.assert_refused(f"{field} twice", status, 400)


# --- Twilio: status callbacks ----------------------------------------------------------------

ABSURD_STATUS_FIELDS: dict[str, dict[str, str]] = {
    "unknown status": {"MessageStatus": "exploded"},
    "empty status": {"MessageStatus": ""},
    "status with a NUL": {"MessageStatus": "undelivered\x00"},
    "status in capitals": {"MessageStatus": "UNDELIVERED"},
    "error code not digits": {"ErrorCode": "21610x"},
    "error code of 30 digits": {"ErrorCode": "2" * 30},
    "negative error code": {"ErrorCode": "-21610"},
    "error code and a space": {"ErrorCode": "21610 "},
    "malformed sid": {"MessageSid": "SM1"},
}


async def test_signed_absurd_status_callback_is_refused_and_changes_nothing(
    world: World,
) -> None:
    svc = world.svc
    assert (await svc.sms("Hello"))[0] == 200
    [sent] = await svc.assert_sent(world.twilio, 1)
    assert (await svc.all(Outbox))[0].status == "sent"
    for case, fields in ABSURD_STATUS_FIELDS.items():
        form = {**load_twilio_form("status_undelivered_21610", MessageSid=sent.sid,
                                   SmsSid=sent.sid), **fields}
        assert await post_signed(svc, STATUS_PATH, form) == 400, case
        [row] = await svc.all(Outbox)
        assert (row.status, row.last_error) == ("sent", None), case
        [contact] = await svc.all(Contact)
        assert contact.opted_out is False, case


async def test_signed_status_callback_for_an_unknown_sid_is_acknowledged(world: World) -> None:
    form = load_twilio_form("status_delivered", MessageSid="SM" + "9" * 32)
    assert await post_signed(world.svc, STATUS_PATH, form) == 200
    await world.assert_untouched()


# --- Telegram ---------------------------------------------------------------------------------


def telegram_body(**changes: Any) -> bytes:
    """The text_message fixture as JSON, with ``message__chat__id=...`` style changes."""
    update = load_telegram_update("text_message", update_id=500000001)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        table = update
        for name in parents:
            table = table[name]
        table[leaf] = value
    return json.dumps(update).encode()


ODD_SECRETS = {
    "secret then a raw byte": WEBHOOK_SECRET.encode() + b"\xff",
    "not UTF-8": b"\xff\xfe",
    "UTF-8 but not ASCII": "é".encode() * 15,
    "last character in Latin-1": WEBHOOK_SECRET[:-1].encode() + b"\xe9",
    "empty": b"",
    "the secret and a space": WEBHOOK_SECRET.encode() + b" x",
}


async def test_non_ascii_secret_header_is_refused(world: World) -> None:
    for case, secret in ODD_SECRETS.items():
        headers = [(b"Content-Type", b"application/json"),
                   (b"X-Telegram-Bot-Api-Secret-Token", secret)]
        status = await raw_post(world.svc.client, TELEGRAM_PATH, headers, telegram_body())
        await world.assert_refused(case, status, 403)


MALFORMED_UPDATES = {
    "5000-digit update_id": b'{"update_id": 1' + b"1" * 5000 + b"}",
    "arrays nested 30,000 deep": (b'{"update_id": 1, "message": ' + b"[" * 30_000
                                  + b"]" * 30_000 + b"}"),
    "negative update_id": telegram_body(update_id=-1),
    "update_id past 2**53": telegram_body(update_id=2**70),
    "chat id past 2**53": telegram_body(message__chat__id=2**70, message__from__id=2**70),
    "negative private chat id": telegram_body(message__chat__id=-5, message__from__id=-5),
    "boolean chat id": telegram_body(message__chat__id=True),
    "float chat id": telegram_body(message__chat__id=1.5),
    "string chat id": telegram_body(message__chat__id="700000123"),
    "text over 10,000": telegram_body(message__text="x" * 10_001),
    "text a number": telegram_body(message__text=12),
    "text a list": telegram_body(message__text=["Hello"]),
    "date out of range": telegram_body(message__date=10**20),
    "chat a string": telegram_body(message__chat="private"),
    "chat type null": telegram_body(message__chat__type=None),
    "no chat": b'{"update_id": 1, "message": {"message_id": 1, "date": 1, "text": "Hello"}}',
    "lone surrogate": (b'{"update_id": 500000001, "message": {"message_id": 17, "date": 1, '
                       b'"chat": {"id": 700000123, "type": "private"}, "text": "\\ud800"}}'),
    "a list": b'[{"update_id": 1}]',
    "update_id a string at last": b'{"update_id": 1, "update_id": "x"}',
    "not JSON": b"this is not json",
    "not UTF-8": b'{"update_id": 1, "message": {"text": "caf\xe9"}}',
}


async def test_malformed_update_is_refused_with_400(world: World) -> None:
    for case, body in MALFORMED_UPDATES.items():
        status = await raw_post(world.svc.client, TELEGRAM_PATH, TELEGRAM_HEADERS, body)
        await world.assert_refused(case, status, 400)


async def test_telegram_text_of_10000_characters_is_taken_in(world: World) -> None:
    status, _ = await world.svc.telegram("ü" * 10_000)

    assert status == 200
    [inbound] = [m for m in await world.svc.all(Message) if m.direction == "in"]
    assert world.svc.decrypt(inbound.body_enc) == "ü" * 10_000


# The form parser's own rules, without a service: the same pairs as the standard library's
# parse_qsl with blank values kept and strict UTF-8, or a 400 where that raises.
FORM_ALPHABET = st.sampled_from(["a", "=", "&", "+", "%", "2", "B", "F", "f", "C", "3", "A",
                                 "9", "%2B", "%C3%A9", "%E9", "%zz", "%F0%9F%98%80", "é", " "])


@settings(max_examples=500, derandomize=True, database=None, deadline=None)
@given(st.lists(FORM_ALPHABET, max_size=30).map("".join))
def test_form_parser_reads_what_parse_qsl_reads(text: str) -> None:
    try:
        expected: object = parse_qsl(text.rstrip(), keep_blank_values=True, encoding="utf-8",
                                     errors="strict")
    except ValueError:
        expected = web.HTTPBadRequest
    try:
        got: object = list(parse_form(text.encode()).items())
    except web.HTTPBadRequest:
        got = web.HTTPBadRequest
    assert got == expected
