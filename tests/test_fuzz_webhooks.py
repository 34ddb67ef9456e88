"""Property tests over the webhooks: no request, however odd, breaks them.

Hypothesis generates requests to each endpoint (Twilio inbound SMS, Twilio status, Telegram),
unsigned and validly signed, with odd headers (Content-Type charsets and parameters,
signature and secret headers of any bytes), odd form fields (missing, twice, huge, NUL,
non-UTF-8 bytes, emoji, right-to-left text, markup) and odd Telegram JSON (wrong types,
no chat, huge ids, nested junk). For every one:
- the status is below 500;
- nothing is logged at ERROR or above by any logger, and no record carries a traceback;
- no row is written (provider_events, messages, outbox, contacts) and nothing is spooled,
  unless the answer was 2xx.

One running service per test takes all the examples, so a test also shows that the service
keeps its footing after thousands of odd requests. Hypothesis runs in a worker thread and
hands each request to the test's event loop, which keeps serving the app in between. The
@given function takes no pytest fixture, so hypothesis has no function-scoped fixture to
warn about, and no health check is suppressed.

TRIAGE_FUZZ_EXAMPLES sets the number of examples per endpoint (default 300, for CI). The
runs are derandomized and keep no example database, so every run tries the same requests.
The bench run in README.md uses 10,000.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import MultiDict
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from twilio.request_validator import RequestValidator

from bot.storage.models import Outbox, Staff
from tests.conftest import PUBLIC_URL, WEBHOOK_SECRET, Service, StartService
from tests.databases import Raw
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.twilio_api import FakeTwilio
from tests.fixtures import (
    AUTH_TOKEN,
    OUR_NUMBER,
    load_telegram_update,
    load_twilio_form,
    twilio_signature,
)
from tests.raw_http import raw_post
from tests.waiting import eventually

EXAMPLES = int(os.environ.get("TRIAGE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # a request's time depends on the machine and on what came before it
    derandomize=True,  # the same examples on every run, so CI is reproducible
    database=None,
)
INBOUND_PATH = "/webhooks/twilio/sms"
STATUS_PATH = "/webhooks/twilio/status"
TELEGRAM_PATH = "/webhooks/telegram"
FORM = "application/x-www-form-urlencoded"
STAFF_PHONE = "+13145550142"  # an admin, so emergencies page someone
STAFF_CHAT = 700000142
EXAMPLE_SECONDS = 30  # one request; far more than any takes
QUIET_SECONDS = 30  # for the outbox to finish what the last examples queued

# --- what a request is made of ---------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    signed: bool = False

    def __repr__(self) -> str:  # hypothesis prints this for a failing example
        return (f"Request(target={self.target!r}, headers={self.headers!r}, "
                f"body={self.body[:2000]!r}{'...' if len(self.body) > 2000 else ''}, "
                f"signed={self.signed})")


def header_bytes(max_size: int = 80) -> st.SearchStrategy[bytes]:
    """Any bytes a header value can carry on the wire (CR and LF would end it)."""
    return st.binary(max_size=max_size).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


# Strategies are built once, here: hypothesis validates each new one, which would cost more
# than drawing from it if they were built per example.
HEADER_BYTES = header_bytes()
ODD_TEXTS = st.sampled_from([
    "", " ", "\x00", "nul\x00byte", "😊🛑", "مرحبا، أحتاج مساعدة", "\u202eevil\u202c",
    "<script>alert(1)</script>", "' OR 1=1 --", "%00", "%FF", "\ufeff", "a\u200bb",
    "\r\n", "=&=&", "+", "𝓗𝓔𝓛𝓟", "i\u0307", "ß" * 3,
])
# Whole messages the conversation acts on, so signed examples walk its paths too.
MESSAGES = st.sampled_from([
    "Hello", "STOP", "START", "HELP", "AYUDA", "DELETE", "EXIT", "ES", "EN", "1", "2", "SAFE",
    "NOT SAFE", "YES", "he has a gun", "necesito ayuda", "ACK", "ACK 1", "RESOLVE 1", "/start",
])
# Around the 10,000-character limit, from either side.
HUGE_TEXT = st.builds(lambda c, n: c * n, st.sampled_from(["x", "é", "😊", "\x00", "<"]),
                      st.integers(9_990, 10_010))
# Text of any kind; the huge kind one time in six (two copies of a strategy count twice).
ANY_TEXT = st.one_of(ODD_TEXTS, ODD_TEXTS.map(str), st.text(max_size=60),
                     st.text(max_size=200), st.text(max_size=5), HUGE_TEXT)
BODIES = st.one_of(MESSAGES, MESSAGES.map(str), ANY_TEXT)
SIDS = st.builds(lambda prefix, n: f"{prefix}{n:032x}", st.sampled_from(["SM", "MM"]),
                 st.integers(0, 2**128 - 1))
CONTACTS = [f"+1314555{n:04d}" for n in range(101, 200)]  # fictional, and one staff number

_CHARSETS = st.one_of(st.sampled_from(["utf-8", "UTF-8", '"utf-8"', "latin-1", "utf-16",
                                       "x-no-such", "", "utf-8''x", "ütf-8"]),
                      st.text(max_size=12))
_PARAMS = st.one_of(
    _CHARSETS.map(lambda c: f"; charset={c}"),
    _CHARSETS.map(lambda c: f"; charset*={c}"),
    st.sampled_from([";a*", "; boundary=", ";;;", "; charset", "; =x", '; a="b;c"']),
    st.text(max_size=20).map(lambda t: "; " + t),
)
CONTENT_TYPES = st.one_of(
    st.just(FORM.encode()), st.just(FORM.encode()),
    st.lists(_PARAMS, max_size=3).map(lambda ps: (FORM + "".join(ps)).encode("utf-8")),
    st.sampled_from([b"application/json", b"text/plain", b"multipart/form-data; boundary=x",
                     b"", b"APPLICATION/X-WWW-FORM-URLENCODED"]),
    HEADER_BYTES,
)
CLEAN_CONTENT_TYPES = st.sampled_from([FORM.encode(), (FORM + "; charset=utf-8").encode()])
# Headers a proxy or an attacker might add: encodings, odd names, raw bytes.
EXTRA_HEADERS = st.lists(st.one_of(
    st.tuples(st.just(b"Content-Encoding"),
              st.sampled_from([b"gzip", b"deflate", b"br", b"identity", b"x"])),
    st.tuples(st.just(b"Transfer-Encoding"), st.sampled_from([b"chunked", b"x"])),
    st.tuples(st.sampled_from([b"X-Forwarded-Proto", b"X-Forwarded-Host", b"Expect",
                               b"Cookie", b"Accept-Charset"]), HEADER_BYTES),
), max_size=2)
SETTINGS_VALUES = st.one_of(
    st.sampled_from([b"", b"algorithm=", b"algorithm=HMAC_SHA1", b"algorithm=md5",
                     b"algorithm=hmac_sha256", b",,=,algorithm,=x=", b"algorithm=\xff",
                     b"algorithm=" + b"A" * 300]),
    HEADER_BYTES,
)
QUERIES = st.one_of(st.just(b""), header_bytes(30).map(
    lambda q: b"?" + q.replace(b" ", b"").replace(b"#", b"")))
EXTRA_FIELDS = st.lists(st.tuples(st.one_of(ODD_TEXTS, st.text(max_size=12)), ANY_TEXT),
                        max_size=2)

# Each example is drawn "clean" (a request Twilio or Telegram could send: every field kept
# or given a valid value, plain headers, signed) or "messy" (anything goes). Without the
# clean third, nearly every signed example would be refused for one odd field or another,
# and the conversation behind the webhook would see few messages.
CLEAN = st.sampled_from([True, False, False])
FIELD_ACTIONS = {
    True: st.sampled_from(["keep", "valid"]),
    False: st.sampled_from(["keep", "keep", "valid", "valid", "junk", "drop", "twice"]),
}
SIGNINGS = {
    True: st.sampled_from(["sha1", "sha1", "sha256"]),
    False: st.sampled_from(["sha1", "sha1", "sha256", "none", "junk", "stale"]),
}
MUTATIONS = st.sampled_from(["same", "same", "splice", "cut"])


@st.composite
def mutated(draw: st.DrawFn, base: list[tuple[str, str]],
            valid: dict[str, st.SearchStrategy[str]], clean: bool) -> list[tuple[str, str]]:
    """The fields of ``base``, each kept or given a valid value; when messy, also given
    junk, dropped or sent twice, and followed by a few fields nobody sends."""
    pairs: list[tuple[str, str]] = []
    for name, value in base:
        action = draw(FIELD_ACTIONS[clean])
        if action == "keep":
            pairs.append((name, value))
        elif action == "valid":
            pairs.append((name, draw(valid[name]) if name in valid else value))
        elif action == "junk":
            pairs.append((name, draw(ANY_TEXT)))
        elif action == "twice":
            pairs += [(name, value), (name, value if draw(st.booleans()) else draw(ANY_TEXT))]
    if not clean:
        pairs += draw(EXTRA_FIELDS)
    return pairs


@st.composite
def raw_mutation(draw: st.DrawFn, body: bytes) -> bytes:
    """The body with raw bytes (often not UTF-8) spliced in, or cut short, or as it is."""
    how = draw(MUTATIONS)
    if how == "same" or not body:
        return body
    at = draw(st.integers(0, len(body)))
    if how == "cut":
        return body[:at]
    return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]


@st.composite
def twilio_requests(draw: st.DrawFn, path: str, fixture: str,
                    valid: dict[str, st.SearchStrategy[str]]) -> Request:
    clean = draw(CLEAN)
    base = load_twilio_form(fixture)
    pairs = draw(mutated(list(base.items()), valid, clean))
    body = urlencode(pairs).encode()
    sent_body = body if clean else draw(raw_mutation(body))
    headers = [(b"Content-Type", draw(CLEAN_CONTENT_TYPES if clean else CONTENT_TYPES))]
    target = path.encode()
    signing = draw(SIGNINGS[clean])
    url = PUBLIC_URL + path
    if signing == "sha1":  # as Twilio signs with the account's auth token
        headers.append((b"X-Twilio-Signature",
                        twilio_signature(AUTH_TOKEN, url, MultiDict(pairs)).encode()))  # type: ignore[arg-type]
    elif signing == "sha256":  # as Twilio signs with a SharedKey
        signature = RequestValidator(AUTH_TOKEN).compute_signature(url, MultiDict(pairs),
                                                                   "HMAC_SHA256")
        headers += [(b"X-Twilio-Signature", signature.encode()),
                    (b"X-Twilio-Webhooks-Signature-Settings", b"key=k1,algorithm=HMAC_SHA256")]
    elif signing == "junk":
        headers.append((b"X-Twilio-Signature", draw(HEADER_BYTES)))
    elif signing == "stale":  # a real signature, of another form
        headers.append((b"X-Twilio-Signature", twilio_signature(AUTH_TOKEN, url, base).encode()))
    if not clean:
        if signing in ("none", "junk"):  # a query would need signing too
            target += draw(QUERIES)
        if draw(st.booleans()):
            headers.append((b"X-Twilio-Webhooks-Signature-Settings", draw(SETTINGS_VALUES)))
        headers += draw(EXTRA_HEADERS)
    return Request(target, headers, sent_body,
                   signed=signing in ("sha1", "sha256") and sent_body == body)


INBOUND_VALID: dict[str, st.SearchStrategy[str]] = {
    "From": st.sampled_from([*CONTACTS, "55501"]),
    "To": st.sampled_from([OUR_NUMBER, "+13145550101", "233733"]),
    "MessageSid": SIDS,
    "SmsSid": SIDS,
    "SmsMessageSid": SIDS,
    "NumMedia": st.integers(0, 10).map(str),
    "Body": BODIES,
}

JSON_JUNK = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(2**53, 2**80),
              st.floats(), st.text(max_size=20)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                               max_size=4),
    max_leaves=12,
)
JUNK_KEYS = st.dictionaries(st.text(max_size=12), JSON_JUNK, max_size=2)
TELEGRAM_FIXTURES = st.sampled_from(["text_message", "text_message", "start", "photo_caption",
                                     "group_message", "edited_message"])
CHAT_IDS = st.one_of(st.sampled_from([700000123, 700000124, STAFF_CHAT]), st.integers(1, 2**52))
CHAT_TYPES = st.sampled_from(["private", "group", "supergroup", "channel", "Private"])
UPDATE_IDS = {True: st.integers(1, 2**31),
              False: st.one_of(st.integers(1, 2**31), st.integers(-5, 0),
                               st.integers(2**53 - 2, 2**64))}
# What a message may hold, clean; messy, any of it may also be junk or go missing.
MESSAGE_VALID: dict[str, st.SearchStrategy[Any]] = {
    "text": BODIES,
    "caption": BODIES,
    "date": st.integers(0, 2**31),
    "message_id": st.integers(1, 2**31),
}
MESSAGE_ODD: dict[str, st.SearchStrategy[Any]] = {
    **MESSAGE_VALID,
    "date": st.integers(-2**40, 2**40),
    "message_id": st.integers(-2**40, 2**40),
    "chat": st.one_of(CHAT_IDS, st.integers(-2**60, 2**60)).map(lambda i: {"id": i}),
    "from": JSON_JUNK, "photo": JSON_JUNK, "entities": JSON_JUNK,
}
SET_ACTIONS = {True: st.sampled_from(["keep", "valid"]),
               False: st.sampled_from(["keep", "keep", "valid", "junk", "drop"])}
SURROGATES = st.text(alphabet=st.characters(categories=["Cs"]), min_size=1, max_size=3)


@st.composite
def telegram_updates(draw: st.DrawFn, clean: bool) -> Any:
    def maybe_set(table: dict[str, Any], key: str, valid: st.SearchStrategy[Any]) -> None:
        action = draw(SET_ACTIONS[clean])
        if action == "valid":
            table[key] = draw(valid)
        elif action == "junk":
            table[key] = draw(JSON_JUNK)
        elif action == "drop":
            table.pop(key, None)

    update: dict[str, Any] = load_telegram_update(draw(TELEGRAM_FIXTURES))
    maybe_set(update, "update_id", UPDATE_IDS[clean])
    kind = next(k for k in ("message", "edited_message", "channel_post") if k in update)
    message = update[kind]
    chat = message["chat"]
    maybe_set(chat, "id", CHAT_IDS if clean else MESSAGE_ODD["chat"].map(lambda c: c["id"]))
    if clean and chat["type"] == "private":
        message["from"]["id"] = chat["id"]  # in a private chat, the same person
    elif not clean:
        maybe_set(chat, "type", CHAT_TYPES)
    for key, valid in (MESSAGE_VALID if clean else MESSAGE_ODD).items():
        if key in message or not clean:
            maybe_set(message, key, valid)
    if clean:
        return update
    if draw(st.integers(0, 9)) == 0:  # a lone surrogate, which JSON spells as \ud800
        message["text"] = draw(SURROGATES)
    message.update(draw(JUNK_KEYS))
    update.update(draw(JUNK_KEYS))
    if draw(st.integers(0, 19)) == 0:
        update[kind] = draw(JSON_JUNK)
    shape = draw(st.sampled_from(["update", "update", "update", "junk", "list"]))
    return update if shape == "update" else draw(JSON_JUNK) if shape == "junk" else [update]


RAW_JSON = st.sampled_from([
    b"", b"{", b"null", b"[]", b"{}", b'{"update_id": 1' + b"1" * 5000 + b"}",
    b'{"update_id": 1, "message": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
    b'{"update_id": 1, "update_id": "x"}', b'{"update_id": NaN}', b'{"update_id": 1e400}',
    b'\xef\xbb\xbf{"update_id": 1}', b'{"update_id": 1, "message": {"text": "caf\xe9"}}',
])
SECRETS = st.one_of(
    st.just(WEBHOOK_SECRET.encode()), st.just(WEBHOOK_SECRET.encode()), st.none(),
    HEADER_BYTES, st.just(WEBHOOK_SECRET.encode() + b"\xff"),
    st.just(WEBHOOK_SECRET.upper().encode()), st.just(WEBHOOK_SECRET[:-1].encode()),
)
JSON_CONTENT_TYPES = st.one_of(st.just(b"application/json"), HEADER_BYTES)


@st.composite
def telegram_requests(draw: st.DrawFn) -> Request:
    clean = draw(CLEAN)
    if clean:
        body = json.dumps(draw(telegram_updates(clean=True))).encode()
    elif draw(st.integers(0, 9)) == 0:
        body = draw(RAW_JSON)  # json.dumps cannot write some of these
    else:
        body = draw(raw_mutation(json.dumps(draw(telegram_updates(clean=False))).encode()))
    secret = WEBHOOK_SECRET.encode() if clean else draw(SECRETS)
    headers = [(b"Content-Type", b"application/json" if clean else draw(JSON_CONTENT_TYPES))]
    if secret is not None:
        headers.append((b"X-Telegram-Bot-Api-Secret-Token", secret))
    if not clean:
        headers += draw(EXTRA_HEADERS)
    return Request(TELEGRAM_PATH.encode(), headers, body,
                   signed=secret == WEBHOOK_SECRET.encode())


# --- the running service, watched --------------------------------------------------------------


class Recorder(logging.Handler):
    """Sees every record that reaches the root logger, at any level, and keeps those at
    ERROR or above and those that carry a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.bad: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.stack_info:
            traceback = " +traceback" if record.exc_info or record.stack_info else ""
            self.bad.append(f"{record.name} {record.levelname} "
                            f"{record.getMessage()[:200]}{traceback}")

    def take_bad(self) -> list[str]:
        """What was kept since the last call."""
        bad, self.bad = self.bad, []
        return bad


@pytest.fixture
def recorder(request: pytest.FixtureRequest) -> Iterator[Recorder]:
    """Every logger's records, at every level the logger lets through: the root is opened
    to DEBUG and every existing logger is made to propagate. (SQLAlchemy keeps the WARN
    floor it sets for itself, or every statement would be logged.)

    pytest's own log capture is held at WARNING meanwhile: it would otherwise keep every
    DEBUG record of thousands of examples, and print them all on a failure."""
    handler = Recorder()
    root = logging.getLogger()
    loggers = [lg for lg in logging.Logger.manager.loggerDict.values()
               if isinstance(lg, logging.Logger)]
    saved = [(lg, lg.propagate, lg.disabled) for lg in loggers]
    plugin = request.config.pluginmanager.get_plugin("logging-plugin")
    captures = [plugin.caplog_handler, plugin.report_handler] if plugin else []
    saved_levels = [(root, root.level), *((h, h.level) for h in captures)]
    for lg in loggers:
        lg.propagate, lg.disabled = True, False
    for capture in captures:
        capture.setLevel(logging.WARNING)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    for thing, level in saved_levels:
        thing.setLevel(level)
    for lg, propagate, disabled in saved:
        lg.propagate, lg.disabled = propagate, disabled


FOOTPRINT = """SELECT
    (SELECT count(*) FROM provider_events), (SELECT max(id) FROM provider_events),
    (SELECT count(*) FROM messages), (SELECT max(id) FROM messages),
    (SELECT count(*) FROM outbox), (SELECT max(id) FROM outbox),
    (SELECT count(*) FROM contacts), (SELECT max(id) FROM contacts)"""


@dataclass
class Watched:
    svc: Service
    recorder: Recorder
    db: Raw
    statuses: dict[tuple[bool, int], int] = field(default_factory=dict)

    async def footprint(self) -> tuple[Any, ...]:
        """How many rows each table holds and its highest id, and the spool's files, read
        beside the service (tests.databases.Raw)."""
        [row] = await self.db.rows(FOOTPRINT)
        spool = self.svc.services.spool
        held = spool.directory / "held"
        return (*row, len(spool), len(list(held.iterdir())) if held.is_dir() else 0)

    async def check(self, request: Request) -> None:
        before = await self.footprint()
        status = await raw_post(self.svc.client, request.target, request.headers, request.body)
        after = await self.footprint()
        logged = self.recorder.take_bad()
        key = (request.signed, status)
        self.statuses[key] = self.statuses.get(key, 0) + 1
        wrote = after != before and not 200 <= status < 300
        assert status < 500 and not logged and not wrote, (
            f"answered {status}; logged {logged}"
            + (f"; wrote rows or spooled: {before} -> {after}" if wrote else "")
        )

    async def quiet(self) -> None:
        """Wait until the outbox has nothing pending or in flight; then check the logs once
        more, for whatever the last sends logged."""

        async def settled(session: AsyncSession) -> bool:
            unsettled = Outbox.status.in_(["pending", "sending"])
            return not await session.scalar(select(func.count()).where(unsettled))

        await eventually(lambda: self.svc.query(settled), "the outbox to settle",
                         QUIET_SECONDS, every=0.05)
        assert self.recorder.take_bad() == []


async def run_property(strategy: st.SearchStrategy[Request],
                       check: Callable[[Request], Awaitable[None]]) -> None:
    """Run ``check`` on every example hypothesis draws from ``strategy``, in this loop.

    Hypothesis drives a plain function in a worker thread; each example is handed to the
    running loop and waited for, so the app and the fakes stay up across examples."""
    loop = asyncio.get_running_loop()

    @FUZZ
    @given(strategy)
    def prop(request: Request) -> None:
        asyncio.run_coroutine_threadsafe(check(request), loop).result(EXAMPLE_SECONDS)

    await asyncio.to_thread(prop)


@pytest.fixture
async def watched(
    start_service: StartService, fake_twilio: FakeTwilio, fake_telegram: FakeTelegram,
    recorder: Recorder,
) -> AsyncIterator[Watched]:
    svc = await start_service(fake_twilio, fake_telegram,
                              escalation={"sweep_interval_seconds": 3600})
    await add_admin(svc)
    db = await Raw.open(svc.services.settings.database.url)
    yield Watched(svc, recorder, db)
    await db.close()


async def add_admin(svc: Service) -> None:
    """One admin with a phone and a Telegram chat: emergencies page someone (a page to
    nobody is logged as an error, rightly)."""
    cipher = svc.services.cipher
    staff = Staff(username="alice", role="admin", password_hash="x",
                  created_at=datetime(2026, 11, 1, tzinfo=UTC),
                  phone_enc=cipher.encrypt(STAFF_PHONE),
                  phone_hash=cipher.address_hash("sms", STAFF_PHONE),
                  telegram_enc=cipher.encrypt(str(STAFF_CHAT)),
                  telegram_hash=cipher.address_hash("telegram", str(STAFF_CHAT)))

    async def add(session: AsyncSession) -> None:
        session.add(staff)
        await session.commit()

    await svc.query(add)


def report(name: str, watched: Watched) -> None:
    """What the examples came to (shown with pytest -s), and proof that signed examples
    reached the conversation: a generator that only ever made 4xx would test little."""
    for signed in (False, True):
        counts = {status: n for (s, status), n in sorted(watched.statuses.items()) if s == signed}
        print(f"{name}, {'signed' if signed else 'unsigned or altered'}: {counts}")
    assert watched.statuses.get((True, 200), 0) > 0, "no signed example was taken in"


# --- the properties ------------------------------------------------------------------------------


async def test_twilio_sms_webhook_never_fails_and_refuses_without_side_effects(
    watched: Watched,
) -> None:
    await run_property(twilio_requests(INBOUND_PATH, "inbound_sms", INBOUND_VALID),
                       watched.check)
    await watched.quiet()
    report("twilio sms", watched)


async def test_twilio_status_webhook_never_fails_and_refuses_without_side_effects(
    watched: Watched, fake_twilio: FakeTwilio,
) -> None:
    # A few real replies first, so that callbacks can name sids the outbox knows.
    for number in CONTACTS[:5]:
        assert (await watched.svc.sms("Hello", from_=number))[0] == 200
    sent = await fake_twilio.wait_for_messages(5)
    await watched.quiet()
    valid = {
        "MessageSid": st.one_of(st.sampled_from([m.sid for m in sent]), SIDS),
        "SmsSid": SIDS,
        "MessageStatus": st.sampled_from(["queued", "sent", "delivered", "undelivered",
                                          "failed", "read", "canceled"]),
        "ErrorCode": st.sampled_from(["", "21610", "30003", "30007"]),
    }
    fixtures = st.sampled_from(["status_delivered", "status_undelivered_21610"])
    await run_property(fixtures.flatmap(lambda f: twilio_requests(STATUS_PATH, f, valid)),
                       watched.check)
    await watched.quiet()
    report("twilio status", watched)


async def test_telegram_webhook_never_fails_and_refuses_without_side_effects(
    watched: Watched,
) -> None:
    await run_property(telegram_requests(), watched.check)
    await watched.quiet()
    report("telegram", watched)
