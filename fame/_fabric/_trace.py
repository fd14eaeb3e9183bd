"""Envelope tracing: ``FAME_SHOW_ENVELOPES=1`` prints one line per envelope.

Each line says the direction (``send`` and ``recv`` on a node's link,
``route`` for what a sentinel forwards or delivers), the envelope id and
correlation id, from (the reply address), to, the frame type (with the
operation of a request) and the encoded size. Off by default; when off,
the callers skip even the call, so tracing costs nothing.
"""

from __future__ import annotations

import os
import sys

from .._wire._schema import Envelope

__all__ = ["show_envelope", "tracing_enabled"]


def tracing_enabled() -> bool:
    """Whether ``FAME_SHOW_ENVELOPES`` asks for envelope lines (read once per link)."""
    return os.environ.get("FAME_SHOW_ENVELOPES", "") not in ("", "0")


def show_envelope(direction: str, envelope: Envelope, size: int) -> None:
    """Print the one-line trace of ``envelope`` to stderr."""
    frame = envelope.frame
    kind = type(frame).__name__
    if kind == "Request":
        kind = f"Request {frame.op}{' stream' if frame.stream else ''}"  # type: ignore[union-attr]
    print(
        f"fame {direction} id={envelope.id} corr={envelope.corr} "
        f"from={envelope.reply_to or '-'} to={envelope.to} {kind} {size}B",
        file=sys.stderr,
        flush=True,
    )
