"""Fill a database with conversations and messages shaped like a busy service's, so pages
and scrapes can be timed on a realistic amount of data (bench/console.py, and anything else
that needs a full database).

    .venv/bin/python -m bench.seed --url sqlite+aiosqlite:////tmp/seed.db \\
        --conversations 100000 --messages 1000000

The database must be empty (the schema is created by the migrations if it is missing).
Bodies and addresses are encrypted with the real Cipher under TRIAGE_ENCRYPTION_KEY (or
--key); without either a fresh key is made and printed, since the service needs it to read
what was written. Everything is fictional: SMS numbers are +1 NXX 555 01XX, Telegram chat
ids are made up, and the texts are a few dozen invented lines.

The shape, for 100,000 conversations and 1,000,000 messages (SHARES below):
- contacts: 80% as many as conversations (the rest are people writing again), 60% on SMS
  (while fictional numbers last), 30% Telegram, 10% web chat; a fifth in Spanish; 2% opted
  out;
- conversations over the last 80 days (inside config.example.toml's 90-day retention, so
  a purge removes nothing): 2% open, and of those 7.5% waiting for a first claim, the rest
  claimed by one of 40 staff (a third of those with the contact's latest message
  unanswered); the others closed with an outcome. 1.5% are emergencies, each with its
  escalation, pages and audit trail; a few open ones still acknowledged or paging (the
  next ladder step due an hour after `now`, so nothing fires during a bench);
- messages per conversation heavy-tailed (Pareto): most have a handful, a few thousands;
  each begins with the bot's intake exchange, then contact, staff and the odd internal note,
  inserted in time order across conversations as a live service writes them (so one
  conversation's rows are spread over the table, not packed together);
- every outbound message has its outbox row, settled (delivered, sent, or failed), with
  address and body dropped as the worker does; every inbound one its provider event; every
  staff reply, note, claim, view and close its audit row.

All rows are written with SQLAlchemy Core executemany in large transactions. Encrypting
every body with the real Cipher costs about 5 us each, a few seconds for a million, so no
ciphertext is reused. The same --seed gives the same data (but fresh nonces).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/seed.py` puts bench/ first, not the root
    sys.path.insert(0, str(ROOT))

from bot.crypto import ENV as KEY_ENV  # noqa: E402
from bot.crypto import Cipher, generate_key  # noqa: E402
from bot.domain import (  # noqa: E402
    PRIORITY_EMERGENCY,
    PRIORITY_NORMAL,
    Channel,
    ConversationStatus,
    Direction,
    EscalationStatus,
    IntakeCategory,
    IntakeState,
    OutboxKind,
    OutboxStatus,
    StaffRole,
)
from bot.storage.database import ensure_schema, make_engine  # noqa: E402
from bot.storage.models import (  # noqa: E402
    AuditEntry,
    CannedReply,
    Contact,
    Conversation,
    ConversationViewer,
    Escalation,
    Message,
    Outbox,
    ProviderEvent,
    Staff,
    WebSession,
)
from handlers.staff import OUTCOMES, PRIORITY_HIGH, PRIORITY_URGENT  # noqa: E402
from handlers.staff_auth import hash_password  # noqa: E402


def _table(model: Any) -> Table:
    return model.__table__  # type: ignore[no-any-return]


SPAN = timedelta(days=80)
OUR_NUMBER = "+13145550100"  # the service's own number in the tests and the example
CONTACTS_PER_CONVERSATION = 0.8
CHANNEL_SHARES = ((Channel.SMS, 0.6), (Channel.TELEGRAM, 0.3), (Channel.WEB, 0.1))
SPANISH_SHARE = 0.2
OPTED_OUT_SHARE = 0.02
OPEN_SHARE = 0.02
WAITING_SHARE = 0.075  # of the open ones: nobody has claimed them yet
CLAIMED_AWAITING_SHARE = 1 / 3  # of the claimed ones: the contact wrote last
EMERGENCY_SHARE = 0.015
OPEN_EMERGENCY_SHARE = 0.005  # of the open ones
STAFF_ACCOUNTS = 32
ONCALL_ACCOUNTS = 8
STAFF_NUMBERS = tuple(f"+131455501{n:02d}" for n in range(1, ONCALL_ACCOUNTS + 1))
# 555-0100..0199 is fictional in every area code. The last RESERVED_NUMBERS are never
# seeded, so a bench can write in from numbers the database has not seen.
FICTIONAL_NUMBERS = tuple(
    number
    for number in (f"+1{area}5550{n}" for area in range(201, 1000) for n in range(100, 200))
    if number != OUR_NUMBER and number not in STAFF_NUMBERS
)
RESERVED_NUMBERS = 1000
TELEGRAM_FIRST_CHAT = 7_100_000_000
PARETO_ALPHA = 1.6
MAX_WEIGHT = 1500.0  # caps the longest conversation at a few thousand messages
NOTE_SHARE = 0.05
INBOUND_SHARE = 0.5  # of the messages after the intake exchange, the rest staff replies
CHUNK = 50_000  # rows per executemany, and per transaction


def fresh_numbers(count: int) -> list[str]:
    """SMS numbers a seeded database has never seen, for a bench to write in from."""
    if count > RESERVED_NUMBERS:
        raise ValueError(f"at most {RESERVED_NUMBERS} fresh numbers")
    return list(FICTIONAL_NUMBERS[-count:])


# --- what people write (all invented) -----------------------------------------------------------

CONTACT_LINES = {
    "en": (
        "Hi, I saw your number on a poster at the bus station.",
        "My employer keeps my passport and says I owe him for the trip.",
        "I work every day and they do not pay me what they promised.",
        "Is this confidential? I do not want anyone to know I wrote.",
        "My cousin is working at a farm and they will not let her leave.",
        "Can someone call me after 6? I cannot talk while I am at work.",
        "yes",
        "no",
        "ok thank you",
        "I am not sure what to do. They said they will report me if I complain.",
        "We live above the restaurant, eight of us in one room.",
        "Do you help people without papers?",
        "I need a place to stay tonight.",
        "He takes all the money from the tips and says it pays the debt.",
        "Thank you, I will think about it and write again.",
        "Where is your office? Can I come in person?",
        "Sorry for the late answer, my phone was taken for a few days.",
        "They moved us to another city last week. I do not know the address.",
    ),
    "es": (
        "Hola, vi su número en un cartel en la estación.",
        "Mi patrón tiene mi pasaporte y dice que le debo el viaje.",
        "Trabajo todos los días y no me pagan lo que prometieron.",
        "¿Esto es confidencial? No quiero que nadie sepa que escribí.",
        "sí",
        "no",
        "gracias",
        "No sé qué hacer. Dicen que me van a denunciar si me quejo.",
        "¿Ayudan a personas sin papeles?",
        "Necesito un lugar para quedarme esta noche.",
        "Perdón por la demora, me quitaron el teléfono unos días.",
        "¿Dónde está su oficina? ¿Puedo ir en persona?",
    ),
}
BOT_LINES = {
    "en": (
        "Thank you for reaching out. This service is confidential. What is this about? "
        "Reply 1 if you need help now, 2 to connect with services, 3 to get involved, "
        "4 for something else.",
        "Is it safe for us to text you at this number? Reply YES or NO.",
        "Thank you. A member of our team will reply here as soon as they can. If you are in "
        "danger now, call 911.",
        "Our office is closed now. We open again at 9:00 AM. If you are in danger, call 911.",
    ),
    "es": (
        "Gracias por escribirnos. Este servicio es confidencial. ¿De qué se trata? "
        "Responda 1 si necesita ayuda ahora, 2 para servicios, 3 para colaborar, 4 otra cosa.",
        "¿Es seguro enviarle mensajes a este número? Responda SÍ o NO.",
        "Gracias. Alguien de nuestro equipo le responderá aquí lo antes posible.",
    ),
}
STAFF_LINES = {
    "en": (
        "Hello, my name is Sam and I work with the coalition. Thank you for writing to us.",
        "You are not in trouble for contacting us. Can you tell me a little more?",
        "Are you safe right now?",
        "We can help you find a place to stay tonight. Which city are you in?",
        "Would it be all right if a caseworker called you? What time is safe?",
        "That sounds very hard. You do not owe that money: a debt like that is not legal.",
        "I have passed your details to our partner who speaks Tagalog. They will write today.",
        "Take your time. We are here on weekdays from 9 to 5.",
        "Here is the address of the drop-in centre: it is open until 8 tonight.",
        "Thank you for letting us know. I will check in again tomorrow morning.",
    ),
    "es": (
        "Hola, me llamo Ana y trabajo con la coalición. Gracias por escribirnos.",
        "No está en problemas por escribirnos. ¿Me puede contar un poco más?",
        "¿Está a salvo ahora mismo?",
        "Podemos ayudarle a encontrar dónde quedarse esta noche. ¿En qué ciudad está?",
        "Esa deuda no es legal: usted no debe ese dinero.",
    ),
}
NOTE_LINES = (
    "Referred to the legal clinic; waiting to hear back.",
    "Contact prefers text only, never a call.",
    "Spoke with the shelter coordinator, a bed is held until Friday.",
    "Possible labour trafficking: restaurant, passport held. Flagged for the weekly review.",
    "Asked a Spanish-speaking colleague to follow up.",
)


def _long_text(rng: random.Random, lines: Sequence[str], sentences: int) -> str:
    return " ".join(rng.choice(lines) for _ in range(sentences))


# --- the plan -----------------------------------------------------------------------------------

# Message kinds, kept as small ints while a million of them are sorted.
IN, BOT, STAFF_OUT, NOTE = 0, 1, 2, 3


@dataclass
class ContactPlan:
    id: int
    channel: Channel
    address: str
    language: str
    opted_out: bool
    created: float = math.inf  # seconds since the seed's epoch (now - SPAN)


@dataclass
class ConversationPlan:
    id: int
    contact: ContactPlan
    opened: float
    messages: int
    open: bool = False
    waiting: bool = False  # open, unclaimed
    awaiting: bool = False  # the contact wrote last
    emergency: bool = False
    escalation: str | None = None  # its escalation's status
    staff: int | None = None  # the staff member on it
    last: float = 0.0
    closed: float | None = None
    # Filled in while its messages are made:
    last_inbound: float = 0.0
    awaiting_since: float | None = None
    first_staff_reply: float | None = None
    priority: int = PRIORITY_NORMAL
    category: str | None = None
    safe: bool | None = None
    outcome: str | None = None


def _counts(rng: random.Random, conversations: int, messages: int) -> list[int]:
    """Messages per conversation, heavy-tailed, summing to `messages` exactly."""
    base = 2 if messages >= 2 * conversations else 1
    if messages < conversations:
        raise ValueError("at least one message per conversation")
    weights = [min(MAX_WEIGHT, rng.paretovariate(PARETO_ALPHA)) for _ in range(conversations)]
    total = sum(weights)
    extra = messages - base * conversations
    counts = [base + int(extra * w / total) for w in weights]
    for i in rng.sample(range(conversations), messages - sum(counts)):
        counts[i] += 1
    return counts


def _contacts(rng: random.Random, count: int) -> list[ContactPlan]:
    sms_numbers = FICTIONAL_NUMBERS[:-RESERVED_NUMBERS]
    shares = [share for _, share in CHANNEL_SHARES]
    channels = [channel for channel, _ in CHANNEL_SHARES]
    contacts: list[ContactPlan] = []
    sms = telegram = 0
    for i in range(count):
        channel = rng.choices(channels, shares)[0]
        if channel is Channel.SMS and sms == len(sms_numbers):
            channel = Channel.TELEGRAM  # fictional numbers ran out
        if channel is Channel.SMS:
            address = sms_numbers[sms]
            sms += 1
        elif channel is Channel.TELEGRAM:
            address = str(TELEGRAM_FIRST_CHAT + telegram)
            telegram += 1
        else:
            address = secrets.token_urlsafe(32)  # a web chat's token, as the page makes
        language = "es" if rng.random() < SPANISH_SHARE else "en"
        contacts.append(ContactPlan(i + 1, channel, address, language,
                                    rng.random() < OPTED_OUT_SHARE))
    return contacts


def plan(rng: random.Random, conversations: int,
         messages: int) -> tuple[list[ContactPlan], list[ConversationPlan]]:
    span = SPAN.total_seconds()
    contact_count = max(1, round(conversations * CONTACTS_PER_CONVERSATION))
    contacts = _contacts(rng, contact_count)
    # Everyone writes at least once; the rest are people writing again.
    owners = list(range(contact_count)) + [rng.randrange(contact_count)
                                           for _ in range(conversations - contact_count)]
    rng.shuffle(owners)
    opened = sorted(rng.uniform(0, span - 60) for _ in range(conversations))
    counts = _counts(rng, conversations, messages)
    convs = [ConversationPlan(i + 1, contacts[owners[i]], opened[i], counts[i])
             for i in range(conversations)]
    latest: dict[int, ConversationPlan] = {}
    for conv in convs:  # in time order: the last one seen is each contact's latest
        conv.contact.created = min(conv.contact.created, conv.opened)
        latest[conv.contact.id] = conv
    # Open: each contact's latest conversation, if recent and the contact did not opt out.
    # Waiting ones are the newest few days'; claimed ones up to a month old.
    recent = [c for c in latest.values() if not c.contact.opted_out]
    open_count = round(conversations * OPEN_SHARE)
    waiting_count = round(open_count * WAITING_SHARE)
    fresh = [c for c in recent if span - c.opened < 3 * 86400]
    waiting = rng.sample(fresh, min(waiting_count, len(fresh)))
    for conv in waiting:
        conv.open = conv.waiting = conv.awaiting = True
    month = [c for c in recent if span - c.opened < 30 * 86400 and not c.open]
    for conv in rng.sample(month, min(open_count - len(waiting), len(month))):
        conv.open = True
        conv.awaiting = rng.random() < CLAIMED_AWAITING_SHARE
    opened_ones = [c for c in convs if c.open]
    for conv in rng.sample(opened_ones, round(len(opened_ones) * OPEN_EMERGENCY_SHARE)):
        conv.emergency = True
        conv.escalation = rng.choice((EscalationStatus.OPEN, EscalationStatus.ACKED,
                                      EscalationStatus.RESOLVED))
    for conv in convs:
        if not conv.open and rng.random() < EMERGENCY_SHARE:
            conv.emergency = True
            conv.escalation = EscalationStatus.RESOLVED
        _schedule(rng, conv, span)
    return contacts, convs


def _schedule(rng: random.Random, conv: ConversationPlan, span: float) -> None:
    """When its last message is, who has it, and how it ended."""
    room = span - conv.opened
    if conv.open:
        # The latest message a few minutes to a day ago (waiting) or up to a week.
        ago = rng.uniform(120, 86400 if conv.waiting else 7 * 86400)
        conv.last = max(conv.opened, span - min(ago, room))
    else:
        length = min(conv.messages * rng.expovariate(1 / 1200), 0.9 * room, 30 * 86400)
        conv.last = conv.opened + length
        conv.closed = min(span - 1, conv.last + rng.uniform(600, 2 * 86400))
        conv.outcome = rng.choice(OUTCOMES)
    if not conv.waiting:
        conv.staff = rng.randrange(STAFF_ACCOUNTS + ONCALL_ACCOUNTS)
    if conv.emergency:
        conv.priority = PRIORITY_EMERGENCY
    else:
        roll = rng.random()
        conv.priority = (PRIORITY_URGENT if roll < 0.05 else PRIORITY_HIGH if roll < 0.15
                         else PRIORITY_NORMAL)
    categories = [c.value for c in IntakeCategory]
    conv.category = (IntakeCategory.NEED_HELP_NOW.value if conv.emergency
                     else rng.choice([*categories, None]))
    roll = rng.random()
    conv.safe = False if roll < 0.05 else None if roll < 0.15 else True


def messages_of(rng: random.Random, conv: ConversationPlan) -> list[tuple[float, int, int, int]]:
    """(at, conversation, kind, text seed) for each message, oldest first; fills in the
    conversation's derived times."""
    n = conv.messages
    times = [conv.opened, *sorted(rng.uniform(conv.opened, conv.last) for _ in range(n - 2))]
    if n > 1:
        times.append(conv.last)
    # The bot's intake exchange: its question, the answer, the safe-to-text question, the
    # answer, its closing line; then people.
    script = (IN, BOT, IN, BOT, IN, BOT)
    kinds = list(script[:n])
    for _ in range(n - len(kinds)):
        roll = rng.random()
        if conv.staff is None:  # nobody has picked it up: only the contact writes on
            kinds.append(IN)
        else:
            kinds.append(NOTE if roll < NOTE_SHARE else IN if roll < NOTE_SHARE + INBOUND_SHARE
                         else STAFF_OUT)
    if n > len(script):
        if conv.awaiting or conv.waiting:
            kinds[-1] = IN
        elif conv.staff is not None:
            kinds[-1] = STAFF_OUT
    since: float | None = None
    for at, kind in zip(times, kinds, strict=True):
        if kind == IN:
            conv.last_inbound = at
            if since is None:
                since = at
        elif kind == STAFF_OUT:
            since = None
            if conv.first_staff_reply is None:
                conv.first_staff_reply = at
    conv.awaiting_since = since
    return [(at, conv.id, kind, rng.getrandbits(30)) for at, kind in zip(times, kinds,
                                                                          strict=True)]


# --- writing ------------------------------------------------------------------------------------


class BulkInsert:
    """Rows into one table, CHUNK at a time, each chunk its own executemany."""

    def __init__(self, conn: Connection, model: Any) -> None:
        self.conn = conn
        self.table = _table(model)
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def add(self, **row: Any) -> None:
        self.rows.append(row)
        if len(self.rows) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(insert(self.table), self.rows)
            self.count += len(self.rows)
            self.rows = []


@dataclass
class Seeded:
    contacts: int
    conversations: int
    messages: int
    outbox: int
    audit: int
    escalations: int
    seconds: float


class Filler:
    def __init__(self, conn: Connection, cipher: Cipher, now: datetime, rng: random.Random):
        self.conn = conn
        self.cipher = cipher
        self.now = now
        self.epoch = now - SPAN
        self.rng = rng
        self.staff_ids: list[int] = []
        self.staff_names: list[str] = []
        self.oncall: list[tuple[int, str]] = []  # id, phone hash
        self.provider_seq = 0

    def at(self, seconds: float) -> datetime:
        return self.epoch + timedelta(seconds=seconds)

    def commit(self) -> None:
        self.conn.commit()

    def staff(self) -> None:
        """The staff the conversations were worked by, and a few canned replies."""
        # Accounts nobody can sign in to: a random password, hashed once for them all.
        unusable = hash_password(secrets.token_urlsafe(24))
        rows = []
        for i in range(STAFF_ACCOUNTS + ONCALL_ACCOUNTS):
            oncall = i >= STAFF_ACCOUNTS
            name = (f"seed-oncall-{i - STAFF_ACCOUNTS + 1:02d}" if oncall
                    else f"seed-staff-{i + 1:02d}")
            phone = STAFF_NUMBERS[i - STAFF_ACCOUNTS] if oncall else None
            rows.append({
                "id": i + 1, "username": name,
                "role": StaffRole.ONCALL if oncall else StaffRole.STAFF,
                "password_hash": unusable,
                "phone_enc": self.cipher.encrypt(phone) if phone else None,
                "phone_hash": self.cipher.address_hash(Channel.SMS, phone) if phone else None,
                "telegram_enc": None, "telegram_hash": None, "totp_secret_enc": None,
                "totp_confirmed_at": None, "totp_last_step": None, "sound_on": True,
                "disabled": False, "created_at": self.epoch,
            })
            self.staff_ids.append(i + 1)
            self.staff_names.append(name)
            if oncall:
                self.oncall.append((i + 1, rows[-1]["phone_hash"]))
        self.conn.execute(insert(_table(Staff)), rows)
        canned = [
            {"title": f"{lang}: {line[:40]}", "language": lang, "body": line,
             "created_at": self.epoch, "updated_at": self.epoch}
            for lang, lines in STAFF_LINES.items() for line in lines[:6]
        ]
        self.conn.execute(insert(_table(CannedReply)), canned)

    def contacts(self, contacts: list[ContactPlan], convs: list[ConversationPlan]) -> None:
        last_seen: dict[int, float] = {}
        for conv in convs:
            last_seen[conv.contact.id] = max(last_seen.get(conv.contact.id, 0.0), conv.last)
        out = BulkInsert(self.conn, Contact)
        web = BulkInsert(self.conn, WebSession)
        for c in contacts:
            address_hash = self.cipher.address_hash(c.channel, c.address)
            created = self.at(c.created)
            out.add(id=c.id, channel=c.channel, address_hash=address_hash,
                    address_enc=self.cipher.encrypt(c.address), language=c.language,
                    opted_out=c.opted_out,
                    opted_out_at=self.at(last_seen[c.id]) if c.opted_out else None,
                    created_at=created)
            if c.channel is Channel.WEB:
                seen = self.at(last_seen[c.id])
                web.add(address_hash=address_hash, language=c.language, created_at=created,
                        last_seen_at=seen, ended_at=seen + timedelta(minutes=30),
                        end_reason="idle")
        out.flush()
        web.flush()

    def conversations(self, convs: list[ConversationPlan]) -> None:
        out = BulkInsert(self.conn, Conversation)
        for c in convs:
            staff = self.staff_ids[c.staff] if c.staff is not None else None
            out.add(
                id=c.id, contact_id=c.contact.id, channel=c.contact.channel,
                status=ConversationStatus.OPEN if c.open else ConversationStatus.CLOSED,
                intake_state=IntakeState.DONE if c.messages >= 6 else IntakeState.ASKED,
                intake_category=c.category, safe_to_text=c.safe, emergency=c.emergency,
                priority=c.priority, opened_at=self.at(c.opened),
                last_inbound_at=self.at(c.last_inbound),
                last_emergency_reply_at=self.at(c.opened) if c.emergency else None,
                after_hours_notice_for=None, assigned_to=staff,
                closed_at=self.at(c.closed) if c.closed is not None else None,
                outcome=c.outcome,
                origin=OUR_NUMBER if c.contact.channel is Channel.SMS else None,
                first_staff_reply_at=(self.at(c.first_staff_reply)
                                      if c.first_staff_reply is not None else None),
                awaiting_since=(self.at(c.awaiting_since)
                                if c.awaiting_since is not None else None),
            )
        out.flush()

    def escalations(self, convs: list[ConversationPlan], audit: BulkInsert,
                    outbox: BulkInsert) -> int:
        out = BulkInsert(self.conn, Escalation)
        number = 0
        for c in convs:
            if c.escalation is None:
                continue
            number += 1
            opened = self.at(c.opened + 5)
            acker_index = self.rng.randrange(len(self.oncall))
            acker_id, phone_hash = self.oncall[acker_index]
            acker = self.staff_names[acker_id - 1]
            status = c.escalation
            acked = opened + timedelta(minutes=self.rng.uniform(1, 9))
            resolved = acked + timedelta(minutes=self.rng.uniform(10, 90))
            if status is EscalationStatus.RESOLVED and c.closed is not None:
                resolved = min(resolved, self.at(c.closed))
            resolved = min(resolved, self.now - timedelta(minutes=1))
            acked = min(acked, resolved)
            due = self.now + timedelta(hours=1)  # no ladder step fires during a bench
            out.add(
                id=number, conversation_id=c.id, channel=c.contact.channel,
                trigger=self.rng.choice(("keyword", "keyword", "intake", "staff")),
                status=status, step=1 if status is EscalationStatus.OPEN else 0,
                next_step_at=None if status is EscalationStatus.RESOLVED else due,
                opened_at=opened,
                acked_at=None if status is EscalationStatus.OPEN else acked,
                acked_by=None if status is EscalationStatus.OPEN else acker_id,
                resolved_at=resolved if status is EscalationStatus.RESOLVED else None,
                resolved_by=acker_id if status is EscalationStatus.RESOLVED else None,
                resolution_note_enc=(self.cipher.encrypt("Called back; referred to shelter.")
                                     if status is EscalationStatus.RESOLVED else None),
            )
            self._audit(audit, opened, "escalation_opened", "escalation", number,
                        detail="trigger=keyword")
            self._audit(audit, opened, "page_queued", "escalation", number,
                        detail="step=0 level=0 cycle=0 paged=1")
            self._settled(outbox, opened, channel=Channel.SMS, kind=OutboxKind.PAGE,
                          address_hash=phone_hash, staff_id=acker_id, escalation_id=number,
                          conversation_id=None, contact_id=None, message_id=None,
                          origin=None)
            if status is not EscalationStatus.OPEN:
                self._audit(audit, acked, "escalation_acked", "escalation", number,
                            actor=acker, actor_staff_id=acker_id)
            if status is EscalationStatus.RESOLVED:
                self._audit(audit, resolved, "escalation_resolved", "escalation", number,
                            actor=acker, actor_staff_id=acker_id)
        out.flush()
        return number

    def _audit(self, audit: BulkInsert, at: datetime, action: str, target_type: str,
               target_id: int | None, actor: str = "system", actor_staff_id: int | None = None,
               detail: str = "") -> None:
        audit.add(at=at, actor=actor, actor_staff_id=actor_staff_id, action=action,
                  target_type=target_type, target_id=target_id, detail=detail)

    def _provider_id(self, channel: str) -> str:
        self.provider_seq += 1
        if channel == Channel.SMS:
            return f"SM{self.provider_seq:032x}"
        return str(self.provider_seq)

    def _settled(self, outbox: BulkInsert, at: datetime, **row: Any) -> None:
        """An outbox row as the worker leaves it: sent, address and body dropped."""
        roll = self.rng.random()
        status, error = ((OutboxStatus.FAILED, "undelivered:30003") if roll < 0.02
                         else (OutboxStatus.SENT, None) if roll < 0.1
                         else (OutboxStatus.DELIVERED, None))
        sent = at + timedelta(seconds=1)
        outbox.add(**row, failover_of=None, address_enc=None, body_enc=None, status=status,
                   attempts=1, next_attempt_at=at, lease_until=None, in_doubt=False,
                   provider_id=self._provider_id(row["channel"]), last_error=error,
                   created_at=at, sent_at=sent, updated_at=sent + timedelta(seconds=2))

    def messages(self, convs: list[ConversationPlan], stream: list[tuple[float, int, int, int]],
                 audit: BulkInsert, outbox: BulkInsert) -> int:
        """Every message in time order, with its outbox row, provider event and audit."""
        out = BulkInsert(self.conn, Message)
        events = BulkInsert(self.conn, ProviderEvent)
        hashes = {c.id: self.cipher.address_hash(c.channel, c.address)
                  for c in {conv.contact.id: conv.contact for conv in convs}.values()}
        body_rng = random.Random()
        for number, (seconds, conv_id, kind, text_seed) in enumerate(stream, start=1):
            conv = convs[conv_id - 1]
            contact = conv.contact
            at = self.at(seconds)
            body_rng.seed(text_seed)
            body = self._body(body_rng, kind, contact.language)
            staff_id = self.staff_ids[conv.staff] if conv.staff is not None else None
            author = staff_id if kind in (STAFF_OUT, NOTE) else None
            out.add(id=number, conversation_id=conv_id,
                    direction=(Direction.INBOUND if kind == IN else Direction.NOTE
                               if kind == NOTE else Direction.OUTBOUND),
                    body_enc=self.cipher.encrypt(body),
                    media_count=1 if kind == IN and body_rng.random() < 0.03 else 0,
                    automatic=kind == BOT, author_staff_id=author, created_at=at)
            if kind == IN:
                events.add(channel=contact.channel, provider_id=self._provider_id(
                    contact.channel), received_at=at)
            elif kind in (BOT, STAFF_OUT):
                self._settled(outbox, at, channel=contact.channel, kind=OutboxKind.REPLY,
                              address_hash=hashes[contact.id], staff_id=None,
                              escalation_id=None, conversation_id=conv_id,
                              contact_id=contact.id, message_id=number,
                              origin=OUR_NUMBER if contact.channel is Channel.SMS else None)
            if author is not None:
                name = self.staff_names[conv.staff]  # type: ignore[index]
                action = "note_added" if kind == NOTE else "conversation_replied"
                detail = "" if kind == NOTE else f"channel={contact.channel}"
                self._audit(audit, at, action, "conversation", conv_id, actor=name,
                            actor_staff_id=author, detail=detail)
            if number % CHUNK == 0:
                out.flush()  # messages first: the outbox rows point at them
                events.flush()
                outbox.flush()
                audit.flush()
                self.commit()
        out.flush()
        events.flush()
        return out.count

    def _body(self, rng: random.Random, kind: int, language: str) -> str:
        if kind == BOT:
            return rng.choice(BOT_LINES[language])
        if kind == NOTE:
            return rng.choice(NOTE_LINES)
        lines = CONTACT_LINES[language] if kind == IN else STAFF_LINES[language]
        roll = rng.random()
        if roll < 0.01:
            return _long_text(rng, lines, rng.randint(12, 30))  # a long message, 1-2k chars
        if roll < 0.15:
            return _long_text(rng, lines, rng.randint(2, 5))
        return rng.choice(lines)

    def conversation_audit(self, convs: list[ConversationPlan], audit: BulkInsert) -> None:
        """Claims, views and closes, as staff working the queue leave them."""
        for c in convs:
            if c.staff is None:
                continue
            staff_id, name = self.staff_ids[c.staff], self.staff_names[c.staff]
            claimed = self.at(c.opened + min(600.0, (c.last - c.opened) / 2))
            self._audit(audit, claimed, "conversation_viewed", "conversation", c.id,
                        actor=name, actor_staff_id=staff_id)
            self._audit(audit, claimed, "conversation_claimed", "conversation", c.id,
                        actor=name, actor_staff_id=staff_id)
            if c.closed is not None:
                closed = self.at(c.closed)
                self._audit(audit, closed, "conversation_viewed", "conversation", c.id,
                            actor=name, actor_staff_id=staff_id)
                self._audit(audit, closed, "conversation_closed", "conversation", c.id,
                            actor=name, actor_staff_id=staff_id, detail=c.outcome or "")

    def viewers(self, convs: list[ConversationPlan]) -> None:
        """A few open conversations someone has open right now."""
        claimed = [c for c in convs if c.open and c.staff is not None]
        rows = [{"conversation_id": c.id, "staff_id": self.staff_ids[c.staff],  # type: ignore[index]
                 "seen_at": self.now}
                for c in self.rng.sample(claimed, min(20, len(claimed)))]
        if rows:
            self.conn.execute(insert(_table(ConversationViewer)), rows)


def _fill(conn: Connection, cipher: Cipher, conversations: int, messages: int,
          now: datetime, rng_seed: int) -> Seeded:
    started = time.perf_counter()
    if conn.scalar(select(func.count()).select_from(_table(Conversation))) or \
            conn.scalar(select(func.count()).select_from(_table(Staff))):
        raise SystemExit("seed: the database already has conversations or staff; "
                         "seed an empty one")
    rng = random.Random(rng_seed)
    contacts, convs = plan(rng, conversations, messages)
    stream: list[tuple[float, int, int, int]] = []
    for conv in convs:
        stream.extend(messages_of(random.Random(rng.getrandbits(64)), conv))
    stream.sort()  # in time order across conversations, as a live service writes them
    filler = Filler(conn, cipher, now, rng)
    filler.staff()
    filler.contacts(contacts, convs)
    filler.commit()
    filler.conversations(convs)
    filler.commit()
    audit = BulkInsert(conn, AuditEntry)
    outbox = BulkInsert(conn, Outbox)
    escalations = filler.escalations(convs, audit, outbox)
    filler.commit()
    written = filler.messages(convs, stream, audit, outbox)
    filler.conversation_audit(convs, audit)
    filler.viewers(convs)
    outbox.flush()
    audit.flush()
    filler.commit()
    if conn.dialect.name == "postgresql":
        # Ids were given explicitly: move each sequence past them, and gather the planner's
        # statistics now, as autovacuum would shortly after a bulk load.
        for model in (Staff, Contact, Conversation, Escalation, Message):
            name = _table(model).name  # our own table names, not input
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "  # noqa: S608
                              f"(SELECT max(id) FROM {name}))"))
        filler.commit()
        conn.execute(text("ANALYZE"))
        filler.commit()
    return Seeded(len(contacts), len(convs), written, outbox.count, audit.count, escalations,
                  time.perf_counter() - started)


async def seed(url: str, key: str, conversations: int, messages: int, now: datetime,
               rng_seed: int = 1) -> Seeded:
    """Fill the empty database at `url` (created by the migrations if new). `key` is a
    TRIAGE_ENCRYPTION_KEY value; `now` is the moment the data leads up to."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    cipher = Cipher.from_env_value(key)
    engine: AsyncEngine = make_engine(url)
    try:
        await ensure_schema(engine)
        async with engine.connect() as conn:
            return await conn.run_sync(_fill, cipher, conversations, messages,
                                       now.astimezone(UTC), rng_seed)
    finally:
        await engine.dispose()


def _sqlite_file(url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    return Path(url.removeprefix(prefix)) if url.startswith(prefix) else None


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.seed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True,
                        help="SQLAlchemy URL, e.g. sqlite+aiosqlite:////tmp/seed.db")
    parser.add_argument("--conversations", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--key", help=f"encryption key (default ${KEY_ENV}, else a new one)")
    parser.add_argument("--now", help="ISO date-time the data leads up to (default: now)")
    parser.add_argument("--seed", type=int, default=1, help="random seed")
    args = parser.parse_args(argv)
    if args.conversations < 1 or args.messages < args.conversations:
        parser.error("need at least one conversation and a message for each")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        key = generate_key()
        # Bench data only: the service needs this key to read what is written.
        print(f"{KEY_ENV}={key}")
    now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
    if now.tzinfo is None:
        raise SystemExit("--now needs a UTC offset, e.g. 2026-11-30T16:00+00:00")
    done = asyncio.run(seed(args.url, key, args.conversations, args.messages, now, args.seed))
    size = ""
    path = _sqlite_file(args.url)
    if path is not None and path.exists():
        size = f", {path.stat().st_size / 2**20:.0f} MiB"
    print(f"seeded {done.conversations} conversations, {done.messages} messages, "
          f"{done.contacts} contacts, {done.outbox} outbox rows, {done.audit} audit rows, "
          f"{done.escalations} escalations in {done.seconds:.0f} s{size}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

