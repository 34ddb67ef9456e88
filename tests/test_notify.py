"""The commit fan-out: in one process, and between processes on PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from bot.notify import RESYNC, Change, Notifier
from bot.notify_postgres import PostgresRelay, channel_for, decode, encode, listen_dsn
from tests.databases import connect, on_postgres
from tests.waiting import eventually


async def test_a_stream_hears_each_change_and_a_slow_one_gets_one_resync():
    notifier = Notifier()
    with notifier.stream() as fast, notifier.stream() as slow:
        notifier.conversation(7)
        assert await fast.next(1) == [Change("conversation", 7)]
        for n in range(1000):
            notifier.conversation(n)
        assert await slow.next(1) == [RESYNC]
    assert notifier.streams == 0


async def test_a_watching_stream_hears_only_what_it_watches_and_resync():
    notifier = Notifier()
    with notifier.watching(Change("web", 1)) as page, notifier.stream() as console:
        notifier.conversation(7)
        notifier.changed(Change("web", 2))
        assert await page.next(0.01) == []  # another chat's: not woken at all
        notifier.changed(Change("web", 1))
        page.watch(Change("conversation", 7))
        notifier.conversation(7)
        notifier.changed(RESYNC)
        assert await page.next(1) == [Change("web", 1), Change("conversation", 7), RESYNC]
        assert len(await console.next(1)) == 5  # the console hears everything
    assert notifier.streams == 0
    notifier.conversation(7)  # nothing is left watching


def test_payloads_round_trip_and_stay_under_postgres_limit():
    changes = [Change("conversation", n) for n in range(3000)] + [Change("escalation", 4)]
    payloads = encode(True, changes)
    assert all(len(p) <= 8000 for p in payloads) and len(payloads) > 1
    outbox, heard = False, []
    for payload in payloads:
        woke, found = decode(payload)
        outbox = outbox or woke
        heard.extend(found)
    assert outbox and heard == changes
    assert decode("c:1,x:2,c:y,o") == (True, [Change("conversation", 1)])


@pytest.mark.skipif(not on_postgres(), reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_a_commit_in_one_process_reaches_the_others_streams_and_outbox(database_url):
    wakes: list[str] = []
    first, second = Notifier(), Notifier()
    second.on_outbox(lambda: wakes.append("woke"))
    relays = [PostgresRelay(n, listen_dsn(database_url), channel_for(database_url))
              for n in (first, second)]
    first.relay = relays[0]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    try:
        await eventually(lambda: all(r.connected for r in relays), "both relays to listen", 10)
        with second.stream() as stream:
            first.outbox()
            first.conversation(42)
            heard = await stream.next(5)
        assert heard == [Change("conversation", 42)]
        assert wakes == ["woke"]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def test_each_schema_has_a_channel_of_its_own():
    base = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    assert channel_for(base) == "triage_events"
    assert channel_for(f"{base}?search_path=coalition_a") == "triage_events_coalition_a"
    long_ones = [channel_for(f"{base}?search_path={'s' * 60}{n}") for n in range(2)]
    assert all(len(name) <= 63 for name in long_ones) and long_ones[0] != long_ones[1]


@pytest.mark.skipif(not on_postgres(), reason="LISTEN/NOTIFY needs PostgreSQL")
async def test_services_in_another_schema_of_the_database_hear_nothing(database_url):
    ours, theirs = channel_for(database_url), channel_for(database_url + "_other")
    first, same, other = Notifier(), Notifier(), Notifier()
    relays = [PostgresRelay(first, listen_dsn(database_url), ours),
              PostgresRelay(same, listen_dsn(database_url), ours),
              PostgresRelay(other, listen_dsn(database_url), theirs)]
    first.relay = relays[0]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    marker = await connect(database_url)
    try:
        await eventually(lambda: all(r.connected for r in relays), "the relays to listen", 10)
        with same.stream() as heard_here, other.stream() as heard_there:
            first.conversation(42)
            assert await heard_here.next(5) == [Change("conversation", 42)]
            # PostgreSQL hands a session its notifications in commit order: had the other
            # schema's relay heard #42, it would hear it before this.
            await marker.execute("SELECT pg_notify($1, 'c:43')", theirs)
            assert await heard_there.next(5) == [Change("conversation", 43)]
    finally:
        await marker.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
