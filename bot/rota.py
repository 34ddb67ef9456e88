"""The weekly on-call rotation: who the config says is on call at a given moment.

Members take turns in the listed order, one week each, handing over at the configured local
weekday and time. The week count is taken on the wall clock, so a handover stays at 09:00
local across daylight-saving changes. `start` is the date of a handover at which the first
listed member takes over; overrides (`python -m bot oncall set`) live in the database and
are applied on top of this by handlers.escalation.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class Rota:
    rotation: tuple[str, ...]
    backup: str
    handover_weekday: int  # 0 = Monday
    handover_time: time
    start: date
    zone: ZoneInfo
    # How long the person taking over has to confirm before the backup and admins are told.
    confirm_minutes: int = 15

    @classmethod
    def from_config(
        cls, rotation: tuple[str, ...], handover: str, backup: str, start: date, zone: ZoneInfo,
        confirm_minutes: int = 15,
    ) -> Rota:
        day, clock = handover.split()
        hour, minute = (int(part) for part in clock.split(":"))
        return cls(rotation, backup, WEEKDAYS.index(day), time(hour, minute), start, zone,
                   confirm_minutes)

    def first_handover(self) -> datetime:
        """The first handover on or after `start`, as a local wall time (naive)."""
        ahead = (self.handover_weekday - self.start.weekday()) % 7
        return datetime.combine(self.start + timedelta(days=ahead), self.handover_time)

    def scheduled(self, at: datetime) -> str | None:
        """The rotation member on call at `at`, or None when the rotation is empty."""
        if not self.rotation:
            return None
        wall = at.astimezone(self.zone).replace(tzinfo=None)
        weeks = (wall - self.first_handover()) // timedelta(weeks=1)
        return self.rotation[weeks % len(self.rotation)]

    def next_handover(self, at: datetime) -> datetime:
        wall = at.astimezone(self.zone).replace(tzinfo=None)
        weeks = (wall - self.first_handover()) // timedelta(weeks=1)
        following = self.first_handover() + timedelta(weeks=weeks + 1)
        return following.replace(tzinfo=self.zone)
