"""Envelope tracing: one ``DEBUG`` record per envelope on the ``fame.trace`` logger.

Each line says the direction (``send`` and ``recv`` on a node's link,
``route`` for what a sentinel forwards or delivers), the envelope id and
correlation id, from (the reply address), to, the frame type (with the
operation of a request) and the encoded size. Off unless ``fame.trace`` is
enabled for ``DEBUG``; callers ask :func:`tracing_enabled` once per link and
then skip even the call, so tracing off costs nothing. The command-line
programs turn it on for ``FAME_SHOW_ENVELOPES=1``; a program embedding fame
configures the logger like any other.
"""

from __future__ import annotations

import logging

from .._wire._schema import Envelope, Request

__all__ = ["TRACE_LOGGER", "show_envelope", "tracing_enabled"]

TRACE_LOGGER = "fame.trace"

log = logging.getLogger(TRACE_LOGGER)


def tracing_enabled() -> bool:
    """Whether the ``fame.trace`` logger takes ``DEBUG`` records (asked once per link)."""
    return log.isEnabledFor(logging.DEBUG)


def show_envelope(direction: str, envelope: Envelope, size: int) -> None:
    """Log the one-line trace of ``envelope``."""
    frame = envelope.frame
    kind = type(frame).__name__
    if isinstance(frame, Request):
        kind = f"Request {frame.op}{' stream' if frame.stream else ''}"
    log.debug(
        "fame %s id=%s corr=%s from=%s to=%s %s %dB",
        direction,
        envelope.id,
        envelope.corr,
        envelope.reply_to or "-",
        envelope.to,
        kind,
        size,
    )
