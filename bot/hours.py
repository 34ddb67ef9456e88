"""Business-hours calendar: when staff are in, and how to say so in a reply.

Pure code: no I/O and no clock. Every "now" is a parameter and must be an aware
datetime (any timezone); instants are compared in UTC internally.

Semantics (see BusinessHours):
- Wall times are local to the configured zone. A wall time inside a spring-forward
  gap means the end of the gap; an ambiguous fall-back wall time means its first
  occurrence (fold=0). So an overnight interval across a change is 1 h shorter/longer.
- An interval belongs to the local date it starts on. A holiday replaces that date's
  intervals only, so last night's overnight interval still runs into a holiday.
- Open periods are half-open [start, end); touching or overlapping intervals, also
  across midnight, form one period.
- Every start and end falls on a whole minute (wall times are HH:MM, and UTC offsets and
  their changes are whole minutes), so whether staff are in, and when they are next back,
  is the same for a whole minute: `status` works it out once per minute and keeps it, for
  every message in that minute.

Returned datetimes are in the configured zone. Compare or subtract them in UTC
(`.astimezone(UTC)`): Python subtracts two datetimes sharing a zone by wall clock, and
never finds an ambiguous-hour datetime equal to one in another zone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_time

from bot.gsm import to_gsm7

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
HORIZON = timedelta(days=400)  # how far next_opening/current_closing look
# How far back opening_of/last_closing look, widening only when they must: two days cover
# the usual night or weekend.
_LOOKBACK = (timedelta(days=2), timedelta(days=16), HORIZON)
DAY_MINUTES = 24 * 60
_INTERVAL = re.compile(r"([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

# (start, end) in minutes after the local midnight of the day the interval starts;
# an overnight interval has end > 1440.
Interval = tuple[int, int]


class HoursError(ValueError):
    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class HoursStatus:
    """Staff are in, or not; if not, when they are next back (None: nothing opens within
    the horizon)."""

    open: bool
    next_opening: datetime | None


MINUTES_KEPT = 4  # statuses kept per calendar: callers on slightly different clocks share


@dataclass(frozen=True)
class BusinessHours:
    zone: ZoneInfo
    weekly: tuple[tuple[Interval, ...], ...]  # index 0 = Monday
    # hash=False: a dict is unhashable, and the weekly hours identify the schedule well enough.
    holidays: Mapping[date, tuple[Interval, ...]] = field(hash=False)
    # The status of recent minutes (since the epoch). Not part of the value: a memo.
    _minutes: dict[int, HoursStatus] = field(
        default_factory=dict, init=False, compare=False, hash=False, repr=False
    )

    @classmethod
    def from_config(
        cls,
        timezone: str,
        weekly: Mapping[str, Sequence[str]],
        holidays: Mapping[str, Sequence[str]],
    ) -> BusinessHours:
        unknown = sorted(set(weekly) - set(WEEKDAYS), key=str)
        if unknown:
            raise HoursError(f"hours.{unknown[0]}", "unknown weekday (use monday..sunday)")
        days = tuple(_parse_day(f"hours.{name}", weekly.get(name, ())) for name in WEEKDAYS)
        special = {
            _parse_date(f"hours.holidays.{key}", key): _parse_day(f"hours.holidays.{key}", value)
            for key, value in holidays.items()
        }
        return cls(_parse_zone(timezone), days, special)

    @property
    def timezone(self) -> ZoneInfo:
        return self.zone

    @property
    def ever_opens(self) -> bool:
        """False for a calendar with no hours on any weekday or holiday."""
        return any(self.weekly) or any(self.holidays.values())

    def status(self, at: datetime) -> HoursStatus:
        """Open or not at `at`, and the next opening if not: worked out once per minute.

        A minute is all open or all closed, and closed, its next opening is at or after
        the minute's end whichever instant in it is asked, so the answer for the minute's
        start is the answer for all of it."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("datetime must be timezone-aware")
        minute = int(at.timestamp() // 60)  # cheaper than datetime.replace(second=0, ...)
        found = self._minutes.get(minute)
        if found is None:
            if len(self._minutes) >= MINUTES_KEPT:
                self._minutes.clear()
            start = datetime.fromtimestamp(minute * 60, UTC)
            found = self._minutes[minute] = self._status(start)
        return found

    def _status(self, moment: datetime) -> HoursStatus:
        if not self.ever_opens:
            return HoursStatus(False, None)  # nothing to scan 400 days for
        # Intervals starting after the moment's local date start after the moment.
        if self._period_at(moment, timedelta(0)) is not None:
            return HoursStatus(True, None)
        return HoursStatus(False, self._next_opening(moment))

    def is_open(self, at: datetime) -> bool:
        return self.status(at).open

    def current_closing(self, at: datetime) -> datetime | None:
        """End of the open period containing `at`. None if closed at `at`, and also
        if the period does not end within the horizon (always open): check is_open."""
        if not self.is_open(at):
            return None
        period = self._period_at(at, HORIZON)
        if period is None:
            return None
        # A period reaching past the last day scanned may go on: its end is unknown.
        last = self._local_date(_utc(at)) + HORIZON
        return None if period[1] >= self._wall(last, DAY_MINUTES) else self._local(period[1])

    def next_opening(self, after: datetime) -> datetime | None:
        """First closed->open instant >= `after` (a period starting exactly at `after`
        counts). None if nothing opens within HORIZON (400 local days)."""
        status = self.status(after)
        if not status.open:
            return status.next_opening
        return self._next_opening(after)  # past the end of the period `after` is in

    def _next_opening(self, after: datetime) -> datetime | None:
        moment = _utc(after)
        first = self._local_date(moment)
        for start, _ in self._periods(first - timedelta(days=2), first + HORIZON):
            if start >= moment:
                return self._local(start)
        return None

    def opening_of(self, at: datetime) -> datetime | None:
        """When the open period containing `at` began: its closed->open instant. None if
        closed at `at`, and also if it has been open for the whole horizon (always open)."""
        moment = _utc(at)
        day = self._local_date(moment)
        for back in _LOOKBACK:
            first = day - back
            period = self._period_at(at, timedelta(0), back)
            if period is None:
                return None
            # A period starting on the first date scanned may go back further; one starting
            # later began there (see _periods).
            if self._local_date(period[0]) > first:
                return self._local(period[0])
        return None

    def last_closing(self, at: datetime) -> datetime | None:
        """The last open->closed instant at or before `at`. None if nothing closed within
        the horizon."""
        moment = _utc(at)
        day = self._local_date(moment)
        for back in _LOOKBACK:
            ended = None
            for start, end in self._periods(day - back, day):
                if start > moment or moment < end:
                    break
                ended = end
            if ended is not None:
                return self._local(ended)
        return None

    def _period_at(self, at: datetime, ahead: timedelta,
                   back: timedelta = timedelta(days=2)) -> tuple[datetime, datetime] | None:
        moment = _utc(at)
        first = self._local_date(moment)
        for start, end in self._periods(first - back, first + ahead):
            if start > moment:
                return None
            if moment < end:
                return start, end
        return None

    def _periods(self, first: date, last: date) -> Iterator[tuple[datetime, datetime]]:
        """Merged UTC open periods built from intervals starting on local dates
        first..last. Callers start two days before the date they care about: an
        interval ends before the second midnight after its start, so nothing older
        can reach a period starting on that date (its start is a real opening)."""
        current: tuple[datetime, datetime] | None = None
        day = first
        while day <= last:
            for start, end in self._day_periods(day):
                if current is not None and start <= current[1]:
                    current = (current[0], max(current[1], end))
                    continue
                if current is not None:
                    yield current
                current = (start, end)
            day += timedelta(days=1)
        if current is not None:
            yield current

    def _day_periods(self, day: date) -> Iterator[tuple[datetime, datetime]]:
        intervals = self.holidays.get(day, self.weekly[day.weekday()])
        for start_minute, end_minute in intervals:
            start, end = self._wall(day, start_minute), self._wall(day, end_minute)
            if start < end:  # an interval entirely inside a DST gap is empty
                yield start, end

    def _wall(self, day: date, minutes: int) -> datetime:
        """UTC instant of a local wall time `minutes` after midnight starting `day`."""
        wall = datetime.combine(day, time()) + timedelta(minutes=minutes)
        first = wall.replace(tzinfo=self.zone)  # fold=0: first occurrence if ambiguous
        if first.astimezone(UTC).astimezone(self.zone).replace(tzinfo=None) == wall:
            return first.astimezone(UTC)
        return _gap_end(wall, self.zone)

    def _local_date(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()

    def _local(self, moment: datetime) -> datetime:
        return moment.astimezone(self.zone)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(UTC)


def _gap_end(wall: datetime, zone: ZoneInfo) -> datetime:
    """UTC instant a skipped wall time jumps to: the transition at the end of its gap.
    In a gap, fold=0 applies the offset from before the change (a UTC instant after
    the transition) and fold=1 the offset after it (an instant before); bisect."""
    # tzdata transitions fall on whole seconds, so bisecting integer seconds is exact.
    late = int(wall.replace(tzinfo=zone, fold=0).timestamp())
    early = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    after_offset = datetime.fromtimestamp(late, zone).utcoffset()
    while late - early > 1:
        middle = (early + late) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == after_offset:
            late = middle
        else:
            early = middle
    return datetime.fromtimestamp(late, UTC)


def _parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise HoursError("hours.timezone", f"unknown IANA time zone {name!r}") from None


def _parse_date(key: str, text: str) -> date:
    try:
        if isinstance(text, str) and _DATE.fullmatch(text):
            return date.fromisoformat(text)
    except ValueError:
        pass
    raise HoursError(key, "holiday must be a real date written YYYY-MM-DD")


def _parse_day(key: str, texts: Sequence[str]) -> tuple[Interval, ...]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise HoursError(key, 'must be a list of "HH:MM-HH:MM" strings')
    # Sorted by start, as _periods needs; it also merges overlapping intervals.
    return tuple(sorted(_parse_interval(f"{key}[{i}]", text) for i, text in enumerate(texts)))


def _parse_interval(key: str, text: str) -> Interval:
    match = _INTERVAL.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise HoursError(key, f'expected "HH:MM-HH:MM", got {text!r}')
    sh, sm, eh, em = (int(part) for part in match.groups())
    if sm > 59 or em > 59 or sh > 23 or eh > 24 or (eh == 24 and em):
        raise HoursError(key, f"no such time in {text!r} (00:00 to 23:59, or 24:00 as an end)")
    start, end = sh * 60 + sm, eh * 60 + em
    if start == end:
        raise HoursError(key, f"start equals end in {text!r} (use 00:00-24:00 for all day)")
    # An end before the start runs past midnight into the next day.
    return (start, end) if end > start else (start, end + DAY_MINUTES)


def describe_opening(opening: datetime, now: datetime, language: str) -> str:
    """When staff are back, for "Staff are back {...}.", e.g. "tomorrow at 9:00 AM" or
    "el lunes 5 de enero a las 9:00". Local to opening's timezone."""
    if language not in ("en", "es"):
        raise ValueError(f"unsupported language {language!r}")
    if opening.tzinfo is None or now.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    days = (opening.date() - now.astimezone(opening.tzinfo).date()).days
    clock = format_time(opening.time(), "short", locale=language)
    if language == "en":
        return to_gsm7(f"{_english_day(opening.date(), days)} at {clock}")
    article = "la" if opening.hour == 1 else "las"  # "a la 1:00", "a las 2:00"
    return to_gsm7(f"{_spanish_day(opening.date(), days)} a {article} {clock}")


def _english_day(day: date, days: int) -> str:
    if days == 0:
        return "today"
    if days == 1:
        return "tomorrow"
    if 1 < days < 7:
        return format_date(day, "EEEE", locale="en")
    return format_date(day, "EEEE, MMMM d", locale="en")


def _spanish_day(day: date, days: int) -> str:
    if days == 0:
        return "hoy"
    if days == 1:
        return "mañana"
    if 1 < days < 7:
        return "el " + format_date(day, "EEEE", locale="es")
    return "el " + format_date(day, "EEEE d 'de' MMMM", locale="es")


def _minutes(m: int) -> str:
    day, rest = divmod(m, DAY_MINUTES)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    return text if not day else ("24:00" if rest == 0 and day == 1 else f"{text} next day")


def describe_week(hours: BusinessHours, now: datetime, days: int = 7) -> list[str]:
    """The coming days' hours in words, as check-config prints them, e.g.
    "Thu 24 Dec: 09:00-12:00 (holiday hours)" or "Fri 25 Dec: closed (holiday)"."""
    first = now.astimezone(hours.zone).date()
    lines = []
    for offset in range(days):
        day = first + timedelta(days=offset)
        label = day.strftime("%a %d %b")
        holiday = day in hours.holidays
        intervals = hours.holidays.get(day, hours.weekly[day.weekday()])
        if not intervals:
            lines.append(f"{label}: closed" + (" (holiday)" if holiday else ""))
            continue
        spans = ", ".join(f"{_minutes(a)}-{_minutes(b)}" for a, b in intervals)
        if intervals == ((0, DAY_MINUTES),):
            spans = "open all day"
        lines.append(f"{label}: {spans}" + (" (holiday hours)" if holiday else ""))
    return lines


def next_offset_change(zone: ZoneInfo, after: datetime,
                       horizon: timedelta = HORIZON) -> tuple[datetime, timedelta] | None:
    """The next daylight-saving (or other UTC offset) change in `zone` after `after`: the
    local time it happens at, and by how much the clocks move. None within the horizon."""
    start = int(_utc(after).timestamp())
    before = datetime.fromtimestamp(start, zone).utcoffset()
    step = 6 * 3600  # offsets change at most a few times a year, never twice in 6 hours
    for t in range(start, start + int(horizon.total_seconds()), step):
        if datetime.fromtimestamp(t + step, zone).utcoffset() == before:
            continue
        low, high = t, t + step  # bisect whole seconds to the change itself
        while high - low > 1:
            middle = (low + high) // 2
            if datetime.fromtimestamp(middle, zone).utcoffset() == before:
                low = middle
            else:
                high = middle
        moment = datetime.fromtimestamp(high, zone)
        after_offset = moment.utcoffset()
        assert before is not None and after_offset is not None
        return moment, after_offset - before
    return None
