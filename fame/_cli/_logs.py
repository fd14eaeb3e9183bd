"""Where the command-line programs send fame's log records.

The library only logs; a program decides where the records go. The
programs write each record as one plain line on stderr, warnings and
errors only, and with ``FAME_SHOW_ENVELOPES=1`` (or ``fame-client
--verbose``) also the ``fame.trace`` records: one line per envelope sent,
received or routed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from fame.lowlevel import TRACE_LOGGER

from ._settings import flag_setting

__all__ = ["configure_logging"]


def configure_logging(settings: Mapping[str, str], *, show_envelopes: bool = False) -> None:
    """Log warnings to stderr, plus the envelope trace if asked for.

    A bad ``FAME_SHOW_ENVELOPES`` raises :class:`~fame._cli._settings.SettingError`.
    Records of the trace logger reach the handler because propagation checks
    handler levels only, so the other loggers stay at ``WARNING``.
    """
    show_envelopes = show_envelopes or flag_setting(settings, "FAME_SHOW_ENVELOPES")
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    if show_envelopes:
        logging.getLogger(TRACE_LOGGER).setLevel(logging.DEBUG)
