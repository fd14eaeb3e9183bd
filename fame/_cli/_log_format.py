"""How a log record is written: a readable line, or one JSON object per line.

The readable form is ``TIME LEVEL LOGGER: MESSAGE``, one line per record;
what a record carries beyond one line (a traceback, a multi-line message)
follows on lines indented by two spaces, so that every record starts at
the left margin with its time and stays easy to tell apart and to grep.
The JSON form is for log collectors: one object per line with ``ts``,
``level``, ``logger`` and ``message``, the traceback as ``exception``, and
every ``extra`` field the call gave. Times are UTC, ISO 8601, milliseconds.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

__all__ = ["JsonFormatter", "TextFormatter", "iso_time"]

# The attributes every LogRecord has: whatever else a record carries came from ``extra``.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def iso_time(created: float) -> str:
    """``created`` (seconds since the epoch) as ``2026-12-03T07:34:24.123Z``."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """``TIME LEVEL LOGGER: MESSAGE``; further lines of the record indented."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{iso_time(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info).rstrip()}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info).rstrip()}"
        return text.replace("\n", "\n  ")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (``json`` escapes every newline)."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": iso_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in document:
                document[name] = value
        # A value JSON cannot hold is written as its text rather than losing the record.
        return json.dumps(document, default=str)
