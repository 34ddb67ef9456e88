"""The encrypted local spool: where an inbound message waits when the database cannot
take it, so a provider is told "received" only once the message is on disk somewhere."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from bot.crypto import Cipher, DecryptError
from bot.domain import Channel, InboundMessage

SUFFIX = ".msg"


class Spool:
    def __init__(self, directory: Path, cipher: Cipher) -> None:
        self.directory = directory
        self._cipher = cipher

    def put(self, msg: InboundMessage) -> Path:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The file name says nothing about the sender: a time and a hash of the provider id.
        digest = hashlib.sha256(f"{msg.channel}:{msg.provider_id}".encode()).hexdigest()[:20]
        path = self.directory / f"{time.time_ns():020d}-{digest}{SUFFIX}"
        tmp = path.with_suffix(".tmp")
        data = self._cipher.encrypt(_record_json(msg)).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(self.directory)
        return path

    def __iter__(self) -> Iterator[tuple[Path, InboundMessage | None]]:
        """Oldest first. None for a file that cannot be read with the current keys."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            yield path, self._read(path)

    def _read(self, path: Path) -> InboundMessage | None:
        try:
            record = json.loads(self._cipher.decrypt(path.read_text()))
            return InboundMessage(
                channel=Channel(record["channel"]),
                address=record["address"],
                provider_id=record["provider_id"],
                text=record["text"],
                media_count=int(record["media_count"]),
                received_at=datetime.fromisoformat(record["received_at"]),
                is_start=bool(record["is_start"]),
                our_address=record.get("our_address"),
            )
        except (OSError, DecryptError, ValueError, KeyError):
            return None

    @contextlib.contextmanager
    def draining(self) -> Iterator[bool]:
        """True if this process may drain now: processes that share a spool folder take
        turns (an exclusive lock on a file in it), so a message is not taken in twice."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / ".drain-lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)  # closing releases the lock

    def __len__(self) -> int:
        return _count(self.directory)

    def held(self) -> int:
        """Messages set aside in held/ for a person to look at."""
        return _count(self.directory / "held")

    def reencrypt(self) -> int:
        """Encrypt every spooled message again with the newest key (rekey). A file that
        cannot be read is left for the drain to hold."""
        done = 0
        for path, msg in self:
            if msg is None or self._cipher.key_id(path.read_text()) == \
                    self._cipher.current_key_id:
                continue
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self._cipher.encrypt(_record_json(msg)).encode())
            os.replace(tmp, path)
            done += 1
        return done

    @staticmethod
    def remove(path: Path) -> None:
        path.unlink(missing_ok=True)

    def hold(self, path: Path) -> None:
        """Set a message aside in held/, still encrypted, out of the drain's way."""
        held = self.directory / "held"
        held.mkdir(mode=0o700, exist_ok=True)
        path.replace(held / path.name)


def _count(directory: Path) -> int:
    return sum(1 for _ in directory.glob(f"*{SUFFIX}")) if directory.is_dir() else 0


def _record_json(msg: InboundMessage) -> str:
    return json.dumps({
        "channel": msg.channel.value,
        "address": msg.address,
        "provider_id": msg.provider_id,
        "text": msg.text,
        "media_count": msg.media_count,
        "received_at": msg.received_at.isoformat(),
        "is_start": msg.is_start,
        "our_address": msg.our_address,
    })


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
