"""The writer's deadlines: a call still waiting at its timeout expires once, a call that
ended never does, and timeouts of different lengths keep their own order."""

from __future__ import annotations

import asyncio

from bot.storage.deadlines import Deadlines


async def test_each_waiting_call_expires_once_at_its_own_deadline() -> None:
    loop = asyncio.get_running_loop()
    expired: list[tuple[str, float]] = []
    start = loop.time()
    deadlines: Deadlines[str] = Deadlines(lambda call: expired.append((call, loop.time() - start)))
    futures = {name: loop.create_future() for name in ("slow-1", "ends", "short", "slow-2")}
    for name, timeout in (("slow-1", 0.3), ("ends", 0.3), ("short", 0.1), ("slow-2", 0.3)):
        deadlines.add(loop, futures[name], name, timeout)
    futures["ends"].set_result(None)
    await asyncio.sleep(0.5)
    assert [call for call, _ in expired] == ["short", "slow-1", "slow-2"]
    at = dict(expired)
    assert 0.1 <= at["short"] < 0.3
    assert at["slow-1"] >= 0.3 and at["slow-2"] >= 0.3
    deadlines.add(loop, loop.create_future(), "after", 0.05)  # a timer starts again
    await asyncio.sleep(0.2)
    assert expired[-1][0] == "after"


async def test_calls_that_ended_leave_and_cancel_stops_every_timer() -> None:
    loop = asyncio.get_running_loop()
    expired: list[int] = []
    deadlines: Deadlines[int] = Deadlines(expired.append)
    for call in range(1000):
        future = loop.create_future()
        deadlines.add(loop, future, call, 0.2)
        future.set_result(None)
    deadlines.add(loop, loop.create_future(), 1000, 0.2)
    assert len(deadlines._waiting[0.2]) == 1  # the ended calls left as new ones came
    deadlines.cancel()
    await asyncio.sleep(0.3)
    assert expired == []
