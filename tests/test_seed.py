"""bench/seed.py fills a database the service then works on as if it had written it."""

from __future__ import annotations

import re

from markupsafe import escape

from bench.seed import fresh_numbers, seed
from bot.domain import ConversationStatus, Direction, OutboxKind
from bot.storage.models import Contact, Conversation, Message, Outbox, ProviderEvent
from tests.console_helpers import Browser, add_staff


async def test_a_seeded_database_holds_together_and_the_service_works_on_it(
    env, start_service, fake_twilio, clock,
):
    now = clock()
    done = await seed(env.database_url, env.key, 80, 900, now)
    assert (done.conversations, done.messages) == (80, 900)
    svc = await start_service(fake_twilio)
    cipher = svc.services.cipher
    conversations = await svc.all(Conversation)
    messages = await svc.all(Message)
    contacts = {c.id: c for c in await svc.all(Contact)}
    assert (len(conversations), len(messages)) == (80, 900)
    # Every body and address is real ciphertext under the service's key.
    assert all(cipher.decrypt(m.body_enc) for m in messages)
    assert all(cipher.decrypt(c.address_enc) for c in contacts.values())
    assert all(m.created_at <= now for m in messages)
    # Each outbound message went out once, and the worker left nothing of it behind.
    replies = [o for o in await svc.all(Outbox) if o.kind == OutboxKind.REPLY]
    outbound = [m for m in messages if m.direction == Direction.OUTBOUND]
    assert sorted(o.message_id for o in replies) == sorted(m.id for m in outbound)
    assert all(o.address_enc is None and o.body_enc is None and o.sent_at for o in replies)
    inbound = [m for m in messages if m.direction == Direction.INBOUND]
    assert len(await svc.all(ProviderEvent)) == len(inbound)
    # Only a contact's latest conversation may be open.
    latest = {c.contact_id: c.id for c in sorted(conversations, key=lambda c: c.opened_at)}
    open_ones = [c for c in conversations if c.status == ConversationStatus.OPEN]
    assert open_ones and all(latest[c.contact_id] == c.id for c in open_ones)

    await add_staff(svc, "erin")
    erin = Browser(svc)
    await erin.sign_in("erin")
    queue = await erin.get("/console?tab=open")
    assert f'data-open="{len(open_ones)}"' in queue.text
    first = min(inbound, key=lambda m: m.id)
    page = await erin.get(f"/console/conversations/{first.conversation_id}")
    assert page.status == 200
    assert str(escape(cipher.decrypt(first.body_enc))) in page.text
    # A contact new to the database starts the next conversation, as a sequence would
    # number it on PostgreSQL too.
    status, _ = await svc.sms("Hello", from_=fresh_numbers(1)[0])
    assert status == 200
    assert max(c.id for c in await svc.all(Conversation)) == 81
    waiting = re.search(r'data-numbers="([^"]*)"', (await erin.get("/console")).text)
    assert "81" in waiting.group(1).split()
