"""What a told message's delivery does after each attempt: its limits and rules.

Sans IO: no store, no clock (times are passed in), no trio. The outbox
(``_outbox.py``), the courier that sends it (``_courier.py``) and the
inbox that deduplicates it (``_inbox.py``) take their limits from
:class:`DeliveryConfig` and their decisions from :func:`after_failure`.

A failed attempt is *retried* when sending again may succeed: the target
was not there or had no room (``NoRoute``, ``Overloaded``,
``NotSentInTime``, ``MailboxFull``), the principal was over a quota of
things in flight (``QuotaExceeded``: it passes as its calls end), the
answer was lost (``OutcomeUnknown``: the receiver's inbox makes the resend
safe), the agent crashed (``ActorCrashed``: it restarts), or anything
else unexpected. It is *dead-lettered at once* when sending again cannot
change the answer: the caller may not call it (``PermissionDenied``), the
operation does not exist or refused the arguments (``UnknownOperation``,
``InvalidArguments``), or it ran and raised an error it declares
(``OperationFailed``: it applied, and failed). After ``max_attempts``
attempts a retried message is dead-lettered too.
"""

from __future__ import annotations

import enum
import random

import attrs
import msgspec

from .._core._backoff import Backoff
from .._core._errors import (
    InvalidArguments,
    OperationFailed,
    PermissionDenied,
    UnknownOperation,
)

__all__ = [
    "DLQ_STORE",
    "INBOX_STORE",
    "OUTBOX_MARKER",
    "OUTBOX_STORE",
    "DeliveryConfig",
    "Next",
    "OutboxEntry",
    "after_failure",
    "describe",
    "entry_key",
]

OUTBOX_STORE = "__delivery_outbox"
"""The internal store of the messages a node has yet to deliver."""

DLQ_STORE = "__delivery_dlq"
"""The internal store of the messages that could not be delivered (dead letters)."""

INBOX_STORE = "__delivery_inbox"
"""The internal store of the told messages a node already applied (its dedupe window)."""

NODE_META = "__node_meta"
OUTBOX_MARKER = "delivery.outbox"
"""Key in ``__node_meta`` set once the node's outbox store exists.

A node opens ``__delivery_outbox`` at start only if this says it has one:
opening a store creates its file, and a node that never told anything
keeps no such file.
"""

PERMANENT = (PermissionDenied, UnknownOperation, InvalidArguments, OperationFailed)
"""Answers that sending again cannot change: the message is dead-lettered at once."""

MAX_ERROR_TEXT = 1000
"""Characters of the last error kept with a message."""


@attrs.frozen
class DeliveryConfig:
    """The limits of a node's outbox, dead letters and inbox (``open_node(delivery=...)``).

    ``durable``: keep the outbox and the inbox in the node's internal
    stores (``False``, and always for ``fame.connect``: in memory for the
    life of the process). ``max_attempts``: attempts before a message is
    dead-lettered. ``attempt_timeout``: the deadline of one attempt
    (seconds). ``first_retry`` and ``max_retry``: the jittered backoff
    between attempts (seconds). ``max_messages`` and ``max_bytes``: the
    outbox's bounds (past them a tell raises ``OutboxFull``).
    ``max_dead_letters``: the dead letters kept (past it the oldest is
    dropped, with a log error). ``concurrency``: messages in flight at
    once. ``inbox_window`` (seconds) and ``inbox_max``: how long and how
    many applied message ids the inbox remembers; a duplicate that comes
    later runs again, so keep the window longer than a sender's whole
    retry span.
    """

    durable: bool = True
    max_attempts: int = attrs.field(default=20, validator=attrs.validators.ge(1))
    attempt_timeout: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    first_retry: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    max_retry: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    max_messages: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    max_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=attrs.validators.ge(1))
    max_dead_letters: int = attrs.field(default=10_000, validator=attrs.validators.ge(1))
    concurrency: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    inbox_window: float = attrs.field(default=86_400.0, validator=attrs.validators.gt(0))
    inbox_max: int = attrs.field(default=100_000, validator=attrs.validators.ge(1))

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.first_retry, max(self.first_retry, self.max_retry), jitter=True)


class OutboxEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One told message, in the outbox or among the dead letters.

    ``args`` are the operation's arguments as msgpack bytes (encoded once,
    when told). Times are wall-clock seconds (they outlive the process).
    """

    id: str
    to: str
    op: str
    args: bytes
    queued_at: float
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str | None = None
    dead_at: float | None = None

    @property
    def size(self) -> int:
        """What the message counts against the outbox's byte bound."""
        return len(self.args) + len(self.to) + len(self.op) + len(self.id)


def entry_key(message_id: str) -> str:
    """The store key of a message: its id (1 to 64 characters; any store key fits)."""
    return message_id


class Next(enum.Enum):
    """What becomes of a message after a failed attempt."""

    RETRY = "retry"
    DEAD = "dead"


def describe(error: BaseException) -> str:
    """The error as kept with the message: its type and message, bounded."""
    return f"{type(error).__name__}: {error}"[:MAX_ERROR_TEXT]


def after_failure(
    entry: OutboxEntry,
    error: BaseException,
    now: float,
    config: DeliveryConfig,
    rng: random.Random | None = None,
) -> tuple[Next, OutboxEntry]:
    """The entry after a failed attempt, and whether it is retried or dead-lettered."""
    attempts = entry.attempts + 1
    text = describe(error)
    if isinstance(error, PERMANENT) or attempts >= config.max_attempts:
        return Next.DEAD, msgspec.structs.replace(
            entry, attempts=attempts, last_error=text, dead_at=now
        )
    delay = config.backoff.delay(attempts, rng)
    return Next.RETRY, msgspec.structs.replace(
        entry, attempts=attempts, last_error=text, next_attempt=now + delay
    )
