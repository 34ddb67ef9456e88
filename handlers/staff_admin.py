"""Staff accounts, on-call overrides and canned replies: the rules that `python -m bot` and
the console's admin pages share, so a rule holds whichever way a change is made.

Checks of typed input are plain functions that raise StaffAdminError; changes are units of
work (functions of a Session) that write one audit row each. Hashing a password is slow on
purpose (argon2id), so it is done before a unit, never inside one: the writer must not wait
on it. Nothing here logs: the caller logs after the commit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import Channel, Language, StaffRole
from bot.gsm import is_gsm7, sms_segments, to_gsm7
from bot.rota import Rota
from bot.storage.models import CannedReply, OncallOverride, RecoveryCode, Staff
from bot.storage.queries import audit
from handlers.escalation import (
    ONCALL_ROLES,
    empty_rota_problem,
    rota_problems,
    staff_addresses,
    who_is_on_call,
)
from handlers.staff_auth import MIN_PASSWORD_CHARS, end_sessions_of, hash_password

USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,63}")
E164 = re.compile(r"\+[1-9]\d{6,14}")
TELEGRAM_CHAT = re.compile(r"-?\d{1,20}")
PHONE_PUNCTUATION = str.maketrans("", "", " -.()")  # how people write numbers, not E.164
TITLE_CHARS = 80
CANNED_MAX_SEGMENTS = 2  # a canned reply must fit in two SMS parts
HANDOVER_WEEKS = 8
# Names the audit log uses for actors that are not accounts: no account may take them.
RESERVED_NAMES = frozenset({"cli", "system", "unknown"})


class StaffAdminError(Exception):
    """Bad input, or a change the rules refuse. The message is safe to show anyone who may
    make the change. `field` names the input it is about, so the command line can call it
    `--phone` and a page can call it "Phone"."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason if field is None else f"{field.replace('_', ' ')} {reason}")

    def said_as(self, names: Mapping[str, str]) -> str:
        if self.field is None:
            return self.reason
        return f"{names.get(self.field, self.field)} {self.reason}"


class StaffNotFound(StaffAdminError):
    def __init__(self) -> None:
        super().__init__("there is no such staff account")


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for the audit log: an admin, or "cli" from the command line."""

    name: str
    staff_id: int | None = None


CLI = Actor("cli")


def _audit(session: Session, now: datetime, actor: Actor, action: str, target_type: str,
           target_id: int | None, detail: str = "") -> None:
    audit(session, now, action, target_type, target_id, actor=actor.name,
          actor_staff_id=actor.staff_id, detail=detail)


# --- checking what was typed -----------------------------------------------------------------


def check_username(raw: str) -> str:
    if not USERNAME.fullmatch(raw):
        raise StaffAdminError("must be 2-64 characters of a-z 0-9 . _ -", "username")
    if raw in RESERVED_NAMES:
        raise StaffAdminError(f"{raw} is a name the audit log uses; choose another")
    return raw


def check_role(raw: str) -> StaffRole:
    try:
        return StaffRole(raw)
    except ValueError:
        raise StaffAdminError("must be staff, oncall or admin", "role") from None


def check_phone(raw: str | None) -> str | None:
    """An E.164 number, or None for none. Spaces, dashes, dots and brackets are dropped."""
    if raw is None or not raw.strip():
        return None
    phone = raw.strip().translate(PHONE_PUNCTUATION)
    if not E164.fullmatch(phone):
        raise StaffAdminError("must be E.164, e.g. +13145550123", "phone")
    return phone


def check_telegram_chat(raw: str | None) -> str | None:
    if raw is None or not raw.strip():
        return None
    chat = raw.strip()
    if not TELEGRAM_CHAT.fullmatch(chat):
        raise StaffAdminError("must be a number", "telegram_chat_id")
    return chat


def new_password_hash(password: str) -> str:
    """The argon2id hash of a new password. Slow on purpose: call it off the event loop,
    and before the unit of work that stores it."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise StaffAdminError(f"must be at least {MIN_PASSWORD_CHARS} characters", "password")
    return hash_password(password)


def parse_until(raw: str | None, zone: ZoneInfo, now: datetime) -> datetime | None:
    """An override's end: an ISO date-time, local to `zone` unless it says otherwise; None
    (empty) means until further notice."""
    if raw is None or not raw.strip():
        return None
    try:
        until = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise StaffAdminError("must be an ISO date-time, e.g. 2026-12-01T09:00",
                              "until") from None
    if until.tzinfo is None:
        until = until.replace(tzinfo=zone)
    until = until.astimezone(UTC)
    if until <= now:
        raise StaffAdminError("is in the past", "until")
    return until


# --- accounts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewStaff:
    username: str
    role: StaffRole
    phone: str | None = None
    telegram_chat_id: str | None = None


def check_new_staff(username: str, role: str, phone: str | None = None,
                    telegram_chat_id: str | None = None) -> NewStaff:
    return NewStaff(check_username(username), check_role(role), check_phone(phone),
                    check_telegram_chat(telegram_chat_id))


def _phone_fields(cipher: Cipher, phone: str | None) -> tuple[str | None, str | None]:
    if phone is None:
        return None, None
    return cipher.encrypt(phone), cipher.address_hash(Channel.SMS, phone)


def _telegram_fields(cipher: Cipher, chat: str | None) -> tuple[str | None, str | None]:
    if chat is None:
        return None, None
    return cipher.encrypt(chat), cipher.address_hash(Channel.TELEGRAM, chat)


def _candidates(cipher: Cipher, channel: str, address: str | None) -> list[str] | None:
    return None if address is None else cipher.address_hashes(channel, address)


def _refuse_taken(session: Session, exclude: int | None,
                  **taken: str | list[str] | None) -> None:
    """An address may belong to one account only: a page or an ACK must know who it is.
    An address is given as all its candidate hashes (Cipher.address_hashes), so one stored
    under an older key is found too."""
    names = {"username": "that username", "phone_hash": "that phone",
             "telegram_hash": "that Telegram chat id"}
    for column, value in taken.items():
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        query = select(Staff.id).where(getattr(Staff, column).in_(values))
        if exclude is not None:
            query = query.where(Staff.id != exclude)
        if session.scalar(query.limit(1)) is not None:
            raise StaffAdminError(f"{names[column]} is already registered")


def add_staff(session: Session, cipher: Cipher, new: NewStaff, password_hash: str,
              actor: Actor, now: datetime) -> int:
    """A new account; its phone and Telegram chat are stored encrypted, with a keyed hash
    to find the account by when that person writes in."""
    phone_enc, phone_hash = _phone_fields(cipher, new.phone)
    telegram_enc, telegram_hash = _telegram_fields(cipher, new.telegram_chat_id)
    _refuse_taken(session, None, username=new.username,
                  phone_hash=_candidates(cipher, Channel.SMS, new.phone),
                  telegram_hash=_candidates(cipher, Channel.TELEGRAM, new.telegram_chat_id))
    staff = Staff(username=new.username, role=new.role.value, password_hash=password_hash,
                  phone_enc=phone_enc, phone_hash=phone_hash, telegram_enc=telegram_enc,
                  telegram_hash=telegram_hash, disabled=False, created_at=now)
    session.add(staff)
    session.flush()
    _audit(session, now, actor, "staff_added", "staff", staff.id,
           f"role={new.role.value} phone={_yes(new.phone)} telegram={_yes(new.telegram_chat_id)}")
    return staff.id


def _yes(value: object) -> str:
    return "yes" if value else "no"


def _staff(session: Session, staff_id: int) -> Staff:
    staff = session.get(Staff, staff_id)
    if staff is None:
        raise StaffNotFound
    return staff


def _refuse_losing_the_last_admin(session: Session, staff: Staff) -> None:
    """Someone must be able to reach the admin pages: the last active admin stays one."""
    if staff.role != StaffRole.ADMIN or staff.disabled:
        return
    others = session.scalar(
        select(func.count()).select_from(Staff).where(
            Staff.role == StaffRole.ADMIN, Staff.disabled.is_(False), Staff.id != staff.id)
    )
    if not others:
        raise StaffAdminError(f"{staff.username} is the only active admin; "
                              "make someone else an admin first")


def disable(session: Session, staff_id: int, actor: Actor, now: datetime) -> int:
    """Disable an account and end every session it has, at once. Returns how many ended."""
    staff = _staff(session, staff_id)
    if actor.staff_id == staff.id:
        raise StaffAdminError("you cannot disable your own account")
    _refuse_losing_the_last_admin(session, staff)
    was = staff.disabled
    staff.disabled = True
    ended = end_sessions_of(session, staff.id, "disabled", now)
    if not was or ended:
        _audit(session, now, actor, "staff_disabled", "staff", staff.id,
               f"sessions_ended={ended}")
    return ended


def enable(session: Session, staff_id: int, actor: Actor, now: datetime) -> None:
    staff = _staff(session, staff_id)
    if staff.disabled:
        staff.disabled = False
        _audit(session, now, actor, "staff_enabled", "staff", staff.id)


def change_role(session: Session, staff_id: int, role: StaffRole, actor: Actor,
                now: datetime) -> None:
    """Takes effect at the person's next request: a session reads the role every time. A
    new admin without two-factor is sent to enrol before anything else."""
    staff = _staff(session, staff_id)
    if staff.role == role:
        return
    if actor.staff_id == staff.id:
        raise StaffAdminError("you cannot change your own role; ask another admin")
    if role != StaffRole.ADMIN:
        _refuse_losing_the_last_admin(session, staff)
    before = staff.role
    staff.role = role.value
    _audit(session, now, actor, "staff_role_changed", "staff", staff.id,
           f"role {before} -> {role.value}")


def reset_password(session: Session, staff_id: int, password_hash: str, actor: Actor,
                   now: datetime) -> int:
    """A new password (hashed by the caller beforehand); every session of the account ends,
    so whoever knew the old one is out."""
    staff = _staff(session, staff_id)
    staff.password_hash = password_hash
    ended = end_sessions_of(session, staff.id, "password_reset", now)
    _audit(session, now, actor, "password_reset", "staff", staff.id, f"sessions_ended={ended}")
    return ended


def reset_two_factor(session: Session, staff_id: int, actor: Actor, now: datetime) -> int:
    """Forget the authenticator and the recovery codes (a lost phone) and end every
    session; the person enrols again at their next sign-in."""
    staff = _staff(session, staff_id)
    staff.totp_secret_enc = None
    staff.totp_confirmed_at = None
    staff.totp_last_step = None
    session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff.id))
    ended = end_sessions_of(session, staff.id, "two_factor_reset", now)
    _audit(session, now, actor, "two_factor_reset", "staff", staff.id,
           f"sessions_ended={ended}")
    return ended


def set_phone(session: Session, cipher: Cipher, staff_id: int, phone: str | None,
              actor: Actor, now: datetime) -> None:
    """Where pages go by SMS, and the number ACK is taken from; None removes it."""
    staff = _staff(session, staff_id)
    enc, hashed = _phone_fields(cipher, phone)
    _refuse_taken(session, staff.id, phone_hash=_candidates(cipher, Channel.SMS, phone))
    had = staff.phone_enc is not None
    staff.phone_enc, staff.phone_hash = enc, hashed
    if phone is not None or had:
        _audit(session, now, actor, "staff_phone_set" if phone else "staff_phone_removed",
               "staff", staff.id)


def set_telegram_chat(session: Session, cipher: Cipher, staff_id: int, chat: str | None,
                      actor: Actor, now: datetime) -> None:
    staff = _staff(session, staff_id)
    enc, hashed = _telegram_fields(cipher, chat)
    _refuse_taken(session, staff.id,
                  telegram_hash=_candidates(cipher, Channel.TELEGRAM, chat))
    had = staff.telegram_enc is not None
    staff.telegram_enc, staff.telegram_hash = enc, hashed
    if chat is not None or had:
        _audit(session, now, actor,
               "staff_telegram_set" if chat else "staff_telegram_removed", "staff", staff.id)


# --- on call -----------------------------------------------------------------------------------


def set_override(session: Session, username: str, until: datetime | None, actor: Actor,
                 now: datetime) -> int:
    """Put someone on call from now until `until` (None: further notice). The newest
    override wins over the rotation and over older overrides (handlers.escalation)."""
    staff = session.scalar(
        select(Staff).where(Staff.username == username, Staff.disabled.is_(False))
    )
    if staff is None:
        raise StaffAdminError(f"no active staff member named {username}")
    if staff.role not in ONCALL_ROLES:
        raise StaffAdminError(f"{username} has role staff; on-call needs oncall or admin")
    override = OncallOverride(staff_id=staff.id, starts_at=now, until=until, created_at=now)
    session.add(override)
    session.flush()
    _audit(session, now, actor, "oncall_override_set", "staff", staff.id,
           f"until={until.isoformat() if until else 'further notice'}")
    return override.id


def end_override(session: Session, override_id: int, actor: Actor, now: datetime) -> None:
    """End an override now; the rotation (or an older override still running) applies."""
    override = session.get(OncallOverride, override_id)
    if override is None or (override.until is not None and override.until <= now):
        raise StaffAdminError("that override has already ended")
    override.until = now
    _audit(session, now, actor, "oncall_override_ended", "staff", override.staff_id,
           f"override={override.id}")


@dataclass(frozen=True)
class Handover:
    at: datetime
    username: str
    pageable: bool  # an active oncall/admin member with a phone or Telegram chat


@dataclass(frozen=True)
class RotaNow:
    """What the rota page shows: who is on call and until when, the backup, the coming
    handovers, and every gap."""

    on_call: str | None
    override_id: int | None  # the override that put them on call, if one did
    until: datetime | None  # None with an override: until further notice
    backup: str | None
    handovers: tuple[Handover, ...]
    problems: tuple[str, ...]
    candidates: tuple[str, ...]  # who may be put on call


def rota_now(session: Session, rota: Rota, now: datetime,
             weeks: int = HANDOVER_WEEKS) -> RotaNow:
    oncall = who_is_on_call(session, rota, now)
    primary = oncall.primary
    override = None
    if primary is not None:
        override = session.scalar(
            select(OncallOverride)
            .where(OncallOverride.staff_id == primary.id, OncallOverride.starts_at <= now,
                   or_(OncallOverride.until.is_(None), OncallOverride.until > now))
            .order_by(OncallOverride.id.desc()).limit(1)
        )
    until = override.until if override else (rota.next_handover(now) if primary else None)
    problems = [*empty_rota_problem(rota), *rota_problems(session, rota)]
    if primary is None:
        problems.insert(0, "Nobody is on call right now: every emergency pages every oncall "
                           "and admin member.")
    elif not staff_addresses(primary) and primary.username not in rota.rotation:
        problems.insert(0, f"{primary.username} is on call but has no phone or Telegram chat "
                           "for pages.")
    return RotaNow(
        on_call=primary.username if primary else None,
        override_id=override.id if override else None,
        until=until,
        backup=oncall.backup.username if oncall.backup else None,
        handovers=_handovers(session, rota, now, weeks),
        problems=tuple(problems),
        candidates=tuple(session.scalars(
            select(Staff.username)
            .where(Staff.disabled.is_(False), Staff.role.in_(ONCALL_ROLES))
            .order_by(Staff.username)
        )),
    )


def _handovers(session: Session, rota: Rota, now: datetime,
               weeks: int) -> tuple[Handover, ...]:
    if not rota.rotation:
        return ()
    members = {s.username: s for s in session.scalars(
        select(Staff).where(Staff.username.in_(rota.rotation)))}
    found = []
    at = now
    for _ in range(weeks):
        at = rota.next_handover(at)
        name = rota.scheduled(at) or ""
        staff = members.get(name)
        pageable = (staff is not None and not staff.disabled and staff.role in ONCALL_ROLES
                    and bool(staff_addresses(staff)))
        found.append(Handover(at, name, pageable))
    return tuple(found)


# --- canned replies --------------------------------------------------------------------------


@dataclass(frozen=True)
class SmsFit:
    """How a text goes out by SMS: plain GSM-7 or not, and in how many parts."""

    plain: bool
    segments: int
    not_plain: tuple[str, ...]  # the characters that make it UCS-2, first few
    plain_version: str  # the same words in GSM-7, as a suggestion

    @property
    def fits(self) -> bool:
        return self.segments <= CANNED_MAX_SEGMENTS


def sms_fit(text: str) -> SmsFit:
    odd = tuple(dict.fromkeys(ch for ch in text if not is_gsm7(ch)))[:8]
    return SmsFit(not odd, sms_segments(text), odd, to_gsm7(text) if odd else text)


@dataclass(frozen=True)
class CannedText:
    title: str
    language: Language
    body: str


def check_canned(title: str, language: str, body: str) -> CannedText:
    """Staff text, kept as typed (a browser's CRLF read as the newline typed). It must fit
    in two SMS parts, as it may be sent by SMS; a text that is not plain GSM-7 may be kept,
    and the page says so (each part then holds 70 characters, not 160)."""
    title = " ".join(title.split())
    if not title:
        raise StaffAdminError("is needed", "title")
    if len(title) > TITLE_CHARS:
        raise StaffAdminError(f"may be at most {TITLE_CHARS} characters", "title")
    try:
        lang = Language(language)
    except ValueError:
        raise StaffAdminError("must be en or es", "language") from None
    body = body.replace("\r\n", "\n")
    if not body.strip():
        raise StaffAdminError("is needed", "body")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in body):
        raise StaffAdminError("may hold no control characters", "body")
    fit = sms_fit(body)
    if not fit.fits:
        room = "306 plain characters" if fit.plain else "134 characters when not plain text"
        raise StaffAdminError(f"is {fit.segments} SMS parts long; a canned reply may be at "
                              f"most {CANNED_MAX_SEGMENTS} ({room})", "body")
    return CannedText(title, lang, body)


def add_canned(session: Session, text: CannedText, actor: Actor, now: datetime) -> int:
    row = CannedReply(title=text.title, language=text.language.value, body=text.body,
                      created_at=now, updated_at=now)
    session.add(row)
    session.flush()
    _audit(session, now, actor, "canned_reply_added", "canned_reply", row.id,
           f"language={text.language.value}")
    return row.id


def _canned(session: Session, canned_id: int) -> CannedReply:
    row = session.get(CannedReply, canned_id)
    if row is None:
        raise StaffAdminError("there is no such canned reply")
    return row


def edit_canned(session: Session, canned_id: int, text: CannedText, actor: Actor,
                now: datetime) -> None:
    row = _canned(session, canned_id)
    changed = [name for name, old, new in (("title", row.title, text.title),
                                           ("language", row.language, text.language.value),
                                           ("body", row.body, text.body)) if old != new]
    if not changed:
        return
    row.title, row.language, row.body, row.updated_at = (text.title, text.language.value,
                                                         text.body, now)
    _audit(session, now, actor, "canned_reply_changed", "canned_reply", row.id,
           "changed=" + ",".join(changed))


def delete_canned(session: Session, canned_id: int, actor: Actor, now: datetime) -> None:
    row = _canned(session, canned_id)
    session.delete(row)
    _audit(session, now, actor, "canned_reply_deleted", "canned_reply", canned_id,
           f"language={row.language}")

