"""The Telegram channel end to end: the real app and the real python-telegram-bot, talking to
the fake Bot API. Assertions are about what a contact would see (the exact texts the Bot API
was asked to send) and what staff would find in the database."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest

from bot.channels.telegram import TelegramPoller, UnconfirmableBatch
from bot.storage.models import (
    Contact,
    Conversation,
    Escalation,
    Message,
    Outbox,
    ProviderEvent,
)
from tests.conftest import (
    MONDAY_10AM,
    PUBLIC_URL,
    WEBHOOK_SECRET,
    CapturedLogs,
    Clock,
    Service,
    StartService,
    example_config,
)
from tests.fakes.telegram_api import FakeTelegram, SentTelegram
from tests.fixtures import (
    TELEGRAM_CONTACT_ID,
    load_telegram_update,
    unparseable_telegram_update,
)
from tests.waiting import eventually

WEBHOOK_PATH = "/webhooks/telegram"
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"
TEXT_911 = re.compile(r"text(ing)?\s+911", re.IGNORECASE)
PHOTO_CAPTION = load_telegram_update("photo_caption")["message"]["caption"]

# The reply texts as configured, read straight from the example config the tests run on.
TEMPLATES: dict[str, dict[str, str]] = example_config()["replies"]


def render(language: str, key: str, **values: str) -> str:
    templates = TEMPLATES[language]
    return templates[key].format(safety=templates["safety"], **values).strip()


def first_contact_during_hours(language: str) -> str:
    """The first reply at the test clock's Monday 10:00, when staff are in."""
    return render(
        language,
        "first_contact",
        hours_status=render(language, "hours_open"),
        intake_question=render(language, "intake_question"),
    )


def calls_to(fake: FakeTelegram, method: str) -> list[dict[str, Any]]:
    """Parameters of every Bot API call of ``method``, in order, whatever the outcome."""
    return [params for name, params in fake.calls if name.lower() == method.lower()]


def assert_never_says_text_911(sent: list[SentTelegram]) -> None:
    offending = [m.text for m in sent if TEXT_911.search(m.text)]
    assert not offending, f"Telegram cannot reach 911 by text, yet we said so: {offending!r}"


async def post_raw(service: Service, body: bytes, headers: dict[str, str]) -> int:
    """POST arbitrary bytes to the Telegram webhook; return the HTTP status."""
    response = await service.client.post(WEBHOOK_PATH, data=body, headers=headers)
    return response.status


async def inbound_messages(service: Service) -> list[Message]:
    return [m for m in await service.all(Message) if m.direction == "in"]


async def assert_nothing_written(service: Service) -> None:
    for model in (ProviderEvent, Contact, Conversation, Message, Outbox):
        assert await service.all(model) == [], f"{model.__name__} rows were written"


@pytest.fixture
async def service(start_service: StartService, fake_telegram: FakeTelegram) -> Service:
    """The app with Telegram on, in webhook mode (the test default)."""
    return await start_service(telegram_api=fake_telegram)


@pytest.fixture
def start_polling(start_service: StartService) -> Callable[[FakeTelegram], Awaitable[Service]]:
    """The app with Telegram in polling mode."""

    async def start(fake: FakeTelegram) -> Service:
        return await start_service(telegram_api=fake, telegram={"mode": "polling"})

    return start


async def test_telegram_first_message_gets_safety_reply(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, body = await service.telegram("Hello")

    assert (status, body) == (200, {})
    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert reply.text == first_contact_during_hours("en")
    assert "call 911" in reply.text
    assert "1-888-373-7888" in reply.text
    assert render("en", "intake_question") in reply.text
    assert_never_says_text_911([reply])
    await service.assert_sent(fake_telegram, 1)
    [conversation] = await service.all(Conversation)
    assert conversation.channel == "telegram"
    assert conversation.status == "open"


async def test_start_command_is_first_contact(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, _ = await service.telegram("/start", fixture="start")

    assert status == 200
    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert reply.text == first_contact_during_hours("en")

    # Pressing Start again inside the open conversation still brings the safety text back,
    # where an ordinary second message would get no automatic reply.
    status, _ = await service.telegram("/start", fixture="start")

    assert status == 200
    sent = await fake_telegram.wait_for_messages(2)
    assert sent[1].text == first_contact_during_hours("en")
    await service.assert_sent(fake_telegram, 2)
    assert len(await service.all(Conversation)) == 1


async def test_duplicate_update_id_replies_once(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    first = await service.telegram("Hello", update_id=424242)
    await fake_telegram.wait_for_messages(1)
    again = await service.telegram("Hello", update_id=424242)

    assert first[0] == again[0] == 200
    await service.assert_sent(fake_telegram, 1)
    assert len(await inbound_messages(service)) == 1
    assert [(e.channel, e.provider_id) for e in await service.all(ProviderEvent)] == [
        ("telegram", "424242")
    ]


async def test_wrong_or_missing_secret_token_is_403_and_writes_nothing(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    update = load_telegram_update("text_message", text="Hello")

    wrong, _ = await service.telegram("Hello", secret="not-" + WEBHOOK_SECRET)
    response = await service.client.post(WEBHOOK_PATH, json=update)  # no header at all

    assert wrong == 403
    assert response.status == 403
    await assert_nothing_written(service)
    await service.assert_sent(fake_telegram, 0)


@pytest.mark.parametrize("fixture", ["group_message", "edited_message"])
async def test_group_and_edited_messages_are_ignored(
    service: Service, fake_telegram: FakeTelegram, fixture: str
) -> None:
    status, _ = await service.telegram("Hello", fixture=fixture)

    assert status == 200
    await assert_nothing_written(service)
    await service.assert_sent(fake_telegram, 0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"this is not json", id="not-json"),
        pytest.param(b'{"message": {"text": "Hello"}}', id="no-update-id"),
        pytest.param(b'{"update_id": 1, "message": {"text": "caf\xe9"}}', id="not-utf8"),
        pytest.param(b'{"update_id": 1, "message": "Hello"}', id="message-not-an-object"),
        pytest.param(
            b'{"update_id": 1, "message": {"message_id": 1, "date": 1, "text": "Hello"}}',
            id="message-without-chat",
        ),
    ],
)
async def test_malformed_update_is_400(
    service: Service, fake_telegram: FakeTelegram, body: bytes
) -> None:
    headers = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"}

    assert await post_raw(service, body, headers) == 400
    await assert_nothing_written(service)
    await service.assert_sent(fake_telegram, 0)


async def test_stop_on_telegram_sends_one_confirmation_then_nothing(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, _ = await service.telegram("STOP")

    assert status == 200
    [confirmation] = await fake_telegram.wait_for_messages(1)
    assert confirmation.chat_id == TELEGRAM_CONTACT_ID
    assert confirmation.text == render("en", "optout_confirm")

    status, _ = await service.telegram("hello again")

    assert status == 200
    await service.assert_sent(fake_telegram, 1)
    assert len(calls_to(fake_telegram, "sendMessage")) == 1
    bodies = [service.decrypt(m.body_enc) for m in await inbound_messages(service)]
    assert "hello again" in bodies  # still reaches the staff queue
    [contact] = await service.all(Contact)
    assert contact.opted_out is True


async def test_rate_limited_send_honours_retry_after(
    service: Service, fake_telegram: FakeTelegram, clock: Clock
) -> None:
    fake_telegram.fail_next(429, retry_after=1)

    status, _ = await service.telegram("Hello")
    assert status == 200

    async def failed_attempt_recorded() -> Outbox | None:
        rows = await service.all(Outbox)
        if len(rows) == 1 and rows[0].status == "pending" and rows[0].attempts == 1:
            return rows[0]
        return None

    failed = await eventually(failed_attempt_recorded, "the 429 to be recorded on the outbox row")
    assert len(calls_to(fake_telegram, "sendMessage")) == 1
    assert failed.last_error == "telegram:429"
    assert failed.next_attempt_at >= MONDAY_10AM + timedelta(seconds=1)
    # The service's clock has not moved: retry_after has not passed, so nothing may go out.
    await service.assert_sent(fake_telegram, 0)

    clock.advance(seconds=2)

    [reply] = await fake_telegram.wait_for_messages(1, timeout=5)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert reply.text == first_contact_during_hours("en")
    assert len(calls_to(fake_telegram, "sendMessage")) == 2

    async def sent_row() -> Outbox | None:
        [row] = await service.all(Outbox)
        return row if row.status == "sent" else None

    row = await eventually(sent_row, "the outbox row to be marked sent")
    assert row.attempts == 2


async def test_polling_mode_takes_updates_and_replies(
    start_polling: Callable[[FakeTelegram], Awaitable[Service]], fake_telegram: FakeTelegram
) -> None:
    update_id = 500000101
    service = await start_polling(fake_telegram)

    fake_telegram.push_update(
        load_telegram_update("text_message", update_id=update_id, chat_id=TELEGRAM_CONTACT_ID)
    )

    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert reply.text == first_contact_during_hours("en")
    methods = [name.lower() for name, _ in fake_telegram.calls]
    assert "deletewebhook" in methods
    assert methods.index("deletewebhook") < methods.index("getupdates")
    assert fake_telegram.webhook is None

    async def confirming_poll() -> bool:
        return any(p.get("offset") == update_id + 1 for p in calls_to(fake_telegram, "getUpdates"))

    await eventually(confirming_poll, f"a getUpdates with offset={update_id + 1}")
    polls = calls_to(fake_telegram, "getUpdates")
    assert polls[0].get("offset") is None  # nothing confirmed before it was stored
    assert [(e.channel, e.provider_id) for e in await service.all(ProviderEvent)] == [
        ("telegram", str(update_id))
    ]
    assert len(await inbound_messages(service)) == 1


async def test_webhook_mode_registers_webhook_with_secret(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    # Registered in the background, so that a Telegram outage cannot block start-up.
    async def registered() -> dict[str, Any] | None:
        return fake_telegram.webhook

    webhook = await eventually(registered, "a setWebhook call")

    assert webhook is not None
    assert webhook["url"] == PUBLIC_URL + WEBHOOK_PATH
    assert webhook["secret_token"] == WEBHOOK_SECRET
    assert webhook["allowed_updates"] == ["message"]


async def test_photo_caption_counts_media(service: Service, fake_telegram: FakeTelegram) -> None:
    status, _ = await service.telegram(PHOTO_CAPTION, fixture="photo_caption")

    assert status == 200
    [message] = await inbound_messages(service)
    assert message.media_count == 1
    assert service.decrypt(message.body_enc) == PHOTO_CAPTION
    [reply] = await fake_telegram.wait_for_messages(1)
    # The caption asks "... to ask for help?": a cry for help, so the emergency text.
    assert reply.text == render("en", "emergency")


async def test_spanish_first_message_answered_in_spanish(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, _ = await service.telegram("hola necesito informacion")

    assert status == 200
    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.text.startswith("Gracias por escribirnos")
    assert reply.text == first_contact_during_hours("es")
    await service.assert_sent(fake_telegram, 1)


async def test_emergency_on_telegram_never_says_text_911(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, _ = await service.telegram("estoy en peligro")

    assert status == 200
    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert reply.text == render("es", "emergency")
    [escalation] = await service.all(Escalation)
    assert escalation.status == "open"
    assert escalation.channel == "telegram"
    await service.assert_sent(fake_telegram, 1)
    assert_never_says_text_911(fake_telegram.sent)


# --- polling survives any update -------------------------------------------------------------

OTHER_CHAT_ID = 700000124
UNPARSEABLE = {"chat_id": 700000177, "text": "Maria at the Lakeview motel", "first_name": "Marisol"}


def push_unparseable(fake: FakeTelegram, update_id: int) -> dict[str, Any]:
    return fake.push_raw_update(unparseable_telegram_update(update_id=update_id, **UNPARSEABLE))


async def wait_for_offset_past(fake: FakeTelegram, update_id: int) -> None:
    """Wait for a getUpdates that confirms ``update_id`` (an offset above it)."""

    async def confirmed() -> bool:
        offsets = [p.get("offset") for p in calls_to(fake, "getUpdates")]
        return any(isinstance(offset, int) and offset > update_id for offset in offsets)

    await eventually(confirmed, f"a getUpdates with an offset past {update_id}")


def assert_logged_by_id_only(logs: CapturedLogs, update_id: int) -> None:
    """The unparseable update left one record, holding its id and nothing of its content."""
    entries = logs.entries()
    [skipped] = [e for e in entries if e.get("event") == "telegram_update_unparseable"]
    assert skipped == {"at": skipped["at"], "level": "warning", "logger": "bot.channels.telegram",
                       "event": "telegram_update_unparseable", "update_id": update_id}
    everything = logs.everything()
    for needle in (str(UNPARSEABLE["chat_id"]), "Lakeview", "Maria", "Marisol", "yesterday"):
        assert needle not in everything, needle


async def readyz(service: Service) -> tuple[int, dict[str, Any]]:
    response = await service.client.get("/readyz")
    return response.status, await response.json()


async def test_unparseable_update_is_skipped_and_polling_goes_on(
    start_polling: Callable[[FakeTelegram], Awaitable[Service]],
    fake_telegram: FakeTelegram,
    captured_logs: CapturedLogs,
) -> None:
    service = await start_polling(fake_telegram)

    fake_telegram.push_update(load_telegram_update("text_message", update_id=500000201))
    bad = push_unparseable(fake_telegram, 500000202)
    fake_telegram.push_update(
        load_telegram_update("text_message", update_id=500000203, chat_id=OTHER_CHAT_ID)
    )

    sent = await fake_telegram.wait_for_messages(2)
    assert sorted(m.chat_id for m in sent) == sorted([TELEGRAM_CONTACT_ID, OTHER_CHAT_ID])
    assert all(m.text == first_contact_during_hours("en") for m in sent)
    await wait_for_offset_past(fake_telegram, 500000203)
    assert fake_telegram.pending_updates == []
    assert sorted(e.provider_id for e in await service.all(ProviderEvent)) == [
        "500000201", "500000203"
    ]
    assert_logged_by_id_only(captured_logs, bad["update_id"])
    status, body = await readyz(service)
    assert (status, body["telegram"]) == (200, True)


async def test_skipped_update_is_not_fetched_again_after_a_restart(
    start_polling: Callable[[FakeTelegram], Awaitable[Service]],
    fake_telegram: FakeTelegram,
    captured_logs: CapturedLogs,
) -> None:
    first = await start_polling(fake_telegram)
    fake_telegram.push_update(load_telegram_update("text_message", update_id=500000301))
    await fake_telegram.wait_for_messages(1)
    # Last in its batch, so no later update's id can carry the offset past it.
    bad = push_unparseable(fake_telegram, 500000302)
    await wait_for_offset_past(fake_telegram, 500000302)
    await first.client.close()
    polls_before = len(calls_to(fake_telegram, "getUpdates"))

    second = await start_polling(fake_telegram)
    fake_telegram.push_update(
        load_telegram_update("text_message", update_id=500000303, chat_id=OTHER_CHAT_ID)
    )

    [_, reply] = await fake_telegram.wait_for_messages(2)
    assert reply.chat_id == OTHER_CHAT_ID
    await wait_for_offset_past(fake_telegram, 500000303)
    assert len(calls_to(fake_telegram, "getUpdates")) > polls_before  # the new app polled
    assert_logged_by_id_only(captured_logs, bad["update_id"])  # once, by the first app only
    assert [e.provider_id for e in await second.all(ProviderEvent)] == ["500000301", "500000303"]


async def test_update_without_an_id_is_skipped(
    service: Service, fake_telegram: FakeTelegram, captured_logs: CapturedLogs
) -> None:
    # Telegram's getUpdates cannot hand out an update without an id (nor can the fake, which
    # confirms by id), so the poller takes this batch straight from the test.
    poller = TelegramPoller(service.services.telegram_bot, service.services.intake, service.clock)
    good = load_telegram_update("text_message", update_id=500000401)
    entries: list[object] = [{"message": UNPARSEABLE}, "not an update", good]

    await poller.take_batch(entries)

    [reply] = await fake_telegram.wait_for_messages(1)
    assert reply.chat_id == TELEGRAM_CONTACT_ID
    assert poller.offset == 500000402
    skipped = [e for e in captured_logs.entries() if e["event"] == "telegram_update_without_id"]
    assert [set(e) for e in skipped] == [{"at", "level", "logger", "event"}] * 2
    # A batch with nothing to confirm fails its round, so run() backs off instead of asking
    # again at once for the very same batch.
    with pytest.raises(UnconfirmableBatch):
        await poller.take_batch([{"message": UNPARSEABLE}])
    assert poller.offset == 500000402


@pytest.mark.parametrize(
    ("status", "error"),
    [
        # A 200 whose body has no "result": PTB raises KeyError, which no except clause for
        # Telegram's errors catches. The other two are errors PTB knows.
        pytest.param(200, "KeyError", id="ok-status-error-body"),
        pytest.param(500, "NetworkError", id="server-error"),
        pytest.param(409, "Conflict", id="conflict"),
    ],
)
async def test_polling_restarts_after_a_crash_and_readyz_reports_it(
    start_polling: Callable[[FakeTelegram], Awaitable[Service]],
    fake_telegram: FakeTelegram,
    captured_logs: CapturedLogs,
    status: int,
    error: str,
) -> None:
    fake_telegram.fail_next(status, "Internal error", method="getUpdates", times=2)
    service = await start_polling(fake_telegram)

    async def down() -> tuple[int, dict[str, Any]] | None:
        answer = await readyz(service)
        return answer if answer[0] == 503 else None

    _, body = await eventually(down, "readyz to report Telegram polling down")
    assert body["telegram"] is False
    assert body["database"] is True  # only the channel is down

    fake_telegram.push_update(load_telegram_update("text_message", update_id=500000501))

    [reply] = await fake_telegram.wait_for_messages(1, timeout=10)
    assert reply.text == first_contact_during_hours("en")

    async def up() -> tuple[int, dict[str, Any]] | None:
        answer = await readyz(service)
        return answer if answer[0] == 200 else None

    _, body = await eventually(up, "readyz to report Telegram polling up again")
    assert body["telegram"] is True
    failures = [e for e in captured_logs.entries()
                if e["event"] in ("telegram_polling_crashed", "telegram_polling_error")]
    assert [e["error"] for e in failures] == [error, error]


async def test_webhook_mode_is_not_reported_down(
    service: Service, fake_telegram: FakeTelegram
) -> None:
    status, body = await readyz(service)

    assert status == 200
    assert "telegram" not in body
