"""The outbox: retries, permanent failures, refusals, pacing, and resuming after a restart."""

from __future__ import annotations

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
    await fake_twilio.assert_no_more(0)


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
    await fake_twilio.assert_no_more(0)


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
