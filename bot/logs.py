"""Structured logs, one JSON object per line.

Logs never hold message text, addresses or names. Our own loggers (bot.*, handlers.*,
schedules.*) log event names and ids only. Every other logger belongs to a library, and a
library logs whatever it holds: PTB logs a getUpdates batch it cannot parse at CRITICAL and
every request's parameters at DEBUG, twilio logs each request's body at INFO, httpx logs URLs
(which for Telegram contain the bot token), asyncio logs a failed task's repr and traceback.
So a library's record is redacted where it is made, at every level: it keeps its logger's
name, its level and, for an exception, the exception's type name, and nothing else.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else came from `extra=` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
OWN_LOGGERS = ("bot", "handlers", "schedules")
# Held at WARNING for quiet, not for privacy: their records are redacted at any level.
QUIET_LOGGERS = ("twilio", "httpx", "httpcore", "telegram", "aiohttp.access", "apscheduler")
REDACTED_EVENT = "library_record_redacted"
# Set on a redacted record; `extra=` cannot overwrite it (Logger.makeRecord refuses to).
EXCEPTION_TYPE = "exception_type"


def is_own_logger(name: str | None) -> bool:
    return any(name == own or (name or "").startswith(own + ".") for own in OWN_LOGGERS)


class RedactingRecordFactory:
    """Builds every LogRecord in the process, and strips a library's record of its payload.

    Why a record factory: the record is redacted when it is made, before any logger, filter
    or handler sees it. A filter on a logger would not do: logger filters are not applied to
    records that propagate up from child loggers (a filter on "telegram" misses
    "telegram.Bot"). A filter on our handler would only guard that handler, and a record
    reaches every handler on its way up, including ones added by others (aiohttp's run_app
    adds one to its access log in debug mode; pytest adds its own). One gap is left: `extra=`
    fields are set on the record after the factory has made it, so JsonFormatter drops those
    (and redacts again, for a record built by hand without the factory).
    """

    def __init__(self, make: Any) -> None:
        self.make = make  # the factory that was in place before; it still builds the record

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.make(*args, **kwargs)
        if not is_own_logger(record.name):
            exception = _exception_type(record)
            record.msg = REDACTED_EVENT
            record.args = ()
            record.exc_info = None
            record.exc_text = None
            record.stack_info = None
            if exception is not None:
                setattr(record, EXCEPTION_TYPE, exception)
        return record


def _exception_type(record: logging.LogRecord) -> str | None:
    kept = getattr(record, EXCEPTION_TYPE, None)
    if isinstance(kept, str):
        return kept
    if isinstance(record.exc_info, tuple) and record.exc_info[0] is not None:
        return record.exc_info[0].__name__
    return None


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if is_own_logger(record.name):
            entry["event"] = record.getMessage()
            entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        else:
            entry["event"] = REDACTED_EVENT
        # The exception's type only: its message may quote data (SQL parameters).
        exception = _exception_type(record)
        if exception is not None:
            entry["exception"] = exception
        return json.dumps(entry, default=str)


def configure_logging(level: str = "INFO") -> None:
    """The one place logging is switched on, for `python -m bot run` and the tests alike."""
    factory = logging.getLogRecordFactory()
    if not isinstance(factory, RedactingRecordFactory):  # once, over whatever is in place
        logging.setLogRecordFactory(RedactingRecordFactory(factory))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
