"""Exactly one reply, even across a crash (issue: hardening). See tests/crash_run.py."""

from __future__ import annotations

from pathlib import Path

from tests.crash_run import crash_run


async def test_sigkill_under_load_loses_nothing_and_doubles_no_first_reply(
    tmp_path: Path, database_url: str
):
    result = await crash_run(tmp_path, contacts=2000, database_url=database_url)
    assert result.answered_before_kill >= 1000
    assert result.lost == []
    assert result.missing == []
    assert result.doubled == []
