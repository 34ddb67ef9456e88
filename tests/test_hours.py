"""Business-hours calendar. Expected instants are worked out by hand in UTC:
Chicago is UTC-6 (CST) / UTC-5 (CDT), switching 2026-03-08 02:00 and 2026-11-01 02:00;
Madrid is UTC+1 (CET) / UTC+2 (CEST), switching 2026-03-29 02:00 and 2026-10-25 03:00."""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from gsm0338 import Codec

from bot.domain import Language
from bot.hours import (
    BusinessHours,
    HoursError,
    HoursStatus,
    describe_opening,
    describe_week,
    next_offset_change,
)

CHICAGO = ZoneInfo("America/Chicago")
MADRID = ZoneInfo("Europe/Madrid")
EXAMPLE_WEEK = {
    "monday": ["09:00-12:00", "13:00-17:00"],
    "tuesday": ["09:00-17:00"],
    "friday": ["22:00-02:00"],
    "saturday": [],
    "sunday": ["00:00-24:00"],
}
EXAMPLE_HOLIDAYS = {"2026-12-25": [], "2026-12-24": ["09:00-13:00"]}
OFFICE = {day: ["09:00-17:00"] for day in ("monday", "tuesday", "wednesday", "thursday", "friday")}


def hours(
    weekly: Mapping[str, Sequence[str]],
    holidays: Mapping[str, Sequence[str]] | None = None,
    timezone: str = "America/Chicago",
) -> BusinessHours:
    return BusinessHours.from_config(timezone, weekly, holidays or {})


def example() -> BusinessHours:
    return hours(EXAMPLE_WEEK, EXAMPLE_HOLIDAYS)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def chicago(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO)


def in_utc(moment: datetime | None) -> datetime | None:
    """Answers around DST must be compared as instants: Python never finds an
    ambiguous-hour datetime equal to one in another zone, and subtracts two datetimes
    sharing a zone by wall clock."""
    return None if moment is None else moment.astimezone(UTC)


# --- open / closed -----------------------------------------------------------------


def test_split_shift_closed_at_lunch() -> None:
    schedule = example()
    assert schedule.is_open(chicago(2026, 1, 5, 11, 59))
    assert not schedule.is_open(chicago(2026, 1, 5, 12, 0))  # half-open: end is closed
    assert not schedule.is_open(chicago(2026, 1, 5, 12, 30))
    assert schedule.is_open(chicago(2026, 1, 5, 13, 0))
    assert not schedule.is_open(chicago(2026, 1, 5, 17, 0))


def test_split_shift_morning_closes_at_noon_and_reopens_after_lunch() -> None:
    schedule = example()
    assert schedule.current_closing(chicago(2026, 1, 5, 10, 0)) == utc(2026, 1, 5, 18, 0)
    assert schedule.next_opening(chicago(2026, 1, 5, 10, 0)) == utc(2026, 1, 5, 19, 0)


def test_overnight_interval_open_after_midnight() -> None:
    schedule = example()
    assert not schedule.is_open(chicago(2026, 1, 9, 21, 59))
    assert schedule.is_open(chicago(2026, 1, 10, 1, 30))  # Saturday, from Friday's shift
    assert not schedule.is_open(chicago(2026, 1, 10, 2, 0))
    assert schedule.current_closing(chicago(2026, 1, 9, 23, 0)) == utc(2026, 1, 10, 8, 0)


def test_missing_weekday_is_closed() -> None:
    schedule = example()
    assert not schedule.is_open(chicago(2026, 1, 7, 12, 0))  # Wednesday
    assert schedule.current_closing(chicago(2026, 1, 7, 12, 0)) is None
    assert schedule.next_opening(chicago(2026, 1, 7, 12, 0)) == utc(2026, 1, 10, 4, 0)


def test_opening_exactly_at_after_counts_as_next_opening() -> None:
    schedule = example()
    assert schedule.is_open(chicago(2026, 1, 5, 9, 0))
    assert schedule.next_opening(chicago(2026, 1, 5, 9, 0)) == utc(2026, 1, 5, 15, 0)
    assert schedule.next_opening(chicago(2026, 1, 5, 9, 0, 1)) == utc(2026, 1, 5, 19, 0)


def test_all_day_sunday_merges_with_monday_morning() -> None:
    schedule = hours({"sunday": ["00:00-24:00"], "monday": ["00:00-09:00", "13:00-17:00"]})
    assert schedule.next_opening(chicago(2026, 1, 3, 12, 0)) == utc(2026, 1, 4, 6, 0)
    assert schedule.current_closing(chicago(2026, 1, 4, 10, 0)) == utc(2026, 1, 5, 15, 0)
    assert schedule.is_open(chicago(2026, 1, 5, 0, 0))
    # Monday midnight is not an opening: the schedule never closed.
    assert schedule.next_opening(chicago(2026, 1, 4, 23, 0)) == utc(2026, 1, 5, 19, 0)


def test_overnight_interval_merges_with_next_morning() -> None:
    schedule = hours({"friday": ["22:00-02:00"], "saturday": ["00:00-03:00"]})
    assert schedule.next_opening(chicago(2026, 1, 9, 12, 0)) == utc(2026, 1, 10, 4, 0)
    assert schedule.current_closing(chicago(2026, 1, 9, 23, 0)) == utc(2026, 1, 10, 9, 0)
    assert schedule.next_opening(chicago(2026, 1, 10, 0, 30)) == utc(2026, 1, 17, 4, 0)


def test_next_opening_from_inside_overnight_skips_interval_it_merges_with() -> None:
    schedule = hours({"friday": ["22:00-02:00"], "saturday": ["01:00-05:00"]})
    assert schedule.current_closing(chicago(2026, 1, 10, 0, 30)) == utc(2026, 1, 10, 11, 0)
    assert schedule.next_opening(chicago(2026, 1, 10, 0, 30)) == utc(2026, 1, 17, 4, 0)


def test_overlapping_intervals_on_one_day_merge() -> None:
    schedule = hours({"monday": ["11:00-13:00", "09:00-12:00", "13:00-14:00"]})
    assert schedule.next_opening(chicago(2026, 1, 5, 8, 0)) == utc(2026, 1, 5, 15, 0)
    assert schedule.current_closing(chicago(2026, 1, 5, 9, 30)) == utc(2026, 1, 5, 20, 0)
    assert schedule.next_opening(chicago(2026, 1, 5, 9, 30)) == utc(2026, 1, 12, 15, 0)


def test_end_at_24_00_closes_at_midnight() -> None:
    schedule = hours({"monday": ["22:00-24:00"]})
    assert schedule.current_closing(chicago(2026, 1, 5, 23, 0)) == utc(2026, 1, 6, 6, 0)
    assert not schedule.is_open(chicago(2026, 1, 6, 0, 0))


def test_any_input_timezone_compared_as_instant_and_answer_in_configured_zone() -> None:
    schedule = example()
    tokyo = datetime(2026, 1, 6, 3, 30, tzinfo=ZoneInfo("Asia/Tokyo"))  # Mon 12:30 Chicago
    assert not schedule.is_open(tokyo)
    opening = schedule.next_opening(tokyo)
    assert opening == utc(2026, 1, 5, 19, 0)
    assert opening is not None and opening.tzinfo is CHICAGO
    assert (opening.hour, opening.minute) == (13, 0)


def test_naive_datetime_is_rejected() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        example().is_open(datetime(2026, 1, 5, 10, 0))


def test_all_closed_has_no_next_opening() -> None:
    schedule = hours({})
    assert not schedule.is_open(chicago(2026, 1, 5, 10, 0))
    assert schedule.next_opening(chicago(2026, 1, 5, 10, 0)) is None
    assert schedule.current_closing(chicago(2026, 1, 5, 10, 0)) is None


def test_always_open_has_no_next_opening_and_no_known_closing() -> None:
    schedule = hours({day: ["00:00-24:00"] for day in EXAMPLE_WEEK | OFFICE})
    assert schedule.is_open(chicago(2026, 1, 5, 10, 0))
    assert schedule.next_opening(chicago(2026, 1, 5, 10, 0)) is None
    assert schedule.current_closing(chicago(2026, 1, 5, 10, 0)) is None


def test_a_calendar_without_any_hours_never_opens_and_says_so_at_once() -> None:
    schedule = hours({}, {"2026-12-25": []})
    assert not schedule.ever_opens
    assert schedule.status(chicago(2026, 1, 5, 10, 0)) == HoursStatus(False, None)
    holiday_only = hours({}, {"2027-01-20": ["09:00-10:00"]})
    assert holiday_only.ever_opens
    assert holiday_only.next_opening(chicago(2026, 1, 1, 0, 0)) == utc(2027, 1, 20, 15, 0)


def test_every_instant_of_a_minute_gets_the_minutes_answer() -> None:
    # One calendar, asked late in each minute first, then early, then in between: the
    # answer kept for the minute must hold for each instant of it, either side of 09:00
    # and of 17:00 (as instants), and into the spring-forward gap's end (03:00 CDT).
    schedule = hours(OFFICE | {"sunday": ["02:30-05:00"]})
    monday_9 = utc(2026, 1, 5, 15, 0)
    monday_17 = utc(2026, 1, 5, 23, 0)
    tuesday_9 = utc(2026, 1, 6, 15, 0)
    gap_end = utc(2026, 3, 8, 8, 0)
    cases = [
        (monday_9 - timedelta(minutes=1), HoursStatus(False, monday_9)),
        (monday_9, HoursStatus(True, None)),
        (monday_17 - timedelta(minutes=1), HoursStatus(True, None)),
        (monday_17, HoursStatus(False, tuesday_9)),
        (gap_end - timedelta(minutes=1), HoursStatus(False, gap_end)),
        (gap_end, HoursStatus(True, None)),
    ]
    for minute, expected in cases:
        for offset in (59.999999, 0, 30):
            at = minute + timedelta(seconds=offset)
            assert schedule.status(at) == expected, at
            assert schedule.is_open(at) is expected.open
            if not expected.open:
                assert schedule.next_opening(at) == expected.next_opening
    # Open, the next opening is the one after this period, not a kept answer.
    assert schedule.next_opening(monday_9 + timedelta(seconds=30)) == tuesday_9
    assert schedule.next_opening(monday_9) == monday_9  # a period starting at `after`


def test_next_opening_looks_400_days_ahead() -> None:
    near = hours({}, {"2027-01-20": ["09:00-10:00"]})  # 384 days after 2026-01-01
    far = hours({}, {"2027-03-01": ["09:00-10:00"]})  # 424 days after
    assert near.next_opening(chicago(2026, 1, 1, 0, 0)) == utc(2027, 1, 20, 15, 0)
    assert far.next_opening(chicago(2026, 1, 1, 0, 0)) is None


# --- holidays ------------------------------------------------------------------------


def test_closed_holiday_cancels_that_days_hours() -> None:
    schedule = example()
    assert not schedule.is_open(chicago(2026, 12, 25, 23, 0))  # Friday, no overnight shift
    assert schedule.next_opening(chicago(2026, 12, 24, 14, 0)) == utc(2026, 12, 27, 6, 0)


def test_holiday_special_hours_replace_weekly_hours() -> None:
    schedule = example()
    assert schedule.next_opening(chicago(2026, 12, 24, 8, 0)) == utc(2026, 12, 24, 15, 0)
    assert schedule.current_closing(chicago(2026, 12, 24, 10, 0)) == utc(2026, 12, 24, 19, 0)
    monday = hours(OFFICE, {"2026-12-28": ["10:00-11:00"]})
    assert not monday.is_open(chicago(2026, 12, 28, 9, 30))
    assert monday.is_open(chicago(2026, 12, 28, 10, 30))
    assert not monday.is_open(chicago(2026, 12, 28, 14, 0))


def test_overnight_interval_from_day_before_runs_into_holiday() -> None:
    schedule = hours(EXAMPLE_WEEK, {"2026-12-26": []})  # Saturday
    assert schedule.is_open(chicago(2026, 12, 26, 1, 0))
    assert schedule.current_closing(chicago(2026, 12, 26, 1, 0)) == utc(2026, 12, 26, 8, 0)


# --- daylight saving time --------------------------------------------------------------


def test_next_opening_across_dst_and_holiday() -> None:
    # Friday after work -> weekend with spring forward -> Monday holiday -> Tuesday 09:00 CDT.
    schedule = hours(OFFICE, {"2026-03-09": []})
    opening = schedule.next_opening(chicago(2026, 3, 6, 18, 0))
    assert in_utc(opening) == utc(2026, 3, 10, 14, 0)
    assert opening is not None and opening.utcoffset() == timedelta(hours=-5)
    assert (opening.day, opening.hour, opening.minute) == (10, 9, 0)


def test_next_opening_across_fall_back_and_holiday() -> None:
    schedule = hours(OFFICE, {"2026-11-02": []})
    opening = schedule.next_opening(chicago(2026, 10, 30, 18, 0))
    assert in_utc(opening) == utc(2026, 11, 3, 15, 0)  # Tuesday 09:00 CST
    assert opening is not None and opening.utcoffset() == timedelta(hours=-6)


def test_next_opening_across_madrid_dst_and_holiday() -> None:
    schedule = hours(OFFICE, {"2026-03-30": []}, timezone="Europe/Madrid")
    opening = schedule.next_opening(datetime(2026, 3, 27, 18, 0, tzinfo=MADRID))
    assert in_utc(opening) == utc(2026, 3, 31, 7, 0)  # Tuesday 09:00 CEST
    assert opening is not None and opening.tzinfo is MADRID
    assert schedule.timezone is MADRID


def test_spring_forward_gap_opening_moves_to_gap_end() -> None:
    schedule = hours({"sunday": ["02:30-05:00"]})  # 02:00-03:00 does not exist on 2026-03-08
    opening = schedule.next_opening(chicago(2026, 3, 7, 12, 0))
    assert in_utc(opening) == utc(2026, 3, 8, 8, 0)
    assert opening is not None and (opening.hour, opening.minute) == (3, 0)
    assert not schedule.is_open(utc(2026, 3, 8, 7, 59))  # 01:59 CST


def test_interval_inside_spring_forward_gap_never_opens() -> None:
    schedule = hours({"sunday": ["02:00-02:45"], "monday": ["09:00-10:00"]})
    assert in_utc(schedule.next_opening(chicago(2026, 3, 7, 12, 0))) == utc(2026, 3, 9, 14, 0)


def test_fall_back_ambiguous_start_is_first_occurrence() -> None:
    schedule = hours({"sunday": ["01:30-04:00"]})
    opening = schedule.next_opening(chicago(2026, 10, 31, 12, 0))
    assert in_utc(opening) == utc(2026, 11, 1, 6, 30)  # 01:30 CDT, not 01:30 CST
    assert opening is not None and opening.fold == 0
    assert opening.utcoffset() == timedelta(hours=-5)


def test_fall_back_ambiguous_end_is_first_occurrence() -> None:
    schedule = hours({"sunday": ["00:00-01:30"]})
    assert in_utc(schedule.current_closing(chicago(2026, 11, 1, 0, 10))) == utc(2026, 11, 1, 6, 30)
    assert schedule.is_open(utc(2026, 11, 1, 6, 15))  # 01:15 CDT
    assert not schedule.is_open(utc(2026, 11, 1, 7, 15))  # 01:15 CST, the repeat


def test_overnight_interval_across_spring_forward_is_one_hour_shorter() -> None:
    schedule = hours({"saturday": ["22:00-06:00"]})
    opening = schedule.next_opening(chicago(2026, 3, 7, 12, 0))
    assert in_utc(opening) == utc(2026, 3, 8, 4, 0)
    closing = schedule.current_closing(opening)
    assert in_utc(closing) == utc(2026, 3, 8, 11, 0)
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=7)


def test_overnight_interval_across_fall_back_is_one_hour_longer() -> None:
    schedule = hours({"saturday": ["22:00-06:00"]})
    opening = schedule.next_opening(chicago(2026, 10, 31, 12, 0))
    assert in_utc(opening) == utc(2026, 11, 1, 3, 0)
    closing = schedule.current_closing(opening)
    assert in_utc(closing) == utc(2026, 11, 1, 12, 0)
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=9)
    assert schedule.is_open(utc(2026, 11, 1, 7, 30))  # 01:30 CST, second time round


def test_madrid_overnight_interval_across_spring_forward_is_one_hour_shorter() -> None:
    schedule = hours({"saturday": ["22:00-06:00"]}, timezone="Europe/Madrid")
    opening = schedule.next_opening(datetime(2026, 3, 28, 12, 0, tzinfo=MADRID))
    assert in_utc(opening) == utc(2026, 3, 28, 21, 0)
    closing = schedule.current_closing(opening)
    assert in_utc(closing) == utc(2026, 3, 29, 4, 0)
    assert closing.astimezone(UTC) - opening.astimezone(UTC) == timedelta(hours=7)


def test_madrid_fall_back_ambiguous_start_is_first_occurrence() -> None:
    schedule = hours({"sunday": ["02:30-04:00"]}, timezone="Europe/Madrid")
    opening = schedule.next_opening(datetime(2026, 10, 24, 12, 0, tzinfo=MADRID))
    assert in_utc(opening) == utc(2026, 10, 25, 0, 30)  # 02:30 CEST


# --- the opening staff are in now, and the closing before it ---------------------------


def test_opening_of_is_the_start_of_the_current_open_period() -> None:
    schedule = example()
    # Monday 2026-01-05: 09:00-12:00 and 13:00-17:00.
    assert in_utc(schedule.opening_of(chicago(2026, 1, 5, 9, 0))) == utc(2026, 1, 5, 15, 0)
    assert in_utc(schedule.opening_of(chicago(2026, 1, 5, 11, 59))) == utc(2026, 1, 5, 15, 0)
    assert schedule.opening_of(chicago(2026, 1, 5, 12, 30)) is None  # lunch: closed
    assert in_utc(schedule.opening_of(chicago(2026, 1, 5, 13, 30))) == utc(2026, 1, 5, 19, 0)
    assert schedule.opening_of(chicago(2026, 1, 5, 17, 0)) is None


def test_opening_of_an_overnight_shift_is_the_evening_before() -> None:
    # Friday 2026-01-09 22:00 to Saturday 02:00.
    assert in_utc(example().opening_of(chicago(2026, 1, 10, 1, 30))) == utc(2026, 1, 10, 4, 0)


def test_opening_of_a_period_open_for_days_looks_back_far_enough() -> None:
    # Open from Friday 09:00 round the clock to the next Thursday 17:00.
    long = {day: ["00:00-24:00"] for day in ("saturday", "sunday", "monday", "tuesday",
                                            "wednesday")}
    schedule = hours({**long, "friday": ["09:00-24:00"], "thursday": ["00:00-17:00"]})
    assert in_utc(schedule.opening_of(chicago(2026, 1, 14, 12, 0))) == utc(2026, 1, 9, 15, 0)


def test_always_open_has_no_opening() -> None:
    always = hours({day: ["00:00-24:00"] for day in ("monday", "tuesday", "wednesday",
                                                    "thursday", "friday", "saturday",
                                                    "sunday")})
    assert always.is_open(chicago(2026, 1, 5, 12, 0))
    assert always.opening_of(chicago(2026, 1, 5, 12, 0)) is None


def test_opening_of_after_spring_forward_is_nine_local() -> None:
    schedule = hours(OFFICE)
    assert in_utc(schedule.opening_of(chicago(2026, 3, 9, 10, 0))) == utc(2026, 3, 9, 14, 0)


def test_last_closing_before_a_weekend_and_a_holiday() -> None:
    # Thursday 2026-12-24 closes at 17:00; Friday 25 is a holiday; Monday 28 opens at 09:00.
    schedule = hours(OFFICE, {"2026-12-25": []})
    opening = schedule.opening_of(chicago(2026, 12, 28, 9, 0))
    assert in_utc(opening) == utc(2026, 12, 28, 15, 0)
    assert opening is not None
    assert in_utc(schedule.last_closing(opening)) == utc(2026, 12, 24, 23, 0)
    # During hours the last closing is yesterday's; a closing exactly now counts.
    assert in_utc(schedule.last_closing(chicago(2026, 12, 24, 12, 0))) == utc(2026, 12, 23,
                                                                               23, 0)
    assert in_utc(schedule.last_closing(chicago(2026, 12, 24, 17, 0))) == utc(2026, 12, 24,
                                                                               23, 0)


def test_last_closing_across_fall_back() -> None:
    schedule = hours(OFFICE)
    # Friday 2026-10-30 17:00 CDT (22:00 UTC); Monday 2026-11-02 opens at 09:00 CST.
    assert in_utc(schedule.last_closing(chicago(2026, 11, 2, 9, 0))) == utc(2026, 10, 30, 22, 0)


def test_nothing_closed_within_the_horizon() -> None:
    assert hours({}).last_closing(chicago(2026, 1, 5, 12, 0)) is None


# --- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("timezone", "weekly", "holidays", "message"),
    [
        ("Mars/Olympus", {}, {}, "hours.timezone: unknown IANA time zone 'Mars/Olympus'"),
        ("", {}, {}, "hours.timezone: unknown IANA time zone ''"),
        (
            "America/Chicago",
            {"monday": ["09:00-12:00", "13:00-1700"]},
            {},
            "hours.monday[1]: expected \"HH:MM-HH:MM\", got '13:00-1700'",
        ),
        (
            "America/Chicago",
            {"tuesday": ["9:00-17:00"]},
            {},
            "hours.tuesday[0]: expected \"HH:MM-HH:MM\", got '9:00-17:00'",
        ),
        (
            "America/Chicago",
            {"tuesday": ["٠٩:٠٠-١٧:٠٠"]},  # Arabic-Indic digits match \d, not [0-9]
            {},
            "hours.tuesday[0]: expected \"HH:MM-HH:MM\", got '٠٩:٠٠-١٧:٠٠'",
        ),
        (
            "America/Chicago",
            {"monday": ["09:60-10:00"]},
            {},
            "hours.monday[0]: no such time in '09:60-10:00' (00:00 to 23:59, or 24:00 as an end)",
        ),
        (
            "America/Chicago",
            {"monday": ["24:00-02:00"]},
            {},
            "hours.monday[0]: no such time in '24:00-02:00' (00:00 to 23:59, or 24:00 as an end)",
        ),
        (
            "America/Chicago",
            {"monday": ["23:00-24:30"]},
            {},
            "hours.monday[0]: no such time in '23:00-24:30' (00:00 to 23:59, or 24:00 as an end)",
        ),
        (
            "America/Chicago",
            {"monday": ["09:00-09:00"]},
            {},
            "hours.monday[0]: start equals end in '09:00-09:00' (use 00:00-24:00 for all day)",
        ),
        (
            "America/Chicago",
            {"monday": "09:00-17:00"},
            {},
            'hours.monday: must be a list of "HH:MM-HH:MM" strings',
        ),
        (
            "America/Chicago",
            {"funday": []},
            {},
            "hours.funday: unknown weekday (use monday..sunday)",
        ),
        (
            "America/Chicago",
            {"Monday": []},
            {},
            "hours.Monday: unknown weekday (use monday..sunday)",
        ),
        (
            "America/Chicago",
            {},
            {"2026-02-30": []},
            "hours.holidays.2026-02-30: holiday must be a real date written YYYY-MM-DD",
        ),
        (
            "America/Chicago",
            {},
            {"20261225": []},
            "hours.holidays.20261225: holiday must be a real date written YYYY-MM-DD",
        ),
        (
            "America/Chicago",
            {},
            {"2026-12-24": ["09:00-13:00", "noon"]},
            "hours.holidays.2026-12-24[1]: expected \"HH:MM-HH:MM\", got 'noon'",
        ),
    ],
)
def test_bad_config_names_key(
    timezone: str,
    weekly: Mapping[str, Sequence[str]],
    holidays: Mapping[str, Sequence[str]],
    message: str,
) -> None:
    with pytest.raises(HoursError) as caught:
        BusinessHours.from_config(timezone, weekly, holidays)
    assert str(caught.value) == message
    assert caught.value.key == message.split(": ", 1)[0]


def test_bad_interval_names_key() -> None:
    with pytest.raises(HoursError) as caught:
        hours({"monday": ["09:00-12:00", "13:00-25:00"]})
    assert isinstance(caught.value, ValueError)
    assert caught.value.key == "hours.monday[1]"


# --- describing an opening -------------------------------------------------------------


@pytest.mark.parametrize(
    ("now", "opening", "english", "spanish"),
    [
        ((2026, 1, 5, 10, 0), (2026, 1, 5, 17, 0), "today at 5:00 PM", "hoy a las 17:00"),
        ((2026, 1, 5, 10, 0), (2026, 1, 6, 9, 0), "tomorrow at 9:00 AM", "mañana a las 9:00"),
        ((2026, 1, 7, 10, 0), (2026, 1, 12, 9, 0), "Monday at 9:00 AM", "el lunes a las 9:00"),
        ((2026, 1, 6, 10, 0), (2026, 1, 12, 9, 0), "Monday at 9:00 AM", "el lunes a las 9:00"),
        (
            (2025, 12, 29, 10, 0),
            (2026, 1, 5, 9, 0),
            "Monday, January 5 at 9:00 AM",
            "el lunes 5 de enero a las 9:00",
        ),
        ((2026, 1, 7, 10, 0), (2026, 1, 10, 1, 0), "Saturday at 1:00 AM", "el sabado a la 1:00"),
        ((2026, 1, 7, 10, 0), (2026, 1, 10, 13, 0), "Saturday at 1:00 PM", "el sabado a las 13:00"),
        (
            (2026, 1, 12, 10, 0),
            (2026, 1, 14, 0, 30),
            "Wednesday at 12:30 AM",
            "el miércoles a las 0:30",
        ),
        (
            (2026, 9, 1, 10, 0),
            (2026, 9, 30, 12, 0),
            "Wednesday, September 30 at 12:00 PM",
            "el miércoles 30 de septiembre a las 12:00",
        ),
    ],
)
def test_describe_opening_exact_text(
    now: tuple[int, ...], opening: tuple[int, ...], english: str, spanish: str
) -> None:
    assert describe_opening(chicago(*opening), chicago(*now), "en") == english
    assert describe_opening(chicago(*opening), chicago(*now), "es") == spanish


def test_describe_opening_spanish_tomorrow() -> None:
    assert describe_opening(chicago(2026, 1, 6, 9, 0), chicago(2026, 1, 5, 22, 0), "es") == (
        "mañana a las 9:00"
    )


def test_describe_opening_today_and_tomorrow_use_local_dates_not_utc() -> None:
    now = utc(2026, 1, 6, 3, 0)  # already Tuesday in UTC, still Monday 21:00 in Chicago
    assert describe_opening(chicago(2026, 1, 6, 9, 0), now, "en") == "tomorrow at 9:00 AM"
    assert describe_opening(chicago(2026, 1, 5, 23, 0), now, "en") == "today at 11:00 PM"


def test_describe_opening_uses_openings_own_timezone() -> None:
    opening = datetime(2026, 3, 31, 9, 0, tzinfo=MADRID)
    now = chicago(2026, 3, 30, 18, 0)  # already Tuesday 01:00 in Madrid
    assert describe_opening(opening, now, "es") == "hoy a las 9:00"


def test_describe_opening_output_is_plain_gsm7() -> None:
    text = describe_opening(chicago(2026, 1, 10, 17, 0), chicago(2026, 1, 7, 10, 0), "en")
    assert text == "Saturday at 5:00 PM"  # babel's U+202F before PM became a plain space
    spanish = describe_opening(chicago(2026, 1, 10, 17, 0), chicago(2026, 1, 7, 10, 0), "es")
    for reply in (text, spanish):
        Codec().encode(reply)  # raises UnicodeEncodeError on anything outside GSM-7


def test_describe_opening_accepts_language_enum() -> None:
    opening, now = chicago(2026, 1, 6, 9, 0), chicago(2026, 1, 5, 10, 0)
    assert describe_opening(opening, now, Language.ES) == "mañana a las 9:00"


def test_describe_opening_rejects_unknown_language() -> None:
    with pytest.raises(ValueError, match="unsupported language 'fr'"):
        describe_opening(chicago(2026, 1, 6, 9, 0), chicago(2026, 1, 5, 10, 0), "fr")




def test_the_coming_week_in_words_marks_holidays_and_overnight_hours():
    hours = BusinessHours.from_config(
        "America/Chicago",
        {"monday": ["09:00-17:00"], "tuesday": ["09:00-12:00", "13:00-17:00"],
         "wednesday": ["22:00-02:00"], "thursday": ["09:00-17:00"],
         "friday": ["00:00-24:00"]},
        {"2026-12-24": ["09:00-12:00"], "2026-12-25": []},
    )
    monday = datetime(2026, 12, 21, 15, 0, tzinfo=UTC)
    assert describe_week(hours, monday) == [
        "Mon 21 Dec: 09:00-17:00",
        "Tue 22 Dec: 09:00-12:00, 13:00-17:00",
        "Wed 23 Dec: 22:00-02:00 next day",
        "Thu 24 Dec: 09:00-12:00 (holiday hours)",
        "Fri 25 Dec: closed (holiday)",
        "Sat 26 Dec: closed",
        "Sun 27 Dec: closed",
    ]


def test_the_next_daylight_saving_change_is_found_to_the_second():
    zone = ZoneInfo("America/Chicago")
    moment, shift = next_offset_change(zone, datetime(2026, 12, 1, tzinfo=UTC))
    assert (moment.replace(tzinfo=None), shift) == (datetime(2027, 3, 14, 3, 0),
                                                   timedelta(hours=1))
    moment, shift = next_offset_change(zone, datetime(2027, 6, 1, tzinfo=UTC))
    assert (moment.replace(tzinfo=None), shift) == (datetime(2027, 11, 7, 1, 0),
                                                   timedelta(hours=-1))
    assert next_offset_change(ZoneInfo("UTC"), datetime(2026, 12, 1, tzinfo=UTC)) is None
