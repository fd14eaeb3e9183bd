"""Deduplicated writes: the request ids a namespace has seen, and what it answered.

A caller that retries a write after losing the answer sends the same
request id again. The namespace keeps ``request id -> (time, answer)`` in
its own database (for the file profiles the ``fame_requests`` table, in the
same transaction as the write it answers), so a retry is not applied twice
and gets the original answer back, also after a restart.

The record is kept for a window bounded by time (:attr:`DedupeLimits.window`
seconds) and by count (:attr:`DedupeLimits.entries` per namespace, oldest
forgotten first). A retry that comes later than that is applied again.

An answer is stored as msgpack of one of the ``*Answer`` structs below. It
comes back from a file, so it is decoded against its type and checked: a
record that does not decode, or that answers another kind of write than the
retry's, fails that retry with a :class:`StorageError` and writes nothing.
"""

from __future__ import annotations

import math

import attrs
import msgspec

__all__ = [
    "MAX_REQUEST_ID_LENGTH",
    "PRUNE_STEP",
    "Answer",
    "DedupeLimits",
    "DeleteAnswer",
    "DeleteManyAnswer",
    "PutAnswer",
    "PutManyAnswer",
    "check_request_id",
    "decode_answer",
    "encode_answer",
]

MAX_REQUEST_ID_LENGTH = 512
"""Characters a request id may have, at most; it may come from a peer."""

PRUNE_STEP = 256
"""Records a write transaction forgets at most beyond the ones it adds.

Pruning is part of the transactions that record something (and of the
periodic purge), so its cost is bounded per transaction and no write ever
scans the whole table; a backlog (a lowered limit) shrinks by this many per
transaction.
"""

DEFAULT_WINDOW = 86_400.0
DEFAULT_ENTRIES = 100_000


def _check_window(_instance: object, _attribute: object, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"dedupe_window must be a number of seconds, got {value!r}")
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"dedupe_window must be a positive number of seconds, got {value!r}")


def _check_entries(_instance: object, _attribute: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"dedupe_entries must be a whole number >= 1, got {value!r}")


@attrs.frozen
class DedupeLimits:
    """How long, and how many, request ids a namespace remembers."""

    window: float = attrs.field(default=DEFAULT_WINDOW, validator=_check_window)
    entries: int = attrs.field(default=DEFAULT_ENTRIES, validator=_check_entries)


def check_request_id(request_id: object) -> str | None:
    """``request_id`` if it is ``None`` or a str of 1 to 512 characters, else ``ValueError``."""
    if request_id is None:
        return None
    if not isinstance(request_id, str):
        raise ValueError(f"a request id must be a str, not {type(request_id).__name__}")
    if not 0 < len(request_id) <= MAX_REQUEST_ID_LENGTH:
        raise ValueError(
            f"a request id must have 1 to {MAX_REQUEST_ID_LENGTH} characters, got {len(request_id)}"
        )
    try:
        request_id.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a request id must be encodable as UTF-8") from None
    return request_id


class PutAnswer(msgspec.Struct, frozen=True, array_like=True, tag="put"):
    """A ``Put``'s answer: the version written and the encoded value as stored."""

    version: int
    value: bytes


class PutManyAnswer(msgspec.Struct, frozen=True, array_like=True, tag="put_many"):
    versions: list[int]


class DeleteAnswer(msgspec.Struct, frozen=True, array_like=True, tag="delete"):
    existed: bool


class DeleteManyAnswer(msgspec.Struct, frozen=True, array_like=True, tag="delete_many"):
    removed: int


Answer = PutAnswer | PutManyAnswer | DeleteAnswer | DeleteManyAnswer

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[Answer] = msgspec.msgpack.Decoder(Answer)


def encode_answer(answer: Answer) -> bytes:
    return _encoder.encode(answer)


def decode_answer(data: object) -> Answer | None:
    """The answer stored in ``data``, or ``None`` if it is not one (damaged or foreign)."""
    if not isinstance(data, bytes):
        return None
    try:
        return _decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None
