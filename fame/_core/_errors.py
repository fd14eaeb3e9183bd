"""Every exception fame raises, in one place.

All of them derive from :class:`FameError`. Errors that describe something
that happened on the far side of a message (another actor, another node)
derive from :class:`RemoteError` and travel as an ``Error`` frame; the
``kind`` string in the frame picks the class on the receiving side, so a
caller can ``except fame.ActorCrashed`` whether the actor was local or not.
:func:`quoted` is how every error text shows input that may be hostile.
"""

from __future__ import annotations

from typing import ClassVar, Literal

__all__ = [
    "ActorCrashed",
    "AdmissionRefused",
    "AgentNotStarted",
    "DeadLetterNotFound",
    "DeadlineExceeded",
    "FameError",
    "InvalidArguments",
    "MailboxFull",
    "NoAnswerInTime",
    "NoRoute",
    "NodeClosed",
    "NotApplied",
    "NotSentInTime",
    "OperationFailed",
    "OutboxFull",
    "OutcomeUnknown",
    "Overloaded",
    "PermissionDenied",
    "ProtocolError",
    "ProtocolMismatch",
    "QuotaExceeded",
    "RemoteError",
    "RequestLost",
    "SupervisorGaveUp",
    "UnknownOperation",
    "UntrustedSentinel",
    "WireError",
    "WireErrorCode",
    "quoted",
    "remote_error",
]

QUOTED_LENGTH = 80


def quoted(text: str) -> str:
    """``text`` quoted for an error message, cut to its first 80 characters and length.

    Names, keys and addresses often come from peers: a megabyte of one must
    not come back as a megabyte of error message (it would not even fit in
    a frame).
    """
    if len(text) <= QUOTED_LENGTH:
        return repr(text)
    return f"{text[:QUOTED_LENGTH]!r}... ({len(text)} characters)"


class FameError(Exception):
    """Base class of every error raised by fame."""


WireErrorCode = Literal[
    "too_large", "not_binary", "malformed", "unencodable", "hop_limit", "not_an_envelope"
]


class WireError(FameError, ValueError):
    """A message that could not be encoded or decoded.

    ``code`` says what was wrong in fame's own terms, for programs (and
    tests) to branch on: ``"too_large"``, ``"not_binary"``, ``"malformed"``
    (not msgpack, or the wrong shape), ``"unencodable"``, ``"hop_limit"``,
    ``"not_an_envelope"``. ``reason`` says the same in words fit to send back
    to the peer; it may quote the decoder's own detail, whose wording is the
    decoder library's and can change with its version.
    """

    def __init__(self, reason: str, *, code: WireErrorCode = "malformed") -> None:
        super().__init__(reason)
        self.reason = reason
        self.code: WireErrorCode = code


class NotApplied(FameError):
    """What a call raised means *certainly not applied*: it was refused before it ran.

    A base of every error that says so (:class:`NoRoute`,
    :class:`Overloaded`, :class:`QuotaExceeded`, :class:`PermissionDenied`,
    :class:`InvalidArguments`, :class:`UnknownOperation`,
    :class:`MailboxFull`, :class:`NotSentInTime`): sending the call again
    can never make it happen twice.
    """


class OutcomeUnknown(FameError):
    """What a call raised means *outcome unknown*: it was sent and no answer came.

    It may have run, completely or not at all. A base of
    :class:`RequestLost` and :class:`NoAnswerInTime`. Sending it again is
    safe for an idempotent operation, or with the same request id for one
    that deduplicates by it (``proxy.with_request_id``): the retry then
    gets the original answer.
    """


class OutboxFull(FameError):
    """A told message was refused: the sender's outbox holds its maximum; nothing was recorded.

    The outbox is bounded in messages and bytes (``DeliveryConfig``). It
    empties as its messages are delivered or dead-lettered: wait for the
    destinations to come back, or raise the limits.
    """


class DeadLetterNotFound(FameError, LookupError):
    """``fame dlq replay|drop ID``: no dead letter has that id; nothing was changed."""


class DeadlineExceeded(FameError, TimeoutError):
    """A call did not complete before its deadline.

    Raised as one of its two kinds, which say what is known:
    :class:`NotSentInTime` (it never reached the target: nothing ran) or
    :class:`NoAnswerInTime` (it was sent: it may have run).
    """


class NotSentInTime(DeadlineExceeded, NotApplied):
    """The deadline passed before the call could reach its target; nothing ran.

    The target stayed overloaded or unreachable (no route, a full mailbox)
    for the whole deadline.
    """


class NoAnswerInTime(DeadlineExceeded, OutcomeUnknown):
    """The call was sent and no answer came before the deadline; it may have run."""


class NodeClosed(FameError):
    """The node (or the actor) is shutting down and takes no more messages."""


class AgentNotStarted(FameError, RuntimeError):
    """An agent attribute that exists only once the node started the agent."""


class SupervisorGaveUp(FameError):
    """An actor crashed more often than its restart intensity allows.

    The supervisor stops restarting it and escalates this error to its own
    parent (for a node: out of ``async with open_node()``).
    """


class AdmissionRefused(FameError):
    """The sentinel refused to admit this node; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"admission refused: {reason}")
        self.reason = reason


class ProtocolMismatch(AdmissionRefused):
    """The two ends of a link speak different versions of the fame wire protocol.

    ``ours`` is this side's version and ``theirs`` the peer's (0: a peer
    from before the protocol was versioned). Upgrade the older side.
    """

    def __init__(self, reason: str, *, ours: int, theirs: int) -> None:
        super().__init__(reason)
        self.ours = ours
        self.theirs = theirs


class UntrustedSentinel(AdmissionRefused):
    """The peer did not prove it is a sentinel this node trusts; nothing was sent to it.

    ``offered`` are the public keys it signed its challenge with (maybe
    none). A fake sentinel, or a real one whose key is not in the trusted
    list (the sentinel keys file, ``conf/sentinel.keys``): compare with
    the ``conf/sentinel.keys`` of the sentinel's project.
    """

    def __init__(self, reason: str, *, offered: tuple[bytes, ...] = ()) -> None:
        super().__init__(reason)
        self.offered = offered


class RemoteError(FameError):
    """An error reported by another actor or node.

    Attributes:
        kind: the wire name of the error class.
        message: the human-readable description from the remote side.
        actor: the address of the actor that failed, if known.
        exc_type: the name of the remote exception type, if one was raised.
        traceback: the formatted traceback of that exception, where it was
            raised (set for :class:`ActorCrashed`: it is how a user finds
            the bug in the actor), else ``None``.
    """

    kind: ClassVar[str] = "remote"

    def __init__(
        self,
        message: str,
        *,
        actor: str | None = None,
        exc_type: str | None = None,
        traceback: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.actor = actor
        self.exc_type = exc_type
        self.traceback = traceback

    def __str__(self) -> str:
        where = f"{self.actor}: " if self.actor else ""
        what = f"{self.exc_type}: " if self.exc_type else ""
        return f"{where}{what}{self.message}"


class InvalidArguments(RemoteError, NotApplied):
    """The arguments of a call did not fit the operation's signature."""

    kind = "invalid_arguments"


class UnknownOperation(RemoteError, NotApplied):
    """The target agent has no operation of that name (or of that kind)."""

    kind = "unknown_operation"


class ActorCrashed(RemoteError):
    """The actor crashed while handling the call; it is being restarted.

    ``traceback`` holds the crash's traceback as text, also when the actor
    ran on another node. For an actor of the caller's own node
    ``__cause__`` is the exception itself.
    """

    kind = "actor_crashed"

    def __str__(self) -> str:
        what = f"{self.exc_type}: " if self.exc_type else ""
        return f"{self.actor or 'actor'} crashed: {what}{self.message}"


class OperationFailed(RemoteError):
    """The operation raised an error it declares; the agent keeps running."""

    kind = "operation_failed"


class MailboxFull(RemoteError, NotApplied):
    """A message could not be put in a bounded mailbox before the deadline."""

    kind = "mailbox_full"


class NoRoute(RemoteError, NotApplied):
    """No actor is bound at the address; the request reached nobody, so nothing ran.

    A node behind a sentinel sends a call that got it again, with backoff,
    until the caller's deadline (the target may be restarting, or this
    node re-attaching), and raises it only then (saying how often it tried).
    """

    kind = "no_route"


class RequestLost(RemoteError, OutcomeUnknown):
    """The request was sent but its answer can no longer come; it may have run.

    The link to the target (or this node's own link to the sentinel) went
    away, or the target stopped or restarted while handling it. The
    runtime sends such a call again by itself only if the operation is
    idempotent or deduplicates by request id; otherwise it raises this.
    """

    kind = "request_lost"


class PermissionDenied(RemoteError, NotApplied):
    """The caller's principal may not call that operation of that address, or bind it; nothing ran.

    The sentinel's authorization policy decides (deny by default); the
    operator grants more in its policy file.
    """

    kind = "permission_denied"


class QuotaExceeded(RemoteError, NotApplied):
    """The caller's principal (or its link) is over one of its quotas; nothing ran.

    Quotas bound what one principal may hold at once: requests in flight,
    open streams, bindings, bytes queued for it. The message names the
    principal, the quota and its value; the other principals are not
    affected. Not retried by the runtime: wait for the principal's own
    calls to finish, or ask the operator to raise the quota.
    """

    kind = "quota_exceeded"


class Overloaded(RemoteError, NotApplied):
    """The target had no room for the request (a full mailbox or link); nothing ran.

    Backpressure, not a failure: the runtime retries such a call with
    backoff until the caller's own deadline, which is what fails
    (:class:`DeadlineExceeded`) if room never comes. Only low-level code
    that sends envelopes itself sees this error.
    """

    kind = "overloaded"


class ProtocolError(RemoteError):
    """A peer broke the wire protocol (malformed, oversized, out of order)."""

    kind = "protocol"


_KINDS: dict[str, type[RemoteError]] = {
    cls.kind: cls
    for cls in (
        RemoteError,
        InvalidArguments,
        UnknownOperation,
        ActorCrashed,
        OperationFailed,
        MailboxFull,
        NoRoute,
        RequestLost,
        PermissionDenied,
        QuotaExceeded,
        Overloaded,
        ProtocolError,
    )
}


def remote_error(
    kind: str,
    message: str,
    *,
    actor: str | None = None,
    exc_type: str | None = None,
    traceback: str | None = None,
) -> RemoteError:
    """Build the :class:`RemoteError` subclass named by ``kind``.

    ``deadline`` is mapped to :class:`DeadlineExceeded` by callers, not here,
    because it is not a remote error: the deadline belongs to the caller.
    """
    cls = _KINDS.get(kind, RemoteError)
    return cls(message, actor=actor, exc_type=exc_type, traceback=traceback)
