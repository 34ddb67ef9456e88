"""Structured logs, one JSON object per line.

Logs never hold message text, addresses or names: our own calls log event names and ids only,
and the libraries that would log request data (twilio logs every request's parameters at
INFO; httpx logs URLs, which for Telegram contain the bot token) are held at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
QUIET_LOGGERS = ("twilio", "httpx", "httpcore", "telegram", "aiohttp.access", "apscheduler")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its message may quote data (SQL parameters).
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str)


def quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()
