"""Read and rewrite the trace context of an encoded request, for a router that traces.

A sentinel routes envelopes without decoding their frames
(:class:`~._schema.RoutingHeader`). When it traces, it reads the request's
``trace`` (:func:`request_trace`) to open its route span in the caller's
trace, and writes its own span into the request it forwards
(:func:`retrace`) so the callee's span is the route span's child. A
``traceparent`` has a fixed length and is the request's last element but
``batch`` (which a request of an older caller lacks), so the rewrite
replaces its 55 bytes in place: the frame is not re-encoded and the
envelope keeps its size.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from .._core._errors import WireError
from .._core._tracing import TRACEPARENT_LENGTH
from ._schema import RoutingHeader, TraceParent

__all__ = ["request_trace", "retrace"]


class _TracedRequest(msgspec.Struct, array_like=True, frozen=True, tag="req"):
    """A :class:`~._schema.Request` with its arguments left undecoded."""

    op: str
    args: msgspec.Raw = msgspec.Raw(b"")
    stream: bool = False
    credit: int = 0
    timeout_ms: Any = None
    credit_bytes: Any = None
    request_id: Any = None
    once: Any = False
    trace: TraceParent | None = None
    batch: Any = 0


_decoder = msgspec.msgpack.Decoder(_TracedRequest)
_encoder = msgspec.msgpack.Encoder()

_REQUEST_ARRAY: Final = 0x9B
"""msgpack fixarray of 11: the tag and the ten fields, ``trace`` then ``batch``."""

_OLDER_REQUEST_ARRAY: Final = 0x9A
"""msgpack fixarray of 10 (a caller from before ``batch``): ``trace`` last."""

_ENCODED_LENGTH: Final = 2 + TRACEPARENT_LENGTH
"""A traceparent encodes as a msgpack str8: ``0xd9``, the length, the characters."""


def request_trace(frame: msgspec.Raw) -> tuple[str, str | None]:
    """The operation and ``traceparent`` (or ``None``) of an undecoded request frame.

    Raises :class:`fame.WireError` for a malformed request (a bad ``trace`` too).
    """
    try:
        request = _decoder.decode(frame)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WireError(f"malformed request: {exc}") from None
    return request.op, request.trace


def retrace(data: bytes, head: RoutingHeader, traceparent: str) -> bytes:
    """The encoded envelope ``data`` with its request's ``trace`` replaced by ``traceparent``.

    ``data`` must carry a request whose ``trace`` is set (:func:`request_trace`).
    Returns ``data`` unchanged when its encoding is not the one this
    code writes (a peer may encode integers or strings in longer forms than
    needed): the callee's span then hangs off the caller's span instead.
    """
    frame = bytes(head.frame)
    prefix = b"".join(
        (data[:4], _encoder.encode(head.to), _encoder.encode(head.id))
    )  # array, tag "e", hops, to, id: the frame follows
    start = len(prefix)
    end = start + len(frame)
    new = _encoder.encode(traceparent)
    tail = b""  # what follows the trace in the frame: the encoded batch
    if frame[:1] == bytes((_REQUEST_ARRAY,)):
        try:
            tail = _encoder.encode(_decoder.decode(frame).batch)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, TypeError):
            return data
    elif frame[:1] != bytes((_OLDER_REQUEST_ARRAY,)):
        return data
    trace_end = end - len(tail)
    if (
        len(new) != _ENCODED_LENGTH
        or len(frame) < _ENCODED_LENGTH + len(tail)
        or not data.startswith(prefix)
        or data[start:end] != frame
        or not frame.endswith(tail)
        or data[trace_end - _ENCODED_LENGTH : trace_end - TRACEPARENT_LENGTH] != new[:2]
    ):
        return data
    return b"".join((data[: trace_end - _ENCODED_LENGTH], new, data[trace_end:]))
