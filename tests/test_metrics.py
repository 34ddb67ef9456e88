"""GET /metrics after a scripted morning: contacts on SMS and Telegram, a staff reply from the
console, emergencies, an ACK by text, a ladder run to its end, and sends that fail at the fake
Twilio. Every figure is asserted to its exact value, as Prometheus would read it. Then who may
scrape, and that no label ever carries a person, an address, a number or text.

The clock is injected and moved by hand: Monday 2026-11-30, 10:00 to 10:40 Chicago, in hours.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.app import create_app
from bot.config import parse_settings
from bot.domain import Observed
from bot.metrics import (
    ACK_BUCKETS,
    CHANNELS,
    INBOUND_OUTCOMES,
    KINDS,
    OTHER,
    REJECTIONS,
    REPLY_BUCKETS,
    WEBHOOKS,
    Metrics,
    ScrapeCollector,
    Snapshot,
)
from bot.storage.after_commit import Observation
from bot.storage.figures import Backlog, Figures, Waiting
from bot.storage.models import Conversation, Outbox
from tests.conftest import MONDAY_10AM, Clock, Env, Service
from tests.console_helpers import Browser, add_staff
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.test_escalation import ALICE, CAROL, ONCALL, Phones, register_staff, sweep_after
from tests.test_never_silent import FAST_FALLBACK, database_down

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CONTACT_A = "+13145550161"
CONTACT_C = "+13145550163"
CONTACT_D = "+13145550164"
CONTACT_E = "+13145550165"
CONTACT_G = "+13145550167"
TELEGRAM_T = 700000171
TELEGRAM_H = 700000172
TOKEN = "metrics-token-0123456789abcdef"
# The ladder runs out two minutes after it starts; the scheduler's own sweep stays away.
QUICK_LADDER = {"repage_after_seconds": 60, "everyone_after_seconds": 60, "repeats": 0,
                "ack_timeout_seconds": 1800, "sweep_interval_seconds": 3600}


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scrape(svc: Service, **headers: str) -> tuple[int, str]:
    response = await svc.client.get("/metrics", headers=headers)
    return response.status, await response.text()


async def scraped(svc: Service) -> Samples:
    status, text = await scrape(svc)
    assert status == 200, text
    return parse(text)


def at(svc: Service, minute: int) -> None:
    svc.clock.now = MONDAY_10AM.replace(minute=minute)


@pytest.fixture
async def svc(start_service, fake_twilio: FakeTwilio, fake_telegram: FakeTelegram) -> Service:
    svc = await start_service(
        fake_twilio, fake_telegram,
        # bob is in the rotation but has no account: a gap check-config warns about.
        oncall={**ONCALL, "rotation": ["alice", "bob"]},
        escalation=QUICK_LADDER,
        outbox={"retry_base_seconds": 600},  # a retried send stays queued for the scrape
    )
    await register_staff(svc, "alice", phone=ALICE)
    await register_staff(svc, "carol", phone=CAROL)
    return svc


async def emergency_number(phones: Phones, expected: int, to: str = ALICE) -> int:
    sent = await phones.expect(expected)
    [page] = [m.body for m in sent if m.to == to]
    found = re.match(r"EMERGENCY #(\d+) ", page)
    assert found, page
    return int(found.group(1))


async def test_a_scripted_morning_reads_exactly_on_metrics(
        svc: Service, fake_twilio: FakeTwilio, fake_telegram: FakeTelegram,
        started: list[Service]) -> None:
    phones = Phones(fake_twilio, started)
    await svc.sms("hello", from_=CONTACT_A)  # 10:00, answered by staff at 10:30
    await phones.expect(1)
    at(svc, 5)
    await svc.telegram("hi", chat_id=TELEGRAM_T)
    await fake_telegram.wait_for_messages(1)

    at(svc, 10)  # an emergency, acknowledged by text three minutes later
    await svc.sms("he has a gun", from_=CONTACT_C)
    first = await emergency_number(phones, 2)
    at(svc, 13)
    await svc.sms(f"ACK {first}", from_=ALICE)
    [answer] = await phones.expect(1)
    assert answer.body.startswith(f"Acknowledged #{first}.")

    at(svc, 20)  # Twilio refuses the first reply for good
    fake_twilio.fail_next(400, code=21211)
    await svc.sms("hi there", from_=CONTACT_D)
    await svc.outbox_idle()

    at(svc, 30)  # staff answer the first contact from the console
    await add_staff(svc, "erin")
    erin = Browser(svc)
    await erin.sign_in("erin")
    [a] = [c for c in await svc.all(Conversation) if c.opened_at == MONDAY_10AM]
    await erin.get(f"/console/conversations/{a.id}")
    page = await erin.post(f"/console/conversations/{a.id}/reply", {"text": "We are here."})
    assert page.status == 303, page.text[:300]
    await phones.expect(1)

    at(svc, 31)  # an emergency nobody acknowledges: its ladder runs to the end
    await svc.sms("I am in danger", from_=CONTACT_G)
    await emergency_number(phones, 2)
    assert await sweep_after(svc, 60)  # 10:32: alice and the backup
    await phones.expect(2)
    assert await sweep_after(svc, 60)  # 10:33: everyone on call; the last step
    await phones.expect(2)

    at(svc, 35)  # a reply that fails for now: retried in ten minutes
    fake_twilio.fail_next(500)
    await svc.sms("hello", from_=CONTACT_E)
    await svc.outbox_idle()

    at(svc, 38)  # a Telegram emergency whose page Twilio refuses: nobody has been reached
    fake_twilio.fail_next(400, code=21211)
    await svc.telegram("he has a gun", chat_id=TELEGRAM_H)
    await fake_telegram.wait_for_messages(2)
    await svc.outbox_idle()

    # Refused webhooks: an unsigned SMS, a Telegram update with the wrong secret.
    status, _ = await svc.sms("forged", from_=CONTACT_A, signature="bad")
    assert status == 403
    status, _ = await svc.telegram("forged", chat_id=TELEGRAM_T, secret="wrong-secret-000000")
    assert status == 403

    at(svc, 40)
    m = await scraped(svc)
    # Read from the database.
    assert value(m, "triage_contacts_waiting", channel="sms") == 4  # C, D, G, E
    assert value(m, "triage_contacts_waiting", channel="telegram") == 2  # T, H
    assert value(m, "triage_contacts_waiting", channel="web") == 0
    assert value(m, "triage_contacts_waiting_oldest_seconds", channel="sms") == 30 * 60
    assert value(m, "triage_contacts_waiting_oldest_seconds", channel="telegram") == 35 * 60
    assert value(m, "triage_contacts_waiting_oldest_seconds", channel="web") == 0
    assert value(m, "triage_escalations_open", state="unacknowledged") == 2
    assert value(m, "triage_escalations_open", state="acknowledged") == 1
    assert value(m, "triage_escalations_past_ladder") == 1
    assert value(m, "triage_escalations_unpaged") == 1
    for channel in CHANNELS:
        for kind in KINDS:
            expected = 1 if (channel, kind) == ("sms", "reply") else 0
            assert value(m, "triage_outbox_backlog", channel=channel, kind=kind) == expected
    assert value(m, "triage_outbox_oldest_pending_seconds", channel="sms") == 5 * 60
    assert value(m, "triage_outbox_oldest_pending_seconds", channel="telegram") == 0
    assert value(m, "triage_rota_problems") == 1  # bob
    assert value(m, "triage_oncall_nobody") == 0
    # This process's own.
    assert value(m, "triage_ready") == 1
    assert value(m, "triage_spool_messages") == 0
    assert value(m, "triage_spool_held_messages") == 0
    inbound = {(c, o): value(m, "triage_inbound_messages_total", channel=c, outcome=o)
               for c in CHANNELS for o in ("stored", "spooled", "duplicate")}
    assert {k: n for k, n in inbound.items() if n} == {("sms", "stored"): 6,  # ACK included
                                                      ("telegram", "stored"): 2}
    rejections = {k: v for (name, labels), v in m.items()
                  if name == "triage_webhook_rejections_total" and v
                  for k in [tuple(sorted(labels))]}
    assert rejections == {(("reason", "signature"), ("webhook", "twilio_sms")): 1,
                          (("reason", "signature"), ("webhook", "telegram")): 1}
    failures = {(c, k): value(m, "triage_outbox_failures_total", channel=c, kind=k)
                for c in CHANNELS for k in KINDS}
    assert {k: n for k, n in failures.items() if n} == {("sms", "reply"): 1, ("sms", "page"): 1}
    retries = {(c, k): value(m, "triage_outbox_retries_total", channel=c, kind=k)
               for c in CHANNELS for k in KINDS}
    assert {k: n for k, n in retries.items() if n} == {("sms", "reply"): 1}
    # First message 10:00, first staff reply 10:30.
    assert value(m, "triage_first_staff_reply_seconds_count", channel="sms") == 1
    assert value(m, "triage_first_staff_reply_seconds_sum", channel="sms") == 1800
    assert value(m, "triage_first_staff_reply_seconds_bucket", channel="sms", le="900.0") == 0
    assert value(m, "triage_first_staff_reply_seconds_bucket", channel="sms", le="1800.0") == 1
    assert value(m, "triage_first_staff_reply_seconds_count", channel="telegram") == 0
    # Paged 10:10, acknowledged 10:13.
    assert value(m, "triage_page_ack_seconds_count") == 1
    assert value(m, "triage_page_ack_seconds_sum") == 180
    assert value(m, "triage_page_ack_seconds_bucket", le="120.0") == 0
    assert value(m, "triage_page_ack_seconds_bucket", le="300.0") == 1
    failed = [o for o in await svc.all(Outbox) if o.status == "failed"]
    assert sorted(o.kind for o in failed) == ["page", "reply"]
    # Nobody's words or address, in any form, and only known label values.
    status, text = await scrape(svc)
    for secret in ("hello", "gun", "danger", "We are here", "alice", "carol", "erin", "bob",
                   *(n[2:] for n in (CONTACT_A, CONTACT_C, CONTACT_D, CONTACT_E, CONTACT_G,
                                     ALICE, CAROL)),
                   str(TELEGRAM_T), str(TELEGRAM_H)):
        assert secret.lower() not in text.lower(), secret
    assert label_values(text) <= ALLOWED_LABEL_VALUES


ALLOWED_LABEL_VALUES = {
    *CHANNELS, *KINDS, *INBOUND_OUTCOMES, *WEBHOOKS, *REJECTIONS, OTHER,
    "unacknowledged", "acknowledged",
    *(str(float(b)) for b in (*REPLY_BUCKETS, *ACK_BUCKETS)), "+Inf",
}


def label_values(text: str) -> set[str]:
    return {v for family in text_string_to_metric_families(text) for s in family.samples
            for v in s.labels.values()}


# --- who may scrape --------------------------------------------------------------------------


@pytest.fixture
def start_with(aiohttp_client, env: Env, clock: Clock):
    """The app with no provider, a config override and extra environment (the token)."""

    async def start(environ: dict[str, str] | None = None, **overrides: Any) -> Service:
        raw = env.raw_config(None, None, **overrides)
        settings = parse_settings(raw, env.environ(**(environ or {})), base_dir=env.tmp_path)
        return Service(await aiohttp_client(create_app(settings, clock)), clock)

    return start


async def test_a_scrape_from_outside_allow_is_refused_and_the_token_lets_it_in(start_with):
    svc = await start_with({"TRIAGE_METRICS_TOKEN": TOKEN}, metrics={"allow": ["10.0.0.0/8"]})
    status, text = await scrape(svc)  # from 127.0.0.1, outside 10.0.0.0/8
    assert (status, text) == (403, "not allowed to read the metrics")
    status, text = await scrape(svc, Authorization=f"Bearer {TOKEN}")
    assert status == 200 and "triage_ready 1.0" in text
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer ",
                  TOKEN, "Bearer \u00e9t\u00e9-0123456789abcdef"):
        status, text = await scrape(svc, Authorization=wrong)
        assert (status, text) == (403, "not allowed to read the metrics"), wrong


async def test_loopback_may_scrape_by_default_but_a_wrong_token_is_still_refused(start_with):
    svc = await start_with({"TRIAGE_METRICS_TOKEN": TOKEN})
    assert (await scrape(svc))[0] == 200
    assert (await scrape(svc, Authorization="Bearer not-the-token-000000"))[0] == 403


async def test_without_a_token_configured_no_bearer_token_is_taken(start_with):
    svc = await start_with(metrics={"allow": []})
    assert (await scrape(svc))[0] == 403
    assert (await scrape(svc, Authorization="Bearer ")) [0] == 403
    assert (await scrape(svc, Authorization="Bearer anything-at-all-000"))[0] == 403


async def test_behind_a_trusted_proxy_the_clients_own_address_counts(start_with):
    svc = await start_with(server={"trusted_proxies": ["127.0.0.1/32"]},
                           metrics={"allow": ["127.0.0.1/32", "10.0.0.0/8"]})
    # The proxy's own loopback address lets nobody in from beyond it.
    assert (await scrape(svc, **{"X-Forwarded-For": "203.0.113.5"}))[0] == 403
    assert (await scrape(svc, **{"X-Forwarded-For": "10.1.2.3"}))[0] == 200
    # A client cannot pick its address by writing the header itself: the nearest
    # untrusted hop counts.
    assert (await scrape(svc, **{"X-Forwarded-For": "10.1.2.3, 203.0.113.5"}))[0] == 403


async def test_metrics_off_means_no_route_and_no_counting(start_service, fake_twilio):
    svc = await start_service(fake_twilio, metrics={"enabled": False})
    assert svc.services.metrics is None and svc.services.writer.observer is None
    assert (await scrape(svc))[0] == 404
    status, _ = await svc.sms("hello")
    assert status == 200
    await fake_twilio.wait_for_messages(1)
    assert (await scrape(svc))[0] == 404


# --- the spool, and the database gone ----------------------------------------------------------


async def test_a_spooled_message_shows_in_the_spool_depth(start_service, fake_twilio):
    svc = await start_service(fake_twilio, **FAST_FALLBACK)
    async with database_down(svc):
        status, _ = await svc.sms("hello")
        assert status == 200
        m = await scraped(svc)
        assert value(m, "triage_spool_messages") == 1
        assert value(m, "triage_inbound_messages_total", channel="sms", outcome="spooled") == 1
        assert value(m, "triage_inbound_messages_total", channel="sms", outcome="stored") == 0


async def test_a_writer_that_stopped_reads_not_ready(start_service, fake_twilio):
    svc = await start_service(fake_twilio)
    assert value(await scraped(svc), "triage_ready") == 1
    await svc.services.writer.stop()
    m = await scraped(svc)
    assert value(m, "triage_ready") == 0
    assert value(m, "triage_contacts_waiting", channel="sms") == 0  # the database still reads


async def test_a_database_that_cannot_be_read_leaves_its_figures_out_and_reads_not_ready(
        start_service, fake_twilio, captured_logs):
    svc = await start_service(fake_twilio)

    async def rename(session: Any, old: str, new: str) -> None:
        await session.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
        await session.commit()

    await svc.query(lambda s: rename(s, "escalations", "escalations_away"))
    try:
        status, body = await scrape(svc)
    finally:
        await svc.query(lambda s: rename(s, "escalations_away", "escalations"))
    assert status == 200
    m = parse(body)
    assert value(m, "triage_ready") == 0
    assert not any(name.startswith(("triage_contacts", "triage_escalations", "triage_outbox_b"))
                   for name, _ in m)
    assert "metrics_database_unreadable" in [e["event"] for e in captured_logs.entries()]
    assert value(await scraped(svc), "triage_ready") == 1  # and back once it reads again


# --- labels --------------------------------------------------------------------------------

ANY_TEXT = st.text(max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    observed=st.lists(st.tuples(st.sampled_from(list(Observed)), ANY_TEXT, ANY_TEXT,
                                st.floats(0, 1e6)), max_size=5),
    taken=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=3),
    rejected=st.lists(st.tuples(ANY_TEXT, ANY_TEXT), max_size=3),
    waiting=st.dictionaries(ANY_TEXT, st.integers(1, 10**6), max_size=3),
    backlog=st.dictionaries(st.tuples(ANY_TEXT, ANY_TEXT), st.integers(1, 10**6), max_size=3),
)
def test_no_label_value_is_ever_anything_but_a_known_code(
        observed, taken, rejected, waiting, backlog) -> None:
    """Whatever strings reach the metrics (a channel column gone wrong, a unit passing the
    wrong thing), the labels hold only the known codes."""
    registry = CollectorRegistry(auto_describe=False)
    metrics = Metrics(registry, FixedSnapshot(Snapshot(
        now=MONDAY_10AM, ready=True, spooled=0, held=0,
        figures=Figures(
            waiting={c: Waiting(n, MONDAY_10AM) for c, n in waiting.items()},
            unacknowledged=0, acknowledged=0, past_ladder=0, unpaged=0,
            backlog={k: Backlog(n, MONDAY_10AM) for k, n in backlog.items()}))))
    for what, channel, kind, seconds in observed:
        metrics.observe(Observation(what, seconds, (("channel", channel), ("kind", kind))))
    for channel, outcome in taken:
        metrics.taken(channel, outcome)
    for webhook, reason in rejected:
        metrics.rejected(webhook, reason)
    assert label_values(generate_latest(registry).decode()) <= ALLOWED_LABEL_VALUES


class FixedSnapshot(ScrapeCollector):
    def __init__(self, snapshot: Snapshot) -> None:  # reads nothing: the figures are given
        self._snapshot = snapshot
