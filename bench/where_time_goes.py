"""Where a service's CPU goes, per request, from py-spy's collapsed stacks.

    .venv/bin/python -m bench.inbound --setups sqlite --clocks closed --profile /tmp/prof
    .venv/bin/python -m bench.where_time_goes /tmp/prof/sqlite-closed-p0.txt --requests 20000

Each sample is put in one part: first by what it serves (the outbox worker sending
replies), else by its innermost frame that names a part (a sample in hmac under the
signature check is the signature's; one in SQLAlchemy under a commit is the commit's).
With --requests (the timed webhooks) and --cpu-us (the service's measured CPU per request),
each part is also given in microseconds per request, as its share of the measured CPU.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# Parts a sample belongs to wholly, by any frame on its stack.
CONTEXTS = (
    ("outbox worker (sends replies)", ("OutboxWorker.", "TwilioSender.", "twilio/rest/",
                                       "twilio/http/")),
)
# Parts by the innermost frame that matches, searched from the leaf out.
PARTS = (
    ("logging", ("logging/__init__.py", "bot/logs.py", "after_commit.py", "json/")),
    ("signature", ("twilio/request_validator.py", "_check_signature", "hmac.py")),
    ("crypto", ("bot/crypto.py", "cryptography/")),
    ("business hours", ("bot/hours.py", "handlers/replies.py", "babel/")),
    ("commit", ("SessionTransaction.commit", "do_commit", "_commit_impl", "_on_begin",
                "_checkpoint", "Session.close", "_connection_for_bind", "pool/")),
    ("SQL", ("bot/storage/", "sqlalchemy/", "sqlite3/")),
    ("parsing", ("twilio_form.py", "urllib/parse.py", "multidict/", "http_parser.py",
                 "web_request.py", "parse_inbound")),
    ("handlers", ("handlers/", "bot/intake.py", "bot/channels/", "bot/notify.py")),
    ("HTTP (aiohttp)", ("aiohttp/",)),
    ("event loop", ("asyncio/", "selectors.py", "concurrent/", "threading.py")),
)
OTHER = "other"


def part_of(frames: Sequence[str]) -> str:
    for name, needles in CONTEXTS:
        if any(needle in frame for frame in frames for needle in needles):
            return name
    for frame in reversed(frames):
        for name, needles in PARTS:
            if any(needle in frame for needle in needles):
                return name
    return OTHER


def tally(path: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per part, and per thread (py-spy --threads puts the thread first)."""
    parts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = frames[0].partition(": ")[2] if frames[0].startswith("thread ") else ""
        threads[thread or "?"] += int(count)
        # Samples of a thread waiting in epoll are the loop idling, not CPU.
        if "EpollSelector.select" in frames[-1]:
            parts["(idle in epoll)"] += int(count)
            continue
        parts[part_of(frames[1:] if thread else frames)] += int(count)
    return parts, threads


def table(parts: Counter[str], requests: int | None, cpu_us: float | None) -> list[str]:
    busy = sum(n for name, n in parts.items() if not name.startswith("("))
    lines = ["| part | share of CPU samples |" + (" us per request |" if cpu_us else ""),
             "| --- | --- |" + (" --- |" if cpu_us else "")]
    for name, n in parts.most_common():
        if name.startswith("("):
            continue
        share = n / busy if busy else 0.0
        us = f" {share * cpu_us:.0f} |" if cpu_us else ""
        lines.append(f"| {name} | {100 * share:.1f}% |{us}")
    idle = parts.get("(idle in epoll)", 0)
    lines.append(f"({busy} samples busy, {idle} idle in epoll"
                 + (f", {requests} requests" if requests else "") + ")")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", type=Path, nargs="+", help="py-spy --format raw output")
    parser.add_argument("--requests", type=int, help="webhooks in the recorded batch")
    parser.add_argument("--cpu-us", type=float, help="measured service CPU per request")
    args = parser.parse_args(argv)
    parts: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    for path in args.files:
        p, t = tally(path)
        parts.update(p)
        threads.update(t)
    print("\n".join(table(parts, args.requests, args.cpu_us)))
    print("samples by thread: " + ", ".join(f"{name} {n}" for name, n in threads.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
