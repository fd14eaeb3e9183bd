"""Where the command-line programs send fame's log records, and in what form.

The library only logs; a program decides where the records go. Every
program (``fame sentinel``, ``fame node``, the other ``fame`` commands and
``fame-client``) writes them on stderr, which ``fame up`` appends to
``run/<service>.log``:

==========================  ================================================
``FAME_LOG_FORMAT``         ``text`` (default): ``TIME LEVEL LOGGER: MESSAGE``;
                            ``json``: one JSON object per line
``FAME_LOG_LEVEL``          ``debug``, ``info`` (default), ``warning``,
                            ``error`` or ``critical``
``FAME_LOG_LEVELS``         per logger, e.g. ``fame.storage=debug,fame.uplink=error``
``FAME_SHOW_ENVELOPES``     ``1``: also one ``fame.trace`` line per envelope
==========================  ================================================

``fame-client`` logs warnings only unless ``FAME_LOG_LEVEL`` says otherwise:
its stderr is the person's. The envelope trace (``fame.trace``) stays off
at ``FAME_LOG_LEVEL=debug`` too, unless asked for, as it costs a line per
message. The programs' own status lines (``fame sentinel: listening on
...``) are written on stdout, as JSON objects too in the JSON format.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping

import attrs

from fame import lowlevel

from ._log_format import JsonFormatter, TextFormatter
from ._settings import SettingError, flag_setting

__all__ = ["LogSettings", "configure_logging", "log_settings", "say"]

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
FORMATS = ("text", "json")
_LEVEL_NAMES = ", ".join(LEVELS)


@attrs.frozen
class LogSettings:
    """The logging a program was asked for (see the table above)."""

    format: str = "text"
    level: int = logging.INFO
    levels: tuple[tuple[str, int], ...] = ()
    show_envelopes: bool = False


def _level(name: str, text: str) -> int:
    level = LEVELS.get(text.strip().lower())
    if level is None:
        raise SettingError(f"{name}: expected one of {_LEVEL_NAMES}, got {text.strip()[:40]!r}")
    return level


def _levels(text: str) -> tuple[tuple[str, int], ...]:
    pairs = []
    for item in text.replace(" ", ",").split(","):
        if not item:
            continue
        logger, sep, level = item.partition("=")
        if not sep or not logger.strip():
            raise SettingError(
                f"FAME_LOG_LEVELS: expected LOGGER=LEVEL pairs separated by commas"
                f" (e.g. fame.storage=debug; levels: {_LEVEL_NAMES}), got {item[:40]!r}"
            )
        pairs.append((logger.strip(), _level(f"FAME_LOG_LEVELS ({logger.strip()})", level)))
    return tuple(pairs)


def log_settings(
    settings: Mapping[str, str], *, show_envelopes: bool = False, default_level: str = "info"
) -> LogSettings:
    """Read ``FAME_LOG_*`` and ``FAME_SHOW_ENVELOPES``; :class:`SettingError` names a bad one."""
    fmt = settings.get("FAME_LOG_FORMAT", "").strip().lower() or "text"
    if fmt not in FORMATS:
        raise SettingError(
            f"FAME_LOG_FORMAT: expected text or json, got {settings['FAME_LOG_FORMAT'][:40]!r}"
        )
    level_text = settings.get("FAME_LOG_LEVEL", "").strip() or default_level
    return LogSettings(
        format=fmt,
        level=_level("FAME_LOG_LEVEL", level_text),
        levels=_levels(settings.get("FAME_LOG_LEVELS", "")),
        show_envelopes=show_envelopes or flag_setting(settings, "FAME_SHOW_ENVELOPES"),
    )


class _Handler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """The programs' handler: found again and replaced when logging is configured anew."""


_current = LogSettings()


def configure_logging(
    settings: Mapping[str, str], *, show_envelopes: bool = False, default_level: str = "info"
) -> LogSettings:
    """Send log records to stderr as ``settings`` ask; return what was configured.

    Checks every variable before changing anything, so a bad one
    (:class:`SettingError`) leaves the previous configuration in place.
    Called again (once the ``--config`` files are read), it replaces what
    it configured before.
    """
    global _current
    wanted = log_settings(settings, show_envelopes=show_envelopes, default_level=default_level)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(handler)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if wanted.format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(wanted.level)
    for name, _ in _current.levels:
        logging.getLogger(name).setLevel(logging.NOTSET)
    trace = logging.DEBUG if wanted.show_envelopes else max(wanted.level, logging.INFO)
    logging.getLogger(lowlevel.TRACE_LOGGER).setLevel(trace)
    for name, level in wanted.levels:
        logging.getLogger(name).setLevel(level)
    _current = wanted
    return wanted


def say(program: str, text: str) -> None:
    """Write a status line of ``program`` on stdout: ``fame node: serving ...``, or JSON."""
    if _current.format == "json":
        record = logging.LogRecord(
            f"fame.{program}", logging.INFO, "", 0, text, None, None, func=None
        )
        record.created = time.time()
        print(JsonFormatter().format(record), flush=True)
    else:
        print(f"fame {program}: {text}", flush=True)
