"""The outbox: retries, permanent failures, refusals, pacing, and resuming after a restart."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import update

from bot.storage.models import Contact
from tests.conftest import Service
from tests.test_sms_flow import wait_until


async def settle(svc: Service, clock, seconds: float) -> None:
    """Move time past a retry's due time and nudge the worker, as its own timer would."""
    clock.advance(seconds=seconds)
    svc.services.worker.wake()


async def test_reply_retried_after_provider_5xx(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio)
    fake_twilio.fail_next(500, times=2)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].attempts == 1 and rows[0].status == "pending")
    await settle(svc, clock, 1.5)  # first backoff: 1 s
    rows = await wait_until(
        svc, lambda rows: rows[0].attempts == 2 and rows[0].status == "pending"
    )
    assert rows[0].last_error == "twilio:500:20500"
    assert fake_twilio.sent == []
    await settle(svc, clock, 2.5)  # second backoff: 2 s
    [sent] = await fake_twilio.wait_for_messages(1)
    rows = await wait_until(svc, lambda rows: rows[0].status == "sent")
    assert rows[0].attempts == 3 and rows[0].provider_id == sent.sid


async def test_provider_timeout_is_retried(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio, outbox={"send_timeout_seconds": 0.3})
    fake_twilio.hang_next(2)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "pending" and rows[0].attempts == 1)
    assert fake_twilio.sent == []
    await settle(svc, clock, 1.5)
    await fake_twilio.wait_for_messages(1)


async def test_permanent_error_is_not_retried(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio)
    fake_twilio.fail_next(400, code=21211)
    await svc.sms("Hello")
    rows = await wait_until(svc, lambda rows: rows[0].status == "failed")
    assert rows[0].attempts == 1 and rows[0].last_error == "twilio:400:21211"
    await settle(svc, clock, 600)
    await svc.assert_sent(fake_twilio, 0)


async def test_gives_up_after_max_attempts(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio, outbox={"max_attempts": 2})
    fake_twilio.fail_next(503, times=5)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].attempts == 1 and rows[0].status == "pending")
    await settle(svc, clock, 1.5)
    rows = await wait_until(svc, lambda rows: rows[0].status == "failed")
    assert rows[0].attempts == 2


async def test_send_to_opted_out_contact_is_refused(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio)
    fake_twilio.fail_next(500)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "pending" and rows[0].attempts == 1)

    async def opt_out(session):
        await session.execute(update(Contact).values(opted_out=True))
        await session.commit()

    await svc.query(opt_out)
    await settle(svc, clock, 5)
    rows = await wait_until(svc, lambda rows: rows[0].status == "refused")
    assert rows[0].last_error == "opted_out"
    await svc.assert_sent(fake_twilio, 0)


async def test_restart_resumes_a_send_cut_off_mid_flight(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio)
    fake_twilio.hang_next(30)  # the provider stalls; then the process goes away
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "sending")
    await svc.client.close()

    clock.advance(minutes=3)  # past the lease the dead process held
    svc = await start_service(fake_twilio)
    [sent] = await fake_twilio.wait_for_messages(1)
    assert sent.body.startswith("Thank you for reaching out.")
    rows = await wait_until(svc, lambda rows: rows[0].status == "sent")
    assert rows[0].attempts == 2


async def test_restart_resumes_pending_rows(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio)
    fake_twilio.fail_next(500)
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "pending" and rows[0].attempts == 1)
    await svc.client.close()
    clock.advance(seconds=5)
    svc = await start_service(fake_twilio)
    await fake_twilio.wait_for_messages(1)


async def test_sends_are_paced_to_the_channel_rate(start_service, fake_twilio):
    svc = await start_service(fake_twilio, sms={"max_per_second": 5})
    for n in range(10):
        await svc.sms("Hello", from_=f"+131455501{n:02d}")
    sent = await fake_twilio.wait_for_messages(10, timeout=10)
    span = sent[-1].accepted_at_monotonic - sent[0].accepted_at_monotonic
    # 5 per second: after the first five, one every 0.2 s.
    assert span >= 0.8


# --- providers are independent ---------------------------------------------------------------


async def test_hung_twilio_does_not_delay_telegram(start_service, fake_twilio, fake_telegram):
    svc = await start_service(fake_twilio, fake_telegram, outbox={"send_timeout_seconds": 30})
    fake_twilio.hang_next(30, times=40)  # every SMS send slot is stuck behind a hung Twilio
    for n in range(20):
        await svc.sms("Hello", from_=f"+131455501{n:02d}")
    await wait_until(svc, lambda rows: sum(r.status == "sending" for r in rows) >= 16)
    started = time.monotonic()
    await svc.telegram("Hello")
    [reply] = await fake_telegram.wait_for_messages(1, timeout=2)
    assert reply.text.startswith("Thank you for reaching out.")
    assert time.monotonic() - started < 2 and fake_twilio.sent == []


async def test_twilio_retry_after_pauses_sms_for_as_long_as_asked(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio)
    fake_twilio.fail_next(429, retry_after=30)
    await svc.sms("Hello")
    [row] = await wait_until(svc, lambda rows: rows[0].status == "pending"
                             and rows[0].attempts == 1)
    assert row.last_error == "twilio:429" and row.next_attempt_at == clock.now + timedelta(
        seconds=30)
    # The whole channel waits, not just that row: a new reply is not sent either.
    await svc.sms("Hello", from_="+13145550177")
    await settle(svc, clock, 29)
    await svc.outbox_idle()
    assert fake_twilio.sent == []
    await settle(svc, clock, 2)
    sent = await fake_twilio.wait_for_messages(2)
    assert sorted(m.to for m in sent) == ["+13145550123", "+13145550177"]


# --- exactly one reply across faults --------------------------------------------------------


async def test_sms_twilio_took_before_a_timeout_is_not_sent_again(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio, outbox={"send_timeout_seconds": 1})
    fake_twilio.accept_then_hang(5)  # Twilio has the message; its answer never comes in time
    await svc.sms("Hello")
    [row] = await wait_until(svc, lambda rows: rows[0].status == "pending"
                             and rows[0].attempts == 1)
    # Our own timeout or the HTTP client's, whichever fires first: in doubt either way.
    assert row.in_doubt and "timeout" in row.last_error.lower()
    await settle(svc, clock, 2)
    [row] = await wait_until(svc, lambda rows: rows[0].status == "sent")
    await svc.outbox_idle()
    [taken] = fake_twilio.sent
    assert row.provider_id == taken.sid and taken.to == "+13145550123"
    # Twilio's list was asked, and the reply was not sent a second time.
    assert [a.fields.get("To") for a in fake_twilio.attempts if a.method == "GET"] == [
        "+13145550123"]


async def test_sms_left_in_doubt_that_twilio_never_took_is_sent(start_service, fake_twilio, clock):
    svc = await start_service(fake_twilio, outbox={"send_timeout_seconds": 1})
    fake_twilio.hang_next(5)  # the request stalls before Twilio takes it
    await svc.sms("Hello")
    await wait_until(svc, lambda rows: rows[0].status == "pending" and rows[0].in_doubt)
    await settle(svc, clock, 2)
    [sent] = await fake_twilio.wait_for_messages(1)
    [row] = await wait_until(svc, lambda rows: rows[0].status == "sent")
    assert row.provider_id == sent.sid


async def test_an_earlier_identical_reply_is_not_mistaken_for_the_one_in_doubt(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio, outbox={"send_timeout_seconds": 1})
    await svc.sms("Hello")
    await svc.sms("INFO")
    await svc.outbox_idle()
    before = len(fake_twilio.sent)
    fake_twilio.hang_next(5)
    await svc.sms("INFO")  # asked again: the same answer text as before, to the same number
    await wait_until(svc, lambda rows: rows[-1].status == "pending" and rows[-1].in_doubt)
    await settle(svc, clock, 2)
    await fake_twilio.wait_for_messages(before + 1)
    await svc.outbox_idle()
    [last] = fake_twilio.sent[before:]
    assert last.body == fake_twilio.sent[before - 1].body


async def test_restart_reconciles_a_send_twilio_took_before_the_crash(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio)
    fake_twilio.accept_then_hang(30)  # Twilio took it; then the process goes away
    await svc.sms("Hello")
    await fake_twilio.wait_for_messages(1)
    await wait_until(svc, lambda rows: rows[0].status == "sending")
    await svc.client.close()

    clock.advance(minutes=3)  # past the lease the dead process held
    svc = await start_service(fake_twilio)
    [row] = await wait_until(svc, lambda rows: rows[0].status == "sent")
    await svc.outbox_idle()
    [taken] = fake_twilio.sent
    assert row.provider_id == taken.sid and row.attempts == 2


async def test_a_send_in_doubt_waits_for_twilios_list_rather_than_repeat_itself(
    start_service, fake_twilio, clock
):
    svc = await start_service(fake_twilio, outbox={"send_timeout_seconds": 1})
    fake_twilio.accept_then_hang(5)  # Twilio has it; the answer is lost
    fake_twilio.fail_next(503, method="GET", times=2)  # and its list is down for a while
    await svc.sms("Hello")
    for attempts in (1, 2, 3):
        [row] = await wait_until(svc, lambda rows, n=attempts: rows[0].attempts == n
                                 and rows[0].status == "pending")
        assert row.in_doubt and fake_twilio.sent[1:] == []
        await settle(svc, clock, 2 ** attempts + 1)
    [row] = await wait_until(svc, lambda rows: rows[0].status == "sent")
    await svc.outbox_idle()
    [taken] = fake_twilio.sent
    assert row.provider_id == taken.sid
