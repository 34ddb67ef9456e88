"""Staff sign-in: passwords, the second factor, console sessions and throttling.

Passwords are argon2id hashes (argon2-cffi's defaults). Checking one costs tens of
milliseconds of CPU on purpose, so it is never done inside a unit of work (that would hold
the database writer): the console reads the hash, checks it off the event loop, then runs a
short unit to record the outcome.

A console session is a row; the browser's cookie holds a random token, and only a keyed hash
of it (HMAC with TRIAGE_SESSION_SECRET) is stored, so the table alone opens no session.
Sessions end on logout, after `idle_timeout_minutes` without a request, and at once when the
account is disabled. Failed sign-ins are counted per account and per client, by keyed hash,
in the database, so the throttle holds across processes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Select, bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from bot.crypto import Cipher
from bot.domain import StaffRole
from bot.storage.models import ConsoleSession, LoginFailure, RecoveryCode, Staff
from bot.storage.queries import audit

THROTTLE_WINDOW = timedelta(minutes=15)
MAX_ACCOUNT_FAILURES = 5  # per account name, in the window
MAX_CLIENT_FAILURES = 20  # per client, in the window, whatever names it tries
RECOVERY_CODE_COUNT = 10
TOTP_ISSUER = "Contact triage"
MIN_PASSWORD_CHARS = 12
# How stale a session's last_seen_at may get before a request writes it again: a write per
# page view would cost more than the idle timeout's precision is worth.
TOUCH_AFTER = timedelta(minutes=1)


class AuthError(Exception):
    """A sign-in or account step that cannot be done; the message is safe to show."""


@dataclass(frozen=True)
class AuthPolicy:
    secret: bytes  # TRIAGE_SESSION_SECRET
    idle: timedelta
    require_2fa: str  # "admins" or "all"


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise AuthError(f"a password must be at least {MIN_PASSWORD_CHARS} characters")
    return hasher().hash(password)


def check_password(password_hash: str | None, password: str) -> bool:
    """Slow on purpose; call it off the event loop. An unknown account is checked against a
    dummy hash, so its answer takes as long as a real one."""
    try:
        return hasher().verify(password_hash or _dummy_hash(), password) and bool(password_hash)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    return hasher().hash(secrets.token_urlsafe(16))


def keyed(policy: AuthPolicy, purpose: str, value: str) -> str:
    return hmac.new(policy.secret, f"{purpose}\x00{value}".encode(), hashlib.sha256).hexdigest()


def second_factor_required(role: str, policy: AuthPolicy) -> bool:
    return role == StaffRole.ADMIN or policy.require_2fa == "all"


# --- signing in ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: str
    password_hash: str
    disabled: bool
    totp_on: bool


def find_account(session: Session, username: str) -> Account | None:
    staff = session.scalar(select(Staff).where(Staff.username == username))
    if staff is None:
        return None
    return Account(staff.id, staff.username, staff.role, staff.password_hash, staff.disabled,
                   staff.totp_confirmed_at is not None)


def throttle_keys(policy: AuthPolicy, username: str, client: str) -> tuple[str, str]:
    return keyed(policy, "account", username.casefold()), keyed(policy, "client", client)


def throttled(session: Session, keys: tuple[str, str], now: datetime) -> bool:
    """Too many recent failures for this account name or this client."""
    since = now - THROTTLE_WINDOW
    account_key, client_key = keys
    counts = dict(session.execute(
        select(LoginFailure.key_hash, func.count())
        .where(LoginFailure.key_hash.in_(keys), LoginFailure.at >= since)
        .group_by(LoginFailure.key_hash)
    ).all())
    return (counts.get(account_key, 0) >= MAX_ACCOUNT_FAILURES
            or counts.get(client_key, 0) >= MAX_CLIENT_FAILURES)


def record_failure(
    session: Session, keys: tuple[str, str], account: Account | None, now: datetime,
    reason: str = "password",
) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.at < now - THROTTLE_WINDOW))
    session.add_all(LoginFailure(key_hash=key, at=now) for key in keys)
    # The name typed is not kept when it is no account: it may be a password typed in the
    # wrong box.
    audit(session, now, "login_failed", "staff", account.id if account else None,
          actor=account.username if account else "unknown",
          actor_staff_id=account.id if account else None, detail=reason)


@dataclass(frozen=True)
class Opened:
    token: str  # for the cookie; never stored
    session_id: int
    verified: bool


def open_session(
    session: Session, account: Account, client: str, policy: AuthPolicy, now: datetime
) -> Opened:
    """The password was right. With two-factor on, the session waits for the second step."""
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(
        token_hash=keyed(policy, "session", token), staff_id=account.id,
        csrf_token=secrets.token_urlsafe(32), verified=not account.totp_on,
        client=client[:120], created_at=now, last_seen_at=now,
    )
    session.add(row)
    session.flush()
    audit(session, now, "login", "staff", account.id, actor=account.username,
          actor_staff_id=account.id,
          detail="password; second factor next" if account.totp_on else "password")
    return Opened(token, row.id, row.verified)


# --- a signed-in request ---------------------------------------------------------------------


@dataclass(frozen=True)
class SignedIn:
    session_id: int
    staff_id: int
    username: str
    role: str
    csrf_token: str
    verified: bool  # passed the second step, where there is one
    must_enrol: bool  # two-factor is required and not set up yet: only enrolment is open
    sound_on: bool
    stale: bool  # last_seen_at should be written again

    def has_role(self, *roles: str) -> bool:
        return self.role in roles


@dataclass(frozen=True)
class Expired:
    session_id: int
    reason: str  # "idle" or "disabled"


def load_signed_in(
    session: Session, token: str, policy: AuthPolicy, now: datetime
) -> SignedIn | Expired | None:
    """The live session a cookie's token opens, or why it no longer does (a read)."""
    found = session.execute(_signed_in_query(),
                            {"token_hash": keyed(policy, "session", token)}).first()
    if found is None:
        return None
    (session_id, csrf_token, verified, last_seen_at, staff_id, username, role, disabled,
     enrolled, sound_on) = found
    if disabled:
        return Expired(session_id, "disabled")
    if now - last_seen_at > policy.idle:
        return Expired(session_id, "idle")
    must_enrol = second_factor_required(role, policy) and not enrolled
    return SignedIn(session_id, staff_id, username, role, csrf_token, verified, must_enrol,
                    sound_on, now - last_seen_at > TOUCH_AFTER)


@cache
def _signed_in_query() -> Select[Any]:
    # Every console request runs this: built once, and only the columns it needs (never
    # the password hash or the TOTP secret).
    s = ConsoleSession
    return (
        select(s.id, s.csrf_token, s.verified, s.last_seen_at, Staff.id, Staff.username,
               Staff.role, Staff.disabled, Staff.totp_confirmed_at.is_not(None), Staff.sound_on)
        .join(Staff, Staff.id == s.staff_id)
        .where(s.token_hash == bindparam("token_hash"), s.ended_at.is_(None))
    )


def touch(session: Session, session_id: int, now: datetime) -> None:
    session.execute(update(ConsoleSession).where(ConsoleSession.id == session_id)
                    .values(last_seen_at=now))


def end_session(session: Session, session_id: int, reason: str, now: datetime,
                actor: SignedIn | None = None) -> None:
    ended = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    ).rowcount
    if ended and actor is not None:
        audit(session, now, "logout" if reason == "logout" else "session_ended", "staff",
              actor.staff_id, actor=actor.username, actor_staff_id=actor.staff_id,
              detail=reason)


def end_sessions_of(session: Session, staff_id: int, reason: str, now: datetime) -> int:
    """Every open session of an account (disabled, password reset, two-factor reset)."""
    return session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.staff_id == staff_id, ConsoleSession.ended_at.is_(None))
        .values(ended_at=now, end_reason=reason)
    ).rowcount


@dataclass(frozen=True)
class SessionInfo:
    id: int
    client: str
    created_at: datetime
    last_seen_at: datetime


def open_sessions(session: Session, staff_id: int, policy: AuthPolicy,
                  now: datetime) -> list[SessionInfo]:
    rows = session.scalars(
        select(ConsoleSession)
        .where(ConsoleSession.staff_id == staff_id, ConsoleSession.ended_at.is_(None),
               ConsoleSession.last_seen_at >= now - policy.idle)
        .order_by(ConsoleSession.last_seen_at.desc())
    )
    return [SessionInfo(r.id, r.client, r.created_at, r.last_seen_at) for r in rows]


def end_own_session(session: Session, me: SignedIn, session_id: int, now: datetime) -> bool:
    """A person ends one of their own sessions (a browser left signed in elsewhere)."""
    ended = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.id == session_id, ConsoleSession.staff_id == me.staff_id,
               ConsoleSession.ended_at.is_(None))
        .values(ended_at=now, end_reason="ended_by_owner")
    ).rowcount
    if ended:
        audit(session, now, "session_ended", "staff", me.staff_id, actor=me.username,
              actor_staff_id=me.staff_id, detail=f"session={session_id}")
    return bool(ended)


# --- the second factor -----------------------------------------------------------------------


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def _matching_step(secret: str, code: str, now: datetime, after: int | None) -> int | None:
    """The time step (of now, or one either side for clock drift) whose code this is, if it
    was not used before."""
    code = "".join(code.split())
    if not (code.isascii() and code.isdigit() and len(code) == 6):
        return None
    totp = _totp(secret)
    current = totp.timecode(now)
    for step in (current - 1, current, current + 1):
        if (after is None or step > after) and hmac.compare_digest(
            totp.generate_otp(step), code
        ):
            return step
    return None


def _recovery_hash(policy: AuthPolicy, staff_id: int, code: str) -> str:
    normalized = "".join(code.split()).replace("-", "").lower()
    return keyed(policy, f"recovery:{staff_id}", normalized)


def second_step(
    session: Session, me: SignedIn, code: str, cipher: Cipher, policy: AuthPolicy,
    now: datetime,
) -> bool:
    """A TOTP code, or one of the recovery codes (each once). True if the session is now
    verified; a wrong code counts as a failed sign-in."""
    staff = session.get(Staff, me.staff_id)
    if staff is None or staff.totp_secret_enc is None or staff.totp_confirmed_at is None:
        return False
    step = _matching_step(cipher.decrypt(staff.totp_secret_enc), code, now,
                          staff.totp_last_step)
    how = "totp"
    if step is not None:
        staff.totp_last_step = step
    else:
        used = session.execute(
            update(RecoveryCode)
            .where(RecoveryCode.staff_id == staff.id, RecoveryCode.used_at.is_(None),
                   RecoveryCode.code_hash == _recovery_hash(policy, staff.id, code))
            .values(used_at=now)
        ).rowcount
        if not used:
            return False
        how = "recovery_code"
    session.execute(update(ConsoleSession).where(ConsoleSession.id == me.session_id)
                    .values(verified=True, last_seen_at=now))
    audit(session, now, "login_second_factor", "staff", staff.id, actor=staff.username,
          actor_staff_id=staff.id, detail=how)
    return True


@dataclass(frozen=True)
class Enrolment:
    secret: str
    uri: str  # otpauth://, for the QR code


def start_enrolment(session: Session, me: SignedIn, cipher: Cipher) -> Enrolment:
    """A new secret, kept until it is confirmed with a code. Enrolling again replaces it."""
    staff = session.get(Staff, me.staff_id)
    assert staff is not None
    if staff.totp_confirmed_at is not None:
        raise AuthError("two-factor is already on; an admin can reset it")
    secret = pyotp.random_base32()
    staff.totp_secret_enc = cipher.encrypt(secret)
    return Enrolment(secret, _totp(secret).provisioning_uri(name=staff.username,
                                                             issuer_name=TOTP_ISSUER))


def pending_enrolment(session: Session, me: SignedIn, cipher: Cipher) -> Enrolment | None:
    staff = session.get(Staff, me.staff_id)
    if staff is None or staff.totp_secret_enc is None or staff.totp_confirmed_at is not None:
        return None
    secret = cipher.decrypt(staff.totp_secret_enc)
    return Enrolment(secret, _totp(secret).provisioning_uri(name=staff.username,
                                                             issuer_name=TOTP_ISSUER))


def confirm_enrolment(
    session: Session, me: SignedIn, code: str, cipher: Cipher, policy: AuthPolicy,
    now: datetime,
) -> list[str] | None:
    """Two-factor goes on when the code matches. Returns the recovery codes, shown once."""
    staff = session.get(Staff, me.staff_id)
    if staff is None or staff.totp_secret_enc is None or staff.totp_confirmed_at is not None:
        return None
    step = _matching_step(cipher.decrypt(staff.totp_secret_enc), code, now, None)
    if step is None:
        return None
    staff.totp_confirmed_at = now
    staff.totp_last_step = step
    session.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff.id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    session.add_all(RecoveryCode(staff_id=staff.id, code_hash=_recovery_hash(policy, staff.id, c),
                                 created_at=now) for c in codes)
    session.execute(update(ConsoleSession).where(ConsoleSession.id == me.session_id)
                    .values(verified=True))
    audit(session, now, "two_factor_enrolled", "staff", staff.id, actor=staff.username,
          actor_staff_id=staff.id)
    return codes


def _new_recovery_code() -> str:
    raw = secrets.token_hex(5)  # 40 bits, read out as two groups of five
    return f"{raw[:5]}-{raw[5:]}"


def set_sound(session: Session, me: SignedIn, on: bool) -> None:
    session.execute(update(Staff).where(Staff.id == me.staff_id).values(sound_on=on))
