"""The account, on-call and canned-reply rules in handlers/staff_admin.py, run against a real
SQLite database with no web layer: the same functions serve `python -m bot` and the admin
pages, so what holds here holds for both."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bot.crypto import Cipher, generate_key
from bot.domain import StaffRole
from bot.rota import Rota
from bot.storage.database import make_sync_engine
from bot.storage.models import (
    AuditEntry,
    Base,
    CannedReply,
    ConsoleSession,
    OncallOverride,
    RecoveryCode,
    Staff,
)
from handlers import staff_admin
from handlers.escalation import who_is_on_call
from handlers.staff_admin import CLI, Actor, StaffAdminError
from handlers.staff_auth import check_password

CHICAGO = ZoneInfo("America/Chicago")
NOW = datetime(2026, 11, 30, 16, 0, tzinfo=UTC)  # Monday 10:00 in Chicago
ROTA = Rota.from_config(("alice", "bob"), "monday 09:00", "carol", date(2026, 11, 30), CHICAGO)
PASSWORD = "a long test password 01"
PHONE = "+13145550142"
T = TypeVar("T")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_sync_engine(f"sqlite+aiosqlite:///{tmp_path / 'admin.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def cipher() -> Cipher:
    return Cipher.from_env_value(generate_key())


@pytest.fixture
def run(engine: Engine) -> Callable[[Callable[[Session], T]], T]:
    """One unit of work in its own committed transaction, as the writer runs it."""

    def run(unit: Callable[[Session], T]) -> T:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            return unit(session)

    return run


# One hash, made once, for every account the tests set up.
HASH = staff_admin.new_password_hash(PASSWORD)


def add(run, cipher, username: str, role: str = "staff", phone: str | None = None,
        telegram: str | None = None, actor: Actor = CLI) -> int:
    new = staff_admin.check_new_staff(username, role, phone, telegram)
    return run(lambda s: staff_admin.add_staff(s, cipher, new, HASH, actor, NOW))


def staff(run, staff_id: int) -> Staff:
    return run(lambda s: s.get(Staff, staff_id))


def audit_rows(run) -> list[AuditEntry]:
    return run(lambda s: list(s.scalars(select(AuditEntry).order_by(AuditEntry.id))))


def open_session(run, staff_id: int, n: int) -> int:
    def unit(session: Session) -> int:
        row = ConsoleSession(token_hash=f"{staff_id}-{n}".ljust(64, "0"), staff_id=staff_id,
                             csrf_token="t", verified=True, client="", created_at=NOW,
                             last_seen_at=NOW)
        session.add(row)
        session.flush()
        return row.id

    return run(unit)


def ended_reasons(run, staff_id: int) -> list[str | None]:
    return run(lambda s: list(s.scalars(
        select(ConsoleSession.end_reason).where(ConsoleSession.staff_id == staff_id))))


# --- what may be typed -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["al", "alice.smith", "a-1_b", "x" * 64])
def test_usernames_that_are_taken(name: str) -> None:
    assert staff_admin.check_username(name) == name


@pytest.mark.parametrize("name", ["a", "Alice", "-alice", "al ice", "x" * 65, "alice\n", ""])
def test_usernames_that_are_refused(name: str) -> None:
    with pytest.raises(StaffAdminError) as refused:
        staff_admin.check_username(name)
    assert refused.value.field == "username"


@pytest.mark.parametrize("name", ["cli", "system", "unknown"])
def test_audit_actor_names_are_no_usernames(name: str) -> None:
    with pytest.raises(StaffAdminError, match="a name the audit log uses"):
        staff_admin.check_username(name)


@pytest.mark.parametrize(("typed", "stored"), [
    ("+13145550142", "+13145550142"),
    ("+1 314 555 0142", "+13145550142"),
    ("+1 (314) 555-0142", "+13145550142"),
    ("  ", None),
    (None, None),
])
def test_phones_are_stored_as_e164(typed: str | None, stored: str | None) -> None:
    assert staff_admin.check_phone(typed) == stored


@pytest.mark.parametrize("typed", ["3145550142", "555", "+0145550142", "+1314555014200000",
                                   "+13145550142\n1", "tel:+13145550142"])
def test_phones_that_are_not_e164_are_refused(typed: str) -> None:
    with pytest.raises(StaffAdminError) as refused:
        staff_admin.check_phone(typed)
    assert refused.value.said_as({"phone": "--phone"}) == (
        "--phone must be E.164, e.g. +13145550123")
    assert refused.value.said_as({"phone": "Phone"}).startswith("Phone must be")


def test_telegram_chat_ids_are_numbers() -> None:
    assert staff_admin.check_telegram_chat("-1001234567") == "-1001234567"
    assert staff_admin.check_telegram_chat("") is None
    with pytest.raises(StaffAdminError, match="telegram chat id must be a number"):
        staff_admin.check_telegram_chat("@alice")


def test_a_new_password_is_checked_then_hashed_with_argon2id() -> None:
    with pytest.raises(StaffAdminError, match="at least 12 characters"):
        staff_admin.new_password_hash("short")
    hashed = staff_admin.new_password_hash(PASSWORD)
    assert hashed.startswith("$argon2id$") and check_password(hashed, PASSWORD)


def test_until_is_local_unless_it_says_otherwise() -> None:
    assert staff_admin.parse_until("", CHICAGO, NOW) is None
    assert staff_admin.parse_until("2026-12-01T09:00", CHICAGO, NOW) == datetime(
        2026, 12, 1, 15, 0, tzinfo=UTC)
    assert staff_admin.parse_until("2026-12-01T09:00+00:00", CHICAGO, NOW) == datetime(
        2026, 12, 1, 9, 0, tzinfo=UTC)
    with pytest.raises(StaffAdminError, match="until is in the past"):
        staff_admin.parse_until("2026-11-30T10:00", CHICAGO, NOW)  # exactly now
    with pytest.raises(StaffAdminError, match="until must be an ISO date-time"):
        staff_admin.parse_until("next tuesday", CHICAGO, NOW)


# --- accounts --------------------------------------------------------------------------------


def test_add_stores_addresses_encrypted_with_keyed_hashes_and_audits(run, cipher) -> None:
    staff_id = add(run, cipher, "alice", "oncall", "+1 314 555 0142", "700000142")

    row = staff(run, staff_id)
    assert (row.username, row.role, row.password_hash, row.disabled) == (
        "alice", "oncall", HASH, False)
    assert cipher.decrypt(row.phone_enc) == PHONE
    assert row.phone_hash == cipher.address_hash("sms", PHONE)
    assert cipher.decrypt(row.telegram_enc) == "700000142"
    assert row.telegram_hash == cipher.address_hash("telegram", "700000142")
    [entry] = audit_rows(run)
    assert (entry.actor, entry.action, entry.target_id, entry.detail) == (
        "cli", "staff_added", staff_id, "role=oncall phone=yes telegram=yes")


@pytest.mark.parametrize(("username", "phone", "telegram", "said"), [
    ("alice", None, None, "that username is already registered"),
    ("bob", PHONE, None, "that phone is already registered"),
    ("bob", None, "700000142", "that Telegram chat id is already registered"),
])
def test_an_address_or_name_belongs_to_one_account(run, cipher, username, phone, telegram,
                                                     said) -> None:
    add(run, cipher, "alice", "oncall", PHONE, "700000142")
    with pytest.raises(StaffAdminError, match=said):
        add(run, cipher, username, "staff", phone, telegram)
    assert len(run(lambda s: list(s.scalars(select(Staff))))) == 1


def test_disable_ends_every_session_at_once_and_enable_lets_them_back(run, cipher) -> None:
    admin = add(run, cipher, "dave", "admin")
    erin = add(run, cipher, "erin")
    for n in range(2):
        open_session(run, erin, n)
    keep = open_session(run, admin, 0)
    dave = Actor("dave", admin)

    assert run(lambda s: staff_admin.disable(s, erin, dave, NOW)) == 2

    assert staff(run, erin).disabled
    assert ended_reasons(run, erin) == ["disabled", "disabled"]
    assert run(lambda s: s.get(ConsoleSession, keep).ended_at) is None
    run(lambda s: staff_admin.enable(s, erin, dave, NOW))
    assert not staff(run, erin).disabled
    actions = [(e.actor, e.actor_staff_id, e.action, e.detail) for e in audit_rows(run)][2:]
    assert actions == [("dave", admin, "staff_disabled", "sessions_ended=2"),
                       ("dave", admin, "staff_enabled", "")]


def test_nobody_disables_or_demotes_themselves_or_the_last_admin(run, cipher) -> None:
    dave = add(run, cipher, "dave", "admin")
    as_dave = Actor("dave", dave)
    with pytest.raises(StaffAdminError, match="cannot disable your own account"):
        run(lambda s: staff_admin.disable(s, dave, as_dave, NOW))
    with pytest.raises(StaffAdminError, match="cannot change your own role"):
        run(lambda s: staff_admin.change_role(s, dave, StaffRole.STAFF, as_dave, NOW))
    # From elsewhere (no account acting), the last active admin still stays one.
    with pytest.raises(StaffAdminError, match="dave is the only active admin"):
        run(lambda s: staff_admin.disable(s, dave, CLI, NOW))
    with pytest.raises(StaffAdminError, match="dave is the only active admin"):
        run(lambda s: staff_admin.change_role(s, dave, StaffRole.ONCALL, CLI, NOW))

    frank = add(run, cipher, "frank", "admin")
    run(lambda s: staff_admin.change_role(s, dave, StaffRole.ONCALL, Actor("frank", frank),
                                          NOW))
    assert staff(run, dave).role == "oncall"


def test_a_role_change_is_audited_with_before_and_after(run, cipher) -> None:
    erin = add(run, cipher, "erin")
    run(lambda s: staff_admin.change_role(s, erin, StaffRole.ADMIN, CLI, NOW))
    run(lambda s: staff_admin.change_role(s, erin, StaffRole.ADMIN, CLI, NOW))  # no change
    assert [e.detail for e in audit_rows(run) if e.action == "staff_role_changed"] == [
        "role staff -> admin"]


def test_reset_password_replaces_the_hash_and_ends_sessions(run, cipher) -> None:
    erin = add(run, cipher, "erin")
    open_session(run, erin, 0)
    new_hash = staff_admin.new_password_hash("another long password 02")

    assert run(lambda s: staff_admin.reset_password(s, erin, new_hash, CLI, NOW)) == 1

    assert staff(run, erin).password_hash == new_hash
    assert ended_reasons(run, erin) == ["password_reset"]
    [entry] = [e for e in audit_rows(run) if e.action == "password_reset"]
    assert "another" not in entry.detail and "$argon2" not in entry.detail


def test_reset_two_factor_forgets_the_secret_and_codes_and_ends_sessions(run, cipher) -> None:
    frank = add(run, cipher, "frank", "admin")

    def enrolled(session: Session) -> None:
        row = session.get(Staff, frank)
        row.totp_secret_enc, row.totp_confirmed_at, row.totp_last_step = (
            cipher.encrypt("JBSWY3DPEHPK3PXP"), NOW, 12345)
        session.add(RecoveryCode(staff_id=frank, code_hash="c" * 64, created_at=NOW))

    run(enrolled)
    open_session(run, frank, 0)

    assert run(lambda s: staff_admin.reset_two_factor(s, frank, CLI, NOW)) == 1

    row = staff(run, frank)
    assert (row.totp_secret_enc, row.totp_confirmed_at, row.totp_last_step) == (None, None,
                                                                               None)
    assert run(lambda s: list(s.scalars(select(RecoveryCode)))) == []
    assert ended_reasons(run, frank) == ["two_factor_reset"]


def test_phone_and_telegram_chat_change_and_are_never_in_the_audit(run, cipher) -> None:
    erin = add(run, cipher, "erin", "oncall")
    run(lambda s: staff_admin.set_phone(s, cipher, erin, PHONE, CLI, NOW))
    run(lambda s: staff_admin.set_telegram_chat(s, cipher, erin, "700000142", CLI, NOW))
    row = staff(run, erin)
    assert cipher.decrypt(row.phone_enc) == PHONE
    assert row.telegram_hash == cipher.address_hash("telegram", "700000142")
    run(lambda s: staff_admin.set_phone(s, cipher, erin, None, CLI, NOW))
    run(lambda s: staff_admin.set_phone(s, cipher, erin, None, CLI, NOW))  # nothing to remove
    row = staff(run, erin)
    assert (row.phone_enc, row.phone_hash) == (None, None)

    entries = audit_rows(run)[1:]
    assert [e.action for e in entries] == ["staff_phone_set", "staff_telegram_set",
                                           "staff_phone_removed"]
    assert all(PHONE[2:] not in e.detail and "700000142" not in e.detail for e in entries)


def test_changing_a_missing_account_says_so(run, cipher) -> None:
    with pytest.raises(staff_admin.StaffNotFound, match="no such staff account"):
        run(lambda s: staff_admin.disable(s, 99, CLI, NOW))


# --- on call -----------------------------------------------------------------------------------


def test_an_override_wins_over_the_rotation_until_it_ends(run, cipher) -> None:
    for name, chat in (("alice", "700000142"), ("bob", "700000144"), ("carol", "700000143")):
        add(run, cipher, name, "oncall", telegram=chat)
    assert run(lambda s: who_is_on_call(s, ROTA, NOW).primary.username) == "alice"

    until = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    override = run(lambda s: staff_admin.set_override(s, "bob", until, CLI, NOW))

    assert run(lambda s: who_is_on_call(s, ROTA, NOW).primary.username) == "bob"
    now = run(lambda s: staff_admin.rota_now(s, ROTA, NOW))
    assert (now.on_call, now.override_id, now.until, now.backup) == ("bob", override, until,
                                                                     "carol")
    later = NOW + timedelta(hours=1)
    run(lambda s: staff_admin.end_override(s, override, CLI, later))
    assert run(lambda s: who_is_on_call(s, ROTA, later).primary.username) == "alice"
    with pytest.raises(StaffAdminError, match="already ended"):
        run(lambda s: staff_admin.end_override(s, override, CLI, later))
    assert [(e.action, e.detail) for e in audit_rows(run)][3:] == [
        ("oncall_override_set", "until=2026-12-01T15:00:00+00:00"),
        ("oncall_override_ended", f"override={override}"),
    ]


@pytest.mark.parametrize(("username", "said"), [
    ("erin", "erin has role staff; on-call needs oncall or admin"),
    ("gone", "no active staff member named gone"),
    ("nobody", "no active staff member named nobody"),
])
def test_only_active_oncall_or_admin_members_go_on_call(run, cipher, username, said) -> None:
    add(run, cipher, "erin")
    gone = add(run, cipher, "gone", "oncall")
    run(lambda s: staff_admin.disable(s, gone, CLI, NOW))
    with pytest.raises(StaffAdminError, match=said):
        run(lambda s: staff_admin.set_override(s, username, None, CLI, NOW))
    assert run(lambda s: list(s.scalars(select(OncallOverride)))) == []


def test_the_rota_shows_the_coming_handovers_and_who_cannot_be_paged(run, cipher) -> None:
    add(run, cipher, "alice", "oncall", PHONE)
    add(run, cipher, "bob", "oncall")  # no phone, no Telegram chat
    add(run, cipher, "carol", "oncall", "+13145550143")

    rota = run(lambda s: staff_admin.rota_now(s, ROTA, NOW, weeks=3))

    assert (rota.on_call, rota.override_id, rota.backup) == ("alice", None, "carol")
    assert rota.until == datetime(2026, 12, 7, 9, 0, tzinfo=CHICAGO)
    assert [(h.at.astimezone(CHICAGO).replace(tzinfo=None), h.username, h.pageable)
            for h in rota.handovers] == [
        (datetime.combine(date(2026, 12, 7), time(9)), "bob", False),
        (datetime.combine(date(2026, 12, 14), time(9)), "alice", True),
        (datetime.combine(date(2026, 12, 21), time(9)), "bob", False),
    ]
    assert rota.problems == ("[oncall] rotation: bob has no phone or Telegram chat for pages",)
    assert rota.candidates == ("alice", "bob", "carol")


def test_an_empty_rotation_is_a_gap(run, cipher) -> None:
    empty = Rota.from_config((), "monday 09:00", "", date(2026, 11, 30), CHICAGO)
    rota = run(lambda s: staff_admin.rota_now(s, empty, NOW))
    assert (rota.on_call, rota.until, rota.handovers) == (None, None, ())
    assert rota.problems[0].startswith("Nobody is on call right now")
    assert "[oncall] rotation is empty" in rota.problems[1]


# --- canned replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "plain", "segments"), [
    ("x" * 160, True, 1),
    ("x" * 161, True, 2),
    ("x" * 306, True, 2),
    ("[" * 152, True, 2),  # extension characters take two septets, never split
    ("á" * 70, False, 1),
    ("á" * 134, False, 2),
    ("Hola 👋", False, 1),
])
def test_sms_fit_counts_as_the_network_does(body: str, plain: bool, segments: int) -> None:
    fit = staff_admin.sms_fit(body)
    assert (fit.plain, fit.segments, fit.fits) == (plain, segments, True)
    assert staff_admin.check_canned("t", "en", body).body == body


@pytest.mark.parametrize("body", ["x" * 307, "[" * 153, "á" * 135, "👋" * 68])
def test_a_canned_reply_longer_than_two_sms_is_refused(body: str) -> None:
    with pytest.raises(StaffAdminError, match="SMS parts long; a canned reply may be at most 2"):
        staff_admin.check_canned("Too long", "en", body)


def test_a_canned_reply_is_kept_as_typed_and_says_what_is_not_plain() -> None:
    text = staff_admin.check_canned("  Call   us ", "es", "Llámanos:\r\n1-888-373-7888 ")
    assert (text.title, text.language, text.body) == ("Call us", "es",
                                                      "Llámanos:\n1-888-373-7888 ")
    fit = staff_admin.sms_fit(text.body)
    assert (fit.not_plain, fit.plain_version) == (("á",), "Llamanos:\n1-888-373-7888 ")


@pytest.mark.parametrize(("title", "language", "body", "said"), [
    ("", "en", "Hello", "title is needed"),
    ("x" * 81, "en", "Hello", "title may be at most 80"),
    ("Hi", "fr", "Bonjour", "language must be en or es"),
    ("Hi", "en", " \r\n ", "body is needed"),
    ("Hi", "en", "Hello\x00", "body may hold no control characters"),
    ("Hi", "en", "Hello\x1b[31m", "body may hold no control characters"),
])
def test_a_canned_reply_refuses_bad_input(title, language, body, said) -> None:
    with pytest.raises(StaffAdminError, match=said):
        staff_admin.check_canned(title, language, body)


def test_canned_replies_are_added_changed_and_deleted_with_audit(run) -> None:
    text = staff_admin.check_canned("Hours", "en", "We are open 9-5.")
    canned = run(lambda s: staff_admin.add_canned(s, text, CLI, NOW))
    run(lambda s: staff_admin.edit_canned(s, canned, text, CLI, NOW))  # nothing changed
    changed = staff_admin.check_canned("Hours", "es", "Abrimos de 9 a 5.")
    run(lambda s: staff_admin.edit_canned(s, canned, changed, CLI, NOW))
    row = run(lambda s: s.get(CannedReply, canned))
    assert (row.language, row.body) == ("es", "Abrimos de 9 a 5.")
    run(lambda s: staff_admin.delete_canned(s, canned, CLI, NOW))
    assert run(lambda s: s.get(CannedReply, canned)) is None
    with pytest.raises(StaffAdminError, match="no such canned reply"):
        run(lambda s: staff_admin.delete_canned(s, canned, CLI, NOW))
    assert [(e.action, e.detail) for e in audit_rows(run)] == [
        ("canned_reply_added", "language=en"),
        ("canned_reply_changed", "changed=language,body"),
        ("canned_reply_deleted", "language=es"),
    ]
