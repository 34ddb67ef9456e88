"""The weekly rotation on its own: who is on call at a moment, and when the next handover is.

Chicago falls back on Sunday 2026-11-01 and springs forward on Sunday 2027-03-14, so the
Monday handovers on either side of those dates are 7 days plus or minus one hour apart in
real time. The handover must stay at 09:00 on the wall clock all the same.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

from bot.rota import Rota

CHICAGO = ZoneInfo("America/Chicago")
TEAM = ("alice", "bob", "carol")
FIRST_MONDAY = date(2026, 10, 5)  # alice's first week; bob from Oct 12, carol from Oct 19, ...
WINTER_MONDAY = date(2026, 11, 30)  # the same, starting in standard time


def rota(
    rotation: tuple[str, ...] = TEAM,
    handover: str = "monday 09:00",
    start: date = FIRST_MONDAY,
) -> Rota:
    return Rota.from_config(rotation, handover, "dave", start, CHICAGO)


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    """A Chicago wall time (none used here is ambiguous or skipped)."""
    return datetime(year, month, day, hour, minute, tzinfo=CHICAGO)


def test_from_config_reads_the_handover_and_keeps_the_rest():
    r = Rota.from_config(TEAM, "friday 17:30", "dave", FIRST_MONDAY, CHICAGO)
    assert (r.handover_weekday, r.handover_time) == (4, time(17, 30))
    assert (r.rotation, r.backup, r.start, r.zone) == (TEAM, "dave", FIRST_MONDAY, CHICAGO)


def test_members_take_weekly_turns_in_listed_order():
    r = rota()
    turns = [r.scheduled(local(2026, 10, 5 + 7 * week, 9)) for week in range(4)]
    assert turns == ["alice", "bob", "carol", "alice"]


def test_the_turn_lasts_the_whole_week_until_the_handover():
    r = rota()
    assert r.scheduled(local(2026, 10, 8, 23, 59)) == "alice"  # Thursday night
    assert r.scheduled(local(2026, 10, 11, 12)) == "alice"  # Sunday
    assert r.scheduled(local(2026, 10, 12, 8, 59)) == "alice"  # Monday before 09:00
    assert r.scheduled(local(2026, 10, 12, 9)) == "bob"


def test_scheduled_accepts_any_time_zone():
    r = rota()
    assert r.scheduled(datetime(2026, 10, 12, 13, 59, tzinfo=UTC)) == "alice"  # 08:59 CDT
    assert r.scheduled(datetime(2026, 10, 12, 14, 0, tzinfo=UTC)) == "bob"  # 09:00 CDT


def test_handover_stays_at_nine_local_after_fall_back():
    r = rota()
    # Oct 26 (CDT) alice; Monday Nov 2 (CST) bob takes over at 09:00 CST = 15:00 UTC.
    assert r.scheduled(local(2026, 11, 2, 8, 59)) == "alice"
    assert r.scheduled(local(2026, 11, 2, 9, 0)) == "bob"
    # Exactly one week of real time after the Oct 26 handover it is only 08:00 local.
    assert r.scheduled(datetime(2026, 11, 2, 14, 30, tzinfo=UTC)) == "alice"
    assert r.scheduled(datetime(2026, 11, 2, 15, 0, tzinfo=UTC)) == "bob"


def test_handover_stays_at_nine_local_after_spring_forward():
    r = rota(start=WINTER_MONDAY)  # anchored in standard time this time
    # Mar 8 2027 (CST) carol, 14 weeks on; Monday Mar 15 (CDT) alice at 09:00 CDT = 14:00 UTC.
    assert r.scheduled(local(2027, 3, 8, 9)) == "carol"
    assert r.scheduled(local(2027, 3, 15, 8, 59)) == "carol"
    assert r.scheduled(local(2027, 3, 15, 9, 0)) == "alice"
    # Exactly one week of real time after the Mar 8 handover (15:00 UTC) it is 10:00 local.
    assert r.scheduled(datetime(2027, 3, 15, 13, 59, tzinfo=UTC)) == "carol"
    assert r.scheduled(datetime(2027, 3, 15, 14, 30, tzinfo=UTC)) == "alice"


def test_start_on_a_handover_day_hands_over_that_day():
    r = rota(rotation=("alice", "bob"), start=date(2026, 11, 30))  # a Monday
    assert r.first_handover() == datetime(2026, 11, 30, 9, 0)
    assert r.scheduled(local(2026, 11, 30, 9)) == "alice"
    assert r.scheduled(local(2026, 11, 30, 8, 59)) == "bob"  # still the week before


def test_start_on_another_weekday_means_the_first_handover_after_it():
    r = rota(rotation=("alice", "bob"), start=date(2026, 12, 2))  # a Wednesday
    assert r.first_handover() == datetime(2026, 12, 7, 9, 0)
    assert r.scheduled(local(2026, 12, 7, 8, 59)) == "bob"
    assert r.scheduled(local(2026, 12, 7, 9)) == "alice"
    assert r.scheduled(local(2026, 12, 14, 9)) == "bob"


def test_handover_on_another_day_and_time():
    r = rota(handover="friday 17:30")  # first handover Friday 2026-10-09 17:30
    assert r.scheduled(local(2026, 10, 9, 17, 29)) == "carol"
    assert r.scheduled(local(2026, 10, 9, 17, 30)) == "alice"
    assert r.scheduled(local(2026, 10, 16, 17, 30)) == "bob"


def test_empty_rotation_has_nobody_on_call():
    assert rota(rotation=()).scheduled(local(2026, 11, 30, 10)) is None


def test_next_handover_is_the_coming_one_at_nine_local():
    r = rota()
    assert r.next_handover(local(2026, 10, 7, 12)) == local(2026, 10, 12, 9)
    # At the handover itself, the next one is a week on.
    assert r.next_handover(local(2026, 10, 12, 9)) == local(2026, 10, 19, 9)
    assert r.next_handover(local(2026, 10, 12, 8, 59)) == local(2026, 10, 12, 9)


def test_next_handover_across_daylight_saving_changes():
    r = rota()
    following = r.next_handover(local(2026, 10, 29, 12))  # Thursday before fall back
    assert following.astimezone(UTC) == datetime(2026, 11, 2, 15, 0, tzinfo=UTC)  # 09:00 CST
    assert following.utcoffset() == local(2026, 11, 2, 9).utcoffset()
    following = rota(start=WINTER_MONDAY).next_handover(local(2027, 3, 11, 12))
    assert following.astimezone(UTC) == datetime(2027, 3, 15, 14, 0, tzinfo=UTC)  # 09:00 CDT
    assert following.utcoffset() == local(2027, 3, 15, 9).utcoffset()
