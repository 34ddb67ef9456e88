"""Key rotation that ends: everything stored is encrypted again with the newest key, and
every address hash that can be is computed again under it, so the old keys can go.

`python -m bot rekey` runs these in batches, each its own transaction, so it can be killed
and run again: a value already under the newest key is left alone, and a hash already
right stays. The service may run meanwhile: each value is replaced only if it is still the
one read (a compare-and-set), so a row the service changed in between (an outbox row
settled, a contact erased) is never written back as it was.

What cannot be hashed again (an opted-out contact who erased their conversation keeps only
its hash; a web chat's hash of a token nobody stored) stays findable through the old key's
lookup key, which `keep_lookup_keys` stores first, encrypted with the newest key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Table, func, or_, select, update
from sqlalchemy.orm import Session

from bot.crypto import Cipher, DecryptError
from bot.domain import Channel
from bot.storage.models import (
    Contact,
    Escalation,
    Message,
    Outbox,
    RetiredLookupKey,
    Staff,
)
from bot.storage.queries import audit

# Every encrypted column, table by table.
ENCRYPTED: dict[Table, tuple[str, ...]] = {
    Contact.__table__: ("address_enc",),  # type: ignore[dict-item]
    Staff.__table__: ("phone_enc", "telegram_enc", "totp_secret_enc"),  # type: ignore[dict-item]
    Escalation.__table__: ("resolution_note_enc",),  # type: ignore[dict-item]
    Outbox.__table__: ("address_enc", "body_enc"),  # type: ignore[dict-item]
    Message.__table__: ("body_enc",),  # type: ignore[dict-item]
}


def keep_lookup_keys(session: Session, cipher: Cipher, now: datetime) -> list[str]:
    """Store the older keys' lookup keys, encrypted with the newest key. Returns their ids.
    Those kept by an earlier rotation are encrypted again too: otherwise removing the key
    that protected them would lose them."""
    for row in session.scalars(select(RetiredLookupKey)):
        if cipher.key_id(row.key_enc) != cipher.current_key_id:
            try:
                row.key_enc = cipher.encrypt(cipher.decrypt(row.key_enc))
            except DecryptError:
                continue  # its key is gone already: load_retired skips it as well
    kept = []
    for kid, key in cipher.older_lookup_keys().items():
        if session.get(RetiredLookupKey, kid) is None:
            session.add(RetiredLookupKey(
                key_id=kid, key_enc=cipher.encrypt(base64.urlsafe_b64encode(key).decode()),
                retired_at=now))
            audit(session, now, "lookup_key_kept", "key", None, actor="cli", detail=kid)
        kept.append(kid)
    return kept


def load_retired(session: Session, cipher: Cipher) -> int:
    """Give the cipher the lookup keys kept from removed keys (at start-up). Returns how many."""
    loaded = 0
    for row in session.scalars(select(RetiredLookupKey)):
        try:
            cipher.retire(row.key_id, base64.urlsafe_b64decode(cipher.decrypt(row.key_enc)))
            loaded += 1
        except (DecryptError, ValueError):
            continue  # made with a key no longer listed: it cannot be used
    return loaded


@dataclass(frozen=True)
class Batch:
    last_id: int | None  # None: the table is done
    reencrypted: int
    rehashed: int


def _stale(table: Table, columns: tuple[str, ...], current: str) -> ColumnElement[bool]:
    """A row with some value not under the current key (ciphertexts start "keyid:"; no LIKE,
    as a key id may hold "_")."""
    prefix = f"{current}:"
    return or_(*(func.substr(table.c[c], 1, len(prefix)) != prefix for c in columns))


def rekey_batch(session: Session, cipher: Cipher, table: Table, after: int,
                limit: int) -> Batch:
    """Encrypt again, under the newest key, the values of up to `limit` rows after id
    `after` that are under another key."""
    columns = ENCRYPTED[table]
    current = cipher.current_key_id
    rows = session.execute(
        select(table.c.id, *(table.c[c] for c in columns))
        .where(table.c.id > after, _stale(table, columns, current))
        .order_by(table.c.id).limit(limit)
    ).all()
    done = 0
    for row in rows:
        for column in columns:
            value = getattr(row, column)
            if value is None or cipher.key_id(value) == current:
                continue
            fresh = cipher.encrypt(cipher.decrypt(value))
            done += session.execute(
                update(table).where(table.c.id == row.id, table.c[column] == value)
                .values({column: fresh})
            ).rowcount
    return Batch(rows[-1].id if len(rows) == limit else None, done, 0)


def rehash_contacts(session: Session, cipher: Cipher, after: int, limit: int) -> Batch:
    """Contacts whose address is still known get the newest key's hash, and so do the
    outbox rows that carry their old one."""
    rows = session.execute(
        select(Contact.id, Contact.channel, Contact.address_enc, Contact.address_hash)
        .where(Contact.id > after).order_by(Contact.id).limit(limit)
    ).all()
    done = 0
    for row in rows:
        if row.address_enc is None:
            continue  # hash only: found through the kept lookup key
        fresh = cipher.address_hash(row.channel, cipher.decrypt(row.address_enc))
        if fresh == row.address_hash:
            continue
        if session.execute(
            update(Contact).where(Contact.id == row.id, Contact.address_hash == row.address_hash)
            .values(address_hash=fresh)
        ).rowcount:
            session.execute(update(Outbox).where(Outbox.address_hash == row.address_hash)
                            .values(address_hash=fresh))
            done += 1
    return Batch(rows[-1].id if len(rows) == limit else None, 0, done)


def rehash_staff(session: Session, cipher: Cipher) -> int:
    """Staff phones and Telegram chats get the newest key's hashes (a handful of rows)."""
    done = 0
    for staff in session.scalars(select(Staff)):
        for enc, column, channel in (("phone_enc", "phone_hash", Channel.SMS),
                                     ("telegram_enc", "telegram_hash", Channel.TELEGRAM)):
            value = getattr(staff, enc)
            if value is None:
                continue
            fresh = cipher.address_hash(channel, cipher.decrypt(value))
            old = getattr(staff, column)
            if fresh != old:
                setattr(staff, column, fresh)
                session.execute(update(Outbox).where(Outbox.address_hash == old)
                                .values(address_hash=fresh))
                done += 1
    return done


def remaining(session: Session, cipher: Cipher) -> dict[str, int]:
    """Values still under another key, per table: all zero once rekey is done."""
    current = cipher.current_key_id
    found = {}
    for table, columns in ENCRYPTED.items():
        found[table.name] = int(session.scalar(
            select(func.count()).select_from(table).where(_stale(table, columns, current))
        ) or 0)
    return found

