"""The fake provider servers answer the real twilio and python-telegram-bot SDKs correctly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
import telegram
from telegram.error import (
    BadRequest,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TimedOut,
)
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bot.channels.twilio_http import (
    RedirectingTwilioHttpClient,
    TwilioRateLimited,
    basic_auth_header,
)
from tests.conftest import Clock
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio, sms_segments
from tests.fixtures import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    CONTACT_NUMBER,
    MESSAGING_SERVICE_SID,
    OUR_NUMBER,
    TELEGRAM_CONTACT_ID,
    TELEGRAM_TOKEN,
    encode_form,
    load_telegram_update,
    load_twilio_form,
    twilio_signature,
)
from tests.test_telegram import calls_to
from tests.waiting import eventually

CALLBACK_URL = "https://bot.example.org/twilio/status"


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def twilio_http(fake_twilio: FakeTwilio) -> AsyncIterator[RedirectingTwilioHttpClient]:
    http_client = RedirectingTwilioHttpClient(fake_twilio.base_url, timeout=5)
    yield http_client
    await http_client.close()


@pytest.fixture
def twilio_client(twilio_http: RedirectingTwilioHttpClient) -> Client:
    return Client(ACCOUNT_SID, AUTH_TOKEN, http_client=twilio_http)


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    fake = FakeTelegram(TELEGRAM_TOKEN)
    await fake.start()
    yield fake
    await fake.close()


@pytest.fixture
async def bot(fake_telegram: FakeTelegram) -> AsyncIterator[telegram.Bot]:
    async with telegram.Bot(TELEGRAM_TOKEN, base_url=fake_telegram.base_url) as bot:
        yield bot


async def send_sms(client: Client, body: str = "We got your message.", **extra: str) -> object:
    return await client.messages.create_async(
        to=CONTACT_NUMBER, from_=OUR_NUMBER, body=body, status_callback=CALLBACK_URL, **extra
    )


# --- Twilio ---------------------------------------------------------------------------------


async def test_twilio_sdk_message_is_recorded(fake_twilio: FakeTwilio, twilio_client: Client):
    message = await send_sms(twilio_client, "Thanks for writing. Someone will answer soon.")

    assert message.sid.startswith("SM") and len(message.sid) == 34
    assert message.status == "queued"
    assert message.to == CONTACT_NUMBER
    assert message.from_ == OUR_NUMBER
    assert message.num_segments == "1"
    assert message.date_created is not None  # the SDK parsed our RFC 2822 date
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.sid == message.sid
    assert (sent.to, sent.from_, sent.body) == (
        CONTACT_NUMBER,
        OUR_NUMBER,
        "Thanks for writing. Someone will answer soon.",
    )
    assert sent.status_callback == CALLBACK_URL
    assert [attempt.status for attempt in fake_twilio.attempts] == [201]


async def test_twilio_body_with_form_special_characters_arrives_unchanged(
    fake_twilio: FakeTwilio, twilio_client: Client
):
    # Our HTTP client encodes the SDK's form itself; these are the characters that encoding
    # could get wrong.
    body = "Sí & no = 50% + 1?\nEstamos aquí: ñ, é, 😀 #1"

    await send_sms(twilio_client, body)

    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body == body
    assert sent.status_callback == CALLBACK_URL


async def test_twilio_messaging_service_sender(fake_twilio: FakeTwilio, twilio_client: Client):
    message = await twilio_client.messages.create_async(
        to=CONTACT_NUMBER, messaging_service_sid=MESSAGING_SERVICE_SID, body="Hi"
    )

    assert message.status == "accepted"
    assert fake_twilio.sent[0].messaging_service_sid == MESSAGING_SERVICE_SID
    assert fake_twilio.sent[0].from_ is None


async def test_twilio_unsubscribed_recipient(fake_twilio: FakeTwilio, twilio_client: Client):
    fake_twilio.fail_next(400, 21610)

    with pytest.raises(TwilioRestException) as caught:
        await send_sms(twilio_client)

    assert caught.value.status == 400
    assert caught.value.code == 21610
    assert "Attempt to send to unsubscribed recipient" in caught.value.msg
    assert fake_twilio.sent == []
    await send_sms(twilio_client)  # the failure was for one request only
    assert [attempt.error_code for attempt in fake_twilio.attempts] == [21610, None]


async def test_twilio_opted_out_number(fake_twilio: FakeTwilio, twilio_client: Client):
    fake_twilio.opt_out(CONTACT_NUMBER)

    with pytest.raises(TwilioRestException) as caught:
        await send_sms(twilio_client)

    assert (caught.value.status, caught.value.code) == (400, 21610)


@pytest.mark.parametrize(("status", "code"), [(500, 20500), (429, 20429)])
async def test_twilio_server_errors(
    fake_twilio: FakeTwilio, twilio_client: Client, status: int, code: int
):
    fake_twilio.fail_next(status, times=2)

    for _ in range(2):
        with pytest.raises(TwilioRestException) as caught:
            await send_sms(twilio_client)
        assert (caught.value.status, caught.value.code) == (status, code)
    await send_sms(twilio_client)
    assert len(fake_twilio.sent) == 1


async def test_twilio_wrong_credentials(fake_twilio: FakeTwilio, twilio_http):
    client = Client(ACCOUNT_SID, "not-the-token", http_client=twilio_http)

    with pytest.raises(TwilioRestException) as caught:
        await send_sms(client)

    assert (caught.value.status, caught.value.code) == (401, 20003)


async def test_twilio_missing_body(twilio_client: Client):
    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.messages.create_async(to=CONTACT_NUMBER, from_=OUR_NUMBER)

    assert (caught.value.status, caught.value.code) == (400, 21602)


async def test_twilio_invalid_to_number(twilio_client: Client):
    with pytest.raises(TwilioRestException) as caught:
        await twilio_client.messages.create_async(to="555-0123", from_=OUR_NUMBER, body="Hi")

    assert (caught.value.status, caught.value.code) == (400, 21211)


async def test_twilio_hang_trips_client_timeout(fake_twilio: FakeTwilio):
    http_client = RedirectingTwilioHttpClient(fake_twilio.base_url, timeout=0.3)
    client = Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http_client)
    fake_twilio.hang_next(5)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await send_sms(client)
        assert time.monotonic() - started < 2
        await send_sms(client, "second try")
    finally:
        await http_client.close()

    await fake_twilio.close()  # ends the stalled handler so its attempt is recorded
    assert [sent.body for sent in fake_twilio.sent] == ["second try"]
    assert sorted(attempt.status for attempt in fake_twilio.attempts) == [201, 499]


async def test_twilio_waits(fake_twilio: FakeTwilio, twilio_client: Client):
    with pytest.raises(AssertionError, match="expected at least 1 Twilio messages"):
        await fake_twilio.wait_for_messages(1, timeout=0.05)

    waiter = asyncio.create_task(fake_twilio.wait_for_messages(2, timeout=2))
    await send_sms(twilio_client, "one")
    await send_sms(twilio_client, "two")
    assert [sent.body for sent in await waiter] == ["one", "two"]
    assert len(fake_twilio.sent) == 2  # both sends were answered: the record is complete


async def test_twilio_error_json_shape(fake_twilio: FakeTwilio):
    url = f"{fake_twilio.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data={"To": CONTACT_NUMBER, "Body": "Hi"}) as response,
    ):
        assert response.status == 401
        assert await response.json() == {
            "code": 20003,
            "message": "Authenticate",
            "more_info": "https://www.twilio.com/docs/errors/20003",
            "status": 401,
        }
    assert [(a.status, a.fields["Body"]) for a in fake_twilio.attempts] == [(401, "Hi")]


def test_sms_segments():
    assert sms_segments("a" * 160) == 1
    assert sms_segments("a" * 161) == 2
    assert sms_segments("€" * 80) == 1  # extended GSM: two units each
    assert sms_segments("ñ" * 160) == 1  # ñ is in the GSM alphabet
    assert sms_segments("¿Estás bien? 🙂") == 1
    assert sms_segments("á" * 71) == 2  # á is not GSM, so UCS-2


async def test_redirect_keeps_path_and_query():
    http_client = RedirectingTwilioHttpClient("http://127.0.0.1:8123/")
    real = RedirectingTwilioHttpClient(None)
    try:
        url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?PageSize=20"
        assert http_client.redirect(url) == (
            "http://127.0.0.1:8123/2010-04-01/Accounts/AC1/Messages.json?PageSize=20"
        )
        assert real.redirect(url) == url
        with pytest.raises(ValueError, match="path"):
            RedirectingTwilioHttpClient("http://127.0.0.1:8123/twilio")
    finally:
        await http_client.close()
        await real.close()


# --- Twilio: Retry-After, the Messages list, lost answers -----------------------------------

MESSAGES_PATH = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
OTHER_CONTACT = "+13145550124"
OTHER_NUMBER = "+13145550101"


@asynccontextmanager
async def sdk_on(fake: FakeTwilio) -> AsyncIterator[Client]:
    """Start ``fake`` (one built with options) and give an SDK client pointed at it."""
    await fake.start()
    http_client = RedirectingTwilioHttpClient(fake.base_url, timeout=5)
    try:
        yield Client(ACCOUNT_SID, AUTH_TOKEN, http_client=http_client)
    finally:
        await http_client.close()
        await fake.close()


async def test_twilio_429_carries_retry_after(
    fake_twilio: FakeTwilio, twilio_client: Client, twilio_http: RedirectingTwilioHttpClient
):
    fake_twilio.fail_next(429, retry_after=7, times=2)
    fake_twilio.fail_next(429)

    with pytest.raises(TwilioRestException) as caught:
        await send_sms(twilio_client)
    assert (caught.value.status, caught.value.code) == (429, 20429)
    # The SDK's exception keeps no headers; our HTTP client puts Retry-After on it.
    assert isinstance(caught.value, TwilioRateLimited) and caught.value.retry_after == 7
    with pytest.raises(TwilioRateLimited) as again:
        await send_sms(twilio_client)
    assert again.value.retry_after == 7
    with pytest.raises(TwilioRateLimited) as plain:
        await send_sms(twilio_client)
    assert plain.value.retry_after is None
    assert fake_twilio.sent == []


async def test_twilio_list_pages_newest_first_through_the_sdk(
    fake_twilio: FakeTwilio, twilio_client: Client
):
    for n in range(5):
        await send_sms(twilio_client, f"reply {n}")

    listed = await twilio_client.messages.list_async(to=CONTACT_NUMBER, page_size=2)

    assert [m.body for m in listed] == [f"reply {n}" for n in (4, 3, 2, 1, 0)]
    assert [m.sid for m in listed] == [s.sid for s in reversed(fake_twilio.sent)]
    assert {(m.status, m.to, m.from_) for m in listed} == {("sent", CONTACT_NUMBER, OUR_NUMBER)}
    lists = [a for a in fake_twilio.attempts if a.method == "GET"]
    assert [(a.status, a.fields.get("Page"), a.fields["PageSize"]) for a in lists] == [
        (200, None, "2"),
        (200, "1", "2"),
        (200, "2", "2"),
    ]
    assert lists[1].fields["PageToken"] == "PA" + listed[1].sid
    assert lists[1].fields["To"] == CONTACT_NUMBER  # the filter rides along to every page
    newest = await twilio_client.messages.list_async(limit=3)
    assert [m.body for m in newest] == ["reply 4", "reply 3", "reply 2"]


async def test_twilio_list_page_json_is_twilios(fake_twilio: FakeTwilio, twilio_client: Client):
    for n in range(3):
        await send_sms(twilio_client, f"reply {n}")
    newest_first = [s.sid for s in reversed(fake_twilio.sent)]
    auth = {"Authorization": basic_auth_header(ACCOUNT_SID, AUTH_TOKEN)}
    query = {"To": CONTACT_NUMBER, "DateSent>": "2020-01-01", "PageSize": "2"}

    async with aiohttp.ClientSession(fake_twilio.base_url, headers=auth) as session:

        async def get(uri: str, **params: str) -> dict:
            async with session.get(uri, params=params or None) as response:
                assert response.status == 200
                return await response.json()

        first = await get(MESSAGES_PATH, **query)
        # A message sent while the caller pages shifts nothing: the token names the last
        # record read, not a count.
        await send_sms(twilio_client, "sent while paging")
        second = await get(first["next_page_uri"])
        back = await get(second["previous_page_uri"])
        async with session.get(MESSAGES_PATH, params={"PageSize": "0"}) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 20001

    filters = f"{MESSAGES_PATH}?To=%2B13145550123&DateSent%3E=2020-01-01&PageSize=2"
    assert {k: v for k, v in first.items() if k != "messages"} == {
        "start": 0,
        "end": 1,
        "page": 0,
        "page_size": 2,
        "uri": f"{filters}&Page=0",
        "first_page_uri": f"{filters}&Page=0",
        "next_page_uri": f"{filters}&Page=1&PageToken=PA{newest_first[1]}",
        "previous_page_uri": None,
    }
    assert [m["sid"] for m in first["messages"]] == newest_first[:2]
    assert (second["start"], second["end"], second["page"]) == (2, 2, 1)
    assert [m["sid"] for m in second["messages"]] == newest_first[2:]
    assert second["next_page_uri"] is None
    assert second["previous_page_uri"] == f"{filters}&Page=0&PageToken=PB{newest_first[2]}"
    assert [m["sid"] for m in back["messages"]] == newest_first[:2]
    # Each record is the Message JSON the create call returns, as it stands now.
    record = second["messages"][0]
    assert record["body"] == "reply 0" and record["uri"].endswith(f"/{newest_first[2]}.json")
    assert (record["status"], record["direction"], record["num_segments"]) == (
        "sent",
        "outbound-api",
        "1",
    )
    assert record["date_sent"] is not None


async def test_twilio_list_filters_by_to_and_from(fake_twilio: FakeTwilio, twilio_client: Client):
    create = twilio_client.messages.create_async
    await create(to=CONTACT_NUMBER, from_=OUR_NUMBER, body="a")
    await create(to=OTHER_CONTACT, from_=OUR_NUMBER, body="b")
    await create(to=CONTACT_NUMBER, from_=OTHER_NUMBER, body="c")
    await create(to=CONTACT_NUMBER, messaging_service_sid=MESSAGING_SERVICE_SID, body="d")

    async def bodies(**filters: str) -> list[str]:
        return [m.body for m in await twilio_client.messages.list_async(**filters)]

    assert await bodies(to=CONTACT_NUMBER) == ["d", "c", "a"]
    assert await bodies(to=OTHER_CONTACT) == ["b"]
    assert await bodies(from_=OUR_NUMBER) == ["b", "a"]
    assert await bodies(to=CONTACT_NUMBER, from_=OTHER_NUMBER) == ["c"]
    assert await bodies(to="+13145550199") == []
    assert await bodies() == ["d", "c", "b", "a"]


async def test_twilio_list_date_sent_filters_compare_days_on_the_fakes_clock():
    clock = Clock(datetime(2026, 11, 28, 23, 30, tzinfo=UTC))
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, clock=clock)
    async with sdk_on(fake) as client:
        saturday = await send_sms(client, "saturday")
        clock.advance(days=2)
        await send_sms(client, "monday")

        async def bodies(**filters: object) -> list[str]:
            listed = await client.messages.list_async(to=CONTACT_NUMBER, **filters)
            return [m.body for m in listed]

        assert saturday.date_created == datetime(2026, 11, 28, 23, 30, tzinfo=UTC)
        assert [m.date_sent for m in await client.messages.list_async()] == [
            datetime(2026, 11, 30, 23, 30, tzinfo=UTC),
            datetime(2026, 11, 28, 23, 30, tzinfo=UTC),
        ]
        assert await bodies(date_sent_after=datetime(2026, 11, 29, tzinfo=UTC)) == ["monday"]
        assert await bodies(date_sent_before=datetime(2026, 11, 29, tzinfo=UTC)) == ["saturday"]
        assert await bodies(date_sent="2026-11-28") == ["saturday"]
        # Both ends are inclusive, and only the day counts: 23:59 on Monday still finds
        # the message sent at 23:30 that day.
        monday_late = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
        assert await bodies(date_sent_after=monday_late) == ["monday"]
        assert await bodies(date_sent_after="2026-11-28", date_sent_before="2026-11-30") == [
            "monday",
            "saturday",
        ]
        assert await bodies(date_sent_after="2026-12-01") == []
        with pytest.raises(TwilioException, match="Unable to fetch page"):  # any non-200 page
            await bodies(date_sent_after="last week")
        assert (fake.attempts[-1].status, fake.attempts[-1].error_code) == (400, 20001)


async def test_twilio_queued_message_is_listed_but_not_matched_by_date_sent():
    clock = Clock(datetime(2026, 11, 30, 16, 0, tzinfo=UTC))
    fake = FakeTwilio(ACCOUNT_SID, AUTH_TOKEN, clock=clock, send_at_once=False)
    today = datetime(2026, 11, 30, tzinfo=UTC)
    async with sdk_on(fake) as client:
        message = await send_sms(client, "still queued")

        [queued] = await client.messages.list_async(to=CONTACT_NUMBER)
        assert (queued.sid, queued.status, queued.date_sent) == (message.sid, "queued", None)
        assert await client.messages.list_async(to=CONTACT_NUMBER, date_sent_after=today) == []

        clock.advance(seconds=2)
        fake.mark_sent(message.sid)
        [sent] = await client.messages.list_async(to=CONTACT_NUMBER, date_sent_after=today)
        assert (sent.sid, sent.status) == (message.sid, "sent")
        assert sent.date_sent == datetime(2026, 11, 30, 16, 0, 2, tzinfo=UTC)
        assert fake.sent[0].date_sent == sent.date_sent
        with pytest.raises(KeyError):
            fake.mark_sent("SM" + "0" * 32)


async def test_twilio_accepted_send_whose_answer_is_lost_shows_in_the_list(
    fake_twilio: FakeTwilio, twilio_client: Client
):
    impatient = RedirectingTwilioHttpClient(fake_twilio.base_url, timeout=0.3)
    fake_twilio.accept_then_hang(5)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await send_sms(Client(ACCOUNT_SID, AUTH_TOKEN, http_client=impatient), "lost answer")
        assert time.monotonic() - started < 2
    finally:
        await impatient.close()

    [accepted] = await fake_twilio.wait_for_messages(1)
    [listed] = await twilio_client.messages.list_async(to=CONTACT_NUMBER)
    assert (listed.sid, listed.body) == (accepted.sid, "lost answer")
    await send_sms(twilio_client, "next one")  # the stall was for one send only
    await fake_twilio.close()  # ends the stalled handler so its attempt is recorded
    assert sorted((a.method, a.status) for a in fake_twilio.attempts) == [
        ("GET", 200),
        ("POST", 201),
        ("POST", 499),
    ]


async def test_twilio_faults_aimed_at_the_list_leave_sends_alone(
    fake_twilio: FakeTwilio, twilio_client: Client
):
    fake_twilio.fail_next(503, method="GET")

    await send_sms(twilio_client)
    # A failed list page is not a TwilioRestException: the SDK raises its base class.
    with pytest.raises(TwilioException, match="Unable to fetch page"):
        await twilio_client.messages.list_async(to=CONTACT_NUMBER)
    assert len(await twilio_client.messages.list_async(to=CONTACT_NUMBER)) == 1
    assert [(a.method, a.status) for a in fake_twilio.attempts] == [
        ("POST", 201),
        ("GET", 503),
        ("GET", 200),
    ]


# --- Twilio webhook fixtures ----------------------------------------------------------------


def test_twilio_signature_validates_and_detects_tampering():
    url = "https://bot.example.org/twilio/sms"
    fields = load_twilio_form("inbound_sms")
    signature = twilio_signature(AUTH_TOKEN, url, fields)
    validator = RequestValidator(AUTH_TOKEN)

    assert validator.validate(url, fields, signature)
    assert not validator.validate(url, {**fields, "Body": "Hello!"}, signature)
    assert not validator.validate(url + "?x=1", fields, signature)


def test_twilio_form_fixtures():
    sms = load_twilio_form("inbound_sms", Body="STOP", MessageSid="SM" + "1" * 32)
    mms = load_twilio_form("inbound_mms.txt")
    delivered = load_twilio_form("status_delivered")
    undelivered = load_twilio_form("status_undelivered_21610")

    assert list(sms)[:3] == ["ToCountry", "ToState", "SmsMessageSid"]  # Twilio's order kept
    assert (sms["Body"], sms["From"], sms["To"]) == ("STOP", CONTACT_NUMBER, OUR_NUMBER)
    assert sms["FromCity"] == "SAINT LOUIS" and sms["AccountSid"] == ACCOUNT_SID
    assert (mms["Body"], mms["NumMedia"], mms["MediaContentType0"]) == ("", "1", "image/jpeg")
    assert delivered["MessageStatus"] == "delivered" and "ErrorCode" not in delivered
    assert (undelivered["MessageStatus"], undelivered["ErrorCode"]) == ("undelivered", "21610")
    assert "Body=STOP" in encode_form(sms) and "From=%2B13145550123" in encode_form(sms)


# --- Telegram -------------------------------------------------------------------------------


async def test_telegram_get_me(bot: telegram.Bot, fake_telegram: FakeTelegram):
    assert bot.id == 1000000001
    assert bot.username == "triage_test_bot"
    assert fake_telegram.calls[0][0] == "getMe"


async def test_telegram_send_message(bot: telegram.Bot, fake_telegram: FakeTelegram):
    first = await bot.send_message(TELEGRAM_CONTACT_ID, "Hello, we are here.", parse_mode="HTML")
    second = await bot.send_message(TELEGRAM_CONTACT_ID, "Second")

    assert second.message_id == first.message_id + 1
    assert first.chat.id == TELEGRAM_CONTACT_ID and first.chat.type == "private"
    assert first.from_user is not None and first.from_user.id == bot.id
    assert first.text == "Hello, we are here."
    sent = await fake_telegram.wait_for_messages(2)
    assert (sent[0].chat_id, sent[0].text) == (TELEGRAM_CONTACT_ID, "Hello, we are here.")
    assert sent[0].params["parse_mode"] == "HTML"
    assert sent[0].message_id == first.message_id
    assert len(fake_telegram.sent) == 2  # both sends were answered: the record is complete


async def test_telegram_send_message_rejects_empty_text(bot: telegram.Bot):
    # PTB drops Telegram's "Bad Request: " prefix and capitalizes the rest.
    with pytest.raises(BadRequest, match=r"(?i)message text is empty"):
        await bot.send_message(TELEGRAM_CONTACT_ID, " ")


async def test_telegram_get_updates_offsets(bot: telegram.Bot, fake_telegram: FakeTelegram):
    fake_telegram.push_update(load_telegram_update("text_message"))
    fake_telegram.push_update(load_telegram_update("start"))

    updates = await bot.get_updates()
    again = await bot.get_updates()  # unconfirmed, so delivered again
    assert [u.update_id for u in updates] == [u.update_id for u in again]
    assert updates[0].effective_message.text == "Hello"
    assert updates[1].effective_message.text == "/start"

    assert await bot.get_updates(offset=updates[0].update_id + 1, limit=5) == (updates[1],)
    assert await bot.get_updates(offset=updates[-1].update_id + 1) == ()
    assert fake_telegram.pending_updates == []


async def test_telegram_long_poll_returns_on_push(bot: telegram.Bot, fake_telegram: FakeTelegram):
    started = time.monotonic()
    polls = len(calls_to(fake_telegram, "getUpdates"))
    poll = asyncio.create_task(bot.get_updates(timeout=10))
    await eventually(lambda: len(calls_to(fake_telegram, "getUpdates")) > polls,
                     "the long poll to reach the fake")
    pushed = fake_telegram.push_update(load_telegram_update("text_message", text="Help"))

    [update] = await poll
    assert update.update_id == pushed["update_id"]
    assert update.effective_message.text == "Help"
    assert time.monotonic() - started < 2


async def test_telegram_short_poll_times_out_empty(bot: telegram.Bot):
    assert await bot.get_updates(timeout=0) == ()
    assert await bot.get_updates(timeout=1) == ()


async def test_telegram_webhook(bot: telegram.Bot, fake_telegram: FakeTelegram):
    url = "https://bot.example.org/telegram/webhook"
    assert await bot.set_webhook(url, secret_token="s3cret-token", allowed_updates=["message"])

    assert fake_telegram.webhook is not None
    assert fake_telegram.webhook["url"] == url
    assert fake_telegram.webhook["secret_token"] == "s3cret-token"
    assert fake_telegram.webhook["allowed_updates"] == ["message"]
    info = await bot.get_webhook_info()
    assert (info.url, info.allowed_updates) == (url, ("message",))
    with pytest.raises(Conflict, match="webhook is active"):
        await bot.get_updates()

    assert await bot.delete_webhook()
    assert fake_telegram.webhook is None
    assert await bot.get_updates() == ()


async def test_telegram_webhook_needs_https(bot: telegram.Bot):
    with pytest.raises(BadRequest, match=r"(?i)https url"):
        await bot.set_webhook("http://bot.example.org/telegram/webhook")


async def test_telegram_retry_after(
    bot: telegram.Bot, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
):
    # Without PTB_TIMEDELTA, PTB 22 warns (PTBDeprecationWarning) as it *builds* RetryAfter,
    # because its __init__ reads the int-valued property.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    fake_telegram.fail_next(429, retry_after=3, times=2)

    with pytest.raises(RetryAfter) as caught:
        await bot.send_message(TELEGRAM_CONTACT_ID, "Hi")
    assert caught.value.retry_after == timedelta(seconds=3)
    monkeypatch.delenv("PTB_TIMEDELTA")
    with pytest.warns(PTBDeprecationWarning, match="retry_after"):
        assert caught.value.retry_after == 3

    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    with pytest.raises(RetryAfter):
        await bot.send_message(TELEGRAM_CONTACT_ID, "Hi")
    await bot.send_message(TELEGRAM_CONTACT_ID, "Hi")
    assert len(fake_telegram.sent) == 1


@pytest.mark.parametrize(
    ("status", "error", "match"),
    [
        (403, Forbidden, "bot was blocked by the user"),
        (400, BadRequest, r"(?i)chat not found"),
        (500, NetworkError, "Internal Server Error"),
    ],
)
async def test_telegram_failures(
    bot: telegram.Bot,
    fake_telegram: FakeTelegram,
    status: int,
    error: type[Exception],
    match: str,
):
    fake_telegram.fail_next(status)

    with pytest.raises(error, match=match):
        await bot.send_message(TELEGRAM_CONTACT_ID, "Hi")
    assert fake_telegram.sent == []


async def test_telegram_failure_only_hits_its_method(
    bot: telegram.Bot, fake_telegram: FakeTelegram
):
    fake_telegram.fail_next(500, method="getUpdates")

    await bot.send_message(TELEGRAM_CONTACT_ID, "Hi")
    with pytest.raises(NetworkError):
        await bot.get_updates()


async def test_telegram_wrong_token(fake_telegram: FakeTelegram):
    wrong = telegram.Bot("1000000001:wrong", base_url=fake_telegram.base_url)

    with pytest.raises(InvalidToken):
        await wrong.initialize()
    await wrong.shutdown()


async def test_telegram_hang_trips_timed_out(fake_telegram: FakeTelegram):
    request = HTTPXRequest(read_timeout=0.3)
    async with telegram.Bot(
        TELEGRAM_TOKEN, base_url=fake_telegram.base_url, request=request
    ) as bot:
        fake_telegram.hang_next(5)
        with pytest.raises(TimedOut):
            await bot.send_message(TELEGRAM_CONTACT_ID, "slow")
        await bot.send_message(TELEGRAM_CONTACT_ID, "fast")

    await fake_telegram.close()
    assert [sent.text for sent in fake_telegram.sent] == ["fast"]


async def test_telegram_raw_protocol(fake_telegram: FakeTelegram):
    """What PTB never sends but other clients (curl, staging scripts) may: JSON and multipart."""
    api = f"{fake_telegram.base_url}{TELEGRAM_TOKEN}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{api}/sendMessage", json={"chat_id": 5, "text": "json"}) as r:
            assert (await r.json())["result"]["chat"] == {
                "id": 5,
                "type": "private",
                "first_name": "Contact",
            }
        form = aiohttp.FormData({"chat_id": "6", "text": "multipart"})
        form.add_field("document", b"%PDF", filename="a.pdf")
        async with session.post(f"{api}/sendMessage", data=form) as r:
            assert r.status == 200
        async with session.post(f"{api}/noSuchMethod") as r:
            assert r.status == 404
            assert await r.json() == {"ok": False, "error_code": 404, "description": "Not Found"}
        async with session.post(f"{fake_telegram.base_url}1:wrong/getMe") as r:
            assert r.status == 401
            assert (await r.json())["description"] == "Unauthorized"

        # A second long poll ends the first one with 409, as when two bot instances run.
        first = asyncio.create_task(session.post(f"{api}/getUpdates", data={"timeout": "5"}))
        polls = len(calls_to(fake_telegram, "getUpdates"))
        await eventually(lambda: len(calls_to(fake_telegram, "getUpdates")) > polls,
                         "the first long poll")
        async with session.post(f"{api}/getUpdates", data={"timeout": "0"}) as r:
            assert (await r.json())["result"] == []
        async with await first as r:
            assert r.status == 409
            assert "terminated by other getUpdates" in (await r.json())["description"]

    assert [(s.chat_id, s.text) for s in fake_telegram.sent] == [(5, "json"), (6, "multipart")]
    assert fake_telegram.sent[1].params["document"] == b"%PDF"
    assert [name for name, _ in fake_telegram.calls] == [
        "sendMessage",
        "sendMessage",
        "noSuchMethod",
        "getMe",
        "getUpdates",
        "getUpdates",
    ]


# --- Telegram fixtures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["text_message", "start", "photo_caption", "edited_message", "group_message"]
)
def test_telegram_fixtures_parse(name: str):
    bot = telegram.Bot(TELEGRAM_TOKEN)
    update = telegram.Update.de_json(load_telegram_update(name), bot)

    assert update.effective_chat is not None
    assert update.effective_user is not None and update.effective_user.id == TELEGRAM_CONTACT_ID
    assert update.effective_message is not None
    assert update.effective_message.api_kwargs == {}  # no fields PTB does not know


def test_telegram_fixture_overrides():
    private = load_telegram_update("text_message", update_id=9, chat_id=700000199, text="Hi")
    photo = load_telegram_update("photo_caption", text="new caption")
    group = load_telegram_update("group_message", chat_id=-4000000199)

    message = private["message"]
    assert (private["update_id"], message["chat"]["id"], message["from"]["id"]) == (
        9,
        700000199,
        700000199,
    )
    assert message["text"] == "Hi"
    assert photo["message"]["caption"] == "new caption" and "text" not in photo["message"]
    assert group["message"]["chat"]["id"] == -4000000199
    assert group["message"]["from"]["id"] == TELEGRAM_CONTACT_ID
    start = load_telegram_update("start")
    assert start["message"]["entities"][0]["type"] == "bot_command"
